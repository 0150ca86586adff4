"""A projection's hold on PostgreSQL: its advisory lock, its transactions, its checkpoint."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg.errors
import sqlalchemy.exc
from psycopg.types.numeric import Int8
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, RootTransaction

from eventstore._backend import FeedPage, UndecodableEvent
from eventstore._sql import (
    DELETE_CHECKPOINT,
    DELETE_SKIPPED,
    LOAD_CHECKPOINT,
    LOCK_FOR_TRANSACTION,
    LOCK_PROJECTION,
    PROJECTION_LOCK_NAMESPACE,
    RECORD_SKIPPED,
    SAVE_CHECKPOINT,
    TERMINATE,
    UNLOCK_PROJECTION,
)
from eventstore.errors import DatabaseUnavailableError, ProjectionError
from eventstore.records import Position

Execute = Callable[[str, dict[str, Any], Connection], list[Any]]
"""``execute(sql, params, connection)``: run one statement in ``connection``'s
transaction and return its rows, with the store's error translation."""

ReadFeed = Callable[[Connection, Position | None, int, list[str] | None], FeedPage]
"""``read_feed(connection, after, limit, event_types)``: a page of the feed read
in ``connection``'s transaction."""

_HANDLER_ENDED_TRANSACTION = (
    "a projection handler must not commit or roll back the connection it is given: the "
    "runner commits each batch together with the checkpoint. Write through the connection "
    "and return (or raise, which rolls the batch back); for work that must commit on its "
    "own, use a connection of your own. This batch was rolled back"
)


class PostgresProjectionSession:
    """A connection of its own holding a projection's session-level advisory lock.

    The connection is taken from the store's engine and detached from its pool:
    it is closed for real, never handed back with the lock still held. Its
    transactions run at READ COMMITTED whatever the engine's default (on an
    AUTOCOMMIT engine a batch would not be atomic). Each transaction first takes
    the lock for itself as well (at once, since the session holds it) and refuses
    to go on when another session has it, so no batch runs while another runner
    holds the lock (after a silent reconnect, or behind a pooler in transaction
    mode, whose next transaction may land on another server session). A handler
    that commits, rolls back or closes that connection is refused with
    :class:`~eventstore.errors.ProjectionError`. Batches run on this connection,
    so if it dies the lock goes with it and the open batch can never commit.
    """

    checkpoint_each_event = False

    def __init__(self, engine: Engine, execute: Execute, read_feed: ReadFeed, name: str) -> None:
        self._engine = engine
        self._execute = execute
        self._read_feed = read_feed
        self._name = name
        self._lock_params = {"namespace": PROJECTION_LOCK_NAMESPACE, "name": name}
        self._ending = False  # True while the session itself commits or rolls back
        self._refused = False  # True once the handler tried to end a transaction
        self._closing = threading.Lock()
        self._connection = engine.connect()
        try:
            # Set while still pooled (SQLAlchemy keeps the setting with the pool entry).
            self._connection.execution_options(isolation_level="READ COMMITTED")
            driver = self._connection.connection.dbapi_connection
            self._backend_pid: int = driver.info.backend_pid  # type: ignore[union-attr]
            self._connection.detach()
            event.listen(self._connection, "commit", self._refuse_end)
            event.listen(self._connection, "rollback", self._refuse_end)
        except BaseException:
            self.close()
            raise

    def acquire(self, wait: float) -> bool:
        timeout_ms = max(1, round(wait * 1000))
        try:
            with self._begin() as connection:
                # The wait is bounded here, whatever statement_timeout the store sets.
                connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
                connection.exec_driver_sql(f"SET LOCAL lock_timeout = {timeout_ms}")
                connection.exec_driver_sql(LOCK_PROJECTION, self._lock_params)
        except sqlalchemy.exc.OperationalError as exc:
            if isinstance(exc.orig, psycopg.errors.LockNotAvailable):
                return False
            raise
        return True

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self._begin() as connection:
            if not self._execute(LOCK_FOR_TRANSACTION, self._lock_params, connection)[0][0]:
                raise ProjectionError(
                    f"the runner of projection {self._name!r} no longer holds its lock on its "
                    "database session, so it handles nothing. Most likely the connection goes "
                    "through a pooler in transaction mode (PgBouncer's pool_mode = transaction), "
                    "which runs each transaction on any server session: session-level advisory "
                    "locks do not work there. Connect projection runners to PostgreSQL directly "
                    "or through a pool in session mode. (A handler that released the lock, with "
                    "pg_advisory_unlock_all() or DISCARD ALL, does the same: it must not.)"
                )
            yield connection

    def load_checkpoint(self, connection: Connection) -> Position | None:
        rows = self._execute(LOAD_CHECKPOINT, {"name": self._name}, connection)
        return Position(rows[0][0], rows[0][1]) if rows else None

    def save_checkpoint(self, connection: Connection, position: Position) -> None:
        params = {
            "name": self._name,
            "transaction_id": Int8(position.transaction_id),
            "position": Int8(position.sequence),
        }
        if not self._execute(SAVE_CHECKPOINT, params, connection):
            raise ProjectionError(
                f"the checkpoint of projection {self._name!r} is already at or past {position}: "
                "another runner handled these events while this one worked, and a checkpoint "
                "never moves backwards. This batch was rolled back; the next call takes the "
                "lock again and goes on from the stored checkpoint (look for a second runner "
                "that bypassed the lock, such as one behind a pooler in transaction mode)"
            )

    def delete_checkpoint(self, connection: Connection) -> None:
        self._execute(DELETE_CHECKPOINT, {"name": self._name}, connection)
        self._execute(DELETE_SKIPPED, {"name": self._name}, connection)

    def record_skipped(self, connection: Connection, event: UndecodableEvent) -> None:
        params = {
            "name": self._name,
            "transaction_id": Int8(event.position.transaction_id),
            "position": Int8(event.position.sequence),
            "stream_id": event.stream_id,
            "version": Int8(event.version),
            "event_type": event.event_type,
            "error": event.error_text,
        }
        self._execute(RECORD_SKIPPED, params, connection)

    def read(
        self,
        connection: Connection,
        after: Position | None,
        limit: int,
        event_types: list[str] | None,
    ) -> FeedPage:
        return self._read_feed(connection, after, limit, event_types)

    def stop(self) -> None:
        """End the session from the server's side, for the store's close(): the
        server releases the lock and rolls back a batch in flight. Safe from any
        thread (the session's own connection is not touched here: psycopg's close
        from another thread is not)."""
        with self._closing:
            if self._connection.closed:
                return
            try:
                with self._engine.connect() as other:
                    other.exec_driver_sql(TERMINATE, {"pid": self._backend_pid})
            except sqlalchemy.exc.DBAPIError:
                pass  # the server cannot be reached: the session is gone with it
            except sqlalchemy.exc.TimeoutError:
                pass  # no pooled connection to ask with: the runner releases the lock itself

    def close(self) -> None:
        """Unlock (so a waiting runner gets the lock at once) and close the
        connection for real; a broken connection is just closed, and the server
        releases the lock with the session."""
        with self._closing:
            self._close()

    def _close(self) -> None:
        connection = self._connection
        if connection.closed:
            return
        self._ending = True
        try:
            if not (connection.invalidated or self._refused or connection.in_transaction()):
                connection.exec_driver_sql(UNLOCK_PROJECTION, self._lock_params)
                connection.commit()
        except sqlalchemy.exc.SQLAlchemyError:
            pass  # closing the connection ends the session, and the lock with it
        finally:
            connection.close()

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        """A transaction on the session's connection, which must be the one that
        took the lock: a lost connection is never silently replaced."""
        connection = self._connection
        if connection.closed or connection.invalidated:
            raise DatabaseUnavailableError(
                f"the connection of projection {self._name!r} was lost: the runner takes the "
                "lock again on its next call"
            )
        if self._refused:
            raise ProjectionError(_HANDLER_ENDED_TRANSACTION)
        transaction = connection.begin()
        try:
            yield connection
        except BaseException as exc:
            if not self._refused:
                self._rollback(transaction)
            elif not isinstance(exc, ProjectionError):
                # What failed after the handler's refused commit (SQLAlchemy's
                # PendingRollbackError, say) comes from it: say so.
                raise ProjectionError(_HANDLER_ENDED_TRANSACTION) from exc
            raise
        if self._refused:
            # SQLAlchemy no longer tracks the transaction the handler tried to end: it
            # is rolled back by the server when the runner closes this session.
            raise ProjectionError(_HANDLER_ENDED_TRANSACTION)
        self._ending = True
        try:
            transaction.commit()
        finally:
            self._ending = False

    def _rollback(self, transaction: RootTransaction) -> None:
        self._ending = True
        try:
            transaction.rollback()
        except sqlalchemy.exc.SQLAlchemyError:
            pass  # the runner closes the session, and the server rolls back what is open
        finally:
            self._ending = False

    def _refuse_end(self, connection: Connection) -> None:
        """The commit and rollback listener: only the session ends its transactions."""
        if self._ending:
            return
        self._refused = True
        raise ProjectionError(_HANDLER_ENDED_TRANSACTION)
