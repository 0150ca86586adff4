"""Checkpointed projections: feed every event of the store, once, to a handler.

A :class:`ProjectionRunner` reads the feed after the projection's checkpoint
and hands each event to the handler (or each batch, whole, to a batch
handler). On PostgreSQL each batch runs in one
transaction with the checkpoint update, and the handler gets that transaction's
connection: what it writes through it takes effect exactly once, even across
crashes. A handler with effects outside the database gets each event at least
once. One runner per projection name works at a time (an advisory lock held
by a connection of the runner's own); a second one waits and takes over when
the first closes, dies or is garbage collected. A runner never handles an
event without the lock: after any error it lets go of it, and takes it again
before reading anything more. The stored checkpoint never moves backwards.

An event that cannot be decoded stops a projection after the events before it
(``on_undecodable="raise"``, the default), or is recorded as a
:class:`SkippedEvent` and passed over (``"skip"``), with the checkpoint that
moves past it, in the batch's transaction.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from eventstore._backend import Backend, ProjectionSession, SkippedEvent, backend_of
from eventstore._closing import Closing
from eventstore._translate import (
    OPERATIONAL_ERRORS,
    is_connection_lost,
    translate,
    translated_errors,
)
from eventstore._validation import check_identifier, check_int, check_seconds
from eventstore.bound import unbound
from eventstore.errors import (
    DatabaseUnavailableError,
    ProjectionLockedError,
    StoreClosedError,
    ValidationError,
)
from eventstore.feed import (
    DEFAULT_POLL_INTERVAL,
    check_feed_filter,
    check_poll_interval,
    read_on_from,
)
from eventstore.records import Position, RecordedEvent
from eventstore.store import EventStore

__all__ = [
    "BatchHandler",
    "Handler",
    "Projection",
    "ProjectionRunner",
    "SkippedEvent",
    "check_lock_timeout",
]

logger = logging.getLogger(__name__)

Handler = Callable[[RecordedEvent, Any], None]
"""``handler(event, connection)``: applies one event."""

BatchHandler = Callable[[list[RecordedEvent], Any], None]
"""``handle_batch(events, connection)``: applies a batch's events, in feed order."""

ON_UNDECODABLE = ("raise", "skip")
"""What :class:`Projection` accepts as ``on_undecodable``."""

_RETRY_DELAY = 0.2
"""Pause before :meth:`ProjectionRunner.run` takes the lock again after a lost
connection; it doubles with each failure in a row, up to :data:`_MAX_RETRY_DELAY`."""

_MAX_RETRY_DELAY = 5.0

LOCK_SLICE = 0.5
"""Longest single wait for a projection's lock, so that a stop request is seen promptly.
A waiting runner is woken at once when the lock is released; on PostgreSQL each
slice costs one short transaction."""


class Projection:
    """What a projection is: its name, its handler, the event types it wants.

    ``event_types`` (None: all) are names of event types; a registered class's
    aliases match too (see :meth:`EventRegistry.names_for`).
    ``handler(event, connection)`` applies one event; ``reset(connection)``
    (optional) clears the projection's own state before a rebuild. On
    PostgreSQL ``connection`` is the SQLAlchemy Connection of the transaction
    that also saves the checkpoint; in memory it is None. The handler must not
    commit or roll it back (the runner refuses with
    :class:`~eventstore.errors.ProjectionError` and rolls the batch back), nor
    release advisory locks on it.

    ``handle_batch(events, connection)``, given instead of ``handler``, applies
    a whole batch at once (one multi-row statement, say): ``events`` is the
    batch's list of events in feed order, never empty, and ``connection`` is as
    above, with the same rules. On PostgreSQL the call and the checkpoint commit
    in one transaction, as with ``handler``. In memory the checkpoint moves to
    the batch's end once the call returns: a batch whose call raised is handed
    again whole (a per-event handler's checkpoint moves event by event there).
    The batch is the page the runner read: up to ``batch_size`` events, fewer
    at the feed's end or before an event that cannot be decoded. Exactly one
    of ``handler`` and ``handle_batch`` is given (ValidationError otherwise).

    ``on_undecodable`` says what an event that cannot be decoded does:
    ``"raise"`` (the default) handles and commits the events before it, then
    raises its :class:`~eventstore.errors.DeserializationError`, with the
    checkpoint at the event before it (every later run raises the same until
    the event can be decoded); ``"skip"`` records it (see
    :meth:`ProjectionRunner.skipped_events`; the table
    ``projection_skipped_events`` on PostgreSQL), logs a WARNING on the
    ``eventstore.projections`` logger and goes on, the record committed with
    the checkpoint that moves past the event, so every other event still takes
    effect exactly once.
    """

    def __init__(
        self,
        name: str,
        handler: Handler | None = None,
        *,
        handle_batch: BatchHandler | None = None,
        event_types: Iterable[str] | None = None,
        reset: Callable[[Any], None] | None = None,
        on_undecodable: str = "raise",
    ) -> None:
        self.name = check_identifier(name, "projection name")
        if (handler is None) == (handle_batch is None):
            raise ValidationError(
                "a projection takes a handler (one event at a time) or handle_batch (a "
                "whole batch at a time): give exactly one of them"
            )
        for what, function in (("handler", handler), ("handle_batch", handle_batch)):
            if function is not None and not callable(function):
                raise ValidationError(f"{what} must be callable, not {type(function).__name__}")
        if reset is not None and not callable(reset):
            raise ValidationError(f"reset must be callable, not {type(reset).__name__}")
        self.handler = handler
        self.handle_batch = handle_batch
        if not isinstance(on_undecodable, str) or on_undecodable not in ON_UNDECODABLE:
            raise ValidationError(
                f'on_undecodable must be "raise" or "skip", not {on_undecodable!r}'
            )
        self.event_types, _ = check_feed_filter(event_types, None)
        self.reset = reset
        self.on_undecodable = on_undecodable

    def __repr__(self) -> str:
        return f"Projection({self.name!r}, event_types={self.event_types!r})"


class ProjectionRunner(Closing):
    """Feeds one :class:`Projection` from a store's feed; see the module docstring.

    ``lock_timeout``: how long :meth:`run_once` and :meth:`reset` wait for the
    projection's lock before :class:`~eventstore.errors.ProjectionLockedError`
    (seconds, more than 0 and at most 2,147,483); None waits without limit. The
    wait does not depend on the store's ``statement_timeout``.

    After any error the runner lets go of the lock (and, on PostgreSQL, closes
    its connection); the next call takes the lock again, waiting as above,
    before it reads anything. A runner that is garbage collected without
    :meth:`close` releases its lock too.
    """

    def __init__(
        self,
        store: EventStore,
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
        store = unbound(store)  # a runner follows the committed feed
        self.store = store
        self._backend: Backend = backend_of(store)
        self.projection = projection
        self._event_types = store.registry.expand_names(projection.event_types)
        """The projection's event types with every alias of each (the store's registry)."""
        self.batch_size = check_int(batch_size, "batch_size", minimum=1)
        self.poll_interval = check_poll_interval(poll_interval)
        self.lock_timeout = check_lock_timeout(lock_timeout)
        self._session: ProjectionSession | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._stopped = threading.Event()
        # (checkpoint, read_to): with the stored checkpoint at ``checkpoint``, the
        # feed holds nothing for this projection up to ``read_to``, so the next
        # read starts there. Kept here, not written on every read. Used only while
        # the stored checkpoint is still that one: a reset (or a takeover that
        # moved it) by another runner makes it void.
        self._read_on: tuple[Position | None, Position] | None = None
        self._backend.lifecycle.track(self)  # the store's close() stops run()

    def run_once(self) -> int:
        """Handle every event visible now; return how many were handled.

        Takes the projection's lock first (waiting up to ``lock_timeout``
        seconds, then :class:`ProjectionLockedError`) and keeps it until
        :meth:`close`. An exception from the handler propagates; the batch it
        was in is rolled back on PostgreSQL. A lost connection raises
        :class:`~eventstore.errors.DatabaseUnavailableError`, an exhausted pool
        :class:`~eventstore.errors.OperationTimeoutError`; after any error the
        next call takes the lock again. :class:`~eventstore.errors.ProjectionError`
        when the batch could not be kept safe (see there).
        """
        with self._dropped_on_error():
            session = self._hold()
            assert session is not None
            return self._run_batches(session, None)

    def run(self, stop: threading.Event | None = None) -> None:
        """Handle events as they come until ``stop`` is set or :meth:`stop` is called
        (which sets ``stop``); a standby waiting for the lock stops too.

        A lost connection (or a session the server ended, or a server that is
        down) is survived: each retry is logged as a WARNING, after a pause that
        grows from 0.2 s to 5 s while failures follow each other; the lock is
        taken again (waiting if another
        runner took over meanwhile) and work resumes from the checkpoint. Any
        other error ends ``run()`` with that error: the handler's own, or the
        library's for a database failure (a statement timeout is an
        :class:`~eventstore.errors.OperationTimeoutError`).
        """
        self._stopped = stopped = stop if stop is not None else threading.Event()
        with translated_errors():
            waiter = self._backend._waiter()
        delay = _RETRY_DELAY
        try:
            while not stopped.is_set():
                waiter.arm()
                try:
                    with self._dropped_on_error():
                        session = self._hold(stopped)
                        if session is None:
                            return
                        self._run_batches(session, stopped)
                except StoreClosedError:
                    return  # the store's close() stopped this runner
                except DatabaseUnavailableError as exc:
                    if not _connection_lost(exc):
                        raise
                    logger.warning(
                        "projection %r lost its connection; taking its lock again in %s s: %s",
                        self.projection.name,
                        delay,
                        exc,
                    )
                    stopped.wait(delay)
                    delay = min(2 * delay, _MAX_RETRY_DELAY)
                    continue
                delay = _RETRY_DELAY
                waiter.wait(self.poll_interval, stopped)
        finally:
            waiter.close()

    def stop(self) -> None:
        """Make :meth:`run` return soon; safe from any thread."""
        self._stopped.set()

    def checkpoint(self) -> Position | None:
        """How far the projection has committed: the position of the last event it
        handled, or further when the events after that one were not its types."""
        return self._backend._projection_checkpoint(self.projection.name)

    def skipped_events(self) -> list[SkippedEvent]:
        """The events the projection skipped because they could not be decoded
        (``on_undecodable="skip"``), committed, in feed order; cleared by
        :meth:`reset`."""
        return self._backend._skipped_events(self.projection.name)

    def reset(self) -> None:
        """Forget the checkpoint and the skipped events and clear the projection's
        state (its ``reset`` callable), in one transaction; the next run rebuilds
        from the start. Takes the lock first, as :meth:`run_once` does."""
        with self._dropped_on_error():
            session = self._hold()
            assert session is not None
            with session.transaction() as connection:
                session.delete_checkpoint(connection)
                if self.projection.reset is not None:
                    self.projection.reset(connection)
        self._read_on = None

    def close(self) -> None:
        """Release the projection's lock."""
        self._release()

    @contextmanager
    def _dropped_on_error(self) -> Iterator[None]:
        """Database failures as the library's errors; after any error the session
        is closed, so the lock is taken again before anything else is read."""
        try:
            with translated_errors():
                yield
        except _HandlerError as raised:
            self._release()
            raise raised.error from raised.error.__cause__
        except BaseException:
            self._release()
            raise

    def _hold(self, stop: threading.Event | None = None) -> ProjectionSession | None:
        """The session holding the lock; None if ``stop`` was set while waiting."""
        if self._session is not None:
            return self._session
        session = self._backend._projection_session(self.projection.name)
        try:
            acquired = self._acquire(session, stop)
        except BaseException:
            session.close()
            raise
        if not acquired:
            session.close()
            return None
        try:
            self._backend.lifecycle.track(session)  # the store's close() ends it
        except BaseException:  # the store was closed while the lock was awaited
            session.close()
            raise
        self._session = session
        self._finalizer = weakref.finalize(self, session.close)
        self._finalizer.atexit = False
        return session

    def _acquire(self, session: ProjectionSession, stop: threading.Event | None) -> bool:
        """Wait for the lock in slices of at most :data:`LOCK_SLICE`, so that
        ``stop`` ends the wait (False); ProjectionLockedError after ``lock_timeout``."""
        deadline = None if self.lock_timeout is None else time.monotonic() + self.lock_timeout
        while True:
            wait = LOCK_SLICE
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ProjectionLockedError(
                        f"projection {self.projection.name!r} is being run elsewhere (no lock "
                        f"after {self.lock_timeout} s): stop the other runner or wait for it"
                    )
                wait = min(wait, remaining)
            if session.acquire(wait):
                return True
            if stop is not None and stop.is_set():
                return False

    def _release(self) -> None:
        self._session = None
        finalizer, self._finalizer = self._finalizer, None
        if finalizer is not None:
            finalizer()

    def _run_batches(self, session: ProjectionSession, stop: threading.Event | None) -> int:
        handled = 0
        while True:
            count, more = self._process_batch(session)
            handled += count
            if not more or (stop is not None and stop.is_set()):
                return handled

    def _process_batch(self, session: ProjectionSession) -> tuple[int, bool]:
        """Handle the next batch in one transaction with its checkpoint; return how
        many events were handled and whether to read on at once.

        Reads from the checkpoint, or from further on when an earlier read found
        nothing for the projection up to there. The checkpoint moves only with
        handled (or skipped) events (to the last, or to the feed's end when the
        batch came up short), so an idle projection writes nothing on a poll. An
        event that cannot be decoded ends the batch: skipped, it is recorded and
        the checkpoint moves past it; otherwise the batch before it commits and
        its error is raised. A batch handler gets the batch's events in one call,
        and the checkpoint moves only after it returns (in memory too).
        """
        handler = self.projection.handler
        handle_batch = self.projection.handle_batch
        with session.transaction() as connection:
            checkpoint = session.load_checkpoint(connection)
            after = checkpoint
            if self._read_on is not None and self._read_on[0] == checkpoint:
                after = self._read_on[1]
            page = session.read(connection, after, self.batch_size, self._event_types)
            events = page.events
            count = len(events)
            read_to = read_on_from(after, page)  # before a batch handler gets the list
            stored = checkpoint
            if handle_batch is not None:
                if events:
                    _apply(handle_batch, events, connection)
            elif handler is not None:  # always, for a projection without handle_batch
                for event in events:
                    _apply(handler, event, connection)
                    if session.checkpoint_each_event and event.position is not None:
                        session.save_checkpoint(connection, event.position)
                        stored = event.position
            skipped = None
            if page.undecodable is not None and self.projection.on_undecodable == "skip":
                skipped = page.undecodable
                session.record_skipped(connection, skipped)
                read_to = skipped.position
            if (count or skipped) and read_to is not None and read_to != stored:
                session.save_checkpoint(connection, read_to)
                stored = read_to
        self._read_on = None if read_to is None or read_to == stored else (stored, read_to)
        if skipped is not None:
            logger.warning(
                "projection %r skipped event %d of stream %r (type %r) at %s: it cannot be "
                "decoded (%s); recorded in its skipped events",
                self.projection.name,
                skipped.version,
                skipped.stream_id,
                skipped.event_type,
                skipped.position,
                skipped.error,
            )
        elif page.undecodable is not None:
            raise page.undecodable.error
        return count, count == self.batch_size or skipped is not None


def check_lock_timeout(lock_timeout: object) -> float | None:
    """``lock_timeout`` as seconds: None (wait without limit), or a number more than
    0 and at most :data:`~eventstore._validation.MAX_TIMEOUT_SECONDS`;
    ValidationError otherwise."""
    if lock_timeout is None:
        return None
    return check_seconds(lock_timeout, "lock_timeout", zero_allowed=False)


class _HandlerError(Exception):
    """Carries what a handler raised past the runner's translation of its own
    database errors: the handler's exceptions reach the caller as raised."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


def _apply(handler: Callable[[Any, Any], None], what: Any, connection: Any) -> None:
    """``handler(what, connection)`` (an event, or a batch's list of events): an
    operational database failure in it (a lost connection, a timeout, a
    conflict) as the library's error, so that ``run()`` knows what to retry;
    anything else exactly as the handler raised it."""
    try:
        handler(what, connection)
    except Exception as exc:
        error = translate(exc)
        if isinstance(error, OPERATIONAL_ERRORS):
            raise error from exc
        raise _HandlerError(exc) from None


def _connection_lost(exc: DatabaseUnavailableError) -> bool:
    """Whether ``exc`` means the connection is gone (the only failure :meth:`run`
    retries): the driver's error says so, or the library raised it itself on
    finding the session's connection gone (no driver error behind it)."""
    cause = exc.__cause__
    return cause is None or is_connection_lost(cause)
