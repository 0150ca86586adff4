"""The in-memory store's unit of work: what ``InMemoryEventStore.transaction()`` yields.

Appends and snapshot saves made through a :class:`MemoryTransaction` are staged
in it, and the store applies them all at once when its block ends without an
exception (and drops them otherwise). Every stream it appends to is reserved in
the store's :class:`Reservations` until then, so other writers of that stream
wait, as PostgreSQL makes them wait for the rows an open transaction inserted.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timezone

from eventstore._validation import EncodedBatch, EncodedEvent
from eventstore.errors import ValidationError


@dataclass(frozen=True, slots=True)
class StagedEvent:
    """An event appended through an open unit of work, not yet in the feed."""

    stream_id: str
    version: int
    event: EncodedEvent
    created_at: datetime


class MemoryTransaction:
    """A unit of work of one :class:`~eventstore.InMemoryEventStore`.

    Pass it as ``connection=`` to that store's ``append_events``,
    ``load_events``, ``save_snapshot`` and ``delete_snapshot`` inside its
    ``with`` block: appends and snapshot saves and deletes are kept back until
    the block ends, then applied together (or dropped when the block raises).
    Reads through it see its own writes. After its block it is refused
    (``ValidationError``). The store's lock guards every attribute.
    """

    def __init__(self, store: object) -> None:
        self.store = store
        self.thread = threading.get_ident()
        """The thread that opened it: a write of that thread elsewhere to a stream
        it reserved could only wait for itself."""
        self.open = True
        self.events: list[StagedEvent] = []
        """Staged events, in the order they were appended."""
        self.heads: dict[str, int] = {}
        """Each stream it appended to, at the version its staged events reach."""
        self.reserved: set[str] = set()
        """Each stream it holds in :class:`Reservations` (kept after a savepoint's undo)."""
        self.snapshots: dict[str, tuple[int, bytes]] = {}
        """Staged snapshots: ``(version, state)`` by stream."""
        self.deleted_snapshots: set[str] = set()
        """Streams whose committed snapshot it deleted: gone when it commits, before
        its staged snapshots are applied."""
        self.waiting_for: MemoryTransaction | None = None
        """The unit of work whose stream it waits for, if any (to find deadlocks)."""

    def __repr__(self) -> str:
        return f"<MemoryTransaction of {self.store!r}: {'open' if self.open else 'ended'}>"

    def stage(self, stream_id: str, head: int, batch: EncodedBatch) -> int:
        """Keep ``batch`` as the events after version ``head``; return the new head."""
        now = datetime.now(timezone.utc)
        for offset, event in enumerate(batch, start=1):
            self.events.append(StagedEvent(stream_id, head + offset, event, now))
        self.heads[stream_id] = head + len(batch)
        return head + len(batch)

    def mark(self) -> tuple[int, dict[str, int], dict[str, tuple[int, bytes]], set[str]]:
        """What :meth:`undo_to` needs to drop everything staged after now (a savepoint)."""
        return len(self.events), dict(self.heads), dict(self.snapshots), set(self.deleted_snapshots)

    def undo_to(
        self, mark: tuple[int, dict[str, int], dict[str, tuple[int, bytes]], set[str]]
    ) -> None:
        """Drop what was staged after ``mark`` was taken (streams reserved since stay
        reserved until the unit of work ends, as PostgreSQL keeps row locks a
        rolled-back savepoint took)."""
        count, heads, snapshots, deleted = mark
        del self.events[count:]
        self.heads = heads
        self.snapshots = snapshots
        self.deleted_snapshots = deleted

    def staged(self, stream_id: str, low: int, high: int) -> list[StagedEvent]:
        """The staged events of ``stream_id`` with versions ``low..high``, oldest first."""
        if stream_id not in self.heads:
            return []
        return [e for e in self.events if e.stream_id == stream_id and low <= e.version <= high]


class DeadlockError(Exception):
    """Internal: waiting for a stream would close a cycle of units of work."""


class Reservations:
    """Which open unit of work holds each stream; writers of a held stream wait.

    Every method is called with ``lock`` (the store's lock) held.
    """

    def __init__(self, lock: threading.Lock) -> None:
        self._released = threading.Condition(lock)
        self._holders: dict[str, MemoryTransaction] = {}

    def wait_until_free(self, stream_id: str, unit: MemoryTransaction | None) -> None:
        """Return once no unit of work but ``unit`` holds ``stream_id``.

        Raises :class:`ValidationError` when the holder was opened by this
        thread (it could only wait for itself), :class:`DeadlockError` when the
        holder waits, directly or not, for ``unit``.
        """
        while True:
            holder = self._holders.get(stream_id)
            if holder is None or holder is unit:
                return
            if holder.thread == threading.get_ident():
                raise ValidationError(
                    f"stream {stream_id!r} was written by an open unit of work of this thread, "
                    "and the in-memory store does not wait for it (PostgreSQL would wait "
                    "forever): write the stream through that unit of work's connection, or "
                    "after its with block"
                )
            if unit is not None:
                waited: MemoryTransaction | None = holder
                while waited is not None:
                    if waited is unit:
                        raise DeadlockError(stream_id)
                    waited = waited.waiting_for
                unit.waiting_for = holder
            try:
                self._released.wait()
            finally:
                if unit is not None:
                    unit.waiting_for = None

    def hold(self, stream_id: str, unit: MemoryTransaction) -> None:
        """Reserve ``stream_id`` for ``unit`` until :meth:`release`."""
        self._holders[stream_id] = unit
        unit.reserved.add(stream_id)

    def release(self, unit: MemoryTransaction) -> None:
        """Free every stream ``unit`` holds and wake their waiters."""
        for stream_id in unit.reserved:
            if self._holders.get(stream_id) is unit:
                del self._holders[stream_id]
        self._released.notify_all()
