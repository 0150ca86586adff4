"""Sessions the server ends, and other server-side failures, on the paths
applications take: the store's own pooled connections, a caller's connection,
subscriptions and projection runners. Each comes out as the library's error
saying what happened and what to do, writes nothing, and the store recovers."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from _faults import libpq_url, url_with
from sqlalchemy.engine import make_url

from eventstore import (
    NO_STREAM,
    NewEvent,
    PostgresEventStore,
    Projection,
    ProjectionRunner,
    ValidationError,
)
from eventstore.errors import (
    AppendOutcomeUnknownError,
    DatabaseNotFoundError,
    DatabaseUnavailableError,
    OperationTimeoutError,
)
from eventstore.migrations import upgrade

EVENT = NewEvent("Noted", {"n": 1})
SESSION_TIMEOUT_MS = 150
"""The server ends a session idle for longer than this (idle_session_timeout,
idle_in_transaction_session_timeout)."""
IDLE = SESSION_TIMEOUT_MS / 1000 * 3
"""How long a test leaves a connection idle so that the server ends it."""


def _store(url: str, **options: Any) -> PostgresEventStore:
    return PostgresEventStore.from_url(url, pool_size=1, max_overflow=0, **options)


def _count(url: str, stream_id: str) -> int:
    with psycopg.connect(libpq_url(url)) as connection:
        row = connection.execute(
            "SELECT count(*) FROM events WHERE stream_id = %s", (stream_id,)
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def stream_id(event_store: PostgresEventStore) -> str:
    """A fresh stream on the emptied test database."""
    return f"s-{uuid.uuid4().hex[:8]}"


# -- idle_session_timeout (57P05) ----------------------------------------------------------


def test_reads_after_idle_session_timeout_are_retried_on_a_new_connection(
    eventstore_database_url: str, stream_id: str
) -> None:
    """The server ends the store's only pooled connection after each idle spell;
    every read still succeeds (retried once on a fresh connection)."""
    url = url_with(eventstore_database_url, options=f"-c idle_session_timeout={SESSION_TIMEOUT_MS}")
    with _store(url) as store:
        assert store.append_events(stream_id, [EVENT], expected_version=NO_STREAM) == 1
        assert store.save_snapshot(stream_id, 1, {"n": 1})
        reads = {
            "stream_version": lambda: store.stream_version(stream_id),
            "load_events": lambda: [e.version for e in store.load_events(stream_id)],
            "iter_events": lambda: [e.version for e in store.iter_events(stream_id)],
            "load_snapshot": lambda: store.load_snapshot(stream_id).version,  # type: ignore[union-attr]
            # Other sessions on the shared server may hold the feed's horizon back:
            # the read must succeed, whatever it shows.
            "read_all": lambda: [e.stream_id for e in store.read_all()][:0],
        }
        results = {}
        for name, read in reads.items():
            time.sleep(IDLE)
            results[name] = read()
        assert results == {
            "stream_version": 1,
            "load_events": [1],
            "iter_events": [1],
            "load_snapshot": 1,
            "read_all": [],
        }


def test_an_append_after_idle_session_timeout_says_what_happened_and_writes_nothing(
    eventstore_database_url: str, stream_id: str
) -> None:
    url = url_with(eventstore_database_url, options=f"-c idle_session_timeout={SESSION_TIMEOUT_MS}")
    with _store(url) as store:
        store.append_events(stream_id, [EVENT], expected_version=NO_STREAM)
        time.sleep(IDLE)
        with pytest.raises(AppendOutcomeUnknownError) as raised:
            store.append_events(stream_id, [EVENT], expected_version=1)
        assert store.append_events(stream_id, [EVENT], expected_version=1) == 2

    message = str(raised.value)
    assert "idle_session_timeout" in message
    assert "pool_recycle" in message
    assert "pool_pre_ping=True" in message
    assert "reload the stream" in message
    assert "server is running" not in message
    assert isinstance(raised.value.__cause__, psycopg.errors.IdleSessionTimeout)
    assert _count(eventstore_database_url, stream_id) == 2


# -- idle_in_transaction_session_timeout (25P03) -------------------------------------------


def test_a_caller_transaction_ended_by_idle_in_transaction_timeout_says_retry_it_all(
    eventstore_database_url: str, stream_id: str
) -> None:
    url = url_with(
        eventstore_database_url,
        options=f"-c idle_in_transaction_session_timeout={SESSION_TIMEOUT_MS}",
    )
    with _store(url) as store:
        with store.engine.connect() as connection:
            connection.begin()
            store.append_events(stream_id, [EVENT], expected_version=0, connection=connection)
            time.sleep(IDLE)  # the caller's transaction sits idle: the server ends it
            with pytest.raises(DatabaseUnavailableError) as raised:
                store.load_events(stream_id, connection=connection)
        assert _count(eventstore_database_url, stream_id) == 0
        # The store's own calls go on, on a new connection.
        assert store.append_events(stream_id, [EVENT], expected_version=NO_STREAM) == 1
        assert store.stream_version(stream_id) == 1

    message = str(raised.value)
    assert type(raised.value) is DatabaseUnavailableError
    assert "idle_in_transaction_session_timeout" in message
    assert "rolled back" in message
    assert "retry the whole transaction" in message
    assert "server is running" not in message
    assert isinstance(raised.value.__cause__, psycopg.errors.IdleInTransactionSessionTimeout)


def test_a_pooled_connection_the_server_ended_while_idle_in_transaction_is_replaced(
    eventstore_database_url: str, stream_id: str
) -> None:
    """psycopg raises 25P03 as an InternalError, on a closed connection: the store
    must drop that connection from its pool like any lost one."""
    url = url_with(
        eventstore_database_url,
        options=f"-c idle_in_transaction_session_timeout={SESSION_TIMEOUT_MS}",
    )
    with _store(url, pool_reset_on_return=None) as store:
        _leave_in_a_transaction(store)
        time.sleep(IDLE)
        assert store.stream_version(stream_id) == 0
        assert store.append_events(stream_id, [EVENT], expected_version=NO_STREAM) == 1
        assert [e.version for e in store.load_events(stream_id)] == [1]


def test_a_pooled_connection_returned_in_a_transaction_does_not_break_the_store(
    eventstore_database_url: str, stream_id: str
) -> None:
    with _store(eventstore_database_url, pool_reset_on_return=None) as store:
        _leave_in_a_transaction(store)
        assert store.append_events(stream_id, [EVENT], expected_version=NO_STREAM) == 1
        assert store.stream_version(stream_id) == 1
    assert _count(eventstore_database_url, stream_id) == 1


def _leave_in_a_transaction(store: PostgresEventStore) -> None:
    """Return the pool's connection with a transaction open (as code that uses the
    driver connection and a pool without reset-on-return can)."""
    raw = store.engine.raw_connection()
    raw.cursor().execute("SELECT 1")
    raw.close()


# -- a dropped database --------------------------------------------------------------------


def test_a_call_after_the_database_was_dropped_says_it_does_not_exist(
    scratch_database_url: str, eventstore_database_url: str
) -> None:
    upgrade(scratch_database_url)
    with _store(scratch_database_url) as store:
        assert store.stream_version("s-1") == 0
        name = make_url(scratch_database_url).database
        with psycopg.connect(libpq_url(eventstore_database_url), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        with pytest.raises(DatabaseNotFoundError) as raised:
            store.stream_version("s-1")
    assert "CREATE DATABASE" in str(raised.value)


# -- the pool's limit, on every path -------------------------------------------------------


@pytest.fixture
def exhausted_store(
    event_store: PostgresEventStore, eventstore_database_url: str
) -> Iterator[PostgresEventStore]:
    """A store whose only pooled connection is held by someone else."""
    with PostgresEventStore.from_url(
        eventstore_database_url, pool_size=1, max_overflow=0, pool_timeout=0.2
    ) as store:
        held = store.engine.raw_connection()
        try:
            yield store
        finally:
            held.close()


def test_an_exhausted_pool_raises_operation_timeout_on_subscribe(
    exhausted_store: PostgresEventStore,
) -> None:
    with pytest.raises(OperationTimeoutError) as raised:
        exhausted_store.subscribe()
    assert raised.value.timeout == "pool_timeout"


def test_an_exhausted_pool_raises_operation_timeout_on_a_projection_run(
    exhausted_store: PostgresEventStore,
) -> None:
    runner = ProjectionRunner(exhausted_store, Projection("p", lambda event, connection: None))
    with pytest.raises(OperationTimeoutError) as raised:
        runner.run_once()
    assert raised.value.timeout == "pool_timeout"
    with pytest.raises(OperationTimeoutError):
        runner.checkpoint()


# -- bad ports -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app@127.0.0.1:99999/db", "99999"),
        ("postgresql://app@127.0.0.1:0/db", "0"),
        ("postgresql://app@127.0.0.1:abc/db", "abc"),
        ("postgresql://app@127.0.0.1:-5/db", "-5"),
        ("postgresql://app@127.0.0.1/db?port=70000", "70000"),
        ("postgresql://app@127.0.0.1/db?port=5432,x", "x"),
    ],
)
def test_a_bad_port_is_refused_naming_it(url: str, shown: str) -> None:
    with pytest.raises(ValidationError) as raised:
        PostgresEventStore.from_url(url)
    message = str(raised.value)
    assert f"port {shown!r}" in message or f"port {shown}" in message
    assert "1 to 65535" in message
