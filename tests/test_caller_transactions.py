"""Appends and snapshots inside the caller's own transaction, at every isolation
level: a conflict is always a ConcurrencyError that tells the truth.

PostgreSQL only (the in-memory store has no transactions of its own).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from _faults import THREAD_DEADLINE_SECONDS
from sqlalchemy import event, text
from sqlalchemy.engine import Connection

from eventstore import ANY, ConcurrencyError, NewEvent, PostgresEventStore

ISOLATION_LEVELS = ["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"]
SNAPSHOT_LEVELS = ["REPEATABLE READ", "SERIALIZABLE"]


def events(n: int, kind: str = "Happened") -> list[NewEvent]:
    return [NewEvent(kind, {"n": i}) for i in range(n)]


@contextmanager
def transaction(store: PostgresEventStore, isolation_level: str) -> Iterator[Connection]:
    """The caller's unit of work at ``isolation_level``, rolled back at the end."""
    engine = store.engine.execution_options(isolation_level=isolation_level)
    with engine.connect() as connection, connection.begin():
        yield connection


def count_appends(connection: Connection) -> list[str]:
    """Every append statement sent on ``connection`` from now on."""
    sent: list[str] = []

    def remember(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "INSERT INTO events" in statement:
            sent.append(statement)

    event.listen(connection, "before_cursor_execute", remember)
    return sent


# -- item 14: a snapshot older than the stream's head ---------------------------------------------


@pytest.mark.parametrize("isolation_level", ISOLATION_LEVELS)
def test_a_stale_transaction_is_told_the_stream_moved_on(
    event_store: PostgresEventStore, isolation_level: str
) -> None:
    event_store.append_events("s", events(1), expected_version=0)
    with transaction(event_store, isolation_level) as connection:
        assert len(event_store.load_events("s", connection=connection)) == 1  # takes the snapshot
        event_store.append_events("s", events(1, "Other"), expected_version=1)

        with pytest.raises(ConcurrencyError) as raised:
            event_store.append_events("s", events(1), expected_version=1, connection=connection)

        assert (raised.value.expected, raised.value.actual) == (1, 2)
        if isolation_level == "READ COMMITTED":
            assert raised.value.detail is None  # reload and retry the append: it will see v2
        else:
            assert raised.value.detail is not None
            assert "roll back and retry the whole transaction" in raised.value.detail
            assert "snapshot" in raised.value.detail
    assert event_store.stream_version("s") == 2


@pytest.mark.parametrize("isolation_level", SNAPSHOT_LEVELS)
def test_a_stale_transaction_expecting_the_true_head_is_not_told_a_stale_version(
    event_store: PostgresEventStore, isolation_level: str
) -> None:
    event_store.append_events("s", events(1), expected_version=0)
    with transaction(event_store, isolation_level) as connection:
        event_store.load_events("s", connection=connection)
        event_store.append_events("s", events(1, "Other"), expected_version=1)

        with pytest.raises(ConcurrencyError) as raised:
            event_store.append_events("s", events(1), expected_version=2, connection=connection)

        assert raised.value.actual == 2
        assert raised.value.detail is not None
        assert "roll back and retry the whole transaction" in raised.value.detail


@pytest.mark.parametrize("isolation_level", ISOLATION_LEVELS)
def test_any_in_a_stale_transaction_fails_at_once(
    event_store: PostgresEventStore, isolation_level: str
) -> None:
    event_store.append_events("s", events(1), expected_version=0)
    with transaction(event_store, isolation_level) as connection:
        event_store.load_events("s", connection=connection)
        event_store.append_events("s", events(2, "Other"), expected_version=1)
        sent = count_appends(connection)

        if isolation_level == "READ COMMITTED":
            # Each statement sees the newest head: ANY simply appends after it.
            assert (
                event_store.append_events(
                    "s", events(1), expected_version=ANY, connection=connection
                )
                == 4
            )
            return
        with pytest.raises(ConcurrencyError) as raised:
            event_store.append_events("s", events(1), expected_version=ANY, connection=connection)

        assert len(sent) == 1, f"{len(sent)} attempts: retrying cannot help a stale snapshot"
        assert (raised.value.expected, raised.value.actual) == (ANY, 3)
        assert raised.value.detail is not None
        assert "roll back and retry the whole transaction" in raised.value.detail
    assert event_store.stream_version("s") == 3


@pytest.mark.parametrize("isolation_level", ISOLATION_LEVELS)
def test_a_snapshot_save_that_conflicts_in_a_stale_transaction_is_a_concurrency_error(
    event_store: PostgresEventStore, isolation_level: str
) -> None:
    event_store.append_events("s", events(2), expected_version=0)
    with transaction(event_store, isolation_level) as connection:
        event_store.load_events("s", connection=connection)
        assert event_store.save_snapshot("s", 1, {"at": 1}) is True  # another writer's

        if isolation_level == "READ COMMITTED":
            assert event_store.save_snapshot("s", 2, {"at": 2}, connection=connection) is True
            return
        with pytest.raises(ConcurrencyError) as raised:
            event_store.save_snapshot("s", 2, {"at": 2}, connection=connection)
        assert raised.value.detail is not None
        assert "roll back and retry the whole transaction" in raised.value.detail
        assert raised.value.actual == 2
    snapshot = event_store.load_snapshot("s")
    assert snapshot is not None
    assert snapshot.version == 1


# -- item 13: two units of work that deadlock ----------------------------------------------------


@pytest.mark.parametrize("isolation_level", ISOLATION_LEVELS)
def test_two_units_of_work_appending_in_opposite_orders_get_a_concurrency_error(
    event_store: PostgresEventStore, isolation_level: str
) -> None:
    """A then B against B then A: PostgreSQL ends the deadlock by failing one
    append; the caller gets a ConcurrencyError saying to retry the whole
    transaction, and its transaction is still usable (the append's savepoint was
    rolled back) until the caller rolls it back."""
    engine = event_store.engine.execution_options(isolation_level=isolation_level)
    with engine.connect() as first, engine.connect() as second:
        units = {"first": (first, first.begin(), "b"), "second": (second, second.begin(), "a")}
        for connection in (first, second):
            # lock_timeout only keeps a broken run from hanging.
            connection.execute(text("SET LOCAL deadlock_timeout = '100ms'"))
            connection.execute(text("SET LOCAL lock_timeout = '10s'"))
        event_store.append_events("a", events(1), expected_version=0, connection=first)
        event_store.append_events("b", events(1), expected_version=0, connection=second)
        first_pid = first.execute(text("SELECT pg_backend_pid()")).scalar_one()
        outcomes: dict[str, Any] = {}
        done = threading.Semaphore(0)

        def append_other(name: str) -> None:
            connection, _, stream = units[name]
            try:
                outcomes[name] = event_store.append_events(
                    stream, events(1), expected_version=0, connection=connection
                )
            except Exception as exc:
                outcomes[name] = exc
            done.release()

        threads = {name: threading.Thread(target=append_other, args=(name,)) for name in units}
        threads["first"].start()
        wait_until_blocked(event_store, first_pid)
        threads["second"].start()
        assert done.acquire(timeout=THREAD_DEADLINE_SECONDS)
        (loser,) = outcomes
        error = outcomes[loser]
        assert isinstance(error, ConcurrencyError), repr(error)
        assert error.detail is not None
        assert "deadlock" in error.detail
        assert "roll back and retry the whole transaction" in error.detail
        connection, loser_tx, _ = units[loser]
        assert connection.execute(text("SELECT 1")).scalar_one() == 1  # usable, as documented
        loser_tx.rollback()
        for thread in threads.values():
            thread.join(THREAD_DEADLINE_SECONDS)
        (winner,) = set(units) - {loser}
        assert outcomes[winner] == 1, repr(outcomes[winner])
        units[winner][1].commit()
    # The winner's two appends are committed, the loser's rolled back.
    versions = {stream: event_store.stream_version(stream) for stream in ("a", "b")}
    assert versions == {"a": 1, "b": 1}


def wait_until_blocked(store: PostgresEventStore, pid: int) -> None:
    """Return once backend ``pid`` waits for a lock."""
    query = text("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = :pid")
    with store.engine.connect() as watcher:
        for _ in range(int(THREAD_DEADLINE_SECONDS * 100)):
            if watcher.execute(query, {"pid": pid}).scalar():
                return
            watcher.rollback()
            threading.Event().wait(0.01)
    raise AssertionError(f"backend {pid} never waited for a lock")


# -- the least-privileged role ----------------------------------------------------------------


@pytest.mark.parametrize("isolation_level", ISOLATION_LEVELS)
def test_the_granted_application_role_appends_and_snapshots_at_every_isolation_level(
    event_store: PostgresEventStore, app_role_database_url: str, isolation_level: str
) -> None:
    """At REPEATABLE READ and SERIALIZABLE the head row is locked (FOR KEY SHARE),
    which PostgreSQL allows only with UPDATE on a column: `eventstore grant` gives it,
    and a stale transaction is still told the truth."""
    with PostgresEventStore.from_url(app_role_database_url) as store:
        with transaction(store, isolation_level) as connection:
            store.append_events("granted", events(2), expected_version=0, connection=connection)
            assert store.save_snapshot("granted", 2, {"n": 2}, connection=connection)
            connection.commit()
        assert store.stream_version("granted") == 2
        with transaction(store, isolation_level) as connection:
            assert store.stream_version("granted") == 2
            store.load_events("granted", connection=connection)  # takes the snapshot
            store.append_events("granted", events(1), expected_version=2)
            with pytest.raises(ConcurrencyError) as raised:
                store.append_events("granted", events(1), expected_version=2, connection=connection)
            assert raised.value.actual == 3
