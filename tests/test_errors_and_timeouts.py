"""Operational failures, staged for real, come out as the library's errors with
what to do, the original exception chained and the database unchanged; the
store's statement_timeout and lock_timeout turn a blocked append into an error."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import psycopg.errors
import pytest
import sqlalchemy.exc
from _staging import closed_port, execute, libpq_url, require_password
from sqlalchemy.engine import URL

from eventstore import NO_STREAM, NewEvent, PostgresEventStore, ValidationError
from eventstore.errors import (
    AppendOutcomeUnknownError,
    AuthenticationError,
    ConcurrencyError,
    DatabaseNotFoundError,
    DatabaseUnavailableError,
    EventStoreError,
    OperationTimeoutError,
    SchemaError,
    TooManyConnectionsError,
)
from eventstore.migrations import upgrade
from eventstore.urls import normalize_url

APP_ROLE = "errors_app"
APP_PASSWORD = "correct-lantern-77"
WRONG_PASSWORD = "wrong-lantern-13"

FAST_FAILURE_SECONDS = 5.0
"""A failure that should be immediate must come well within this."""

EVENT = NewEvent("OrderPlaced", {"total": 10})


def _event_count(url: str | URL) -> int:
    with psycopg.connect(libpq_url(url)) as connection:
        row = connection.execute("SELECT count(*) FROM events").fetchone()
    assert row is not None
    return int(row[0])


def _versions(url: str, stream_id: str) -> list[int]:
    with psycopg.connect(libpq_url(url)) as connection:
        rows = connection.execute(
            "SELECT version FROM events WHERE stream_id = %s ORDER BY version", (stream_id,)
        ).fetchall()
    return [row[0] for row in rows]


def _show(store: PostgresEventStore, setting: str) -> str:
    with store.engine.connect() as connection:
        return str(connection.exec_driver_sql(f"SHOW {setting}").scalar())


@pytest.fixture(scope="module")
def password_role(own_server: str) -> URL:
    url = require_password(own_server, APP_ROLE, APP_PASSWORD, wrong=WRONG_PASSWORD)
    execute(own_server, f"GRANT SELECT, INSERT ON events TO {APP_ROLE}")
    return url


@pytest.fixture
def migrated_url(scratch_database_url: str) -> str:
    upgrade(scratch_database_url)
    return scratch_database_url


@pytest.fixture
def table_lock(migrated_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A connection holding ``LOCK TABLE events IN EXCLUSIVE MODE`` (readers pass,
    writers wait) until the test rolls it back, or the fixture does."""
    holder = psycopg.connect(libpq_url(migrated_url))
    try:
        holder.execute("LOCK TABLE events IN EXCLUSIVE MODE")
        yield holder
    finally:
        holder.rollback()
        holder.close()


# -- connecting -------------------------------------------------------------------------


def test_wrong_password_raises_authentication_error_with_pg_hba_advice(
    own_server: str, password_role: URL
) -> None:
    before = _event_count(own_server)

    with (
        PostgresEventStore.from_url(password_role.set(password=WRONG_PASSWORD)) as store,
        pytest.raises(AuthenticationError) as raised,
    ):
        store.append_events("order-1", [EVENT], expected_version=NO_STREAM)

    message = str(raised.value)
    assert isinstance(raised.value, EventStoreError)
    assert "password authentication failed" in message
    assert "pg_hba.conf" in message
    assert "SELECT pg_reload_conf();" in message
    assert isinstance(raised.value.__cause__, psycopg.OperationalError)
    assert WRONG_PASSWORD not in message
    assert _event_count(own_server) == before
    with PostgresEventStore.from_url(password_role) as store:
        assert store.stream_version("order-1") == 0


def test_no_connection_slot_left_raises_too_many_connections_with_pool_advice(
    own_server: str, password_role: URL
) -> None:
    execute(own_server, f"ALTER ROLE {APP_ROLE} CONNECTION LIMIT 1")
    try:
        with (
            psycopg.connect(libpq_url(password_role)),
            PostgresEventStore.from_url(password_role) as store,
            pytest.raises(TooManyConnectionsError) as raised,
        ):
            store.append_events("order-2", [EVENT], expected_version=NO_STREAM)
    finally:
        execute(own_server, f"ALTER ROLE {APP_ROLE} CONNECTION LIMIT -1")

    message = str(raised.value)
    assert "too many connections" in message
    assert "max_connections" in message
    assert "pool_size" in message
    assert "max_overflow" in message
    assert isinstance(raised.value.__cause__, psycopg.OperationalError)
    assert _versions(own_server, "order-2") == []


def test_missing_database_raises_database_not_found_with_create_database_advice(
    eventstore_database_url: str,
) -> None:
    name = f"es_missing_{uuid.uuid4().hex[:8]}"
    url = normalize_url(eventstore_database_url).set(database=name)

    with PostgresEventStore.from_url(url) as store, pytest.raises(DatabaseNotFoundError) as raised:
        store.load_events("order-1")

    assert f'CREATE DATABASE "{name}"' in str(raised.value)
    assert "eventstore migrate upgrade" in str(raised.value)
    assert isinstance(raised.value.__cause__, psycopg.OperationalError)
    with psycopg.connect(libpq_url(eventstore_database_url)) as connection:
        found = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        assert found.fetchone() is None


def test_unmigrated_database_raises_schema_error_naming_the_migration(
    scratch_database_url: str,
) -> None:
    with (
        PostgresEventStore.from_url(scratch_database_url) as store,
        pytest.raises(SchemaError) as raised,
    ):
        store.append_events("order-1", [EVENT], expected_version=NO_STREAM)

    assert 'relation "events" does not exist' in str(raised.value)
    assert "eventstore.migrations.upgrade(url)" in str(raised.value)
    assert isinstance(raised.value.__cause__, psycopg.errors.UndefinedTable)
    with psycopg.connect(libpq_url(scratch_database_url)) as connection:
        row = connection.execute("SELECT to_regclass('events')").fetchone()
    assert row == (None,)


def test_closed_port_raises_database_unavailable_quickly() -> None:
    port = closed_port()
    url = f"postgresql://postgres@127.0.0.1:{port}/app?connect_timeout=3"

    started = time.monotonic()
    with (
        PostgresEventStore.from_url(url) as store,
        pytest.raises(DatabaseUnavailableError) as raised,
    ):
        store.append_events("order-1", [EVENT], expected_version=NO_STREAM)
    elapsed = time.monotonic() - started

    message = str(raised.value)
    assert elapsed < FAST_FAILURE_SECONDS
    assert type(raised.value) is DatabaseUnavailableError  # nothing was sent: not unknown
    assert f'"127.0.0.1", port {port} failed: Connection refused' in message
    assert "the PostgreSQL server is running" in message
    assert "host and port" in message
    assert "can be retried once the server is back" in message
    assert isinstance(raised.value.__cause__, psycopg.OperationalError)


def _terminate_store_connection(admin_url: str, application_name: str) -> None:
    """Terminate the backend of the store's pooled connection and wait until it is gone."""
    with psycopg.connect(libpq_url(admin_url), autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (application_name,),
        ).fetchall()
        assert rows == [(True,)]
        deadline = time.monotonic() + 10
        while admin.execute(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = %s", (application_name,)
        ).fetchone():
            assert time.monotonic() < deadline, "the terminated backend did not exit"
            time.sleep(0.02)


def test_terminated_connection_raises_unavailable_and_an_append_says_reload_first(
    migrated_url: str,
) -> None:
    name = f"errors-{uuid.uuid4().hex[:8]}"
    url = normalize_url(migrated_url).update_query_dict({"application_name": name})
    # notify=False: no notifier connection beside the pooled one this test terminates.
    with PostgresEventStore.from_url(url, pool_size=1, max_overflow=0, notify=False) as store:
        store.append_events("order-1", [EVENT], expected_version=NO_STREAM)
        _terminate_store_connection(migrated_url, name)

        with pytest.raises(AppendOutcomeUnknownError) as append_lost:
            store.append_events("order-1", [EVENT], expected_version=1)

        assert store.stream_version("order-1") == 1  # the store recovered by itself
        _terminate_store_connection(migrated_url, name)

        # A read on the dead connection is run again on a new one: no error.
        assert [event.version for event in store.load_events("order-1")] == [1]

        with store.engine.connect() as connection:
            connection.begin()
            store.load_events("order-1", connection=connection)
            _terminate_store_connection(migrated_url, name)
            # A caller's connection is the caller's: never replaced behind its back.
            with pytest.raises(DatabaseUnavailableError) as read_lost:
                store.load_events("order-1", connection=connection)

        assert store.append_events("order-1", [EVENT], expected_version=1) == 2

    message = str(append_lost.value)
    assert isinstance(append_lost.value, DatabaseUnavailableError)
    assert append_lost.value.stream_id == "order-1"
    assert "may or may not have been committed" in message
    assert "reload the stream" in message
    assert isinstance(append_lost.value.__cause__, psycopg.OperationalError)
    assert type(read_lost.value) is DatabaseUnavailableError
    assert "the connection to the database server was lost" in str(read_lost.value)
    assert "can be retried once the server is back" in str(read_lost.value)
    assert _versions(migrated_url, "order-1") == [1, 2]


def test_unique_violation_still_raises_concurrency_error(migrated_url: str) -> None:
    with PostgresEventStore.from_url(migrated_url) as store:
        store.append_events("order-1", [EVENT], expected_version=NO_STREAM)
        with pytest.raises(ConcurrencyError):
            store.append_events("order-1", [EVENT], expected_version=NO_STREAM)

    assert _versions(migrated_url, "order-1") == [1]


# -- timeouts ---------------------------------------------------------------------------


def test_from_url_sets_the_timeouts_on_every_connection_next_to_other_options(
    migrated_url: str,
) -> None:
    with PostgresEventStore.from_url(
        migrated_url,
        statement_timeout=1.5,
        lock_timeout=0.25,
        connect_args={"options": "-c work_mem=8MB"},
    ) as store:
        assert _show(store, "statement_timeout") == "1500ms"
        assert _show(store, "lock_timeout") == "250ms"
        assert _show(store, "work_mem") == "8MB"

    in_url = normalize_url(migrated_url).update_query_dict({"options": "-c work_mem=9MB"})
    with PostgresEventStore.from_url(in_url, lock_timeout=2) as store:
        assert _show(store, "lock_timeout") == "2s"
        assert _show(store, "work_mem") == "9MB"
        assert _show(store, "statement_timeout") == "0"

    with PostgresEventStore.from_url(migrated_url) as store:
        assert _show(store, "lock_timeout") == "0"


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "1", True, 10**10])
def test_timeouts_that_are_not_a_number_of_seconds_are_refused(
    migrated_url: str, bad: object
) -> None:
    with pytest.raises(ValidationError, match="statement_timeout"):
        PostgresEventStore.from_url(migrated_url, statement_timeout=bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="lock_timeout"):
        PostgresEventStore.from_url(migrated_url, lock_timeout=bad)  # type: ignore[arg-type]


def test_append_blocked_by_a_table_lock_waits_without_timeouts(
    migrated_url: str, table_lock: psycopg.Connection[tuple[object, ...]]
) -> None:
    """The staging is real: with no timeout the append waits on the lock, and
    goes through when the lock is released."""
    name = f"blocked-{uuid.uuid4().hex[:8]}"
    url = normalize_url(migrated_url).update_query_dict({"application_name": name})
    results: list[object] = []
    with PostgresEventStore.from_url(url) as store:
        appender = threading.Thread(
            target=lambda: results.append(
                store.append_events("order-1", [EVENT], expected_version=NO_STREAM)
            )
        )
        appender.start()
        with psycopg.connect(libpq_url(migrated_url), autocommit=True) as admin:
            deadline = time.monotonic() + 10
            while not admin.execute(
                "SELECT 1 FROM pg_stat_activity "
                "WHERE application_name = %s AND wait_event_type = 'Lock'",
                (name,),
            ).fetchone():
                assert time.monotonic() < deadline, "the append never waited for the lock"
                time.sleep(0.02)
        assert results == []
        table_lock.rollback()
        appender.join(timeout=10)

    assert results == [1]


@pytest.mark.parametrize(
    ("options", "timeout", "cause"),
    [
        ({"lock_timeout": 0.2}, "lock_timeout", psycopg.errors.LockNotAvailable),
        ({"statement_timeout": 0.3}, "statement_timeout", psycopg.errors.QueryCanceled),
    ],
)
def test_append_blocked_by_a_table_lock_times_out_with_a_clear_error(
    migrated_url: str,
    table_lock: psycopg.Connection[tuple[object, ...]],
    options: dict[str, Any],
    timeout: str,
    cause: type[Exception],
) -> None:
    with PostgresEventStore.from_url(migrated_url, **options) as store:
        store_before = store.stream_version("order-1")
        started = time.monotonic()
        with pytest.raises(OperationTimeoutError) as raised:
            store.append_events("order-1", [EVENT], expected_version=NO_STREAM)
        elapsed = time.monotonic() - started
        table_lock.rollback()

        message = str(raised.value)
        assert elapsed < FAST_FAILURE_SECONDS
        assert raised.value.timeout == timeout
        assert timeout in message
        assert f"PostgresEventStore.from_url(url, {timeout}=seconds)" in message
        assert "wrote nothing" in message
        assert isinstance(raised.value.__cause__, cause)
        assert store_before == 0
        assert _versions(migrated_url, "order-1") == []
        assert store.append_events("order-1", [EVENT], expected_version=NO_STREAM) == 1


def test_exhausted_pool_raises_operation_timeout_naming_pool_timeout(migrated_url: str) -> None:
    with PostgresEventStore.from_url(
        migrated_url, pool_size=1, max_overflow=0, pool_timeout=0.2
    ) as store:
        held = store.engine.raw_connection()
        try:
            with pytest.raises(OperationTimeoutError) as raised:
                store.append_events("order-1", [EVENT], expected_version=NO_STREAM)
        finally:
            held.close()
        assert store.append_events("order-1", [EVENT], expected_version=NO_STREAM) == 1

    assert raised.value.timeout == "pool_timeout"
    assert "pool_size" in str(raised.value)
    assert "pool_timeout=seconds" in str(raised.value)
    assert isinstance(raised.value.__cause__, sqlalchemy.exc.TimeoutError)
    assert _versions(migrated_url, "order-1") == [1]


def test_an_append_waiting_on_an_uncommitted_append_to_the_same_stream_times_out(
    migrated_url: str,
) -> None:
    """Another unit of work appended version 1 and has not committed: an append at
    the same version waits on it, and gives up after lock_timeout."""
    with (
        PostgresEventStore.from_url(migrated_url) as first,
        PostgresEventStore.from_url(migrated_url, lock_timeout=0.2) as second,
    ):
        with first.engine.connect() as connection:
            connection.begin()
            first.append_events(
                "order-1", [EVENT], expected_version=NO_STREAM, connection=connection
            )
            started = time.monotonic()
            with pytest.raises(OperationTimeoutError) as raised:
                second.append_events("order-1", [EVENT], expected_version=NO_STREAM)
            elapsed = time.monotonic() - started
            assert _versions(migrated_url, "order-1") == []
            connection.commit()
        # The uncommitted append won once committed; the next call sees it.
        with pytest.raises(ConcurrencyError):
            second.append_events("order-1", [EVENT], expected_version=NO_STREAM)
        assert second.append_events("order-1", [EVENT], expected_version=1) == 2

    assert raised.value.timeout == "lock_timeout"
    assert "wrote nothing" in str(raised.value)
    assert isinstance(raised.value.__cause__, psycopg.errors.LockNotAvailable)
    assert elapsed < FAST_FAILURE_SECONDS
    assert _versions(migrated_url, "order-1") == [1, 2]
