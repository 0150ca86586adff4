"""Operational database failures as the library's errors, each saying what to do.

:func:`translated_errors` wraps the code that connects and runs statements; the
psycopg or SQLAlchemy exception it replaces stays chained as ``__cause__``.
Errors are told apart by SQLSTATE (psycopg's error classes). A refused login
is the exception: libpq reports a connection failure with the server's message
and no SQLSTATE, so :func:`_connect_failure` reads that (English) text for
authentication, connection slots and a missing database; a connection failure
it does not recognise is a :class:`DatabaseUnavailableError`, which shows the
message. Every error the server reports with a SQLSTATE becomes one of the
library's (see ``_by_class`` and the table in docs/reliability.md), except a
unique violation: appends turn it into a ConcurrencyError themselves.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import psycopg.errors
import sqlalchemy.exc

from eventstore.errors import (
    AppendOutcomeUnknownError,
    AuthenticationError,
    DatabaseNotFoundError,
    DatabaseUnavailableError,
    EventStoreError,
    OperationTimeoutError,
    PermissionDeniedError,
    SchemaError,
    ServerError,
    TooManyConnectionsError,
    TransactionConflictError,
    ValidationError,
)

OPERATIONAL_ERRORS: tuple[type[EventStoreError], ...] = (
    DatabaseUnavailableError,
    AuthenticationError,
    TooManyConnectionsError,
    DatabaseNotFoundError,
    OperationTimeoutError,
    TransactionConflictError,
)
"""The translated failures that may pass by themselves (a subscription or a
running projection retries after them)."""

SESSION_ENDED_SQLSTATES = frozenset(
    {
        "57P01",  # admin_shutdown: the server is shutting down, or pg_terminate_backend
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now: the server is starting up or shutting down
        "57P04",  # database_dropped
        "57P05",  # idle_session_timeout
        "25P03",  # idle_in_transaction_session_timeout
        "25P04",  # transaction_timeout (PostgreSQL 17)
    }
)
"""SQLSTATEs (outside class 08) with which the server ends the session: the
connection is gone, as if the network had dropped it."""

_SESSION_ENDED_ADVICE = {
    "57P04": (
        "the database was dropped: recreate it (CREATE DATABASE, then "
        "`eventstore migrate upgrade`) or point the URL at another one"
    ),
    "57P05": (
        "the server ended the session because it sat idle longer than the server's "
        "idle_session_timeout (a pooled connection left unused); reads are run again on a "
        "new connection by themselves. So that appends do not meet such a connection, "
        "recycle the store's connections before the server ends them: "
        "PostgresEventStore.from_url(url, pool_recycle=seconds shorter than "
        "idle_session_timeout), or test each one before use with pool_pre_ping=True"
    ),
    "25P03": (
        "the server ended the session because a transaction sat idle in it longer than "
        "idle_in_transaction_session_timeout; that transaction was rolled back: retry the "
        "whole transaction, and keep transactions short (do not wait on anything else "
        "between its statements)"
    ),
    "25P04": (
        "the server ended the session because a transaction ran longer than "
        "transaction_timeout; that transaction was rolled back: retry the whole transaction, "
        "make it shorter, or raise the limit"
    ),
}
"""What to do when the server ended the session for a reason of its own (not a
shutdown or a terminated backend, whose advice is to check the server)."""


def is_connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` (psycopg's or SQLAlchemy's) means the connection is gone:
    class 08, a session the server ended (:data:`SESSION_ENDED_SQLSTATES`), or a
    failure with no SQLSTATE on a connection that is now closed or broken. Only
    such failures are worth a retry on a new connection."""
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        exc = exc.orig if isinstance(exc.orig, BaseException) else exc
    if not isinstance(exc, psycopg.Error):
        return False
    sqlstate = exc.sqlstate
    if sqlstate is not None:
        return sqlstate.startswith("08") or sqlstate in SESSION_ENDED_SQLSTATES
    if not isinstance(exc, psycopg.OperationalError):
        return False
    connection = exc.pgconn
    return connection is None or connection.status != psycopg.pq.ConnStatus.OK


_SERVER_DOWN_ADVICE = (
    "check that the PostgreSQL server is running and that the host and port in the URL "
    "are right (and reachable: listen_addresses, firewall)"
)

_PG_HBA_ADVICE = (
    "check the user name and password in the URL; if they are right, the server's "
    "pg_hba.conf must allow password authentication for this user, database and host: "
    "find the file with SHOW hba_file; (for example /etc/postgresql/16/main/pg_hba.conf), "
    'change "peer" or "ident" to "scram-sha-256" (or "md5") on the matching line, '
    "then reload with SELECT pg_reload_conf();"
)

_SLOTS_ADVICE = (
    "each store opens up to pool_size + max_overflow connections (5 + 15 by default): "
    "lower them with PostgresEventStore.from_url(url, pool_size=..., max_overflow=...) or "
    "close idle connections (SELECT count(*) FROM pg_stat_activity; counts them), "
    "or raise the server's limit: ALTER SYSTEM SET max_connections = 200; and restart "
    "PostgreSQL (or ALTER ROLE / ALTER DATABASE ... CONNECTION LIMIT n)"
)

_GRANT_ADVICE = (
    "the role in the URL lacks a privilege the store needs: as the tables' owner (the role "
    "that ran the migrations) run `eventstore grant ROLE` (or eventstore.roles.grant_app_role)"
)

_LOCK_WAITERS = (
    "SELECT pid, state, wait_event_type, query FROM pg_stat_activity "
    "WHERE wait_event_type = 'Lock' OR state = 'idle in transaction';"
)

# Where libpq gives no SQLSTATE: the server's message for a refused login.
_AUTHENTICATION_TEXT = re.compile(
    r"authentication failed|no password supplied|no pg_hba\.conf entry|role \".*\" does not exist"
)
_SLOTS_TEXT = re.compile(r"too many connections|too many clients|connection slots are reserved")
_MISSING_DATABASE_TEXT = re.compile(r"database \".*\" does not exist")


@contextmanager
def translated_errors(
    *, connecting: bool = False, append_to: str | None = None, database: str | None = None
) -> Iterator[None]:
    """Re-raise the operational failures of the block as :class:`EventStoreError`.

    ``connecting``: the block only opens a connection (nothing was sent).
    ``append_to``: the block runs an append to that stream in autocommit, so a
    connection lost in it leaves the outcome unknown. ``database`` names the
    database for the advice when it does not exist.
    """
    try:
        yield
    except (psycopg.Error, sqlalchemy.exc.DBAPIError, sqlalchemy.exc.TimeoutError) as exc:
        error = translate(exc, connecting=connecting, append_to=append_to, database=database)
        if error is None:
            raise
        raise error from exc


def translate(
    exc: BaseException,
    *,
    connecting: bool = False,
    append_to: str | None = None,
    database: str | None = None,
) -> EventStoreError | None:
    """The library's error for ``exc``, or None when there is nothing useful to say."""
    if isinstance(exc, sqlalchemy.exc.TimeoutError):
        return _pool_timeout(exc)
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        if not isinstance(exc.orig, psycopg.Error):
            return None
        exc = exc.orig
    if not isinstance(exc, psycopg.Error):
        return None
    sqlstate = exc.sqlstate
    if sqlstate is None:
        if not isinstance(exc, psycopg.OperationalError):
            return None
        if connecting or _failed_to_connect(exc):
            return _connect_failure(exc, database)
        return _lost(first_line(exc), None, append_to)
    detail = exc.diag.message_primary or first_line(exc)
    if sqlstate in ("42P01", "42703"):  # undefined table, undefined column
        return SchemaError(
            f"the event store schema is missing or out of date ({detail}): "
            "run `eventstore migrate upgrade` or eventstore.migrations.upgrade(url)"
        )
    if sqlstate.startswith("28"):
        return AuthenticationError(
            f"the database server refused the login ({detail}): " + _PG_HBA_ADVICE
        )
    if sqlstate == "53300":
        return TooManyConnectionsError(
            f"the database server has no connection slot left ({detail}): " + _SLOTS_ADVICE
        )
    if sqlstate == "42501":
        return PermissionDeniedError(
            f"the database refused the statement ({detail}): "
            + (exc.diag.message_hint or _GRANT_ADVICE)
        )
    if sqlstate == "3D000":
        return _missing_database(detail, database)
    if sqlstate == "57014":
        return OperationTimeoutError(
            f"the statement was cancelled ({detail}): it ran longer than statement_timeout "
            "or was cancelled by another session, and wrote nothing. See what it waited for "
            f"({_LOCK_WAITERS}), retry later, or change the limit: "
            "PostgresEventStore.from_url(url, statement_timeout=seconds)",
            timeout="statement_timeout",
        )
    if sqlstate == "55P03":
        return OperationTimeoutError(
            f"the statement waited for a lock longer than lock_timeout ({detail}) and wrote "
            "nothing: another transaction holds a lock on the table; find it with "
            f"{_LOCK_WAITERS} retry later, or change the limit: "
            "PostgresEventStore.from_url(url, lock_timeout=seconds)",
            timeout="lock_timeout",
        )
    if sqlstate.startswith("08") or sqlstate in SESSION_ENDED_SQLSTATES:
        if connecting:
            return DatabaseUnavailableError(
                f"cannot connect to the database server ({detail}): {_SERVER_DOWN_ADVICE}; "
                "nothing was sent, so the call can be retried once the server is back"
            )
        return _lost(detail, sqlstate, append_to)
    if sqlstate == "23505":
        return None  # an append turns it into a ConcurrencyError itself
    return _by_class(sqlstate, detail)


_NOTHING_WRITTEN = (
    "nothing was written (a transaction of your own that the call ran in has failed: roll it back)"
)

_BY_SQLSTATE: dict[str, tuple[type[EventStoreError], str]] = {
    "25P02": (
        ValidationError,
        "the transaction of the connection passed to the store had already failed, so the "
        "server ignores every statement in it: roll it back and retry the whole transaction",
    ),
    "25006": (
        DatabaseUnavailableError,
        "the server accepts no writes (a standby, or default_transaction_read_only is on); "
        "nothing was written: point the URL at the primary server (after a failover: at "
        "the new primary) and retry",
    ),
    "53100": (
        ServerError,
        "the server is out of disk space; nothing was written: have its disk freed or "
        "grown, then retry",
    ),
    "53200": (
        ServerError,
        "the server ran out of memory; nothing was written: retry later, with smaller "
        "batches, or have the server's memory settings (work_mem) looked at",
    ),
    "XX001": (
        ServerError,
        "the server found corrupt data; nothing was written: do not retry blindly, have the "
        "server's log and the database checked (amcheck, a restore from backup)",
    ),
    "XX002": (
        ServerError,
        "the server found a corrupt index; nothing was written: do not retry blindly, have "
        "the server's log checked and the index rebuilt (REINDEX)",
    ),
}

_BY_CLASS: dict[str, tuple[type[EventStoreError], str]] = {
    "22": (
        ValidationError,
        f"the database refused a value of the call; {_NOTHING_WRITTEN}; fix the value",
    ),
    "23": (
        ValidationError,
        f"a constraint of the database refused the row; {_NOTHING_WRITTEN}; fix the call, "
        "or the constraint if it was added to the store's tables by hand",
    ),
    "25": (
        ValidationError,
        "the transaction of the connection passed to the store cannot run the statement; "
        f"{_NOTHING_WRITTEN} and retry the whole transaction",
    ),
    "40": (
        TransactionConflictError,
        "the server rolled the transaction back to resolve a conflict with another one "
        "(a deadlock or a serialization failure); nothing of it was written: retry the whole "
        "transaction (in a unit of work of your own, touch streams in the same order "
        "everywhere to avoid deadlocks)",
    ),
    "42": (
        SchemaError,
        "the database does not accept the store's statement: the server must be PostgreSQL 13 "
        "or newer and the tables those of the migrations (run `eventstore migrate upgrade` "
        "or eventstore.migrations.upgrade(url); do not change them by hand)",
    ),
    "53": (
        ServerError,
        "the server lacks a resource to run the statement (a configured limit); nothing was "
        "written: retry later, or have the server's log and limits looked at",
    ),
    "54": (
        ValidationError,
        f"the call goes past a limit of the server; {_NOTHING_WRITTEN}; make it smaller "
        "(fewer or smaller events per append, a smaller limit or batch_size)",
    ),
}

_SERVER_FAILED = (
    "the server failed the statement; nothing was written: have the server's log looked at, "
    "then retry"
)


def _by_class(sqlstate: str, detail: str) -> EventStoreError:
    """The error for a SQLSTATE the checks above do not name: by the exact code,
    else by its class (the first two characters), else a :class:`ServerError`."""
    error, advice = _BY_SQLSTATE.get(sqlstate) or _BY_CLASS.get(
        sqlstate[:2], (ServerError, _SERVER_FAILED)
    )
    message = f"{advice} ({detail}; SQLSTATE {sqlstate})"
    if error is ServerError:
        return ServerError(message, sqlstate=sqlstate)
    return error(message)


def _failed_to_connect(exc: psycopg.OperationalError) -> bool:
    # psycopg words every failure to open a connection "connection failed: ..."
    # (libpq gives no SQLSTATE then): callers that did not say where the error
    # came from still get the connect advice rather than "connection lost".
    return str(exc).startswith("connection failed")


def _connect_failure(exc: psycopg.Error, database: str | None) -> EventStoreError:
    detail = first_line(exc)
    text = str(exc)
    if _AUTHENTICATION_TEXT.search(text):
        return AuthenticationError(
            f"the database server refused the login ({detail}): " + _PG_HBA_ADVICE
        )
    if _SLOTS_TEXT.search(text):
        return TooManyConnectionsError(
            f"the database server has no connection slot left ({detail}): " + _SLOTS_ADVICE
        )
    if _MISSING_DATABASE_TEXT.search(text):
        return _missing_database(detail, database)
    return DatabaseUnavailableError(
        f"cannot connect to the database server ({detail}): {_SERVER_DOWN_ADVICE}; "
        "nothing was sent, so the call can be retried once the server is back"
    )


def _lost(detail: str, sqlstate: str | None, append_to: str | None) -> DatabaseUnavailableError:
    advice = _SESSION_ENDED_ADVICE.get(sqlstate or "")
    if append_to is not None:
        return AppendOutcomeUnknownError(
            f"the connection to the database server was lost while appending to stream "
            f"{append_to!r} ({detail}): the events may or may not have been committed. "
            "Do not retry blindly: once the server is back, reload the stream (its version "
            "and last events show whether the append is there) and append only what is "
            f"missing; {advice or _SERVER_DOWN_ADVICE}",
            stream_id=append_to,
        )
    if advice is not None:
        return DatabaseUnavailableError(
            f"the connection to the database server was lost ({detail}): {advice}"
        )
    return DatabaseUnavailableError(
        f"the connection to the database server was lost ({detail}): {_SERVER_DOWN_ADVICE}; "
        "the call can be retried once the server is back (a transaction of your own on that "
        "connection was rolled back: retry all of it)"
    )


def _missing_database(detail: str, database: str | None) -> DatabaseNotFoundError:
    name = f'"{database}"' if database else "<name>"
    return DatabaseNotFoundError(
        f"the database does not exist ({detail}): create it, as a user allowed to create "
        f"databases: CREATE DATABASE {name}; then create the tables: "
        "`eventstore migrate upgrade` or eventstore.migrations.upgrade(url); "
        "or fix the database name in the URL"
    )


def _pool_timeout(exc: sqlalchemy.exc.TimeoutError) -> OperationTimeoutError:
    detail = str(exc.args[0]) if exc.args else "pool timeout"
    return OperationTimeoutError(
        f"no pooled connection became free within pool_timeout ({detail}): every connection "
        "of the store's pool is in use. Hold connections for less time (end subscriptions "
        "and transactions you no longer need) or give the pool more room: "
        "PostgresEventStore.from_url(url, pool_size=..., max_overflow=..., pool_timeout=seconds)",
        timeout="pool_timeout",
    )


def first_line(exc: BaseException) -> str:
    """The first non-blank line of ``exc``'s message (of the driver's error a
    SQLAlchemy error wraps), or the exception's class name when it has none."""
    for line in str(getattr(exc, "orig", None) or exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__
