"""An in-memory event store with the same contract as the PostgreSQL one.

For users' unit tests and as the reference model of the contract. Payloads go
through the same CBOR codec and the same checks, so what fails on PostgreSQL
fails here too. Thread-safe. Every append is its own transaction and is visible
at once; there are no other transactions: ``connection=`` is accepted, so code
written for the PostgreSQL store runs unchanged, and ignored.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from eventstore._base import BaseEventStore, StoredEventRow
from eventstore._validation import EncodedBatch
from eventstore.errors import ConcurrencyError, ProjectionError
from eventstore.feed import FeedPage
from eventstore.records import ExpectedVersion, Position
from eventstore.registry import EventRegistry


@dataclass(frozen=True, slots=True)
class _StoredEvent:
    stream_id: str
    version: int
    event_type: str
    data: bytes
    metadata: str | None
    created_at: datetime
    position: Position

    def row(self) -> StoredEventRow:
        # Metadata stays JSON text, parsed afresh by each event that is read, as
        # from PostgreSQL: callers get copies.
        return (
            self.stream_id,
            self.version,
            self.event_type,
            self.data,
            self.metadata,
            self.created_at,
            self.position.transaction_id,
            self.position.sequence,
        )


class InMemoryEventStore(BaseEventStore):
    """Streams, the global feed, snapshots and projection checkpoints in process
    memory; see the module docstring."""

    def __init__(self, registry: EventRegistry | None = None) -> None:
        super().__init__(registry)
        self._lock = threading.Lock()
        self._appended = threading.Condition(self._lock)
        self._streams: dict[str, list[_StoredEvent]] = {}
        self._log: list[_StoredEvent] = []
        self._transactions = 0
        self._snapshots: dict[str, tuple[int, bytes, datetime]] = {}
        self._checkpoints: dict[str, Position] = {}
        self._projection_locks: dict[str, threading.Lock] = {}

    # -- streams ----------------------------------------------------------------------

    def _append(
        self,
        stream_id: str,
        batch: EncodedBatch,
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
            self._transactions += 1
            now = datetime.now(timezone.utc)
            for offset, event in enumerate(batch, start=1):
                stored = _StoredEvent(
                    stream_id,
                    head + offset,
                    event.event_type,
                    event.data,
                    event.metadata,
                    now,
                    Position(self._transactions, len(self._log) + 1),
                )
                stream.append(stored)
                self._log.append(stored)
            self._streams[stream_id] = stream
            self._appended.notify_all()
            return len(stream)

    def _load_rows(
        self, stream_id: str, low: int, high: int, limit: int | None, connection: Any
    ) -> list[StoredEventRow]:
        with self._lock:
            stream = self._streams.get(stream_id, [])
            stop = min(high, len(stream))
            if limit is not None:
                stop = min(stop, low - 1 + limit)
            selected = stream[low - 1 : stop]
        return [stored.row() for stored in selected]

    def _stream_version(self, stream_id: str, connection: Any) -> int:
        with self._lock:
            return len(self._streams.get(stream_id, ()))

    # -- snapshots --------------------------------------------------------------------

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

    # -- the feed ---------------------------------------------------------------------

    def _feed_rows(
        self,
        after: Position | None,
        limit: int,
        event_types: list[str] | None,
        stream_prefix: str | None,
        connection: Any,
    ) -> tuple[list[StoredEventRow], Position | None]:
        wanted = None if event_types is None else set(event_types)
        selected: list[_StoredEvent] = []
        with self._lock:
            start = (
                0
                if after is None
                else bisect.bisect_right(self._log, after, key=lambda stored: stored.position)
            )
            for stored in self._log[start:]:
                if wanted is not None and stored.event_type not in wanted:
                    continue
                if stream_prefix is not None and not stored.stream_id.startswith(stream_prefix):
                    continue
                selected.append(stored)
                if len(selected) == limit:
                    break
            end = self._log[-1].position if self._log and len(selected) < limit else None
        return [stored.row() for stored in selected], end

    def _waiter(self) -> _AppendWaiter:
        return _AppendWaiter(self)

    # -- projections ------------------------------------------------------------------

    def _projection_session(self, name: str) -> _MemoryProjectionSession:
        with self._lock:
            lock = self._projection_locks.setdefault(name, threading.Lock())
        return _MemoryProjectionSession(self, name, lock)

    def _projection_checkpoint(self, name: str) -> Position | None:
        with self._lock:
            return self._checkpoints.get(name)


class _AppendWaiter:
    """Wakes a subscription when the store's log grows."""

    _SLICE = 0.1

    def __init__(self, store: InMemoryEventStore) -> None:
        self._store = store
        self._seen = -1

    def arm(self) -> None:
        with self._store._lock:
            self._seen = len(self._store._log)

    def wait(self, timeout: float, stop: threading.Event) -> None:
        store = self._store
        deadline = time.monotonic() + timeout
        with store._appended:
            while not stop.is_set() and len(store._log) == self._seen:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                store._appended.wait(min(remaining, self._SLICE))

    def close(self) -> None:
        """Nothing to release."""


class _MemoryProjectionSession:
    """A projection's lock in this store; the checkpoint advances event by event,
    since a handler's effects in memory cannot be rolled back."""

    checkpoint_each_event = True

    def __init__(self, store: InMemoryEventStore, name: str, lock: threading.Lock) -> None:
        self._store = store
        self._name = name
        self._lock = lock
        self._held = False

    def acquire(self, wait: float) -> bool:
        self._held = self._lock.acquire(timeout=wait)
        return self._held

    @contextmanager
    def transaction(self) -> Iterator[None]:
        yield None

    def load_checkpoint(self, connection: None) -> Position | None:
        return self._store._projection_checkpoint(self._name)

    def save_checkpoint(self, connection: None, position: Position) -> None:
        with self._store._lock:
            stored = self._store._checkpoints.get(self._name)
            if stored is not None and stored >= position:
                raise ProjectionError(
                    f"the checkpoint of projection {self._name!r} is already at or past "
                    f"{position}: a checkpoint never moves backwards"
                )
            self._store._checkpoints[self._name] = position

    def delete_checkpoint(self, connection: None) -> None:
        with self._store._lock:
            self._store._checkpoints.pop(self._name, None)

    def read(
        self, connection: None, after: Position | None, limit: int, event_types: list[str] | None
    ) -> FeedPage:
        return self._store._feed_page(after, limit, event_types, None, None)

    def close(self) -> None:
        held, self._held = self._held, False
        if held:
            self._lock.release()
