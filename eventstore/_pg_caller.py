"""The caller's unit of work on PostgreSQL: what ``connection=`` may be, and how a
statement runs inside it. Private.

``connection=`` takes four kinds of object, all joined, none ever committed or
rolled back by the store:

- a SQLAlchemy :class:`~sqlalchemy.engine.Connection` (``store.transaction()``
  yields one; ``engine.begin()`` gives one);
- a SQLAlchemy :class:`~sqlalchemy.orm.Session` or
  :class:`~sqlalchemy.orm.scoped_session` (Flask-SQLAlchemy's ``db.session``):
  its transaction, through ``session.connection()``, which begins it if needed;
- a psycopg 3 :class:`psycopg.Connection` (Django's ``connections[alias].connection``):
  in autocommit each statement is its own transaction; otherwise the statement
  joins the open transaction (psycopg begins one if none is).

:func:`join` turns each into the object a statement runs on (a SQLAlchemy
Connection or a psycopg Connection) and refuses anything else with a
:class:`~eventstore.errors.ValidationError` that says what to pass.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg.errors
import sqlalchemy.exc
from psycopg.adapt import Loader
from psycopg.types.datetime import TimestamptzLoader
from psycopg.types.json import JsonbLoader, JsonLoader
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, scoped_session

from eventstore.errors import ValidationError

Joined = Connection | psycopg.Connection[Any]
"""What a statement of a caller's unit of work runs on."""

_SNAPSHOT_ISOLATION = frozenset({"repeatable read", "serializable"})
_SNAPSHOT_LEVELS = frozenset(
    {psycopg.IsolationLevel.REPEATABLE_READ, psycopg.IsolationLevel.SERIALIZABLE}
)
_DEFAULT_ISOLATION_KEY = "eventstore.default_isolation"
"""Where a pooled SQLAlchemy connection remembers the server's default isolation."""

_STORE_LOADERS: tuple[tuple[str, type[Loader]], ...] = (
    ("jsonb", JsonbLoader),
    ("json", JsonLoader),
    ("timestamptz", TimestamptzLoader),
)
"""psycopg's own loaders for what the store reads (metadata, created_at), put back
on the store's cursor over whatever a framework registered on its connection."""

_ACCEPTED = (
    "a SQLAlchemy Connection (store.transaction() yields one), Session or scoped_session "
    "(Flask-SQLAlchemy's db.session), or a psycopg 3 Connection (Django's "
    "connections[alias].connection)"
)


def join(connection: object) -> Joined:
    """The connection a statement of ``connection``'s unit of work runs on.

    A Session's transaction is begun if it has none (``session.connection()``).
    Raises :class:`ValidationError` for anything else, for a connection that has
    ended, for a session bound to no engine, and for a SQLAlchemy connection
    whose driver is not psycopg 3 (the store's statements are psycopg's).
    """
    if isinstance(connection, Connection):
        return _checked_sqlalchemy(connection)
    if isinstance(connection, psycopg.Connection):
        if connection.closed or connection.broken:
            raise ValidationError(
                "connection is a psycopg connection that has been closed: pass an open one"
            )
        return connection
    if isinstance(connection, (Session, scoped_session)):
        try:
            return _checked_sqlalchemy(connection.connection())
        except sqlalchemy.exc.UnboundExecutionError:
            raise ValidationError(
                "connection is a Session bound to no engine: bind it to the store's "
                "database (sessionmaker(bind=engine)) or pass session.connection()"
            ) from None
        except sqlalchemy.exc.PendingRollbackError:
            raise ValidationError(
                "connection is a Session whose transaction failed earlier (PendingRollbackError): "
                "call session.rollback() and retry the whole unit of work"
            ) from None
    raise ValidationError(f"connection must be {_ACCEPTED}, not {type(connection).__name__}")


def _checked_sqlalchemy(connection: Connection) -> Connection:
    if connection.closed or connection.invalidated:
        raise ValidationError(
            "connection has ended (closed, or its with block is over): "
            "open a new one with store.transaction()"
        )
    dialect = connection.dialect
    if dialect.name != "postgresql" or dialect.driver != "psycopg":
        raise ValidationError(
            f"connection is on {dialect.name}+{dialect.driver}: pg-eventstore needs "
            "PostgreSQL through psycopg 3; build the engine from a postgresql+psycopg:// URL"
        )
    return connection


def in_autocommit(connection: Joined) -> bool:
    """Whether each statement on ``connection`` commits on its own."""
    if isinstance(connection, psycopg.Connection):
        return connection.autocommit
    driver = connection.connection.driver_connection
    return bool(getattr(driver, "autocommit", False))


def execute(
    connection: Joined, sql: str, params: dict[str, Any], *, savepoint: bool = False
) -> list[Any]:
    """Run ``sql`` on ``connection`` inside the caller's transaction and return its rows,
    in a savepoint when asked (a failure then leaves the transaction usable).

    psycopg's and SQLAlchemy's driver errors come out as psycopg raised them.
    """
    if isinstance(connection, psycopg.Connection):
        return _execute_on_driver(connection, sql, params, savepoint=savepoint)
    try:
        if savepoint:
            with connection.begin_nested():
                return _rows(connection.exec_driver_sql(sql, params))
        return _rows(connection.exec_driver_sql(sql, params))
    except sqlalchemy.exc.DBAPIError as exc:
        if isinstance(exc.orig, psycopg.Error):
            raise exc.orig from None  # one kind of error on every path: psycopg's
        raise


def _rows(result: Any) -> list[Any]:
    return list(result.fetchall()) if result.returns_rows else []


def _execute_on_driver(
    driver: psycopg.Connection[Any], sql: str, params: dict[str, Any], *, savepoint: bool
) -> list[Any]:
    """``sql`` on a caller's psycopg connection, with the store's own loaders.

    A framework may have registered loaders of its own on the connection (Django
    loads ``jsonb`` as text, and ``timestamptz`` as naive datetimes when its
    ``USE_TZ`` is False); the store's cursor loads them as psycopg does. In
    autocommit the statement is its own transaction and needs no savepoint.
    """
    cursor = psycopg.Cursor(driver)
    for type_name, loader in _STORE_LOADERS:
        cursor.adapters.register_loader(type_name, loader)
    with cursor:
        if not savepoint or driver.autocommit:
            cursor.execute(sql, params, prepare=True)
        else:
            with _driver_savepoint(driver, "eventstore_call"):
                cursor.execute(sql, params, prepare=True)
        return cursor.fetchall() if cursor.description is not None else []


@contextmanager
def _driver_savepoint(driver: psycopg.Connection[Any], name: str) -> Iterator[None]:
    """A savepoint in the transaction of a psycopg connection not in autocommit
    (psycopg begins the transaction if none is open). Plain SQL rather than
    psycopg's ``transaction()``, which would commit a transaction it began: the
    caller owns that transaction (a framework's, such as Django's atomic block)."""
    with psycopg.Cursor(driver) as cursor:
        cursor.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            if not driver.closed and not driver.broken:
                cursor.execute(f"ROLLBACK TO SAVEPOINT {name}")
                cursor.execute(f"RELEASE SAVEPOINT {name}")
            raise
        cursor.execute(f"RELEASE SAVEPOINT {name}")


@contextmanager
def nested(connection: object) -> Iterator[Any]:
    """A savepoint in ``connection``'s unit of work, yielding ``connection``: what is
    written in the block is kept when it ends and rolled back when it raises (and
    committed or not with the caller's transaction). On a psycopg connection in
    autocommit, the block is a transaction of its own."""
    if isinstance(connection, (Session, scoped_session)):
        join(connection)  # refuses what cannot be joined, before the block
        with connection.begin_nested():
            yield connection
        return
    joined = join(connection)
    if isinstance(joined, Connection):
        with joined.begin_nested():
            yield connection
    elif joined.autocommit:
        with joined.transaction():
            yield connection
    else:
        with _driver_savepoint(joined, "eventstore_block"):
            yield connection


def reads_from_a_snapshot(connection: Joined) -> bool:
    """Whether the caller's transaction on ``connection`` runs at REPEATABLE READ or
    SERIALIZABLE: its isolation as set on the driver connection, else the server's
    default, read once per pooled connection. (A level set with a ``SET
    TRANSACTION`` statement of the caller's own is not seen.)"""
    if isinstance(connection, psycopg.Connection):
        level = connection.isolation_level
        if level is not None:
            return level in _SNAPSHOT_LEVELS
        default = _DRIVER_DEFAULTS.get(connection)
        if default is None:
            default = _server_default(connection)
            if default is None:
                return False  # the transaction has failed: the statement that follows says so
            _DRIVER_DEFAULTS[connection] = default
        return default in _SNAPSHOT_ISOLATION
    try:
        pooled = connection.connection
    except sqlalchemy.exc.SQLAlchemyError:
        return False  # the statement that follows raises the right error
    level = getattr(pooled.driver_connection, "isolation_level", None)
    if level is not None:
        return level in _SNAPSHOT_LEVELS
    default = pooled.info.get(_DEFAULT_ISOLATION_KEY)
    if default is None:
        try:
            rows = connection.exec_driver_sql(
                "SELECT current_setting('default_transaction_isolation')"
            ).fetchall()
        except sqlalchemy.exc.DBAPIError:
            return False  # the transaction has failed: the statement that follows says so
        default = pooled.info[_DEFAULT_ISOLATION_KEY] = str(rows[0][0])
    return default in _SNAPSHOT_ISOLATION


_DRIVER_DEFAULTS: weakref.WeakKeyDictionary[psycopg.Connection[Any], str] = (
    weakref.WeakKeyDictionary()
)
"""The server's default isolation, read once per caller's psycopg connection."""


def _server_default(driver: psycopg.Connection[Any]) -> str | None:
    """The server's default_transaction_isolation as this session sees it (one SHOW
    on the caller's connection)."""
    try:
        with psycopg.Cursor(driver) as cursor:
            cursor.execute("SHOW default_transaction_isolation")
            row = cursor.fetchone()
    except psycopg.Error:
        return None
    return None if row is None else str(row[0])
