"""An in-memory event store with the same contract as the PostgreSQL one.

For users' unit tests and as the reference model of the contract. Payloads go
through the same CBOR codec and the same checks, so what fails on PostgreSQL
fails here too. Thread-safe. Every append without ``connection=`` is its own
transaction and is visible at once. ``transaction()`` gives a unit of work (see
:mod:`eventstore._memory_transaction`): the only ``connection=`` this store
takes. ``close()`` (or the end of a ``with`` block) closes it as it closes a
PostgreSQL store: later calls raise StoreClosedError, its subscriptions and
projection runners stop.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from eventstore._backend import FeedPage, SkippedEvent, StoredEventRow, UndecodableEvent
from eventstore._base import BaseEventStore
from eventstore._memory_transaction import (
    DeadlockError,
    MemoryTransaction,
    Reservations,
    StagedEvent,
)
from eventstore._validation import EncodedBatch, EncodedEvent
from eventstore.errors import (
    DEADLOCK_DETAIL,
    ConcurrencyError,
    ProjectionError,
    TransactionConflictError,
    ValidationError,
)
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
        self._skipped: dict[str, dict[Position, SkippedEvent]] = {}
        self._projection_locks: dict[str, threading.Lock] = {}
        self._reservations = Reservations(self._lock)

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
            unit = self._unit_of(connection)
            try:
                self._reservations.wait_until_free(stream_id, unit)
            except DeadlockError:
                raise TransactionConflictError.for_stream(
                    stream_id, expected_version, self._head(stream_id, unit), DEADLOCK_DETAIL
                ) from None
            if unit is not None:
                self._unit_of(unit)  # still open: it may have ended while this waited
            head = self._head(stream_id, unit)
            if not lowest <= head <= highest:
                raise ConcurrencyError(stream_id, expected_version, head)
            if unit is not None:
                self._reservations.hold(stream_id, unit)
                return unit.stage(stream_id, head, batch)
            self._write([(stream_id, event) for event in batch], datetime.now(timezone.utc))
            return head + len(batch)

    def _write(self, events: Iterable[tuple[str, EncodedEvent]], now: datetime) -> None:
        """Store ``events`` (stream id, event) after their streams' heads, in one
        transaction of the feed; the caller holds the lock."""
        self._transactions += 1
        for stream_id, event in events:
            stream = self._streams.setdefault(stream_id, [])
            stored = _StoredEvent(
                stream_id,
                len(stream) + 1,
                event.event_type,
                event.data,
                event.metadata,
                now,
                Position(self._transactions, len(self._log) + 1),
            )
            stream.append(stored)
            self._log.append(stored)
        self._appended.notify_all()

    def _head(self, stream_id: str, unit: MemoryTransaction | None) -> int:
        """The stream's version, as seen through ``unit`` when given."""
        committed = len(self._streams.get(stream_id, ()))
        return committed if unit is None else unit.heads.get(stream_id, committed)

    # -- units of work ----------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[MemoryTransaction]:
        """A unit of work: pass what this yields as ``connection=`` to
        ``append_events``, ``load_events``, ``save_snapshot`` and
        ``delete_snapshot``.

        Its appends and snapshot saves and deletes are applied together when the
        block ends (their events contiguous in the feed, in the order they were
        appended), or dropped when it raises; reads through it see them, other
        reads do not. A stream it appended to is reserved until then: another
        thread's writer of that stream waits, then gets the usual answer, as on
        PostgreSQL. Unlike PostgreSQL, which would wait forever, a write of the
        same thread to such a stream outside the unit of work raises
        :class:`ValidationError`, and two units of work that would wait for each
        other make one append raise :class:`ConcurrencyError` (a deadlock).
        """
        self.lifecycle.check_open()
        unit = MemoryTransaction(self)
        try:
            yield unit
        except BaseException:
            self._end(unit, commit=False)
            raise
        self._end(unit, commit=True)

    def _end(self, unit: MemoryTransaction, *, commit: bool) -> None:
        with self._lock:
            if commit:
                now = datetime.now(timezone.utc)
                if unit.events:
                    self._write([(e.stream_id, e.event) for e in unit.events], now)
                for stream_id in unit.deleted_snapshots:
                    self._snapshots.pop(stream_id, None)
                for stream_id, (version, state) in unit.snapshots.items():
                    kept = self._snapshots.get(stream_id)
                    if kept is None or kept[0] < version:
                        self._snapshots[stream_id] = (version, state, now)
            unit.open = False
            self._reservations.release(unit)

    def _caller(self, connection: Any) -> MemoryTransaction | None:
        with self._lock:
            return self._unit_of(connection)

    @contextmanager
    def _nested(self, connection: Any) -> Iterator[MemoryTransaction]:
        with self._lock:
            unit = self._unit_of(connection)
            if unit is None:
                raise ValidationError("a savepoint needs a unit of work: pass connection=")
            mark = unit.mark()
        try:
            yield unit
        except BaseException:
            with self._lock:
                if unit.open:
                    unit.undo_to(mark)
            raise

    def _unit_of(self, connection: Any) -> MemoryTransaction | None:
        """The open unit of work of this store that ``connection`` is, or None for
        None; raise ValidationError for anything else. Called with the lock held."""
        if connection is None:
            return None
        if type(connection) is not MemoryTransaction:
            raise ValidationError(
                "connection must be None or the unit of work this store's "
                f"store.transaction() yields, not {type(connection).__name__} (the in-memory "
                "store joins no database transaction: a SQLAlchemy Session or Connection is "
                "for PostgresEventStore)"
            )
        if connection.store is not self:
            raise ValidationError(
                "connection is a unit of work of another store: pass the one this store's "
                "transaction() yields"
            )
        if not connection.open:
            raise ValidationError(
                "connection is a unit of work that has ended (its with block is over): "
                "open a new one with store.transaction()"
            )
        return connection

    def _load_rows(
        self, stream_id: str, low: int, high: int, limit: int | None, connection: Any
    ) -> list[StoredEventRow]:
        with self._lock:
            unit = self._unit_of(connection)
            stream = self._streams.get(stream_id, [])
            stop = min(high, len(stream))
            if limit is not None:
                stop = min(stop, low - 1 + limit)
            selected = stream[low - 1 : stop]
            staged = [] if unit is None else unit.staged(stream_id, low, high)
        rows = [stored.row() for stored in selected]
        if staged:
            rows += [_staged_row(event) for event in staged]
            if limit is not None:
                del rows[limit:]
        return rows

    def _stream_version(self, stream_id: str, connection: Any) -> int:
        with self._lock:
            return self._head(stream_id, self._unit_of(connection))

    # -- snapshots --------------------------------------------------------------------

    def _save_snapshot(
        self, stream_id: str, version: int, state: bytes, connection: Any
    ) -> tuple[bool, int]:
        with self._lock:
            unit = self._unit_of(connection)
            head = self._head(stream_id, unit)
            kept_version = self._kept_snapshot_version(stream_id, unit)
            if version > head or (kept_version is not None and kept_version >= version):
                return False, head
            if unit is not None:
                unit.snapshots[stream_id] = (version, state)
            else:
                self._snapshots[stream_id] = (version, state, datetime.now(timezone.utc))
            return True, head

    def _load_snapshot(self, stream_id: str, connection: Any) -> tuple[int, bytes, datetime] | None:
        with self._lock:
            unit = self._unit_of(connection)
            if unit is not None:
                if stream_id in unit.snapshots:
                    version, state = unit.snapshots[stream_id]
                    return version, state, datetime.now(timezone.utc)
                if stream_id in unit.deleted_snapshots:
                    return None
            return self._snapshots.get(stream_id)

    def _delete_snapshot(self, stream_id: str, connection: Any) -> bool:
        with self._lock:
            unit = self._unit_of(connection)
            if unit is None:
                return self._snapshots.pop(stream_id, None) is not None
            existed = self._kept_snapshot_version(stream_id, unit) is not None
            unit.snapshots.pop(stream_id, None)
            unit.deleted_snapshots.add(stream_id)
            return existed

    def _kept_snapshot_version(self, stream_id: str, unit: MemoryTransaction | None) -> int | None:
        """The version of the stream's snapshot as seen through ``unit`` when given
        (its own saves and deletes first), or None; the caller holds the lock."""
        if unit is not None:
            if stream_id in unit.snapshots:
                return unit.snapshots[stream_id][0]
            if stream_id in unit.deleted_snapshots:
                return None
        kept = self._snapshots.get(stream_id)
        return None if kept is None else kept[0]

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
            self._unit_of(connection)  # checked; the feed shows committed events only
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

    def _feed_head(self) -> Position | None:
        with self._lock:
            return self._log[-1].position if self._log else None

    def _waiter(self) -> _AppendWaiter:
        return _AppendWaiter(self)

    # -- projections ------------------------------------------------------------------

    def _projection_session(self, name: str) -> _MemoryProjectionSession:
        self.lifecycle.check_open()
        with self._lock:
            lock = self._projection_locks.setdefault(name, threading.Lock())
        return _MemoryProjectionSession(self, name, lock)

    def _projection_checkpoint(self, name: str) -> Position | None:
        self.lifecycle.check_open()
        with self._lock:
            return self._checkpoints.get(name)

    def _skipped_events(self, name: str) -> list[SkippedEvent]:
        self.lifecycle.check_open()
        with self._lock:
            skipped = self._skipped.get(name, {})
            return [skipped[position] for position in sorted(skipped)]


def _staged_row(staged: StagedEvent) -> StoredEventRow:
    """A staged event as a stored row, with no feed position yet."""
    event = staged.event
    return (
        staged.stream_id,
        staged.version,
        event.event_type,
        event.data,
        event.metadata,
        staged.created_at,
        None,
        None,
    )


class _AppendWaiter:
    """Wakes a subscription when the store's log grows.

    Holds nothing but a reference to the store (never to its subscription), so
    any number of subscriptions are fine and one dropped without ``close()`` is
    simply collected. After :meth:`close`, :meth:`wait` returns at once.
    """

    _SLICE = 0.1
    """Longest single block, so that a stop request is seen promptly."""

    def __init__(self, store: InMemoryEventStore) -> None:
        self._store = store
        self._seen = -1
        self._closed = threading.Event()

    def arm(self) -> None:
        with self._store._lock:
            self._seen = len(self._store._log)

    def wait(self, timeout: float, stop: threading.Event) -> None:
        store = self._store
        deadline = time.monotonic() + timeout
        with store._appended:
            while len(store._log) == self._seen:
                if stop.is_set() or self._closed.is_set():
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                store._appended.wait(min(remaining, self._SLICE))

    def close(self) -> None:
        """Nothing to release; ends a wait in progress."""
        self._closed.set()


class _MemoryProjectionSession:
    """A projection's lock in this store; the checkpoint advances event by event
    (batch by batch for a batch handler), since a handler's effects in memory
    cannot be rolled back."""

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
            self._store._skipped.pop(self._name, None)

    def record_skipped(self, connection: None, event: UndecodableEvent) -> None:
        record = SkippedEvent(
            self._name,
            event.position,
            event.stream_id,
            event.version,
            event.event_type,
            event.error_text,
            datetime.now(timezone.utc),
        )
        with self._store._lock:
            self._store._skipped.setdefault(self._name, {})[event.position] = record

    def read(
        self, connection: None, after: Position | None, limit: int, event_types: list[str] | None
    ) -> FeedPage:
        return self._store._feed_page(after, limit, event_types, None, None)

    def stop(self) -> None:
        """Release the lock, for the store's close(); safe from any thread."""
        self.close()

    def close(self) -> None:
        with self._store._lock:
            held, self._held = self._held, False
        if held:
            self._lock.release()
