"""Subscriptions on the paths applications really take.

Subscriptions that are broken out of, dropped after an exception or never
closed; more subscriptions than the pool has connections; the listening
connection killed or timed out by the server; an exhausted pool; a database
that was never migrated; errors that are not a lost connection; closing from
another thread. Each subscription is consumed on its own thread by a
:class:`Collector`; the test waits for it with deadlines, never with sleeps.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import uuid
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import psycopg
import pytest
from _faults import RestartableServer, backends, libpq_url, terminate, url_with, wait_until
from _store_helpers import STORE_KINDS
from sqlalchemy import insert
from test_subscriptions import (
    DEADLINE_SECONDS,
    Collector,
    append_one,
    assert_once_in_feed_order,
    key,
    noted,
)

from eventstore import (
    DatabaseUnavailableError,
    OperationTimeoutError,
    PermissionDeniedError,
    PostgresEventStore,
    Projection,
    ProjectionRunner,
    RecordedEvent,
    SchemaError,
)
from eventstore.erasure import ALLOW_REWRITE
from eventstore.migrations import upgrade
from eventstore.schema import events as events_table

LEAK_ROUNDS = 50
"""Subscriptions dropped without close, each followed by units of work on the pool."""

SUBSCRIBERS = 6
"""Live subscriptions on a store whose pool holds two connections."""

SMALL_POOL = {"pool_size": 2, "max_overflow": 0, "pool_timeout": 1}


def empty_tables(url: str) -> None:
    """TRUNCATE the store's tables, as the owner may (the log is append-only)."""
    with (
        psycopg.connect(libpq_url(url), autocommit=True) as connection,
        connection.transaction(),
    ):
        connection.execute("SET LOCAL lock_timeout = '10s'")
        connection.execute(ALLOW_REWRITE)
        connection.execute("TRUNCATE events, snapshots, projection_checkpoints RESTART IDENTITY")


@pytest.fixture
def server_url(own_server: str) -> str:
    """The module's own embedded server, emptied: the feed's horizon is cluster-wide,
    so live delivery is tested where no other session can hold it back."""
    empty_tables(own_server)
    return own_server


@pytest.fixture
def writer(server_url: str) -> Iterator[PostgresEventStore]:
    with PostgresEventStore.from_url(server_url) as store:
        yield store


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest) -> Any:
    """A PostgreSQL store on the module's own server, or an in-memory store."""
    if request.param == "memory":
        return request.getfixturevalue("in_memory_event_store")
    return request.getfixturevalue("writer")


@pytest.fixture
def admin(server_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(libpq_url(server_url), autocommit=True) as connection:
        yield connection


@pytest.fixture
def app_name() -> str:
    return f"es-sub-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def small_pool_store(server_url: str, app_name: str) -> Iterator[PostgresEventStore]:
    """A store with a pool of two connections (no overflow, one second to wait for
    one), its backends named ``app_name``."""
    store = PostgresEventStore.from_url(
        url_with(server_url, application_name=app_name), **SMALL_POOL
    )
    try:
        yield store
    finally:
        store.close()


def report(title: str, **numbers: Any) -> None:
    print(f"\n{title}: " + ", ".join(f"{name}={value}" for name, value in numbers.items()))


def listening_backends(admin: psycopg.Connection[Any], application_name: str) -> list[int]:
    """Backends of ``application_name`` whose last statement was a LISTEN."""
    rows = admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s "
        "AND query LIKE 'LISTEN%%' AND pid <> pg_backend_pid()",
        (application_name,),
    ).fetchall()
    return [int(row[0]) for row in rows]


def pooled_connection_states(store: PostgresEventStore) -> list[tuple[int, bool]]:
    """``(channels listened to, autocommit)`` of every connection the pool can hand
    out, all checked out at once (the pool has no overflow)."""
    states = []
    with ExitStack() as stack:
        connections = [stack.enter_context(store.engine.connect()) for _ in range(2)]
        for connection in connections:
            driver = connection.connection.driver_connection
            assert isinstance(driver, psycopg.Connection)
            autocommit = driver.autocommit
            channels = connection.exec_driver_sql(
                "SELECT count(*) FROM pg_listening_channels()"
            ).scalar_one()
            states.append((int(channels), autocommit))
    return states


class RollbackError(Exception):
    """Raised to roll a unit of work back."""


def drop_after_break(store: PostgresEventStore) -> None:
    for _event in store.subscribe(poll_interval=0.2):
        break


def drop_after_exception(store: PostgresEventStore) -> None:
    try:
        subscription = store.subscribe(poll_interval=0.2)
        next(subscription)
        raise RuntimeError("the handler failed")
    except RuntimeError:
        pass


# --- item 8: dropped subscriptions release what they hold ------------------------------------


def test_subscriptions_dropped_without_close_leave_no_pooled_connection_listening_or_in_autocommit(
    small_pool_store: PostgresEventStore,
) -> None:
    store = small_pool_store
    append_one(store, "seed")
    problems: Counter[str] = Counter()
    for round_ in range(LEAK_ROUNDS):
        (drop_after_break if round_ % 2 else drop_after_exception)(store)
        gc.collect()

        stream = f"undone-{round_}"
        try:
            with store.engine.begin() as connection:  # the application's own unit of work
                connection.execute(
                    insert(events_table).values(
                        stream_id=stream, version=1, event_type="Noted", event_data=b"\xa0"
                    )
                )
                raise RollbackError
        except RollbackError:
            pass
        except Exception as exc:
            problems[f"rolled-back unit of work raised {type(exc).__name__}"] += 1
        if store.stream_version(stream) != 0:
            problems["rolled-back insert kept"] += 1

        kept = f"kept-{round_}"
        try:
            with store.engine.begin() as connection:
                store.append_events(
                    kept, [noted(kept, 1)], expected_version=0, connection=connection
                )
        except Exception as exc:
            problems[f"append(connection=...) raised {type(exc).__name__}"] += 1

        try:
            states = pooled_connection_states(store)
        except Exception as exc:
            problems[f"checking out the pool raised {type(exc).__name__}"] += 1
            continue
        problems["pooled connection listening"] += sum(1 for channels, _ in states if channels)
        problems["pooled connection in autocommit"] += sum(1 for _, auto in states if auto)

    problems = +problems  # drop zero counts
    report("dropped subscriptions", rounds=LEAK_ROUNDS, problems=dict(problems) or 0)
    assert not problems
    assert store.engine.pool.checkedout() == 0


def test_a_dropped_subscription_is_freed_and_releases_its_waiter(store: Any) -> None:
    append_one(store, "seed")
    subscription = store.subscribe(poll_interval=0.2)
    assert next(subscription).stream_id == "seed"
    freed = weakref.ref(subscription)
    del subscription
    gc.collect()
    assert freed() is None, "something still holds the dropped subscription"
    if isinstance(store, PostgresEventStore):
        wait_until(lambda: not store._listener.listening, "the listener to stop")


# --- item 9: one listening connection, outside the pool -------------------------------------


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_more_subscriptions_than_pooled_connections_all_deliver(
    request: pytest.FixtureRequest, kind: str, admin: psycopg.Connection[Any], app_name: str
) -> None:
    store = request.getfixturevalue(
        "small_pool_store" if kind == "postgres" else "in_memory_event_store"
    )
    with ExitStack() as stack:
        collectors = [
            Collector(stack.enter_context(store.subscribe(poll_interval=1.0)))
            for _ in range(SUBSCRIBERS)
        ]
        written = [append_one(store, f"order-{i % 3}") for i in range(5)]
        delivered = [collector.wait_for(5) for collector in collectors]
        if kind == "postgres":
            wait_until(lambda: len(listening_backends(admin, app_name)) == 1, "one listener")
            # The pool, the listener and the notifier (which sends the appends' wake-ups).
            assert len(backends(admin, app_name)) <= SMALL_POOL["pool_size"] + 2
        for collector in collectors:
            collector.stop()
    for events in delivered:
        assert [key(e) for e in events] == written
    report("subscriptions on a pool of 2", subscriptions=SUBSCRIBERS, events=len(written))


def listener_pid(admin: psycopg.Connection[Any], app_name: str) -> int:
    found: list[int] = []

    def one() -> bool:
        found[:] = listening_backends(admin, app_name)
        return len(found) == 1

    wait_until(one, "exactly one listening backend")
    return found[0]


def follow_through_listener_losses(
    store: PostgresEventStore,
    writer: PostgresEventStore,
    admin: psycopg.Connection[Any],
    app_name: str,
    lose: Callable[[int], None],
    losses: int,
) -> tuple[list[list[RecordedEvent]], list[tuple[str, int]], list[int]]:
    """Four subscriptions follow waves of appends; before each wave after the first,
    ``lose(pid)`` ends the listening connection and the test waits for a new one.

    Their poll interval (30 s) is past the deadline: the events written while
    nobody listens are delivered because losing and regaining the connection
    wakes every waiter, the others because their NOTIFY does."""
    written: list[tuple[str, int]] = []
    pids: list[int] = []
    with ExitStack() as stack:
        collectors = [
            Collector(stack.enter_context(store.subscribe(poll_interval=30.0, batch_size=2)))
            for _ in range(4)
        ]
        for wave in range(losses + 1):
            if wave:
                lose(pids[-1])
                wait_until(
                    lambda: pids[-1] not in listening_backends(admin, app_name),
                    "the listening connection to go",
                )
                written += [append_one(writer, f"s-{i % 2}") for i in range(3)]  # while lost
                for collector in collectors:
                    collector.wait_for(len(written))
            pids.append(listener_pid(admin, app_name))
            written += [append_one(writer, f"s-{i % 3}") for i in range(3)]
            for collector in collectors:
                collector.wait_for(len(written))
        delivered = [collector.stop() for collector in collectors]
    return delivered, written, pids


def test_a_killed_listening_connection_is_replaced_and_every_event_delivered_once(
    small_pool_store: PostgresEventStore,
    writer: PostgresEventStore,
    admin: psycopg.Connection[Any],
    app_name: str,
) -> None:
    delivered, written, pids = follow_through_listener_losses(
        small_pool_store,
        writer,
        admin,
        app_name,
        lambda pid: terminate(admin, pid),
        losses=3,
    )
    for events in delivered:
        assert [key(e) for e in events] == written
        assert_once_in_feed_order(events, writer)
    assert len(set(pids)) == len(pids) == 4
    report("listener killed", kills=3, subscriptions=4, events=len(written))


def test_a_listening_connection_ended_by_idle_session_timeout_is_replaced(
    writer: PostgresEventStore,
    server_url: str,
    admin: psycopg.Connection[Any],
    app_name: str,
) -> None:
    url = url_with(
        server_url,
        application_name=app_name,
        options="-c idle_session_timeout=300",
    )
    with PostgresEventStore.from_url(url, **SMALL_POOL) as store:
        delivered, written, pids = follow_through_listener_losses(
            store, writer, admin, app_name, lambda pid: None, losses=2
        )
    for events in delivered:
        assert [key(e) for e in events] == written
        assert_once_in_feed_order(events, writer)
    assert len(set(pids)) == len(pids) == 3
    report("listener timed out", timeouts=2, subscriptions=4, events=len(written))


def test_the_listener_stops_when_its_last_subscription_closes(
    small_pool_store: PostgresEventStore, admin: psycopg.Connection[Any], app_name: str
) -> None:
    store = small_pool_store
    first = store.subscribe(poll_interval=0.2)
    second = store.subscribe(poll_interval=0.2)
    Collector(first)
    listener_pid(admin, app_name)
    first.close()
    assert listener_pid(admin, app_name)
    second.close()
    wait_until(lambda: not listening_backends(admin, app_name), "the listener to stop")
    with store.subscribe(poll_interval=0.2):
        listener_pid(admin, app_name)
    store.close()
    wait_until(lambda: not backends(admin, app_name), "every backend of the store to go")


# --- item 13: an exhausted pool -------------------------------------------------------------


def test_subscribe_needs_no_pooled_connection_and_next_times_out_with_a_typed_error(
    writer: PostgresEventStore, server_url: str
) -> None:
    append_one(writer, "seed")
    with PostgresEventStore.from_url(
        server_url, pool_size=1, max_overflow=0, pool_timeout=0.5
    ) as store:
        with store.engine.connect() as held:
            held.exec_driver_sql("SELECT 1")
            subscription = store.subscribe(poll_interval=0.2)  # needs no pooled connection
            collector = Collector(subscription)
            collector.finished.wait(DEADLINE_SECONDS)
            assert collector.finished.is_set(), "next() did not give up on the pool"
        assert isinstance(collector.error, OperationTimeoutError)
        assert collector.error.timeout == "pool_timeout"
        assert "pool_size" in str(collector.error)
        with pytest.raises(StopIteration):
            next(subscription)
        with store.subscribe(poll_interval=0.2) as again:  # the pool is free again
            assert next(again).stream_id == "seed"


# --- errors that end a subscription and errors it survives -----------------------------------


def test_a_subscription_on_a_database_without_the_schema_raises_schema_error(
    scratch_database_url: str,
) -> None:
    with PostgresEventStore.from_url(scratch_database_url) as store:
        subscription = store.subscribe(poll_interval=0.2)
        collector = Collector(subscription)
        collector.finished.wait(DEADLINE_SECONDS)
        assert collector.finished.is_set(), "the subscription kept retrying"
        assert isinstance(collector.error, SchemaError)
        assert "eventstore migrate upgrade" in str(collector.error)
        with pytest.raises(StopIteration):
            next(subscription)


class FailingReads:
    """Makes the store's next feed reads raise ``errors``, one each, then read normally."""

    def __init__(self, store: Any, errors: list[BaseException]) -> None:
        self.errors = errors
        self.calls = 0
        original = store._feed_rows

        def failing(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.errors:
                raise self.errors.pop(0)
            return original(*args, **kwargs)

        store._feed_rows = failing


def lost_connection() -> BaseException:
    return DatabaseUnavailableError("the connection to the database server was lost")


def test_a_read_that_lost_its_connection_is_retried_with_a_warning(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="eventstore.feed")
    written = [append_one(store, "s")]
    FailingReads(store, [lost_connection(), lost_connection(), lost_connection()])
    with store.subscribe(poll_interval=0.2) as subscription:
        assert key(next(subscription)) == written[0]
    retries = [r.levelno for r in caplog.records if "retrying" in r.message]
    assert retries == [logging.WARNING, logging.DEBUG, logging.DEBUG]
    assert [r.levelno for r in caplog.records if "reading again" in r.message] == [logging.INFO]


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(PermissionDeniedError("permission denied for table events"), id="permission"),
        pytest.param(
            OperationTimeoutError("statement_timeout", timeout="statement_timeout"), id="timeout"
        ),
        pytest.param(RuntimeError("a bug"), id="other"),
    ],
)
def test_any_other_read_error_ends_the_subscription_with_that_error(
    store: Any, error: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="eventstore")
    append_one(store, "s")
    reads = FailingReads(store, [error])
    subscription = store.subscribe(poll_interval=0.2)
    collector = Collector(subscription)
    collector.finished.wait(DEADLINE_SECONDS)
    assert collector.finished.is_set(), "the subscription kept retrying"
    assert collector.error is error
    assert reads.calls == 1
    assert not [r for r in caplog.records if "retrying" in r.message]
    with pytest.raises(StopIteration):
        next(subscription)


# --- other threads --------------------------------------------------------------------------


def test_closing_from_another_thread_while_iterating_is_safe(store: Any) -> None:
    append_one(store, "s")
    subscriptions = [store.subscribe(poll_interval=1.0) for _ in range(3)]
    collectors = [Collector(subscription) for subscription in subscriptions]
    for collector in collectors:
        collector.wait_for(1)
    started = time.monotonic()
    closers = [threading.Thread(target=s.close) for s in subscriptions]
    for closer in closers:
        closer.start()
    for collector in collectors:
        collector.thread.join(DEADLINE_SECONDS)
        assert not collector.thread.is_alive(), "iteration did not end after close()"
        assert collector.error is None
    assert time.monotonic() - started < 2.0
    if isinstance(store, PostgresEventStore):
        wait_until(lambda: not store._listener.listening, "the listener to stop")
        assert store.engine.pool.checkedout() == 0
    append_one(store, "after")
    for subscription in subscriptions:
        with pytest.raises(StopIteration):
            next(subscription)


def test_a_notification_wakes_every_subscription_at_once(
    small_pool_store: PostgresEventStore, writer: PostgresEventStore
) -> None:
    """Subscriptions idle with a 30 s poll interval: only the shared listener's
    wake-up can deliver the next event within the deadline."""
    with ExitStack() as stack:
        collectors = [
            Collector(stack.enter_context(small_pool_store.subscribe(poll_interval=30.0)))
            for _ in range(3)
        ]
        wait_until(lambda: small_pool_store._listener.listening, "the listener")
        started = time.monotonic()
        # Another transaction on the server can hold a fresh event back for a
        # moment; each further append notifies again.
        while not all(collector.events for collector in collectors):
            assert time.monotonic() - started < 5.0, "NOTIFY did not wake every subscriber"
            append_one(writer, "ping")
            for collector in collectors:
                with collector._arrived:
                    collector._arrived.wait_for(lambda c=collector: bool(c.events), 0.5)
        for collector in collectors:
            collector.stop()


def test_projection_runners_and_subscriptions_share_the_one_listening_connection(
    small_pool_store: PostgresEventStore,
    writer: PostgresEventStore,
    admin: psycopg.Connection[Any],
    app_name: str,
) -> None:
    """A runner's ``run()`` waits on the same listener as the store's subscriptions:
    one listening backend, and with a 30 s poll interval only its wake-up can
    deliver within the deadline."""
    handled: list[tuple[str, int]] = []
    arrived = threading.Condition()

    def handle(event: RecordedEvent, connection: Any) -> None:
        with arrived:
            handled.append(key(event))
            arrived.notify_all()

    runner = ProjectionRunner(
        small_pool_store, Projection("lived-paths", handle), poll_interval=30.0
    )
    stop = threading.Event()
    running = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    with ExitStack() as stack:
        stack.callback(runner.close)
        collector = Collector(stack.enter_context(small_pool_store.subscribe(poll_interval=30.0)))
        running.start()
        listener_pid(admin, app_name)
        written = [append_one(writer, f"p-{i % 2}") for i in range(4)]
        with arrived:
            assert arrived.wait_for(lambda: len(handled) >= 4, DEADLINE_SECONDS)
        assert [key(e) for e in collector.wait_for(4)] == written
        assert len(listening_backends(admin, app_name)) == 1
        stop.set()
        running.join(DEADLINE_SECONDS)
        assert not running.is_alive()
        collector.stop()
    assert handled == written


# --- a server restart -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def restartable_server() -> Iterator[RestartableServer]:
    server = RestartableServer()
    try:
        upgrade(server.url)
        yield server
    finally:
        server.close()


def test_subscriptions_outlive_a_server_restart_and_warn_once(
    restartable_server: RestartableServer, app_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The server is down long enough for several attempts to listen again: the
    listener warns once, not per attempt; after the restart the waiters are woken
    (their poll interval is past the deadline) and every event arrives once."""
    caplog.set_level(logging.DEBUG, logger="eventstore._listen")
    server = restartable_server
    url = url_with(server.url, application_name=app_name, connect_timeout="2")
    with (
        PostgresEventStore.from_url(url, **SMALL_POOL) as store,
        PostgresEventStore.from_url(server.url) as writer,
        ExitStack() as stack,
    ):
        collectors = [
            Collector(stack.enter_context(store.subscribe(poll_interval=30.0))) for _ in range(3)
        ]
        written = [append_one(writer, "before")]
        for collector in collectors:
            collector.wait_for(1)
        writer.engine.dispose()
        server.stop()
        try:
            wait_until(
                lambda: len([r for r in caplog.records if "cannot open" in r.message]) >= 3,
                "three attempts to listen again",
            )
        finally:
            server.start()
        written += [append_one(writer, "after") for _ in range(3)]
        delivered = [collector.wait_for(len(written)) for collector in collectors]
        for collector in collectors:
            collector.stop()
    for events in delivered:
        assert [key(e) for e in events] == written
    attempts = [r.levelno for r in caplog.records if "cannot open" in r.message]
    assert attempts[0] == logging.WARNING
    assert set(attempts[1:]) == {logging.DEBUG}
    report("server restart", failed_listen_attempts=len(attempts), subscriptions=3)
