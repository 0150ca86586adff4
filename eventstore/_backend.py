"""What a backend supplies, and the types its primitives speak. Private.

The public interface is :class:`eventstore.store.EventStore`. Behind it,
:class:`eventstore._base.BaseEventStore` writes the shared half of the contract
once (argument checks, encoding, decoding, paging) and calls storage primitives
that each backend (``postgres``, ``memory``) implements. This module holds what
crosses that line: the rows and feed pages primitives return, the waiters that
wake subscriptions, the projection sessions runners drive, and
:class:`Backend`, the primitives that code outside the store (the projection
runner) uses. Nothing here is for applications.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, Protocol, runtime_checkable

from eventstore._lifecycle import Lifecycle
from eventstore.errors import DeserializationError, ValidationError
from eventstore.records import Position, RecordedEvent

DEFAULT_BATCH_SIZE = 1000
"""How many events a paged read (``iter_events``, ``iter_all``, subscriptions)
fetches per round trip unless told otherwise."""

StoredEventRow = Sequence[Any]
"""``(stream_id, version, event_type, event_data, metadata, created_at,
transaction_id, sequence)`` as a backend returns it."""


class UndecodableEvent(NamedTuple):
    """An event of the feed whose payload could not be decoded, as its row names it."""

    stream_id: str
    version: int
    event_type: str
    position: Position
    error: DeserializationError
    """What decoding it raised; readers raise it once they have delivered the
    events before it."""

    @property
    def error_text(self) -> str:
        """The error as the record of a skipped event keeps it: its text, with any
        NUL written as ``\\x00`` (a database's text column takes none, and a
        stored field name may hold one)."""
        return str(self.error).replace("\x00", "\\x00")


class FeedPage(NamedTuple):
    """A page of the feed and how far the read looked."""

    events: list[RecordedEvent]
    """The next events after the reader's position that pass its filter, oldest first."""
    end: Position | None
    """How far the read looked beyond its last event: every visible event up to
    ``end`` that passes the filter is in ``events`` (or before the reader's
    position). None when it looked no further than its last event. A filtered
    reader that reads on from ``end`` skips the events it does not want once,
    not again on every read."""
    undecodable: UndecodableEvent | None = None
    """The event right after ``events`` when it could not be decoded (``end`` is
    then None): the page stops before it, and a reader delivers ``events``
    before it meets the error."""


@dataclass(frozen=True, slots=True)
class SkippedEvent:
    """An event a projection with ``on_undecodable="skip"`` passed over because it
    could not be decoded; kept in ``projection_skipped_events`` (PostgreSQL) or
    in the store (memory) until the projection is reset."""

    projection: str
    """The projection's name."""
    position: Position
    """The event's place in the feed."""
    stream_id: str
    version: int
    event_type: str
    error: str
    """What decoding it raised, as text."""
    skipped_at: datetime


ReadPage = Callable[[Position | None, int], FeedPage]
"""``read_page(after, limit)``: the next page of the feed."""


class Waiter(Protocol):
    """Blocks a subscription until the feed may have grown.

    A waiter holds no database connection of its own: backends share one means
    of being woken (one listening connection per store on PostgreSQL) among all
    their waiters. A waiter must not refer to the subscription that uses it, so
    that a subscription dropped without ``close()`` can be collected and its
    waiter closed by a finalizer.
    """

    def arm(self) -> None:
        """Called before each read: a change after this must end the next wait."""

    def wait(self, timeout: float, stop: threading.Event) -> None:
        """Return when woken, after ``timeout`` seconds, or soon after ``stop`` is set
        (or the waiter is closed)."""

    def close(self) -> None:
        """Release the waiter's share of what wakes it; idempotent, safe from any
        thread and from a finalizer."""


class ProjectionSession(Protocol):
    """A backend's hold on one projection: its lock, its transactions, its checkpoint.

    A session is made without the lock; :meth:`acquire` takes it. A session that
    raised is not used again: the runner closes it and makes a new one, which
    takes the lock again before anything is read.
    """

    checkpoint_each_event: bool
    """True where handler effects cannot be rolled back with the checkpoint (memory):
    the runner then saves it after each event a per-event handler applied (after
    each batch for a batch handler)."""

    def acquire(self, wait: float) -> bool:
        """Take the projection's lock, waiting up to ``wait`` seconds; False if
        another session still holds it then."""
        ...

    def stop(self) -> None:
        """End the session from outside, for the store's close(): release the lock
        and roll back a batch in flight. Safe from any thread."""
        ...

    def transaction(self) -> AbstractContextManager[Any]:
        """A transaction, begun only while the session holds the lock; yields the
        connection the handler receives."""
        ...

    def load_checkpoint(self, connection: Any) -> Position | None: ...

    def save_checkpoint(self, connection: Any, position: Position) -> None:
        """Store ``position``; :class:`~eventstore.errors.ProjectionError` when the
        stored checkpoint is already there or further (it never moves backwards)."""
        ...

    def delete_checkpoint(self, connection: Any) -> None:
        """Forget the checkpoint and the events the projection skipped."""
        ...

    def record_skipped(self, connection: Any, event: UndecodableEvent) -> None:
        """Keep ``event`` as one the projection skipped (in ``connection``'s
        transaction, with the checkpoint that moves past it)."""
        ...

    def read(
        self, connection: Any, after: Position | None, limit: int, event_types: list[str] | None
    ) -> FeedPage: ...

    def close(self) -> None:
        """Release the lock and whatever the session holds; harmless twice, and
        safe from a garbage collector's finalizer."""
        ...


@runtime_checkable
class Backend(Protocol):
    """The primitives of a store of this library that a projection runner uses,
    beyond the public interface. Both stores provide them."""

    lifecycle: Lifecycle
    """Whether the store is open; runners and their sessions register here so the
    store's ``close()`` stops them."""

    def _waiter(self) -> Waiter:
        """A new waiter that wakes when events are appended."""
        ...

    def _projection_session(self, name: str) -> ProjectionSession:
        """A session for the projection, not yet holding its lock."""
        ...

    def _projection_checkpoint(self, name: str) -> Position | None:
        """The projection's committed checkpoint, read without its lock."""
        ...

    def _skipped_events(self, name: str) -> list[SkippedEvent]:
        """The committed records of the events the projection skipped, in feed
        order, read without its lock."""
        ...


def backend_of(store: object) -> Backend:
    """``store`` as a :class:`Backend`; :class:`ValidationError` for a store that is
    not one of this library's (a projection runner needs the primitives above)."""
    if not isinstance(store, Backend):
        raise ValidationError(
            "a projection runner needs a store of this library (PostgresEventStore or "
            f"InMemoryEventStore), not {type(store).__name__}"
        )
    return store
