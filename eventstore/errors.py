"""The exceptions raised by pg-eventstore.

Every error the library raises derives from :class:`EventStoreError`::

    EventStoreError
     +-- ConcurrencyError       the stream was not at the expected version
     +-- SerializationError     a payload or snapshot state cannot be encoded
     +-- DeserializationError   stored bytes cannot be decoded
     +-- SchemaError            the tables are missing or not at the expected revision
     +-- ValidationError        a bad argument (also a ValueError); nothing was written
     +-- ProjectionLockedError  another runner holds a projection's lock
     +-- TransferError          an export or import failed, or a file failed verification

Database errors are translated where the library can say something useful and
chained with ``raise ... from``; anything else propagates as SQLAlchemy or psycopg
raised it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eventstore.transfer import ImportSummary


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
        super().__init__(
            f"stream {stream_id!r} is at version {actual}, expected {expected}; "
            f"nothing was written: {detail or 'reload the stream and retry'}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_concurrency_error,
            (self.stream_id, self.expected, self.actual, self.detail),
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
    """Stored bytes could not be decoded back into a value."""


class SchemaError(EventStoreError):
    """The event store's tables are missing or out of date."""


class ValidationError(EventStoreError, ValueError):
    """An argument is invalid; the call was refused before anything was written."""


class ProjectionLockedError(EventStoreError):
    """Another runner holds the projection's lock and did not release it in time."""


class TransferError(EventStoreError):
    """An export or import could not be done as asked, or a file failed verification.

    ``imported`` is what an import had committed before the failure (None for an
    export); a file that fails verification imports nothing, so it is empty then.
    """

    def __init__(self, message: str, *, imported: ImportSummary | None = None) -> None:
        super().__init__(message)
        self.imported = imported
