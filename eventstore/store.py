"""The interface every event store implements (PostgreSQL and in-memory alike)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

from eventstore.codec import CborCodec
from eventstore.records import ExpectedVersion, RecordedEvent, Snapshot

DEFAULT_BATCH_SIZE = 1000


@runtime_checkable
class EventStore(Protocol):
    """Append-only streams of events with optimistic concurrency, and snapshots.

    Versions count from 1 within a stream; a stream with no events is at 0.
    """

    codec: CborCodec

    def append_events(
        self,
        stream_id: str,
        events: Iterable[Any],
        *,
        expected_version: ExpectedVersion,
        connection: Any = None,
    ) -> int:
        """Append ``events`` atomically if the stream is at ``expected_version``.

        Returns the stream's new version. Raises ConcurrencyError when the stream
        is elsewhere (nothing is written), ValidationError or SerializationError
        for bad input (nothing is written).
        """
        ...

    def load_events(
        self,
        stream_id: str,
        *,
        from_version: int = 1,
        to_version: int | None = None,
        limit: int | None = None,
        connection: Any = None,
    ) -> list[RecordedEvent]:
        """Events from ``from_version`` to ``to_version`` inclusive, oldest first."""
        ...

    def iter_events(
        self,
        stream_id: str,
        *,
        from_version: int = 1,
        to_version: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> Iterator[RecordedEvent]:
        """Like :meth:`load_events`, in pages of ``batch_size``: bounded memory."""
        ...

    def stream_version(self, stream_id: str) -> int:
        """The version of the stream's last event; 0 when it has none."""
        ...

    def save_snapshot(
        self, stream_id: str, version: int, state: Any, connection: Any = None
    ) -> bool:
        """Store ``state`` as of ``version`` unless a snapshot as new or newer exists.

        Returns True when written, False when the kept snapshot is at the same or
        a newer version. Raises ValidationError for a version past the stream's
        head.
        """
        ...

    def load_snapshot(self, stream_id: str) -> Snapshot | None:
        """The stream's snapshot, or None."""
        ...


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
