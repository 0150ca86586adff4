"""Checkpointed projections on both stores: each event takes effect exactly once.

The projection counts events per stream into ``order_counts``: a table on
PostgreSQL, written through the connection the runner hands the handler (so the
counts commit with the checkpoint), a dict in memory. It also logs every
application, so an event applied twice shows. PostgreSQL-only parts are marked.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _store_helpers import STORE_KINDS, store_for, wait_for_feed_horizon
from sqlalchemy import text

from eventstore import (
    ANY,
    InMemoryEventStore,
    NewEvent,
    Position,
    PostgresEventStore,
    Projection,
    ProjectionLockedError,
    ProjectionRunner,
    RecordedEvent,
)

DEADLINE_SECONDS = 10.0
COUNTED_TYPES = ["OrderPlaced", "ItemAdded"]

Key = tuple[str, int]


class OrderCounts:
    """The read model: events counted per stream, plus a log of every application.

    One instance serves several projection names; each name has its own rows.
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        self.postgres = isinstance(store, PostgresEventStore)
        self._counts: dict[str, Counter[str]] = {}
        self._applied: dict[str, list[Key]] = {}
        self._lock = threading.Lock()
        if self.postgres:
            with store.engine.begin() as conn:
                conn.execute(text("SET LOCAL lock_timeout = '10s'"))
                conn.execute(
                    text(
                        "CREATE TABLE IF NOT EXISTS order_counts ("
                        " projection text NOT NULL, stream_id text NOT NULL,"
                        " count bigint NOT NULL, PRIMARY KEY (projection, stream_id))"
                    )
                )
                conn.execute(
                    text(
                        "CREATE TABLE IF NOT EXISTS order_counts_applied ("
                        " projection text NOT NULL, stream_id text NOT NULL,"
                        " version bigint NOT NULL)"
                    )
                )
                conn.execute(text("TRUNCATE order_counts, order_counts_applied"))
                conn.execute(text("DELETE FROM projection_checkpoints"))

    def drop(self) -> None:
        """Remove the read model's tables, leaving the test database as it was."""
        if self.postgres:
            with self.store.engine.begin() as conn:
                conn.execute(text("SET LOCAL lock_timeout = '10s'"))
                conn.execute(text("DROP TABLE IF EXISTS order_counts, order_counts_applied"))

    def handler(self, name: str) -> Callable[[RecordedEvent, Any], None]:
        def handle(event: RecordedEvent, connection: Any) -> None:
            if self.postgres:
                assert connection is not None, "the handler gets the batch's connection"
                connection.execute(
                    text(
                        "INSERT INTO order_counts (projection, stream_id, count)"
                        " VALUES (:name, :stream_id, 1)"
                        " ON CONFLICT (projection, stream_id)"
                        " DO UPDATE SET count = order_counts.count + 1"
                    ),
                    {"name": name, "stream_id": event.stream_id},
                )
                connection.execute(
                    text(
                        "INSERT INTO order_counts_applied (projection, stream_id, version)"
                        " VALUES (:name, :stream_id, :version)"
                    ),
                    {"name": name, "stream_id": event.stream_id, "version": event.version},
                )
            else:
                assert connection is None
                with self._lock:
                    self._counts.setdefault(name, Counter())[event.stream_id] += 1
                    self._applied.setdefault(name, []).append((event.stream_id, event.version))

        return handle

    def resetter(self, name: str) -> Callable[[Any], None]:
        def reset(connection: Any) -> None:
            if self.postgres:
                params = {"name": name}
                connection.execute(
                    text("DELETE FROM order_counts WHERE projection = :name"), params
                )
                connection.execute(
                    text("DELETE FROM order_counts_applied WHERE projection = :name"), params
                )
            else:
                with self._lock:
                    self._counts.pop(name, None)
                    self._applied.pop(name, None)

        return reset

    def projection(
        self, name: str, handler: Callable[[RecordedEvent, Any], None] | None = None
    ) -> Projection:
        return Projection(
            name,
            handler or self.handler(name),
            event_types=COUNTED_TYPES,
            reset=self.resetter(name),
        )

    def counts(self, name: str) -> dict[str, int]:
        if self.postgres:
            with self.store.engine.connect() as conn:
                rows = conn.execute(
                    text("SELECT stream_id, count FROM order_counts WHERE projection = :name"),
                    {"name": name},
                ).all()
            return {str(s): int(c) for s, c in rows}
        with self._lock:
            return dict(self._counts.get(name, {}))

    def applied(self, name: str) -> list[Key]:
        if self.postgres:
            with self.store.engine.connect() as conn:
                rows = conn.execute(
                    text(
                        "SELECT stream_id, version FROM order_counts_applied"
                        " WHERE projection = :name"
                    ),
                    {"name": name},
                ).all()
            return [(str(s), int(v)) for s, v in rows]
        with self._lock:
            return list(self._applied.get(name, []))


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest) -> Any:
    return store_for(request, request.param)


@pytest.fixture
def model(store: Any) -> Iterator[OrderCounts]:
    counts = OrderCounts(store)
    try:
        yield counts
    finally:
        counts.drop()


@pytest.fixture
def pg_model(event_store: PostgresEventStore) -> Iterator[OrderCounts]:
    counts = OrderCounts(event_store)
    try:
        yield counts
    finally:
        counts.drop()


def append_orders(store: Any, count: int, *, first: int = 0) -> list[Key]:
    """Append ``count`` counted events over three streams, with an uncounted event
    after every third; return the counted ones in order."""
    counted: list[Key] = []
    for n in range(first, first + count):
        stream_id = f"order-{n % 3}"
        event_type = "OrderPlaced" if n < 3 else "ItemAdded"
        version = store.append_events(
            stream_id, [NewEvent(event_type, {"n": n})], expected_version=ANY
        )
        counted.append((stream_id, version))
        if n % 3 == 2:
            store.append_events(stream_id, [NewEvent("Ignored", {"n": n})], expected_version=ANY)
    wait_for_feed_horizon(store)
    return counted


def expected_counts(store: Any) -> dict[str, int]:
    return dict(Counter(e.stream_id for e in store.read_all(event_types=COUNTED_TYPES)))


def assert_applied_once_each(model: OrderCounts, name: str, store: Any) -> None:
    applied = model.applied(name)
    twice = [k for k, n in Counter(applied).items() if n > 1]
    assert not twice, f"applied more than once: {twice}"
    everything = {(e.stream_id, e.version) for e in store.read_all(event_types=COUNTED_TYPES)}
    assert set(applied) == everything


def rebuild(model: OrderCounts, store: Any, name: str = "order_counts_rebuild") -> dict[str, int]:
    """The counts of a projection that processed everything from scratch, never failing."""
    with ProjectionRunner(store, model.projection(name), batch_size=4, lock_timeout=5) as runner:
        runner.run_once()
    return model.counts(name)


# --- run_once and checkpoints --------------------------------------------------------------


def test_run_once_processes_everything_then_only_new_events(store: Any, model: OrderCounts) -> None:
    counted = append_orders(store, 10)
    name = "order_counts"
    with ProjectionRunner(store, model.projection(name), batch_size=4, lock_timeout=5) as runner:
        assert runner.checkpoint() is None
        assert runner.run_once() == 10
        assert (
            model.counts(name)
            == expected_counts(store)
            == {"order-0": 4, "order-1": 3, "order-2": 3}
        )
        first_checkpoint = runner.checkpoint()
        assert isinstance(first_checkpoint, Position)
        last_counted = store.read_all(event_types=COUNTED_TYPES)[-1].position
        assert first_checkpoint >= last_counted
        assert first_checkpoint <= store.read_all()[-1].position

        assert runner.run_once() == 0, "nothing new, nothing handled"
        assert runner.checkpoint() == first_checkpoint

        counted += append_orders(store, 5, first=10)
        assert runner.run_once() == 5
        advanced = runner.checkpoint()
        assert advanced is not None
        assert advanced > first_checkpoint
        assert model.counts(name) == expected_counts(store)
    assert_applied_once_each(model, name, store)
    assert sorted(model.applied(name)) == sorted(counted)


def test_a_new_runner_resumes_from_the_stored_checkpoint(store: Any, model: OrderCounts) -> None:
    append_orders(store, 7)
    with ProjectionRunner(store, model.projection("order_counts"), lock_timeout=5) as runner:
        assert runner.run_once() == 7
        checkpoint = runner.checkpoint()
    append_orders(store, 3, first=7)
    with ProjectionRunner(store, model.projection("order_counts"), lock_timeout=5) as runner:
        assert runner.checkpoint() == checkpoint
        assert runner.run_once() == 3
    assert model.counts("order_counts") == expected_counts(store)
    assert_applied_once_each(model, "order_counts", store)


def test_handler_sees_only_the_wanted_event_types(store: Any, model: OrderCounts) -> None:
    append_orders(store, 6)
    seen: list[str] = []
    projection = Projection(
        "placed_only",
        lambda event, _conn: seen.append(event.event_type),
        event_types=["OrderPlaced"],
    )
    with ProjectionRunner(store, projection, lock_timeout=5) as runner:
        assert runner.run_once() == 3
    assert seen == ["OrderPlaced"] * 3


# --- a handler that crashes mid-batch --------------------------------------------------------


class HandlerCrashError(Exception):
    pass


def test_handler_crash_mid_batch_then_restart_matches_a_rebuild(
    store: Any, model: OrderCounts
) -> None:
    append_orders(store, 25)
    name = "order_counts"
    calls = 0
    crashed = False
    apply = model.handler(name)

    def flaky(event: RecordedEvent, connection: Any) -> None:
        nonlocal calls, crashed
        calls += 1
        failing = calls == 17 and not crashed  # the 7th event of the second batch of 10
        if failing and not model.postgres:
            crashed = True  # in memory nothing rolls back: fail before any effect
            raise HandlerCrashError("handler failed on the 17th event")
        apply(event, connection)
        if failing:
            crashed = True  # on PostgreSQL this event's own writes roll back too
            raise HandlerCrashError("handler failed on the 17th event")

    runner = ProjectionRunner(store, model.projection(name, flaky), batch_size=10, lock_timeout=5)
    try:
        with pytest.raises(HandlerCrashError):
            runner.run_once()
    finally:
        runner.close()

    feed = store.read_all(event_types=COUNTED_TYPES)
    if isinstance(store, PostgresEventStore):
        # The failed batch's writes and checkpoint were rolled back together.
        assert runner.checkpoint() == feed[9].position
        assert sorted(model.applied(name)) == sorted((e.stream_id, e.version) for e in feed[:10])
        expected_restart = 15
    else:
        # In memory the checkpoint follows each event the handler finished.
        assert runner.checkpoint() == feed[15].position
        expected_restart = 9

    with ProjectionRunner(store, model.projection(name), batch_size=10, lock_timeout=5) as fresh:
        assert fresh.run_once() == expected_restart

    assert model.counts(name) == rebuild(model, store) == expected_counts(store)
    assert_applied_once_each(model, name, store)
    assert_applied_once_each(model, "order_counts_rebuild", store)


# --- one runner per name ---------------------------------------------------------------------


def test_second_runner_times_out_while_the_first_holds_the_lock_then_takes_over(
    store: Any, model: OrderCounts
) -> None:
    append_orders(store, 6)
    name = "order_counts"
    b_calls: list[Key] = []
    apply = model.handler(name)

    def b_handler(event: RecordedEvent, connection: Any) -> None:
        b_calls.append((event.stream_id, event.version))
        apply(event, connection)

    a = ProjectionRunner(store, model.projection(name), lock_timeout=5)
    b = ProjectionRunner(store, model.projection(name, b_handler), lock_timeout=0.5)
    try:
        assert a.run_once() == 6
        started = time.monotonic()
        with pytest.raises(ProjectionLockedError):
            b.run_once()
        waited = time.monotonic() - started
        assert 0.4 <= waited < 5.0, f"B gave up after {waited:.2f}s"
        assert b_calls == []

        more = append_orders(store, 3, first=6)
        a.close()
        assert b.run_once() == 3, "B continues from A's checkpoint"
        assert b_calls == more
    finally:
        a.close()
        b.close()
    assert model.counts(name) == expected_counts(store)
    assert_applied_once_each(model, name, store)


def test_two_runners_for_one_name_never_handle_events_at_once(
    store: Any, model: OrderCounts
) -> None:
    append_orders(store, 6)
    name = "order_counts"
    apply = model.handler(name)
    active = 0
    most_active = 0
    handled_by: dict[str, list[Key]] = {"a": [], "b": []}
    guard = threading.Lock()
    a_caught_up = threading.Condition()

    def handler_for(runner_name: str) -> Callable[[RecordedEvent, Any], None]:
        def handle(event: RecordedEvent, connection: Any) -> None:
            nonlocal active, most_active
            with guard:
                active += 1
                most_active = max(most_active, active)
            try:
                apply(event, connection)
            finally:
                with guard:
                    active -= 1
            with a_caught_up:
                handled_by[runner_name].append((event.stream_id, event.version))
                a_caught_up.notify_all()

        return handle

    a = ProjectionRunner(store, model.projection(name, handler_for("a")), poll_interval=0.2)
    b = ProjectionRunner(
        store, model.projection(name, handler_for("b")), lock_timeout=DEADLINE_SECONDS * 2
    )
    stop_a = threading.Event()
    b_result: list[int] = []
    failures: list[BaseException] = []

    def run(target: Callable[[], Any]) -> None:
        try:
            target()
        except BaseException as exc:
            failures.append(exc)

    thread_a = threading.Thread(target=run, args=(lambda: a.run(stop_a),), name="runner-a")
    thread_b = threading.Thread(
        target=run, args=(lambda: b_result.append(b.run_once()),), name="runner-b"
    )
    try:
        thread_a.start()
        with a_caught_up:
            assert a_caught_up.wait_for(lambda: len(handled_by["a"]) == 6, DEADLINE_SECONDS)
        thread_b.start()
        live = append_orders(store, 6, first=6)
        with a_caught_up:
            assert a_caught_up.wait_for(lambda: len(handled_by["a"]) == 12, DEADLINE_SECONDS)
        assert thread_b.is_alive(), "B must still be waiting for the lock"
        assert handled_by["b"] == []

        stop_a.set()
        thread_a.join(DEADLINE_SECONDS)
        assert not thread_a.is_alive()
        last = append_orders(store, 2, first=12)
        a.close()
        thread_b.join(DEADLINE_SECONDS)
        assert not thread_b.is_alive(), "B did not take over after A closed"
    finally:
        stop_a.set()
        a.close()
        thread_a.join(DEADLINE_SECONDS)
        thread_b.join(DEADLINE_SECONDS)
        b.close()
    assert not failures, failures
    assert b_result == [2]
    assert handled_by["b"] == last
    assert handled_by["a"][6:] == live
    assert most_active == 1
    assert model.counts(name) == expected_counts(store)
    assert_applied_once_each(model, name, store)


def test_pg_second_runner_takes_over_when_the_first_runners_connection_dies(
    event_store: PostgresEventStore, pg_model: OrderCounts
) -> None:
    """PostgreSQL: terminating the lock holder's backend releases the advisory lock."""
    store, model = event_store, pg_model
    append_orders(store, 5)
    name = "order_counts"
    a = ProjectionRunner(store, model.projection(name), lock_timeout=5)
    b = ProjectionRunner(store, model.projection(name), lock_timeout=5)
    try:
        assert a.run_once() == 5
        with store.engine.connect() as conn:
            holders = (
                conn.execute(
                    text(
                        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                        " AND database = (SELECT oid FROM pg_database"
                        "                 WHERE datname = current_database())"
                    )
                )
                .scalars()
                .all()
            )
            assert len(holders) == 1, f"one advisory lock holder expected, found {holders}"
            assert conn.execute(
                text("SELECT pg_terminate_backend(:pid)"), {"pid": holders[0]}
            ).scalar()
        more = append_orders(store, 4, first=5)
        started = time.monotonic()
        assert b.run_once() == 4
        assert time.monotonic() - started < 5.0
    finally:
        a.close()  # closing a runner whose connection died must not raise
        b.close()
    assert model.counts(name) == expected_counts(store)
    assert sorted(model.applied(name)) == sorted(
        (e.stream_id, e.version) for e in store.read_all(event_types=COUNTED_TYPES)
    )
    assert more[-1] in model.applied(name)


# --- reset and live following ----------------------------------------------------------------


def test_reset_then_run_once_rebuilds_the_same_table(store: Any, model: OrderCounts) -> None:
    append_orders(store, 11)
    name = "order_counts"
    with ProjectionRunner(store, model.projection(name), batch_size=3, lock_timeout=5) as runner:
        assert runner.run_once() == 11
        built = model.counts(name)
        checkpoint = runner.checkpoint()

        runner.reset()
        assert runner.checkpoint() is None
        assert model.counts(name) == {}, "reset cleared the projection's state"

        assert runner.run_once() == 11
        assert model.counts(name) == built
        assert runner.checkpoint() == checkpoint
    assert_applied_once_each(model, name, store)


def test_reset_without_a_reset_callable_only_forgets_the_checkpoint(
    store: Any, model: OrderCounts
) -> None:
    append_orders(store, 4)
    seen: list[Key] = []
    projection = Projection("plain", lambda e, _c: seen.append((e.stream_id, e.version)))
    with ProjectionRunner(store, projection, lock_timeout=5) as runner:
        runner.run_once()
        runner.reset()
        assert runner.checkpoint() is None
        runner.run_once()
    everything = [(e.stream_id, e.version) for e in store.read_all()]
    assert seen == everything + everything


@pytest.mark.parametrize("stopped_by", ["event", "runner.stop"])
def test_run_follows_live_events_until_stopped(
    store: Any, model: OrderCounts, stopped_by: str
) -> None:
    append_orders(store, 3)
    name = "order_counts"
    apply = model.handler(name)
    handled = threading.Condition()
    count = 0

    def counting(event: RecordedEvent, connection: Any) -> None:
        nonlocal count
        apply(event, connection)
        with handled:
            count += 1
            handled.notify_all()

    runner = ProjectionRunner(store, model.projection(name, counting), poll_interval=0.2)
    stop = threading.Event()
    failures: list[BaseException] = []

    def follow() -> None:
        try:
            runner.run(stop if stopped_by == "event" else None)
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=follow, name="runner")
    thread.start()
    try:
        with handled:
            assert handled.wait_for(lambda: count >= 3, DEADLINE_SECONDS), "catch-up"
        append_orders(store, 4, first=3)
        with handled:
            assert handled.wait_for(lambda: count >= 7, DEADLINE_SECONDS), "live events"
        append_orders(store, 2, first=7)
        with handled:
            assert handled.wait_for(lambda: count >= 9, DEADLINE_SECONDS), "more live events"
    finally:
        if stopped_by == "event":
            stop.set()
        else:
            runner.stop()
        thread.join(DEADLINE_SECONDS)
        runner.close()
    assert not thread.is_alive(), "run() did not return after the stop request"
    assert not failures, failures
    assert count == 9
    assert model.counts(name) == expected_counts(store)
    assert_applied_once_each(model, name, store)


def test_memory_store_runners_lock_per_name() -> None:
    store = InMemoryEventStore()
    append_orders(store, 2)
    one = ProjectionRunner(store, Projection("one", lambda e, c: None), lock_timeout=0.2)
    other = ProjectionRunner(store, Projection("other", lambda e, c: None), lock_timeout=0.2)
    same = ProjectionRunner(store, Projection("one", lambda e, c: None), lock_timeout=0.2)
    try:
        assert one.run_once() == 2
        assert other.run_once() == 2, "a different name is not blocked"
        with pytest.raises(ProjectionLockedError):
            same.run_once()
    finally:
        one.close()
        other.close()
        same.close()
