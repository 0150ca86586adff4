"""The half of every store that is the same everywhere: argument checks, encoding,
decoding and paging. Backends supply the storage primitives."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from eventstore._backend import (
    DEFAULT_BATCH_SIZE,
    FeedPage,
    ProjectionSession,
    ReadPage,
    SkippedEvent,
    StoredEventRow,
    UndecodableEvent,
    Waiter,
)
from eventstore._closing import Closing
from eventstore._lifecycle import Lifecycle
from eventstore._validation import (
    EncodedBatch,
    check_identifier,
    check_int,
    check_limit,
    check_range,
    encode_batch,
    expected_bounds,
)
from eventstore.bound import BoundEventStore
from eventstore.codec import CborCodec
from eventstore.errors import DeserializationError, ValidationError
from eventstore.feed import (
    DEFAULT_POLL_INTERVAL,
    Subscription,
    check_after,
    check_feed_filter,
    check_poll_interval,
    page_through,
)
from eventstore.records import (
    ExpectedVersion,
    Position,
    RecordedEvent,
    Snapshot,
    recorded_event,
)
from eventstore.registry import EventRegistry
from eventstore.store import EventStore


class BaseEventStore(Closing, EventStore, ABC):
    """The half of :class:`~eventstore.store.EventStore` that is the same for every
    backend, written once; the contract is documented there.

    Every argument is checked and every payload encoded before a primitive is
    called, so a bad call never reaches storage. Backends implement the
    abstract primitives at the end of the class.
    """

    def __init__(self, registry: EventRegistry | None = None) -> None:
        self.codec = CborCodec(registry)
        self.lifecycle = Lifecycle()
        """Whether the store is open, and what ``close()`` stops: its
        subscriptions and projection runners register here."""

    @property
    def closed(self) -> bool:
        return self.lifecycle.closed

    def close(self) -> None:
        if self.lifecycle.close():
            self._release()

    def _release(self) -> None:
        """Let go of the backend's resources; called once, by the first close()."""

    @property
    def registry(self) -> EventRegistry:
        return self.codec.registry

    def append_events(
        self,
        stream_id: str,
        events: Iterable[Any],
        *,
        expected_version: ExpectedVersion,
        connection: Any = None,
    ) -> int:
        self.lifecycle.check_open()
        check_identifier(stream_id, "stream_id")
        lowest, highest = expected_bounds(expected_version)
        batch = encode_batch(events, self.codec)
        return self._append(stream_id, batch, expected_version, lowest, highest, connection)

    def load_events(
        self,
        stream_id: str,
        *,
        from_version: int = 1,
        to_version: int | None = None,
        limit: int | None = None,
        connection: Any = None,
    ) -> list[RecordedEvent]:
        self.lifecycle.check_open()
        check_identifier(stream_id, "stream_id")
        low, high = check_range(from_version, to_version)
        return self._load(stream_id, low, high, check_limit(limit), connection)

    def iter_events(
        self,
        stream_id: str,
        *,
        from_version: int = 1,
        to_version: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        connection: Any = None,
    ) -> Iterator[RecordedEvent]:
        self.lifecycle.check_open()
        check_identifier(stream_id, "stream_id")
        low, high = check_range(from_version, to_version)
        check_int(batch_size, "batch_size", minimum=1)
        caller = self._caller(connection)

        def load_page(lo: int, hi: int, n: int) -> Sequence[StoredEventRow]:
            self.lifecycle.check_open()
            return self._load_rows(stream_id, lo, hi, n, caller)

        return paginate(
            load_page,
            self._event_stream,
            low,
            high,
            batch_size,
        )

    def stream_version(self, stream_id: str, *, connection: Any = None) -> int:
        self.lifecycle.check_open()
        check_identifier(stream_id, "stream_id")
        return self._stream_version(stream_id, connection)

    def save_snapshot(
        self, stream_id: str, version: int, state: Any, connection: Any = None
    ) -> bool:
        self.lifecycle.check_open()
        check_identifier(stream_id, "stream_id")
        check_int(version, "version", minimum=1)
        written, head = self._save_snapshot(
            stream_id, version, self.codec.encode(state), connection
        )
        if not written and head < version:
            raise ValidationError(
                f"cannot snapshot stream {stream_id!r} at version {version}: "
                f"its last event is version {head}"
            )
        return written

    def load_snapshot(self, stream_id: str, *, connection: Any = None) -> Snapshot | None:
        self.lifecycle.check_open()
        check_identifier(stream_id, "stream_id")
        stored = self._load_snapshot(stream_id, connection)
        if stored is None:
            return None
        version, state_data, created_at = stored
        state = self.codec.decode_state(stream_id, version, state_data)
        return Snapshot(stream_id, version, state, created_at)

    def delete_snapshot(self, stream_id: str, connection: Any = None) -> bool:
        self.lifecycle.check_open()
        check_identifier(stream_id, "stream_id")
        return self._delete_snapshot(stream_id, connection)

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Any]: ...

    def bind(self, connection: Any) -> BoundEventStore:
        return BoundEventStore(self, connection)

    # -- the global feed --------------------------------------------------------------

    def feed_head(self) -> Position | None:
        self.lifecycle.check_open()
        return self._feed_head()

    def read_all(
        self,
        *,
        after: Position | None = None,
        limit: int = DEFAULT_BATCH_SIZE,
        event_types: Iterable[str] | None = None,
        stream_prefix: str | None = None,
        connection: Any = None,
    ) -> list[RecordedEvent]:
        self.lifecycle.check_open()
        start = check_after(after)
        check_int(limit, "limit", minimum=1)
        types, prefix = self._feed_filter(event_types, stream_prefix)
        rows, _ = self._feed_rows(start, limit, types, prefix, connection)
        events, undecodable = self._decoded(rows)
        if undecodable is not None and not events:
            raise undecodable.error
        return events

    def iter_all(
        self,
        *,
        after: Position | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        event_types: Iterable[str] | None = None,
        stream_prefix: str | None = None,
        connection: Any = None,
    ) -> Iterator[RecordedEvent]:
        self.lifecycle.check_open()
        start = check_after(after)
        check_int(batch_size, "batch_size", minimum=1)
        types, prefix = self._feed_filter(event_types, stream_prefix)
        reader = self._feed_reader(types, prefix, self._caller(connection))
        return page_through(reader, start, batch_size)

    def subscribe(
        self,
        *,
        after: Position | None = None,
        event_types: Iterable[str] | None = None,
        stream_prefix: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> Subscription:
        self.lifecycle.check_open()
        start = check_after(after)
        check_int(batch_size, "batch_size", minimum=1)
        interval = check_poll_interval(poll_interval)
        types, prefix = self._feed_filter(event_types, stream_prefix)
        subscription = Subscription(
            self._feed_reader(types, prefix),
            self._waiter(),
            after=start,
            batch_size=batch_size,
            poll_interval=interval,
        )
        self.lifecycle.track(subscription)
        return subscription

    def _feed_filter(
        self, event_types: Iterable[str] | None, stream_prefix: str | None
    ) -> tuple[list[str] | None, str | None]:
        """The checked filters, the event types with every alias of each."""
        types, prefix = check_feed_filter(event_types, stream_prefix)
        return self.registry.expand_names(types), prefix

    def _feed_reader(
        self, types: list[str] | None, prefix: str | None, connection: Any = None
    ) -> ReadPage:
        def read_page(after: Position | None, limit: int) -> FeedPage:
            self.lifecycle.check_open()
            return self._feed_page(after, limit, types, prefix, connection)

        return read_page

    def _feed_page(
        self,
        after: Position | None,
        limit: int,
        types: list[str] | None,
        prefix: str | None,
        connection: Any,
    ) -> FeedPage:
        rows, end = self._feed_rows(after, limit, types, prefix, connection)
        events, undecodable = self._decoded(rows)
        if undecodable is not None:
            return FeedPage(events, None, undecodable)
        return FeedPage(events, end)

    def _load(
        self, stream_id: str, low: int, high: int, limit: int | None, connection: Any
    ) -> list[RecordedEvent]:
        return self._events(self._load_rows(stream_id, low, high, limit, connection))

    def _events(self, rows: Iterable[StoredEventRow]) -> list[RecordedEvent]:
        return list(self._event_stream(rows))

    def _decoded(
        self, rows: Sequence[StoredEventRow]
    ) -> tuple[list[RecordedEvent], UndecodableEvent | None]:
        """The events of feed ``rows`` up to the first that cannot be decoded, and
        that one (None when every row decodes): a feed reader delivers the events
        before a bad one, then raises for it."""
        events: list[RecordedEvent] = []
        try:
            events.extend(self._event_stream(rows))
        except DeserializationError as error:
            stream_id, version, event_type, *_, transaction_id, sequence = rows[len(events)]
            position = Position(transaction_id, sequence)
            return events, UndecodableEvent(stream_id, version, event_type, position, error)
        return events, None

    def _event_stream(self, rows: Iterable[StoredEventRow]) -> Iterator[RecordedEvent]:
        """The events of ``rows``, each decoded only when the consumer asks for it
        (so a consumer that drops each event keeps one in memory, not a page).
        A DeserializationError names the event, its feed position included."""
        decode = self.codec.decode_event_data
        build = recorded_event
        for (
            stream_id,
            version,
            event_type,
            event_data,
            metadata,
            created_at,
            transaction_id,
            sequence,
        ) in rows:
            try:
                data = decode(stream_id, version, event_type, event_data)
            except DeserializationError as exc:
                if transaction_id is not None:
                    exc.position = Position(transaction_id, sequence)
                raise
            yield build(
                stream_id,
                version,
                event_type,
                data,
                metadata,
                created_at,
                transaction_id,
                sequence,
            )

    # -- the storage primitives a backend implements ---------------------------------

    @abstractmethod
    def _caller(self, connection: Any) -> Any:
        """``connection`` checked (and joined) as the caller's unit of work, for a
        lazy read that uses it later; None for None. Raises ValidationError for
        what this backend cannot join."""

    @abstractmethod
    def _nested(self, connection: Any) -> AbstractContextManager[Any]:
        """A savepoint in the caller's unit of work ``connection``, yielding it:
        what is written in the block is kept when it ends, undone when it raises."""

    @abstractmethod
    def _append(
        self,
        stream_id: str,
        batch: EncodedBatch,
        expected_version: ExpectedVersion,
        lowest: int,
        highest: int,
        connection: Any,
    ) -> int:
        """Store ``batch`` after the stream's head if the head lies in
        ``[lowest, highest]``; return the new head or raise ConcurrencyError."""

    @abstractmethod
    def _load_rows(
        self, stream_id: str, low: int, high: int, limit: int | None, connection: Any
    ) -> Sequence[StoredEventRow]:
        """The stored rows of versions ``low..high``, oldest first, at most ``limit``."""

    @abstractmethod
    def _feed_rows(
        self,
        after: Position | None,
        limit: int,
        event_types: list[str] | None,
        stream_prefix: str | None,
        connection: Any,
    ) -> tuple[Sequence[StoredEventRow], Position | None]:
        """The visible rows of the feed after ``after`` in feed order, filtered,
        and how far the read looked beyond them, as of the same read (the
        ``end`` of :class:`~eventstore.feed.FeedPage`)."""

    @abstractmethod
    def _feed_head(self) -> Position | None:
        """The position of the last visible event of the feed, or None."""

    @abstractmethod
    def _waiter(self) -> Waiter:
        """A new waiter that wakes when events are appended."""

    @abstractmethod
    def _projection_session(self, name: str) -> ProjectionSession:
        """A session for the projection, not yet holding its lock."""

    @abstractmethod
    def _projection_checkpoint(self, name: str) -> Position | None:
        """The projection's committed checkpoint, read without its lock."""

    @abstractmethod
    def _skipped_events(self, name: str) -> list[SkippedEvent]:
        """The events the projection skipped, in feed order, read without its lock."""

    @abstractmethod
    def _stream_version(self, stream_id: str, connection: Any) -> int:
        """The stream's head version (0 for none)."""

    @abstractmethod
    def _save_snapshot(
        self, stream_id: str, version: int, state: bytes, connection: Any
    ) -> tuple[bool, int]:
        """Keep ``state`` unless the head is below ``version`` or a snapshot at
        ``version`` or newer exists; return ``(written, head)``."""

    @abstractmethod
    def _load_snapshot(self, stream_id: str, connection: Any) -> tuple[int, bytes, datetime] | None:
        """The stored ``(version, state, created_at)`` as seen through ``connection``
        when given (its own saves and deletes), or None."""

    @abstractmethod
    def _delete_snapshot(self, stream_id: str, connection: Any) -> bool:
        """Delete the stream's snapshot (through ``connection`` when given); whether
        there was one."""


def paginate(
    load_rows: Callable[[int, int, int], Sequence[Sequence[Any]]],
    decode: Callable[[Sequence[Sequence[Any]]], Iterator[RecordedEvent]],
    low: int,
    high: int,
    batch_size: int,
) -> Iterator[RecordedEvent]:
    """Yield the events ``low`` to ``high`` of a stream, fetched ``batch_size`` rows
    at a time.

    ``load_rows(low, high, limit)`` loads one page of stored rows, oldest first,
    the version in column 1; ``decode(rows)`` turns them into events one at a
    time, as they are asked for. Paging by version (not offset) stays correct
    while the stream grows. A page's rows are let go before the next page is
    fetched, so memory stays flat (and warm) however long the stream.
    """
    while low <= high:
        rows = load_rows(low, high, batch_size)
        if not rows:
            return
        full = len(rows) >= batch_size
        low = rows[-1][1] + 1
        yield from decode(rows)
        del rows
        if not full:
            return
