"""Sessions the server ends, and other server-side failures, on the paths
applications take: the store's own pooled connections, a caller's connection,
subscriptions and projection runners. Each comes out as the library's error
saying what happened and what to do, writes nothing, and the store recovers."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy.exc
from _faults import libpq_url, url_with
from _staging import execute, require_password
from sqlalchemy import create_engine, event
from sqlalchemy.engine import make_url

from eventstore import (
    ANY,
    NO_STREAM,
    NewEvent,
    PostgresEventStore,
    Projection,
    ProjectionRunner,
    ValidationError,
)
from eventstore._translate import translate
from eventstore.errors import (
    AppendOutcomeUnknownError,
    AuthenticationError,
    DatabaseNotFoundError,
    DatabaseUnavailableError,
    OperationTimeoutError,
    PermissionDeniedError,
    SchemaError,
    ServerError,
    TooManyConnectionsError,
    TransactionConflictError,
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


def test_an_exhausted_pool_raises_operation_timeout_from_a_subscriptions_read(
    exhausted_store: PostgresEventStore,
) -> None:
    subscription = exhausted_store.subscribe()  # needs no pooled connection
    with subscription, pytest.raises(OperationTimeoutError) as raised:
        next(subscription)
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


# -- every SQLSTATE class the store can meet ----------------------------------------------

SQLSTATE_TABLE: list[tuple[str, type[Exception], str]] = [
    ("08006", DatabaseUnavailableError, "can be retried once the server is back"),
    ("22P05", ValidationError, "nothing was written"),
    ("22003", ValidationError, "nothing was written"),
    ("23514", ValidationError, "constraint"),
    ("25P02", ValidationError, "roll it back"),
    ("25006", DatabaseUnavailableError, "primary"),
    ("25P03", DatabaseUnavailableError, "idle_in_transaction_session_timeout"),
    ("25P04", DatabaseUnavailableError, "transaction_timeout"),
    ("28P01", AuthenticationError, "pg_hba.conf"),
    ("3D000", DatabaseNotFoundError, "CREATE DATABASE"),
    ("40001", TransactionConflictError, "retry the whole transaction"),
    ("40P01", TransactionConflictError, "retry the whole transaction"),
    ("42501", PermissionDeniedError, "eventstore grant"),
    ("42P01", SchemaError, "eventstore migrate upgrade"),
    ("42883", SchemaError, "PostgreSQL 13"),
    ("53100", ServerError, "disk"),
    ("53200", ServerError, "memory"),
    ("53300", TooManyConnectionsError, "max_connections"),
    ("53400", ServerError, "limit"),
    ("54000", ValidationError, "smaller"),
    ("55P03", OperationTimeoutError, "lock_timeout"),
    ("55006", ServerError, "retry"),
    ("57014", OperationTimeoutError, "statement_timeout"),
    ("57P01", DatabaseUnavailableError, "server is running"),
    ("57P04", DatabaseUnavailableError, "dropped"),
    ("57P05", DatabaseUnavailableError, "idle_session_timeout"),
    ("58030", ServerError, "server's log"),
    ("XX000", ServerError, "server's log"),
    ("XX001", ServerError, "corrupt"),
    ("P0001", ServerError, "server's log"),
]


@pytest.mark.parametrize(("sqlstate", "expected", "phrase"), SQLSTATE_TABLE)
def test_each_sqlstate_class_becomes_a_typed_error_that_says_what_to_do(
    sqlstate: str, expected: type[Exception], phrase: str
) -> None:
    cause = psycopg.errors.lookup(sqlstate)("what the server said")
    error = translate(cause)
    assert type(error) is expected, f"{sqlstate}: {error!r}"
    assert phrase in str(error), str(error)
    assert "what the server said" in str(error)
    if isinstance(error, ServerError):
        assert error.sqlstate == sqlstate


def test_a_unique_violation_is_left_to_the_append_that_turns_it_into_a_conflict() -> None:
    assert translate(psycopg.errors.UniqueViolation("duplicate key")) is None


def test_a_deadlock_between_two_caller_transactions_is_a_transaction_conflict(
    eventstore_database_url: str, event_store: PostgresEventStore
) -> None:
    """Two units of work append to the same two streams in opposite orders."""
    with PostgresEventStore.from_url(eventstore_database_url, pool_size=2) as store:
        for stream in ("a", "b"):
            store.append_events(stream, [EVENT], expected_version=NO_STREAM)
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def unit_of_work(first: str, second: str) -> None:
            try:
                with store.engine.begin() as connection:
                    store.append_events(first, [EVENT], expected_version=ANY, connection=connection)
                    barrier.wait(5)
                    store.append_events(
                        second, [EVENT], expected_version=ANY, connection=connection
                    )
            except Exception as exc:
                errors.append(exc)

        threads = [
            threading.Thread(target=unit_of_work, args=pair) for pair in (("a", "b"), ("b", "a"))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        assert [type(error) for error in errors] == [TransactionConflictError], errors
        assert isinstance(errors[0].__cause__, psycopg.errors.DeadlockDetected)
        assert "retry the whole transaction" in str(errors[0])
        # The winner's two events are stored, the loser's none.
        assert store.stream_version("a") + store.stream_version("b") == 4


def test_a_call_in_a_caller_transaction_that_already_failed_says_roll_it_back(
    event_store: PostgresEventStore,
) -> None:
    with event_store.engine.connect() as connection:
        connection.begin()
        with pytest.raises(sqlalchemy.exc.DataError):
            connection.exec_driver_sql("SELECT 1 / 0")
        with pytest.raises(ValidationError) as raised:
            event_store.append_events("s-1", [EVENT], expected_version=0, connection=connection)
    assert "roll it back" in str(raised.value)
    assert event_store.stream_version("s-1") == 0


def test_an_append_to_a_read_only_server_says_to_use_the_primary(
    event_store: PostgresEventStore, eventstore_database_url: str
) -> None:
    url = url_with(eventstore_database_url, options="-c default_transaction_read_only=on")
    with _store(url) as store:
        assert store.stream_version("s-1") == 0
        with pytest.raises(DatabaseUnavailableError) as raised:
            store.append_events("s-1", [EVENT], expected_version=NO_STREAM)
    assert type(raised.value) is DatabaseUnavailableError
    assert "primary" in str(raised.value)
    assert event_store.stream_version("s-1") == 0


# -- how applications deploy: a schema of their own, recycled and re-authenticated pools ---


def test_tables_in_a_schema_of_their_own_reached_through_search_path(
    scratch_database_url: str,
) -> None:
    with psycopg.connect(libpq_url(scratch_database_url), autocommit=True) as admin:
        admin.execute("CREATE SCHEMA orders_store")
    url = url_with(scratch_database_url, options="-csearch_path=orders_store")
    upgrade(url)
    with PostgresEventStore.from_url(url) as store:
        assert store.append_events("order-1", [EVENT, EVENT], expected_version=NO_STREAM) == 2
        assert [event.version for event in store.load_events("order-1")] == [1, 2]
        assert store.save_snapshot("order-1", 2, {"lines": 2})
        assert store.load_snapshot("order-1").state == {"lines": 2}  # type: ignore[union-attr]
        assert [event.version for event in store.read_all(stream_prefix="order-")] in ([], [1, 2])
        with ProjectionRunner(store, Projection("p", lambda event, connection: None)) as runner:
            runner.run_once()
    with psycopg.connect(libpq_url(scratch_database_url)) as check:
        placed = check.execute(
            "SELECT to_regclass('orders_store.events') IS NOT NULL, "
            "to_regclass('public.events') IS NULL, "
            "to_regclass('orders_store.projection_checkpoints') IS NOT NULL"
        ).fetchone()
        assert placed == (True, True, True)
        rows = check.execute("SELECT count(*) FROM orders_store.events").fetchone()
        assert rows == (2,)


def test_connections_older_than_pool_recycle_are_replaced_and_calls_go_on(
    eventstore_database_url: str, stream_id: str
) -> None:
    application = f"es_recycle_{uuid.uuid4().hex[:8]}"
    url = url_with(eventstore_database_url, application_name=application)
    pids: list[int] = []
    with psycopg.connect(libpq_url(eventstore_database_url), autocommit=True) as admin:

        def backend() -> int:
            rows = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application,)
            ).fetchall()
            assert len(rows) == 1, rows
            return int(rows[0][0])

        # notify=False: no notifier connection (outside the pool, never recycled).
        with _store(url, pool_recycle=0.3, notify=False) as store:
            for version in range(3):
                assert store.append_events(stream_id, [EVENT], expected_version=version)
                pids.append(backend())
                time.sleep(0.5)
            assert store.stream_version(stream_id) == 3
    assert len(set(pids)) == 3, f"a connection outlived pool_recycle: {pids}"


ROTATING_ROLE = "es_rotating"


def test_a_password_callback_on_a_shared_engine_follows_a_rotated_password(
    own_server: str,
) -> None:
    """Credentials that rotate (a secrets manager, cloud IAM tokens): the engine
    asks for the password each time it opens a connection."""
    password = {"current": "first-secret-1"}
    url = require_password(own_server, ROTATING_ROLE, password["current"], wrong="nope")
    execute(own_server, f"GRANT SELECT, INSERT ON events, snapshots TO {ROTATING_ROLE}")
    engine = create_engine(url.set(password=None), pool_size=1, max_overflow=0)

    @event.listens_for(engine, "do_connect")
    def provide_password(dialect: Any, conn_rec: Any, cargs: Any, cparams: Any) -> None:
        cparams["password"] = password["current"]

    static = PostgresEventStore.from_url(url)  # the password fixed in the URL
    try:
        store = PostgresEventStore(engine)
        assert store.stream_version("rotating") == 0
        password["current"] = "second-secret-2"
        execute(own_server, f"ALTER ROLE {ROTATING_ROLE} PASSWORD '{password['current']}'")
        engine.dispose()  # connections are reopened from now on (as after pool_recycle)
        assert store.append_events("rotating", [EVENT], expected_version=NO_STREAM) == 1
        assert store.stream_version("rotating") == 1
        with pytest.raises(AuthenticationError):
            static.stream_version("rotating")
    finally:
        static.close()
        engine.dispose()
