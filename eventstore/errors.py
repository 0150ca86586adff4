"""The exceptions raised by pg-eventstore.

Every error the library raises derives from :class:`EventStoreError`::

    EventStoreError
     +-- ConcurrencyError       the stream was not at the expected version
     |    +-- TransactionConflictError  a deadlock, a serialization failure or a stale
     |                                  snapshot: retry the whole transaction
     +-- SerializationError     a payload or snapshot state cannot be encoded
     +-- DeserializationError   stored bytes cannot be decoded
     +-- SchemaError            the tables are missing or not at the expected revision
     +-- ValidationError        a bad argument (also a ValueError); nothing was written
     +-- ProjectionLockedError  another runner holds a projection's lock
     +-- ProjectionError        a runner stopped a batch it could not keep safe
     +-- TransferError          an export or import failed, or a file failed verification
     +-- DatabaseUnavailableError   the server cannot be reached, or the connection was lost
     |    +-- AppendOutcomeUnknownError  lost while an append was in flight: reload first
     +-- AuthenticationError        the server refused the login (user, password, pg_hba.conf)
     +-- TooManyConnectionsError    the server has no connection slot left
     +-- DatabaseNotFoundError      the database named in the URL does not exist
     +-- OperationTimeoutError      statement_timeout, lock_timeout or the pool's wait ran out
     +-- ServerError                the server failed the statement for a reason of its own
     |                              (disk full, out of memory, I/O error, internal error)
     +-- StoreClosedError           the store was closed: build a new one

Database errors are translated where the library can say something useful (each
message says what to do) and chained with ``raise ... from``, so the original
psycopg or SQLAlchemy exception stays in ``__cause__``; anything else propagates
as SQLAlchemy or psycopg raised it.
"""

from __future__ import annotations

from typing import Any

from eventstore._import_summary import ImportSummary


class EventStoreError(Exception):
    """Base class of every error raised by pg-eventstore."""


class ConcurrencyError(EventStoreError):
    """The stream was not at the version the caller expected; nothing was written.

    ``expected`` is what the caller passed (an int or one of ``ANY``,
    ``NO_STREAM``, ``STREAM_EXISTS``); ``actual`` is the stream's version as
    read after the conflict; ``detail`` says what to do when it is not simply
    "reload the stream and retry".
    """

    def __init__(
        self, stream_id: str, expected: Any, actual: int, *, detail: str | None = None
    ) -> None:
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual
        self.detail = detail
        super().__init__(_conflict_message(stream_id, expected, actual, detail))

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_concurrency_error,
            (self.stream_id, self.expected, self.actual, self.detail),
        )


def _conflict_message(stream_id: str, expected: Any, actual: int, detail: str | None) -> str:
    return (
        f"stream {stream_id!r} is at version {actual}, expected {expected}; "
        f"nothing was written: {detail or 'reload the stream and retry'}"
    )


def _rebuild_concurrency_error(
    stream_id: str, expected: Any, actual: int, detail: str | None
) -> ConcurrencyError:
    return ConcurrencyError(stream_id, expected, actual, detail=detail)


class SerializationError(EventStoreError):
    """A payload or snapshot state could not be encoded as CBOR; nothing was written.

    Bad metadata is a :class:`ValidationError`: its rules are checked up front.
    """


class DeserializationError(EventStoreError):
    """Stored bytes could not be decoded back into a value.

    Raised for a stored event, it names the event: ``stream_id``, ``version``,
    ``event_type`` and ``position`` (its :class:`~eventstore.records.Position`
    in the global feed; None for an event read inside the unit of work that
    wrote it, in memory); for a snapshot, ``stream_id`` and the snapshot's
    ``version``. Each is None where not known (bytes decoded outside a store).
    """

    def __init__(
        self,
        message: str,
        *,
        stream_id: str | None = None,
        version: int | None = None,
        event_type: str | None = None,
        position: Any = None,
    ) -> None:
        super().__init__(message)
        self.stream_id = stream_id
        self.version = version
        self.event_type = event_type
        self.position = position

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_deserialization_error,
            (str(self), self.stream_id, self.version, self.event_type, self.position),
        )


def _rebuild_deserialization_error(
    message: str, stream_id: str | None, version: int | None, event_type: str | None, position: Any
) -> DeserializationError:
    return DeserializationError(
        message, stream_id=stream_id, version=version, event_type=event_type, position=position
    )


class SchemaError(EventStoreError):
    """The event store's tables are missing or out of date."""


class ValidationError(EventStoreError, ValueError):
    """An argument is invalid; the call was refused before anything was written."""


class ProjectionLockedError(EventStoreError):
    """Another runner holds the projection's lock and did not release it in time."""


class ProjectionError(EventStoreError):
    """A projection runner stopped a batch because it could not keep its guarantees.

    The handler ended the runner's transaction (it must not commit or roll back
    the connection it is given), the runner's session no longer holds the
    projection's lock (a pooler in transaction mode, or something released it),
    or another runner moved the checkpoint past this one. The batch was rolled
    back; the message says what to change.
    """


class TransferError(EventStoreError):
    """An export or import could not be done as asked, or a file failed verification.

    ``imported`` is what an import had committed before the failure (None for an
    export); a file that fails verification imports nothing, so it is empty then.
    """

    def __init__(self, message: str, *, imported: ImportSummary | None = None) -> None:
        super().__init__(message)
        self.imported = imported


class DatabaseUnavailableError(EventStoreError):
    """The database server could not be reached, or the connection to it was lost.

    Connection refused, host unknown, connect timeout, the server shutting down or
    restarting, a connection terminated by an administrator. Once the server is
    back the same call can be retried (the store replaces lost connections by
    itself), except after :class:`AppendOutcomeUnknownError`.
    """


class AppendOutcomeUnknownError(DatabaseUnavailableError):
    """The connection was lost after an append was sent: it may have been committed.

    Retrying the append blindly could store the events twice (with ``ANY``) or
    raise a ConcurrencyError for one's own write. Reload the stream once the
    server is back and append only what is missing. ``stream_id`` names the stream.
    """

    def __init__(self, message: str, *, stream_id: str) -> None:
        super().__init__(message)
        self.stream_id = stream_id

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_outcome_unknown, (str(self), self.stream_id))


def _rebuild_outcome_unknown(message: str, stream_id: str) -> AppendOutcomeUnknownError:
    return AppendOutcomeUnknownError(message, stream_id=stream_id)


class AuthenticationError(EventStoreError):
    """The server refused the login: wrong password, unknown role, or no pg_hba.conf rule."""


class TooManyConnectionsError(EventStoreError):
    """The server refused a new connection: no slot left (max_connections or a CONNECTION LIMIT)."""


class DatabaseNotFoundError(EventStoreError):
    """The database named in the URL does not exist on the server."""


class PermissionDeniedError(EventStoreError):
    """The server refused a statement for lack of a privilege (SQLSTATE 42501): a
    role without the grants the store needs, or a rewrite of the append-only
    event log by anyone but its owner through the erasure path."""


class OperationTimeoutError(EventStoreError):
    """A time limit ran out; the statement that hit it wrote nothing.

    ``timeout`` names the limit: ``"statement_timeout"`` or ``"lock_timeout"``
    (server settings, see :meth:`PostgresEventStore.from_url`), or
    ``"pool_timeout"`` (no pooled connection became free in time).
    """

    def __init__(self, message: str, *, timeout: str) -> None:
        super().__init__(message)
        self.timeout = timeout

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_timeout, (str(self), self.timeout))


def _rebuild_timeout(message: str, timeout: str) -> OperationTimeoutError:
    return OperationTimeoutError(message, timeout=timeout)


class TransactionConflictError(ConcurrencyError):
    """The server rolled back the transaction, or the statement, to resolve a
    conflict with another transaction (SQLSTATE class 40: a deadlock, a
    serialization failure), or the caller's transaction reads from a snapshot
    older than the stream it appends to; nothing of it was written. Retry the
    whole transaction (a unit of work of your own: all of it, from its first
    read).

    A :class:`ConcurrencyError`, so code that reloads and retries on conflicts
    handles it. ``stream_id``, ``expected`` and ``actual`` are set when an
    append or a snapshot save met the conflict (``actual`` is then the
    stream's committed version, or None when it could not be read), and None
    otherwise.
    """

    def __init__(
        self,
        message: str,
        *,
        stream_id: str | None = None,
        expected: Any = None,
        actual: int | None = None,
    ) -> None:
        EventStoreError.__init__(self, message)
        self.stream_id = stream_id  # type: ignore[assignment]
        self.expected = expected
        self.actual = actual  # type: ignore[assignment]
        self.detail = None

    @classmethod
    def for_stream(
        cls, stream_id: str, expected: Any, actual: int, detail: str
    ) -> TransactionConflictError:
        """The error an append (or a snapshot save) to ``stream_id`` gets, worded
        as a :class:`ConcurrencyError` with ``detail`` saying what to do."""
        error = cls(
            _conflict_message(stream_id, expected, actual, detail),
            stream_id=stream_id,
            expected=expected,
            actual=actual,
        )
        error.detail = detail
        return error

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_transaction_conflict,
            (str(self), self.stream_id, self.expected, self.actual),
        )


DEADLOCK_DETAIL = (
    "your transaction deadlocked with another one (each waited for a stream the other had "
    "appended to) and was chosen to fail: roll back and retry the whole transaction (a "
    "with block the error leaves rolls back by itself; nothing of it is kept)"
)
"""The ``detail`` of the TransactionConflictError an append gets in a deadlock."""

STALE_SNAPSHOT_DETAIL = (
    "your transaction's snapshot is older than the stream's head (another transaction "
    "appended to the stream, or erased it, after yours took its snapshot at REPEATABLE READ "
    "or SERIALIZABLE); retrying inside it cannot help: roll back and retry the whole transaction"
)
"""The ``detail`` of the TransactionConflictError an append gets when the caller's
transaction reads from a snapshot older than the stream's head."""


def _rebuild_transaction_conflict(
    message: str, stream_id: str | None, expected: Any, actual: int | None
) -> TransactionConflictError:
    return TransactionConflictError(message, stream_id=stream_id, expected=expected, actual=actual)


class ServerError(EventStoreError):
    """The server could not run the statement for a reason of its own: disk full,
    out of memory (class 53), an I/O or system error (58), an internal error or
    corrupted data (XX), or another failure the library has no better name for.
    The statement wrote nothing. ``sqlstate`` is the server's code; the message
    says what to do (mostly: have the server's log looked at, then retry).
    """

    def __init__(self, message: str, *, sqlstate: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_server_error, (str(self), self.sqlstate))


def _rebuild_server_error(message: str, sqlstate: str) -> ServerError:
    return ServerError(message, sqlstate=sqlstate)


class StoreClosedError(EventStoreError):
    """The store was closed with ``close()``: it makes no more calls. Build a new one.

    Raised by every public call made after ``close()``, including reads of an
    iterator or a projection runner begun before it.
    """

    def __init__(self, message: str = "the store was closed: build a new one") -> None:
        super().__init__(message)


class IntegrationError(EventStoreError, RuntimeError):
    """A framework integration (Flask, Django) was set up or used in a way that
    cannot work: outside an application context, before its set-up ran, with no
    database, or with settings that contradict each other. The message says how
    to set it up. Also a ``RuntimeError``, as Flask's own "working outside of
    application context" is."""
