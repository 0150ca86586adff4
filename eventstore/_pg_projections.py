"""A projection's hold on PostgreSQL: its advisory lock, its transactions, its checkpoint."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING

import psycopg
import psycopg.errors
import sqlalchemy.exc
from psycopg.types.numeric import Int8
from sqlalchemy.engine import Connection

from eventstore._translate import OPERATIONAL_ERRORS
from eventstore.errors import ProjectionLockedError
from eventstore.feed import FeedPage
from eventstore.records import Position

if TYPE_CHECKING:
    from eventstore.postgres import PostgresEventStore

_PROJECTION_LOCK_NAMESPACE = 0x4553
"""First key of the two-key advisory locks that guard projections ("ES")."""

_LOCK_PROJECTION = "SELECT pg_advisory_lock(%(namespace)s, hashtext(%(name)s))"
_UNLOCK_PROJECTION = "SELECT pg_advisory_unlock(%(namespace)s, hashtext(%(name)s))"
LOAD_CHECKPOINT = (
    "SELECT transaction_id, position FROM projection_checkpoints WHERE name = %(name)s"
)
_SAVE_CHECKPOINT = """
INSERT INTO projection_checkpoints (name, transaction_id, position)
VALUES (%(name)s, %(transaction_id)s, %(position)s)
ON CONFLICT (name) DO UPDATE
    SET transaction_id = EXCLUDED.transaction_id,
        position = EXCLUDED.position,
        updated_at = now()
"""
_TERMINATE = "SELECT pg_terminate_backend(%(pid)s)"
_DELETE_CHECKPOINT = "DELETE FROM projection_checkpoints WHERE name = %(name)s"

RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    sqlalchemy.exc.OperationalError,
    *OPERATIONAL_ERRORS,
)
"""Errors a subscription or a running projection retries after (a lost connection)."""


class PostgresProjectionSession:
    """A dedicated connection holding a projection's session-level advisory lock.

    Batches run as transactions on the same connection, so if it dies the lock
    goes with it and the open batch can never commit.
    """

    checkpoint_each_event = False
    retryable: tuple[type[BaseException], ...] = RETRYABLE_ERRORS

    def __init__(self, store: PostgresEventStore, name: str, lock_timeout: float | None) -> None:
        self._store = store
        self._name = name
        self._lock_params = {"namespace": _PROJECTION_LOCK_NAMESPACE, "name": name}
        self._connection = store.engine.connect()
        self._closing = threading.Lock()
        try:
            driver = self._connection.connection.driver_connection
            self._backend_pid: int = driver.info.backend_pid  # type: ignore[union-attr]
            with self._connection.begin():
                timeout_ms = 0 if lock_timeout is None else max(1, int(lock_timeout * 1000))
                self._connection.exec_driver_sql(f"SET LOCAL lock_timeout = {timeout_ms}")
                self._connection.exec_driver_sql(_LOCK_PROJECTION, self._lock_params)
        except sqlalchemy.exc.OperationalError as exc:
            self._connection.close()
            if isinstance(exc.orig, psycopg.errors.LockNotAvailable):
                raise ProjectionLockedError(
                    f"projection {name!r} is being run elsewhere (no lock after "
                    f"{lock_timeout} s): stop the other runner or wait for it"
                ) from None
            raise
        except BaseException:
            self._connection.close()
            raise

    def transaction(self) -> AbstractContextManager[Connection]:
        return _begin(self._connection)

    def load_checkpoint(self, connection: Connection) -> Position | None:
        rows = self._store._fetch(LOAD_CHECKPOINT, {"name": self._name}, connection)
        return Position(rows[0][0], rows[0][1]) if rows else None

    def save_checkpoint(self, connection: Connection, position: Position) -> None:
        params = {
            "name": self._name,
            "transaction_id": Int8(position.transaction_id),
            "position": Int8(position.sequence),
        }
        self._store._fetch(_SAVE_CHECKPOINT, params, connection)

    def delete_checkpoint(self, connection: Connection) -> None:
        self._store._fetch(_DELETE_CHECKPOINT, {"name": self._name}, connection)

    def read(
        self,
        connection: Connection,
        after: Position | None,
        limit: int,
        event_types: list[str] | None,
    ) -> FeedPage:
        return self._store._feed_page(after, limit, event_types, None, connection)

    def stop(self) -> None:
        """End the session from the server's side, for the store's close(): the
        server releases the lock and rolls back a batch in flight. Safe from any
        thread (the session's own connection is not touched here)."""
        with self._closing:
            if self._connection.closed:
                return
            try:
                with self._store.engine.connect() as other:
                    other.exec_driver_sql(_TERMINATE, {"pid": self._backend_pid})
            except sqlalchemy.exc.DBAPIError:
                pass  # the server cannot be reached: the session is gone with it
            except sqlalchemy.exc.TimeoutError:
                pass  # no pooled connection to ask with: the runner releases the lock itself

    def close(self) -> None:
        with self._closing:
            self._close()

    def _close(self) -> None:
        connection = self._connection
        if connection.closed:
            return
        try:
            if connection.in_transaction():
                connection.rollback()
            connection.exec_driver_sql(_UNLOCK_PROJECTION, self._lock_params)
            connection.commit()
        except sqlalchemy.exc.DBAPIError:
            connection.invalidate()
        finally:
            connection.close()


@contextmanager
def _begin(connection: Connection) -> Iterator[Connection]:
    with connection.begin():
        yield connection
