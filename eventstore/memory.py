"""An in-memory event store with the same contract as the PostgreSQL one.

For users' unit tests and as the reference model of the contract. Payloads go
through the same CBOR codec and the same checks, so what fails on PostgreSQL
fails here too. Thread-safe. There are no transactions: ``connection=`` is
accepted, so code written for the PostgreSQL store runs unchanged, and ignored.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from eventstore._validation import (
    check_identifier,
    check_int,
    check_limit,
    check_range,
    encode_batch,
    expected_bounds,
)
from eventstore.codec import CborCodec
from eventstore.errors import ConcurrencyError, ValidationError
from eventstore.records import ExpectedVersion, RecordedEvent, Snapshot
from eventstore.registry import EventRegistry
from eventstore.store import DEFAULT_BATCH_SIZE, paginate


@dataclass(frozen=True, slots=True)
class _StoredEvent:
    event_type: str
    data: bytes
    metadata: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class _StoredSnapshot:
    version: int
    state: bytes
    created_at: datetime


class InMemoryEventStore:
    """Streams and snapshots in process memory; see the module docstring."""

    def __init__(self, registry: EventRegistry | None = None) -> None:
        self.codec = CborCodec(registry)
        self._streams: dict[str, list[_StoredEvent]] = {}
        self._snapshots: dict[str, _StoredSnapshot] = {}
        self._lock = threading.Lock()

    @property
    def registry(self) -> EventRegistry:
        """The registry whose classes payloads are encoded and rebuilt with."""
        return self.codec.registry

    def append_events(
        self,
        stream_id: str,
        events: Sequence[Any],
        *,
        expected_version: ExpectedVersion,
        connection: Any = None,
    ) -> int:
        """Append atomically if the stream is at ``expected_version``; see
        :meth:`eventstore.PostgresEventStore.append_events`."""
        check_identifier(stream_id, "stream_id")
        lowest, highest = expected_bounds(expected_version)
        batch = encode_batch(events, self.codec)
        with self._lock:
            stream = self._streams.get(stream_id, [])
            head = len(stream)
            if not lowest <= head <= highest:
                raise ConcurrencyError(stream_id, expected_version, head)
            self._streams[stream_id] = stream
            now = datetime.now(timezone.utc)
            stream.extend(
                _StoredEvent(event.event_type, event.data, event.metadata, now) for event in batch
            )
            return len(stream)

    def load_events(
        self,
        stream_id: str,
        *,
        from_version: int = 1,
        to_version: int | None = None,
        limit: int | None = None,
        connection: Any = None,
    ) -> list[RecordedEvent]:
        """Events ``from_version`` to ``to_version`` inclusive, oldest first."""
        check_identifier(stream_id, "stream_id")
        low, high = check_range(from_version, to_version)
        return self._load(stream_id, low, high, check_limit(limit))

    def iter_events(
        self,
        stream_id: str,
        *,
        from_version: int = 1,
        to_version: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> Iterator[RecordedEvent]:
        """Like :meth:`load_events`, in pages of ``batch_size``."""
        check_identifier(stream_id, "stream_id")
        low, high = check_range(from_version, to_version)
        check_int(batch_size, "batch_size", minimum=1)
        return paginate(lambda lo, hi, n: self._load(stream_id, lo, hi, n), low, high, batch_size)

    def stream_version(self, stream_id: str) -> int:
        """The version of the stream's last event; 0 when it has none."""
        check_identifier(stream_id, "stream_id")
        with self._lock:
            return len(self._streams.get(stream_id, ()))

    def save_snapshot(
        self, stream_id: str, version: int, state: Any, connection: Any = None
    ) -> bool:
        """Keep ``state`` as of ``version`` unless a snapshot as new or newer exists."""
        check_identifier(stream_id, "stream_id")
        check_int(version, "version", minimum=1)
        encoded = self.codec.encode(state)
        with self._lock:
            head = len(self._streams.get(stream_id, ()))
            if version > head:
                raise ValidationError(
                    f"cannot snapshot stream {stream_id!r} at version {version}: "
                    f"its last event is version {head}"
                )
            kept = self._snapshots.get(stream_id)
            if kept is not None and kept.version >= version:
                return False
            self._snapshots[stream_id] = _StoredSnapshot(
                version, encoded, datetime.now(timezone.utc)
            )
            return True

    def load_snapshot(self, stream_id: str) -> Snapshot | None:
        """The stream's snapshot, or None."""
        check_identifier(stream_id, "stream_id")
        with self._lock:
            kept = self._snapshots.get(stream_id)
        if kept is None:
            return None
        state = self.codec.decode_state(stream_id, kept.version, kept.state)
        return Snapshot(stream_id, kept.version, state, kept.created_at)

    def _load(self, stream_id: str, low: int, high: int, limit: int | None) -> list[RecordedEvent]:
        with self._lock:
            stream = self._streams.get(stream_id, [])
            stop = min(high, len(stream))
            if limit is not None:
                stop = min(stop, low - 1 + limit)
            selected = list(enumerate(stream[low - 1 : stop], start=low))
        decode = self.codec.decode_event_data
        return [
            RecordedEvent(
                stream_id,
                version,
                stored.event_type,
                decode(stream_id, version, stored.event_type, stored.data),
                None if stored.metadata is None else json.loads(stored.metadata),
                stored.created_at,
            )
            for version, stored in selected
        ]
