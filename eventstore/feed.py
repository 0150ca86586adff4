"""Following the global feed: argument checks, paging, and live subscriptions.

A :class:`Subscription` catches up from a checkpoint, then waits for new
events. What wakes it is the backend's :class:`Waiter` (LISTEN/NOTIFY on
PostgreSQL, a condition variable in memory); polling every ``poll_interval``
seconds keeps it correct when wake-ups are lost (poolers in transaction mode
drop LISTEN). The waiter is armed before each read, so a page shorter than
``batch_size`` ends the catch-up: the subscription waits after delivering it
(a commit after that read still ends the wait at once) instead of reading
again to find nothing, one read per wake-up.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import deque
from collections.abc import Iterable, Iterator

from eventstore._backend import FeedPage, ReadPage, UndecodableEvent, Waiter
from eventstore._closing import Closing
from eventstore._translate import is_connection_lost
from eventstore._validation import check_identifier, check_int, check_text
from eventstore.errors import DatabaseUnavailableError, ValidationError
from eventstore.records import Position, RecordedEvent

logger = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL = 1.0
_RETRY_DELAY = 0.2
"""Delay before retrying a read that failed for lost connection."""


def connection_was_lost(exc: BaseException) -> bool:
    """Whether a failed read is worth retrying on a new connection: the connection
    was lost (or the server could not be reached), as the library's
    :class:`~eventstore.errors.DatabaseUnavailableError` or as the driver's error.
    A timeout (the pool's included), a missing schema, a refused privilege or a
    bug is not: retrying would not help."""
    return isinstance(exc, DatabaseUnavailableError) or is_connection_lost(exc)


def read_on_from(after: Position | None, page: FeedPage) -> Position | None:
    """Where a reader at ``after`` that got ``page`` reads next: after the page's
    last event, or after its ``end`` when the read looked further."""
    position = page.events[-1].position if page.events else after
    end = page.end
    if end is not None and (position is None or end > position):
        return end
    return position


def check_feed_filter(
    event_types: Iterable[str] | None, stream_prefix: str | None
) -> tuple[list[str] | None, str | None]:
    """Validate the feed filters: a non-empty collection of str, a str prefix."""
    types: list[str] | None = None
    if event_types is not None:
        if isinstance(event_types, str) or not isinstance(event_types, Iterable):
            raise ValidationError(
                f"event_types must be a collection of str, not {type(event_types).__name__}"
            )
        types = list(event_types)
        if not types:
            raise ValidationError("event_types is empty: pass None to read every type")
        for event_type in types:
            check_identifier(event_type, "an entry of event_types")
    if stream_prefix is not None:
        if not isinstance(stream_prefix, str):
            raise ValidationError(
                f"stream_prefix must be a str, not {type(stream_prefix).__name__}"
            )
        check_text(stream_prefix, "stream_prefix")
    return types, stream_prefix


def check_after(after: object) -> Position | None:
    """``after`` if it is None or a :class:`Position`."""
    if after is None or type(after) is Position:
        return after
    if isinstance(after, Position):  # a subclass of the application's: compare as ours
        return Position(after.transaction_id, after.sequence)
    raise ValidationError(
        f"after must be an eventstore.Position or None, not {type(after).__name__}; "
        "use Position.parse(text) for a stored checkpoint"
    )


def check_poll_interval(poll_interval: object) -> float:
    """``poll_interval`` as a float if it is a positive number of seconds."""
    if isinstance(poll_interval, bool) or not isinstance(poll_interval, (int, float)):
        raise ValidationError(f"poll_interval must be a number, not {type(poll_interval).__name__}")
    if not poll_interval > 0:
        raise ValidationError(f"poll_interval must be > 0 seconds, got {poll_interval}")
    return float(poll_interval)


def page_through(
    read_page: ReadPage, after: Position | None, batch_size: int
) -> Iterator[RecordedEvent]:
    """Yield the feed after ``after`` up to its visible end, ``batch_size`` at a time;
    an event that cannot be decoded raises its DeserializationError once the
    events before it are yielded."""
    while True:
        page = read_page(after, batch_size)
        yield from page.events
        if page.undecodable is not None:
            raise page.undecodable.error
        if len(page.events) < batch_size:
            return
        after = page.events[-1].position


class Subscription(Iterator[RecordedEvent], Closing):
    """An endless iterator over the feed: catch-up, then live events.

    Iteration ends (StopIteration) soon after :meth:`stop` or :meth:`close` is
    called from any thread. ``position`` is how far the subscription has read:
    the position of the last event delivered (or the starting checkpoint), or
    further once it has caught up past events its filter skips, so a filtered
    subscription does not read them again. Resuming from ``position`` misses
    nothing.

    A read that fails because the connection was lost (or the server cannot be
    reached) is retried every 0.2 s, resuming from ``position``, so every event
    is delivered once; the first failure of a run is logged as a WARNING, the
    retries after it as DEBUG, and the recovery as INFO. Any other error is raised
    from ``next()`` and ends the subscription (later calls raise
    StopIteration): :class:`~eventstore.errors.OperationTimeoutError` when no
    pooled connection became free within ``pool_timeout`` (the reads borrow a
    pooled connection for each read only), :class:`~eventstore.errors.SchemaError`
    on a database without the tables, and so on; subscribe again from
    ``position`` once the cause is fixed. An event that cannot be decoded is one
    of these: every event before it is delivered, then ``next()`` raises its
    :class:`~eventstore.errors.DeserializationError` and the subscription ends
    at the event before it.

    A subscription holds no pooled connection. One that is dropped without
    ``close()`` (a ``break`` out of a ``for`` loop, an exception) releases its
    share of the store's listening connection when it is garbage-collected.
    """

    def __init__(
        self,
        read_page: ReadPage,
        waiter: Waiter,
        *,
        after: Position | None,
        batch_size: int,
        poll_interval: float,
    ) -> None:
        self.position = after
        self._read_page = read_page
        self._waiter = waiter
        self._batch_size = check_int(batch_size, "batch_size", minimum=1)
        self._poll_interval = check_poll_interval(poll_interval)
        self._buffer: deque[RecordedEvent] = deque()
        self._read_on_from: Position | None = None  # where to go once the buffer is delivered
        self._undecodable: UndecodableEvent | None = None  # raised once the buffer is delivered
        # The last read came up short: once its events are delivered, wait before
        # reading again (the waiter was armed before that read, so a commit after
        # it still ends the wait at once).
        self._caught_up = False
        self._stopped = threading.Event()
        self._failed_reads = 0  # in a row: the first is logged as a WARNING, the rest as DEBUG
        # Closes the waiter once: on close(), or when the subscription is collected.
        self._release = weakref.finalize(self, waiter.close)

    def stop(self) -> None:
        """Make iteration end soon; safe to call from any thread."""
        self._stopped.set()

    def close(self) -> None:
        """Stop and release the subscription's share of the store's listening
        connection; idempotent and safe from any thread, also while another
        thread iterates (its ``next()`` then ends with StopIteration)."""
        self._stopped.set()
        self._release()

    def __iter__(self) -> Subscription:
        return self

    def __next__(self) -> RecordedEvent:
        while True:
            if self._stopped.is_set():
                self.close()
                raise StopIteration
            if self._buffer:
                event = self._buffer.popleft()
                self.position = event.position
                return event
            if self._undecodable is not None:
                error, self._undecodable = self._undecodable.error, None
                self.close()
                raise error
            if self._read_on_from is not None:
                self.position, self._read_on_from = self._read_on_from, None
            if self._caught_up:
                self._caught_up = False
                self._waiter.wait(self._poll_interval, self._stopped)
                continue
            self._waiter.arm()
            try:
                page = self._read_page(self.position, self._batch_size)
            except Exception as exc:
                if self._stopped.is_set():  # stopped meanwhile (the store's close() does)
                    self.close()
                    raise StopIteration from None
                if not connection_was_lost(exc):
                    self.close()
                    raise
                self._failed_reads += 1
                logger.log(
                    logging.WARNING if self._failed_reads == 1 else logging.DEBUG,
                    "subscription read failed (no connection to the database), "
                    "retrying from %s every %s s: %s",
                    self.position,
                    _RETRY_DELAY,
                    exc,
                )
                self._stopped.wait(_RETRY_DELAY)
                continue
            if self._failed_reads:
                logger.info("subscription reading again after %d failed reads", self._failed_reads)
                self._failed_reads = 0
            self._read_on_from = read_on_from(self.position, page)
            self._undecodable = page.undecodable
            if page.events:
                self._buffer.extend(page.events)
                self._caught_up = len(page.events) < self._batch_size
            elif self._undecodable is None:
                self.position, self._read_on_from = self._read_on_from, None
                self._waiter.wait(self._poll_interval, self._stopped)
