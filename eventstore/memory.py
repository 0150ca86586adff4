"""An in-memory event store with the same contract as the PostgreSQL one.

For users' unit tests and as the reference model of the contract. Payloads go
through the same CBOR codec and the same checks, so what fails on PostgreSQL
fails here too. Thread-safe. There are no transactions: ``connection=`` is
accepted, so code written for the PostgreSQL store runs unchanged, and ignored.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from eventstore._base import BaseEventStore, StoredEventRow
from eventstore._validation import EncodedEvent
from eventstore.errors import ConcurrencyError
from eventstore.records import ExpectedVersion
from eventstore.registry import EventRegistry


@dataclass(frozen=True, slots=True)
class _StoredEvent:
    event_type: str
    data: bytes
    metadata: str | None
    created_at: datetime


class InMemoryEventStore(BaseEventStore):
    """Streams and snapshots in process memory; see the module docstring."""

    def __init__(self, registry: EventRegistry | None = None) -> None:
        super().__init__(registry)
        self._streams: dict[str, list[_StoredEvent]] = {}
        self._snapshots: dict[str, tuple[int, bytes, datetime]] = {}
        self._lock = threading.Lock()

    def _append(
        self,
        stream_id: str,
        batch: list[EncodedEvent],
        expected_version: ExpectedVersion,
        lowest: int,
        highest: int,
        connection: Any,
    ) -> int:
        with self._lock:
            stream = self._streams.get(stream_id, [])
            head = len(stream)
            if not lowest <= head <= highest:
                raise ConcurrencyError(stream_id, expected_version, head)
            now = datetime.now(timezone.utc)
            stream.extend(
                _StoredEvent(event.event_type, event.data, event.metadata, now) for event in batch
            )
            self._streams[stream_id] = stream
            return len(stream)

    def _load_rows(
        self, stream_id: str, low: int, high: int, limit: int | None, connection: Any
    ) -> list[StoredEventRow]:
        with self._lock:
            stream = self._streams.get(stream_id, [])
            stop = min(high, len(stream))
            if limit is not None:
                stop = min(stop, low - 1 + limit)
            selected = list(enumerate(stream[low - 1 : stop], start=low))
        # Metadata is parsed afresh on every load, as JSONB is: callers get copies.
        return [
            (
                version,
                stored.event_type,
                stored.data,
                None if stored.metadata is None else json.loads(stored.metadata),
                stored.created_at,
            )
            for version, stored in selected
        ]

    def _stream_version(self, stream_id: str, connection: Any) -> int:
        with self._lock:
            return len(self._streams.get(stream_id, ()))

    def _save_snapshot(
        self, stream_id: str, version: int, state: bytes, connection: Any
    ) -> tuple[bool, int]:
        with self._lock:
            head = len(self._streams.get(stream_id, ()))
            kept = self._snapshots.get(stream_id)
            if version > head or (kept is not None and kept[0] >= version):
                return False, head
            self._snapshots[stream_id] = (version, state, datetime.now(timezone.utc))
            return True, head

    def _load_snapshot(self, stream_id: str) -> tuple[int, bytes, datetime] | None:
        with self._lock:
            return self._snapshots.get(stream_id)
