"""Checkpointed projections: feed every event of the store, once, to a handler.

A :class:`ProjectionRunner` reads the feed after the projection's checkpoint
and hands each event to the handler. On PostgreSQL each batch runs in one
transaction with the checkpoint update, and the handler gets that transaction's
connection: what it writes through it takes effect exactly once, even across
crashes. A handler with effects outside the database gets each event at least
once. One runner per projection name works at a time (an advisory lock); a
second one waits and takes over when the first closes or dies.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

from eventstore._closing import Closing
from eventstore._validation import check_identifier, check_int
from eventstore.errors import ValidationError
from eventstore.feed import (
    DEFAULT_POLL_INTERVAL,
    FeedPage,
    check_feed_filter,
    check_poll_interval,
    read_on_from,
)
from eventstore.records import Position, RecordedEvent

if TYPE_CHECKING:
    from eventstore._base import BaseEventStore

Handler = Callable[[RecordedEvent, Any], None]
_RETRY_DELAY = 0.2


class Projection:
    """What a projection is: its name, its handler, the event types it wants.

    ``handler(event, connection)`` applies one event; ``reset(connection)``
    (optional) clears the projection's own state before a rebuild. On
    PostgreSQL ``connection`` is the SQLAlchemy Connection of the transaction
    that also saves the checkpoint; in memory it is None.
    """

    def __init__(
        self,
        name: str,
        handler: Handler,
        *,
        event_types: Iterable[str] | None = None,
        reset: Callable[[Any], None] | None = None,
    ) -> None:
        self.name = check_identifier(name, "projection name")
        if not callable(handler):
            raise ValidationError(f"handler must be callable, not {type(handler).__name__}")
        if reset is not None and not callable(reset):
            raise ValidationError(f"reset must be callable, not {type(reset).__name__}")
        self.handler = handler
        self.event_types, _ = check_feed_filter(event_types, None)
        self.reset = reset

    def __repr__(self) -> str:
        return f"Projection({self.name!r}, event_types={self.event_types!r})"


class ProjectionSession(Protocol):
    """A backend's hold on one projection: its lock, its transactions, its checkpoint."""

    checkpoint_each_event: bool
    """True where handler effects cannot be rolled back with the checkpoint (memory)."""

    retryable: tuple[type[BaseException], ...]

    def transaction(self) -> AbstractContextManager[Any]:
        """A transaction; yields the connection the handler receives."""
        ...

    def load_checkpoint(self, connection: Any) -> Position | None: ...

    def save_checkpoint(self, connection: Any, position: Position) -> None: ...

    def delete_checkpoint(self, connection: Any) -> None: ...

    def read(
        self, connection: Any, after: Position | None, limit: int, event_types: list[str] | None
    ) -> FeedPage: ...

    def close(self) -> None:
        """Release the lock."""
        ...


class ProjectionRunner(Closing):
    """Feeds one :class:`Projection` from a store's feed; see the module docstring."""

    def __init__(
        self,
        store: BaseEventStore,
        projection: Projection,
        *,
        batch_size: int = 100,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        lock_timeout: float | None = None,
    ) -> None:
        if not isinstance(projection, Projection):
            raise ValidationError(
                f"projection must be a Projection, not {type(projection).__name__}"
            )
        self.store = store
        self.projection = projection
        self.batch_size = check_int(batch_size, "batch_size", minimum=1)
        self.poll_interval = check_poll_interval(poll_interval)
        if lock_timeout is not None:
            check_poll_interval(lock_timeout)
        self.lock_timeout = lock_timeout
        self._session: ProjectionSession | None = None
        self._stopped = threading.Event()
        # (checkpoint, read_to): with the stored checkpoint at ``checkpoint``, the
        # feed holds nothing for this projection up to ``read_to``, so the next
        # read starts there. Kept here, not written on every read. Used only while
        # the stored checkpoint is still that one: a reset (or a takeover that
        # moved it) by another runner makes it void.
        self._read_on: tuple[Position | None, Position] | None = None
        store.lifecycle.track(self)  # the store's close() stops run()

    def run_once(self) -> int:
        """Handle every event visible now; return how many were handled.

        Takes the projection's lock first (waiting up to ``lock_timeout``
        seconds, then :class:`ProjectionLockedError`) and keeps it until
        :meth:`close`. An exception from the handler propagates; the batch it
        was in is rolled back on PostgreSQL.
        """
        session = self._hold()
        handled = 0
        while True:
            count = self._process_batch(session)
            handled += count
            if count < self.batch_size:
                return handled

    def run(self, stop: threading.Event | None = None) -> None:
        """Handle events as they come until ``stop`` is set or :meth:`stop` is called
        (which sets ``stop``).

        A lost connection is survived: the lock is taken again (waiting if
        another runner took over meanwhile) and work resumes from the checkpoint.
        """
        self._stopped = stop if stop is not None else threading.Event()
        waiter = self.store._waiter()
        try:
            while not self._stopped.is_set():
                waiter.arm()
                try:
                    self.run_once()
                except self.store._retryable_errors:
                    self._release()
                    self._stopped.wait(_RETRY_DELAY)
                    continue
                waiter.wait(self.poll_interval, self._stopped)
        finally:
            waiter.close()

    def stop(self) -> None:
        """Make :meth:`run` return soon; safe from any thread."""
        self._stopped.set()

    def checkpoint(self) -> Position | None:
        """How far the projection has committed: the position of the last event it
        handled, or further when the events after that one were not its types."""
        return self.store._projection_checkpoint(self.projection.name)

    def reset(self) -> None:
        """Forget the checkpoint and clear the projection's state (its ``reset``
        callable), in one transaction; the next run rebuilds from the start."""
        session = self._hold()
        with session.transaction() as connection:
            session.delete_checkpoint(connection)
            if self.projection.reset is not None:
                self.projection.reset(connection)
        self._read_on = None

    def close(self) -> None:
        """Release the projection's lock."""
        self._release()

    def _hold(self) -> ProjectionSession:
        if self._session is None:
            self._session = self.store._projection_session(self.projection.name, self.lock_timeout)
        return self._session

    def _release(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()

    def _process_batch(self, session: ProjectionSession) -> int:
        """Handle the next batch in one transaction with its checkpoint.

        Reads from the checkpoint, or from further on when an earlier read found
        nothing for the projection up to there. The checkpoint moves only with
        handled events (to the last, or to the feed's end when the batch came up
        short), so an idle projection writes nothing on a poll.
        """
        handler = self.projection.handler
        with session.transaction() as connection:
            checkpoint = session.load_checkpoint(connection)
            after = checkpoint
            if self._read_on is not None and self._read_on[0] == checkpoint:
                after = self._read_on[1]
            page = session.read(connection, after, self.batch_size, self.projection.event_types)
            stored = checkpoint
            for event in page.events:
                handler(event, connection)
                if session.checkpoint_each_event and event.position is not None:
                    session.save_checkpoint(connection, event.position)
                    stored = event.position
            read_to = read_on_from(after, page)
            if page.events and read_to is not None and read_to != stored:
                session.save_checkpoint(connection, read_to)
                stored = read_to
        self._read_on = None if read_to is None or read_to == stored else (stored, read_to)
        return len(page.events)
