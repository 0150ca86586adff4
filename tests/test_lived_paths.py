"""Lived paths of store.close(), units of work, subscriptions, forked processes,
Repository conflicts and caller connections: each test asserts what a hurried
user needs, and each failed before its fix."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from _faults import count_backends
from _store_helpers import STORE_KINDS, store_for, wait_for_feed_horizon

from eventstore import (
    ANY,
    InMemoryEventStore,
    NewEvent,
    Position,
    PostgresEventStore,
    Repository,
    ValidationError,
)


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest) -> Any:
    return store_for(request, request.param)


class LaterPosition(Position):
    """An application's own Position type (a subclass adding nothing)."""


def test_a_position_subclass_is_accepted_by_read_all_on_both_stores(store: Any) -> None:
    store.append_events("s", [NewEvent("X", {"n": 1})], expected_version=0)
    wait_for_feed_horizon(store)
    first = store.read_all()[0].position
    assert store.read_all(after=LaterPosition(0, 0))[0].event_type == "X"
    assert store.read_all(after=LaterPosition(first.transaction_id, first.sequence)) == []


@pytest.mark.parametrize(
    "value",
    [1e308, 5e-324, 1e16, 1.5e-7, -0.0, 2.0, [1e300, [2.5e-300, 1e22]], {"e+": 1e20}],
)
def test_metadata_floats_come_back_as_the_same_floats(store: Any, value: Any) -> None:
    metadata = {"v": value, "k e+1": 1.0}
    store.append_events("m", [NewEvent("X", {}, metadata)], expected_version=0)
    got = store.load_events("m")[0].metadata
    assert got == metadata
    assert repr(got) == repr({"v": value if value != 0 else 0.0, "k e+1": 1.0}) or value == -0.0


# -- a second process -----------------------------------------------------------------


def _reads_in_child(url_store: PostgresEventStore, stream_id: str, queue: Any) -> None:
    wrong = 0
    for _ in range(200):
        try:
            if url_store.stream_version(stream_id) != 2:
                wrong += 1
        except Exception:
            wrong += 1
    queue.put(wrong)


def test_a_forked_child_and_its_parent_each_get_their_own_answers(
    eventstore_database_url: str,
) -> None:
    import multiprocessing

    store = PostgresEventStore.from_url(eventstore_database_url, pool_size=1, max_overflow=0)
    try:
        stream_id = f"fork-{time.monotonic_ns()}"
        store.append_events(stream_id, [NewEvent("X", {}), NewEvent("X", {})], expected_version=0)
        subscription = store.subscribe(after=store.feed_head(), poll_interval=0.2)
        assert store.stream_version(stream_id) == 2  # the pool now keeps a connection
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        child = context.Process(target=_reads_in_child, args=(store, stream_id, queue))
        child.start()
        try:
            wrong_in_parent = 0
            for _ in range(200):
                try:
                    if store.stream_version(stream_id) != 2:
                        wrong_in_parent += 1
                except Exception:
                    wrong_in_parent += 1
            child.join(20)
            assert not child.is_alive(), "the forked child hung on the parent's connection"
            assert queue.get(timeout=5) == 0
            assert wrong_in_parent == 0
        finally:
            if child.is_alive():
                child.kill()
                child.join()
        subscription.close()
    finally:
        store.close()


# -- close() --------------------------------------------------------------------------


def test_close_leaves_no_connection_open_when_calls_were_connecting_meanwhile(
    eventstore_database_url: str,
) -> None:
    from sqlalchemy import event

    from eventstore.urls import normalize_url

    name = f"close_race_{time.monotonic_ns()}"
    url = normalize_url(eventstore_database_url).update_query_dict({"application_name": name})
    store = PostgresEventStore.from_url(url)

    @event.listens_for(store.engine, "connect")
    def slow_connect(*_: object) -> None:  # an application's connect hook (SET ROLE, ...)
        time.sleep(0.3)

    threads = [threading.Thread(target=store.stream_version, args=("x",)) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.1)
    store.close()
    for thread in threads:
        thread.join()
    time.sleep(0.2)
    assert count_backends(eventstore_database_url, name) == 0


def test_repository_any_append_with_a_stale_snapshot_raises_transaction_conflict_error(
    event_store: PostgresEventStore,
) -> None:
    from eventstore import TransactionConflictError

    store = event_store
    store.append_events("acct", [NewEvent("X", {})], expected_version=0)
    repository = Repository(store, 0, lambda state, _event: state + 1)
    with store.engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
        conn.begin()
        conn.exec_driver_sql("SELECT 1")  # the transaction's snapshot is taken
        store.append_events("acct", [NewEvent("X", {})], expected_version=ANY)  # another writer
        with pytest.raises(TransactionConflictError):  # "retry the whole transaction"
            repository.append(
                "acct", [NewEvent("X", {})], state=None, expected_version=ANY, connection=conn
            )
        conn.rollback()


def test_repository_any_append_in_a_memory_deadlock_raises_transaction_conflict_error() -> None:
    from eventstore import TransactionConflictError

    store = InMemoryEventStore()
    repository = Repository(store, 0, lambda state, _event: state + 1)
    first_holds = threading.Event()
    outcome: list[BaseException | None] = []

    def first() -> None:
        with store.transaction() as unit:
            store.append_events("b", [NewEvent("X", {})], expected_version=ANY, connection=unit)
            first_holds.set()
            time.sleep(0.3)  # the second unit of work now holds "a" and waits for "b"
            try:
                repository.append(
                    "a", [NewEvent("X", {})], state=None, expected_version=ANY, connection=unit
                )
                outcome.append(None)
            except BaseException as error:
                outcome.append(error)

    def second() -> None:
        first_holds.wait()
        with store.transaction() as unit:
            store.append_events("a", [NewEvent("X", {})], expected_version=ANY, connection=unit)
            store.append_events("b", [NewEvent("X", {})], expected_version=ANY, connection=unit)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(outcome) == 1
    assert isinstance(outcome[0], TransactionConflictError), repr(outcome[0])


# -- connection= that is not in a transaction ------------------------------------------


def test_an_autocommit_connection_is_refused_with_words_about_what_was_passed(
    event_store: PostgresEventStore,
) -> None:
    autocommit = event_store.engine.execution_options(isolation_level="AUTOCOMMIT")
    with autocommit.connect() as conn, pytest.raises(ValidationError) as refused:
        event_store.append_events("auto", [NewEvent("X", {})], expected_version=0, connection=conn)
    message = str(refused.value)
    assert "has failed" not in message  # nothing failed: the connection is in autocommit
    assert "autocommit" in message.lower() or "store.transaction()" in message


# -- the application's own statements in store.transaction() ---------------------------


@pytest.mark.parametrize(
    ("sql", "raised"),
    [
        ("SELECT * FROM my_orders", "ProgrammingError"),  # the application's own typo
        ("SELECT 1/0", "DataError"),
    ],
)
def test_the_applications_own_sql_errors_in_a_unit_of_work_are_not_called_store_errors(
    event_store: PostgresEventStore, sql: str, raised: str
) -> None:
    import sqlalchemy.exc

    from eventstore import EventStoreError

    with pytest.raises(Exception) as failure, event_store.transaction() as conn:  # noqa: PT011
        conn.exec_driver_sql(sql)
    error = failure.value
    # Not "the event store schema is missing ... run alembic upgrade head", nor "a
    # value of the call": the statement was the application's, and so is its error.
    assert not isinstance(error, EventStoreError), f"{type(error).__name__}: {error}"
    assert isinstance(error, getattr(sqlalchemy.exc, raised))


def _child_follows_after_closing_the_inherited_subscription(
    store: PostgresEventStore, inherited: Any, queue: Any
) -> None:
    store.engine.dispose(close=False)  # the child's own pooled connections
    own = store.subscribe(after=store.feed_head(), poll_interval=30)
    time.sleep(0.5)
    inherited.close()  # the parent's subscription, copied into the child, is let go
    received: list[Any] = []
    follower = threading.Thread(target=lambda: received.append(next(own)), daemon=True)
    follower.start()
    time.sleep(0.5)
    store.append_events(f"fork-wake-{time.monotonic_ns()}", [NewEvent("X", {})], expected_version=0)
    wait_for_feed_horizon(store)  # the event is visible to the feed now
    store.append_events(f"fork-wake-{time.monotonic_ns()}", [NewEvent("X", {})], expected_version=0)
    follower.join(5)
    queue.put(len(received))


def test_a_forked_child_closing_an_inherited_subscription_keeps_its_own_subscription_woken(
    eventstore_database_url: str,
) -> None:
    import multiprocessing

    store = PostgresEventStore.from_url(eventstore_database_url)
    try:
        inherited = store.subscribe(after=store.feed_head(), poll_interval=30)
        time.sleep(0.3)
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        child = context.Process(
            target=_child_follows_after_closing_the_inherited_subscription,
            args=(store, inherited, queue),
        )
        child.start()
        try:
            child.join(15)
            # The event reaches the child's subscription at once (it listens), not
            # after its 30 s poll_interval.
            assert queue.get(timeout=5) == 1
        finally:
            if child.is_alive():
                child.kill()
                child.join()
        inherited.close()
    finally:
        store.close()


def test_an_append_through_a_memory_unit_of_work_that_ends_while_it_waits_is_not_lost() -> None:
    store = InMemoryEventStore()
    holding, release = threading.Event(), threading.Event()

    def other_unit_of_work() -> None:
        with store.transaction() as other:
            store.append_events("x", [NewEvent("X", {})], expected_version=ANY, connection=other)
            holding.set()
            release.wait()

    holder = threading.Thread(target=other_unit_of_work)
    holder.start()
    holding.wait()
    outcome: list[object] = []

    def append_through(unit: Any) -> None:
        try:
            outcome.append(
                store.append_events("x", [NewEvent("Y", {})], expected_version=ANY, connection=unit)
            )
        except ValidationError as refused:
            outcome.append(refused)

    with store.transaction() as unit:
        helper = threading.Thread(target=append_through, args=(unit,))
        helper.start()
        time.sleep(0.2)  # the helper waits for "x"; the block ends meanwhile
    release.set()
    holder.join()
    helper.join(5)
    assert len(outcome) == 1
    if not isinstance(outcome[0], ValidationError):  # it returned a version: Y must be stored
        assert [e.event_type for e in store.load_events("x")] == ["X", "Y"]
    later = threading.Thread(
        target=store.append_events,
        args=("x", [NewEvent("Z", {})]),
        kwargs={"expected_version": ANY},
        daemon=True,
    )
    later.start()
    later.join(2)
    assert not later.is_alive(), "stream 'x' stays reserved by a unit of work that has ended"
