"""Erasing a stream while the application keeps writing to it: appends in
autocommit and in the caller's transactions (READ COMMITTED, REPEATABLE READ),
and snapshot saves. After an erase a stream starts again at version 1, and no
snapshot of the erased events survives.

PostgreSQL only (erasure exists only there); the test database's role owns the
tables, as erasing requires.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

import pytest
from _faults import THREAD_DEADLINE_SECONDS
from sqlalchemy import text

from eventstore import (
    ANY,
    ConcurrencyError,
    NewEvent,
    OperationTimeoutError,
    PostgresEventStore,
    ValidationError,
    erasure,
)
from eventstore.erasure import erase_stream

ROUNDS = 50
APPENDS_PER_WRITER = 4


def one(label: str) -> list[NewEvent]:
    return [NewEvent("Written", {"label": label})]


def run_together(*workers: Callable[[], None]) -> list[BaseException]:
    """Run ``workers`` in threads released together; what they raised."""
    barrier = threading.Barrier(len(workers))
    errors: list[BaseException] = []

    def run(worker: Callable[[], None]) -> None:
        try:
            barrier.wait(THREAD_DEADLINE_SECONDS)
            worker()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(worker,)) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(THREAD_DEADLINE_SECONDS)
        assert not thread.is_alive(), "a worker hung"
    return errors


def test_appends_racing_an_erase_leave_the_stream_contiguous(
    event_store: PostgresEventStore,
) -> None:
    """Writers append (autocommit; caller's transactions at READ COMMITTED and
    REPEATABLE READ that read the stream first) while the stream is erased:
    afterwards its versions are exactly 1..n, in every round."""
    store = event_store
    broken: list[tuple[int, list[int]]] = []
    refused = 0
    for round_number in range(ROUNDS):
        stream_id = f"person-{round_number}"
        store.append_events(stream_id, one("seed") * 3, expected_version=0)
        conflicts: list[ConcurrencyError] = []

        def autocommit(stream_id: str = stream_id) -> None:
            for n in range(APPENDS_PER_WRITER):
                store.append_events(stream_id, one(f"a{n}"), expected_version=ANY)

        def eraser(stream_id: str = stream_id) -> None:
            threading.Event().wait(random.uniform(0, 0.01))
            erase_stream(store.engine, stream_id)

        errors = run_together(
            autocommit,
            in_transactions(store, stream_id, "READ COMMITTED", conflicts),
            in_transactions(store, stream_id, "REPEATABLE READ", conflicts),
            eraser,
        )
        assert errors == [], errors
        for conflict in conflicts:
            assert conflict.detail is not None
            assert "roll back and retry the whole transaction" in conflict.detail
        refused += len(conflicts)
        versions = [event.version for event in store.load_events(stream_id)]
        if versions != list(range(1, len(versions) + 1)):
            broken.append((round_number, versions))
    assert broken == [], f"{len(broken)} of {ROUNDS} streams are not contiguous: {broken[:3]}"
    print(f"{ROUNDS} rounds, 0 non-contiguous streams, {refused} stale transactions refused")


def in_transactions(
    store: PostgresEventStore,
    stream_id: str,
    isolation_level: str,
    conflicts: list[ConcurrencyError],
) -> Callable[[], None]:
    """A writer of units of work that read the stream (taking their snapshot)
    and then append to it; the ConcurrencyErrors they met go to ``conflicts``."""
    engine = store.engine.execution_options(isolation_level=isolation_level)

    def write() -> None:
        for n in range(APPENDS_PER_WRITER):
            with engine.connect() as connection, connection.begin():
                store.load_events(stream_id, connection=connection)
                try:
                    store.append_events(
                        stream_id, one(f"t{n}"), expected_version=ANY, connection=connection
                    )
                except ConcurrencyError as conflict:
                    conflicts.append(conflict)
                    connection.rollback()

    return write


@pytest.mark.parametrize("isolation_level", [None, "READ COMMITTED", "REPEATABLE READ"])
def test_snapshots_racing_an_erase_never_survive_it(
    event_store: PostgresEventStore, isolation_level: str | None
) -> None:
    """A writer saves snapshots at versions 1, 2, 3 (in autocommit, or in its own
    transaction that read the stream first) while the stream is erased: no
    snapshot of the erased person survives, in every round."""
    store = event_store
    survivors: list[int] = []
    stale: list[str | None] = []
    for round_number in range(ROUNDS):
        stream_id = f"person-{round_number}"
        store.append_events(stream_id, one("seed") * 3, expected_version=0)

        def save(stream_id: str = stream_id) -> None:
            for version in (1, 2, 3):
                try:
                    if isolation_level is None:
                        store.save_snapshot(stream_id, version, {"name": "ada", "v": version})
                        continue
                    engine = store.engine.execution_options(isolation_level=isolation_level)
                    with engine.connect() as connection, connection.begin():
                        store.load_events(stream_id, connection=connection)
                        store.save_snapshot(
                            stream_id, version, {"name": "ada", "v": version}, connection=connection
                        )
                except ValidationError:
                    pass  # erased first: nothing to snapshot
                except ConcurrencyError as conflict:  # erased after the transaction's snapshot
                    stale.append(conflict.detail)

        def eraser(stream_id: str = stream_id) -> None:
            threading.Event().wait(random.uniform(0, 0.005))
            erase_stream(store.engine, stream_id)

        errors = run_together(save, eraser)
        assert errors == [], errors
        if store.load_snapshot(stream_id) is not None:
            survivors.append(round_number)
    assert survivors == [], f"{len(survivors)} of {ROUNDS} rounds kept the erased snapshot"
    assert all(detail and "roll back and retry" in detail for detail in stale), stale
    print(f"{ROUNDS} rounds, 0 surviving snapshots, {len(stale)} stale transactions refused")


@pytest.mark.parametrize(
    ("deadlock_timeout", "victim"), [("5s", "erase"), ("100ms", "unit of work")]
)
def test_an_erase_deadlocked_with_a_unit_of_work_is_retried(
    event_store: PostgresEventStore, deadlock_timeout: str, victim: str
) -> None:
    """A unit of work that saved a snapshot (holding ``snapshots``) and then
    appends (wanting ``events``) while an erase holds ``events`` and waits for
    ``snapshots``: the deadlock ends in a typed error for one side, and the erase
    completes (retried if it was the one failed). The side whose deadlock_timeout
    runs out first is the one PostgreSQL fails (the erase's is the server's, 1 s)."""
    store = event_store
    store.append_events("person", one("seed") * 2, expected_version=0)
    store.append_events("other", one("seed"), expected_version=0)
    outcome: dict[str, Any] = {}
    with store.engine.connect() as connection:
        transaction = connection.begin()
        connection.execute(text(f"SET LOCAL deadlock_timeout = '{deadlock_timeout}'"))
        store.save_snapshot("person", 2, {"name": "ada"}, connection=connection)
        pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()

        def erase() -> None:
            try:
                outcome["erased"] = erase_stream(store.engine, "person")
            except Exception as exc:
                outcome["erased"] = exc

        eraser = threading.Thread(target=erase)
        eraser.start()
        wait_for_lock_waiter(store, exclude=pid)
        detail: str | None = "committed"
        try:
            store.append_events("other", one("more"), expected_version=1, connection=connection)
            transaction.commit()
        except ConcurrencyError as conflict:
            detail = conflict.detail
            transaction.rollback()
        eraser.join(THREAD_DEADLINE_SECONDS)
    assert detail is not None
    if victim == "erase":
        assert detail == "committed"
    else:
        assert "deadlock" in detail
    erased = outcome["erased"]
    assert not isinstance(erased, Exception), repr(erased)
    assert erased.events == 2
    assert store.load_events("person") == []
    assert store.load_snapshot("person") is None


def wait_for_lock_waiter(store: PostgresEventStore, *, exclude: int) -> None:
    """Return once another backend of this database waits for a lock."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND pid <> :pid"
    )
    with store.engine.connect() as watcher:
        for _ in range(int(THREAD_DEADLINE_SECONDS * 100)):
            if watcher.execute(query, {"pid": exclude}).scalar_one():
                return
            watcher.rollback()
            threading.Event().wait(0.01)
    raise AssertionError("the erase never waited for a lock")


def test_an_erase_behind_a_long_transaction_lets_writers_through_and_then_gives_up(
    event_store: PostgresEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A unit of work that appended and stays open keeps the erase from its lock.
    Writers that arrive meanwhile wait behind the erase only until its attempt
    gives up (``LOCK_TIMEOUT``); after the last attempt the erase raises
    OperationTimeoutError, naming the way to find the blocker, and deletes nothing."""
    monkeypatch.setattr(erasure, "ATTEMPTS", 2)
    store = event_store
    store.append_events("person", one("seed") * 2, expected_version=0)
    finished: list[str] = []
    outcome: dict[str, Any] = {}
    with store.engine.connect() as blocker, blocker.begin():
        store.append_events("other", one("open"), expected_version=0, connection=blocker)
        blocker_pid = blocker.execute(text("SELECT pg_backend_pid()")).scalar_one()

        def erase() -> None:
            try:
                erase_stream(store.engine, "person")
            except Exception as exc:
                outcome["erase"] = exc
            finished.append("erase")

        eraser = threading.Thread(target=erase)
        eraser.start()
        wait_for_lock_waiter(store, exclude=blocker_pid)
        store.append_events("third", one("meanwhile"), expected_version=0)  # waits <= 1 s
        finished.append("append")
        eraser.join(THREAD_DEADLINE_SECONDS)
    assert finished == ["append", "erase"]
    error = outcome["erase"]
    assert isinstance(error, OperationTimeoutError)
    assert error.timeout == "lock_timeout"
    assert "nothing was deleted" in str(error)
    assert "pg_stat_activity" in str(error)
    assert [event.version for event in store.load_events("person")] == [1, 2]
