"""Rebuild aggregate state from the latest snapshot plus the events after it."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from eventstore._validation import check_int, expected_bounds
from eventstore.errors import (
    ConcurrencyError,
    DatabaseUnavailableError,
    DeserializationError,
    TransactionConflictError,
)
from eventstore.records import (
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
    StreamState,
    VersionedState,
)
from eventstore.store import EventStore

State = TypeVar("State")

logger = logging.getLogger(__name__)

_RELOADS = 100
"""How often an ``ANY`` or ``STREAM_EXISTS`` append reloads after losing a race."""


class Repository(Generic[State]):
    """Loads and saves one kind of aggregate through an event store.

    ``evolve(state, event) -> state`` folds one event into the state. It is
    called with a registered event as its own object (the dataclass instance),
    and with any other event as its envelope: the :class:`NewEvent` on append,
    the :class:`RecordedEvent` on replay (both have ``.event_type``, ``.data``
    and ``.metadata``). ``initial`` is the state of a stream with no events: a
    value (deep-copied for every load) or a zero-argument callable.
    A snapshot is saved whenever an append crosses a multiple of
    ``snapshot_every``; :meth:`load` always returns what a full replay of the
    events would give (see :meth:`append` for how a failed snapshot is handled).

    ``snapshot_version`` (an int, default 1) is the shape of the states this
    Repository saves: raise it whenever the state's class changes in a way that
    makes old snapshots wrong (a field added with a default that the events would
    have set, a field whose meaning changed). At version 1 a state is stored as
    it always was (every snapshot saved before snapshot versions existed counts
    as version 1); above it, as a :class:`~eventstore.records.VersionedState`
    (CBOR tag 62007). A snapshot of another version is ignored, and so is one
    that cannot be decoded (with a WARNING on the ``eventstore.repository``
    logger naming the stream and the reason): the aggregate is rebuilt from its
    events. The next snapshot this Repository saves replaces it, since it is
    saved at the version its own append reached, past any kept snapshot;
    :meth:`EventStore.delete_snapshot` removes one at once.
    """

    def __init__(
        self,
        store: EventStore,
        initial: State | Callable[[], State],
        evolve: Callable[[State, Any], State],
        *,
        snapshot_every: int = 100,
        snapshot_version: int = 1,
    ) -> None:
        self.store = store
        self._initial = initial
        self._evolve = evolve
        self.snapshot_every = check_int(snapshot_every, "snapshot_every", minimum=1)
        self.snapshot_version = check_int(snapshot_version, "snapshot_version", minimum=1)

    def initial_state(self) -> State:
        """A fresh initial state."""
        if callable(self._initial):
            return self._initial()
        return copy.deepcopy(self._initial)

    def load(self, stream_id: str, *, connection: Any = None) -> tuple[State, int]:
        """The stream's current ``(state, version)``: the latest snapshot plus only
        the events recorded after it (all of them when there is no snapshot this
        Repository can use); ``(initial, 0)`` for a missing stream.

        With ``connection=`` (a unit of work as the store takes it), the stream as
        that unit of work sees it, its own appends included: a second command on
        the same aggregate in one request loads what the first appended."""
        state, version = self._from_snapshot(stream_id, connection)
        return self._fold(state, version, self._events_after(stream_id, version, connection))

    def append(
        self,
        stream_id: str,
        events: Iterable[Any],
        *,
        state: State,
        expected_version: ExpectedVersion,
        connection: Any = None,
    ) -> tuple[State, int]:
        """Fold ``events`` into the state, append them, and return the new
        ``(state, version)``: the true state of the stream at that version.

        With an exact ``expected_version`` (or ``NO_STREAM``), ``state`` must be
        the state at that version (as :meth:`load` or a previous ``append``
        returned it). With ``ANY`` or ``STREAM_EXISTS`` the stream may have moved
        on, so ``state`` is not used: the current state is loaded (snapshot plus
        the events after it, through ``connection`` when given) and the events
        are appended at exactly that version, reloading after a racing writer
        got in first; ``evolve`` may then see an event more than once, so it
        must not have side effects outside the state.

        A snapshot is saved when the new version crosses a multiple of
        ``snapshot_every``. Its state is encoded before anything is appended, so
        a state that cannot be encoded raises
        :class:`~eventstore.errors.SerializationError` and writes nothing.
        Saving it comes after the append; the snapshot is a cache and the events
        are the truth, so a failed save (a lost connection, a timeout, a stream
        erased meanwhile) is logged as a WARNING on the ``eventstore.repository``
        logger and the call still returns. Inside the caller's ``connection=``
        the save runs in a savepoint, so its failure leaves the transaction
        usable; only a lost connection is raised then (the transaction is gone,
        nothing was committed).

        Raises what ``append_events`` raises (nothing is written then); the
        caller's ``state`` object is unchanged only if ``evolve`` does not mutate
        it in place.
        """
        events = list(events)  # evolved and appended: a generator must not run dry
        lowest, highest = expected_bounds(expected_version)  # ValidationError first
        if lowest == highest:  # an exact version, or NO_STREAM
            return self._append_at(stream_id, events, state, lowest, connection)
        state, base = self._current(stream_id, expected_version, connection)
        for attempt in range(_RELOADS):
            try:
                return self._append_at(stream_id, events, state, base, connection)
            except TransactionConflictError as conflict:
                # A deadlock or a stale snapshot: only retrying the caller's whole
                # transaction can help, so no reload; the caller's condition is named.
                raise TransactionConflictError.for_stream(
                    stream_id, expected_version, conflict.actual, conflict.detail or ""
                ) from conflict.__cause__
            except ConcurrencyError as conflict:
                # A racing writer got in first: reload (evolve may have changed the
                # loaded state in place) and try again on top of its events. A
                # stream that did not move means waiting cannot help (the caller's
                # transaction must be retried whole): say so.
                state, moved_to = self._current(stream_id, expected_version, connection)
                if moved_to == base or attempt == _RELOADS - 1:
                    raise ConcurrencyError(
                        stream_id, expected_version, conflict.actual, detail=conflict.detail
                    ) from None
                base = moved_to
        raise AssertionError("unreachable")  # pragma: no cover

    def _append_at(
        self, stream_id: str, events: list[Any], state: State, base: int, connection: Any
    ) -> tuple[State, int]:
        """Append ``events`` at exactly version ``base``, whose state is ``state``,
        and snapshot when due (see :meth:`append`)."""
        new_state = state
        for event in events:
            new_state = self._evolve(new_state, self._as_evolved(event))
        snapshot_due = (base + len(events)) // self.snapshot_every > base // self.snapshot_every
        if snapshot_due:
            snapshot = self._stored_state(new_state)
            self.store.codec.encode(snapshot)  # SerializationError before anything is written
        version = self.store.append_events(
            stream_id, events, expected_version=base, connection=connection
        )
        if snapshot_due:
            self._save_snapshot(stream_id, version, snapshot, connection)
        return new_state, version

    def _current(
        self, stream_id: str, expected_version: ExpectedVersion, connection: Any
    ) -> tuple[State, int]:
        """The stream's state and version for an ``ANY`` or ``STREAM_EXISTS``
        append; ConcurrencyError when ``STREAM_EXISTS`` finds no stream."""
        state, version = self._from_snapshot(stream_id, connection)
        state, version = self._fold(
            state, version, self._events_after(stream_id, version, connection)
        )
        if version == 0 and expected_version is StreamState.STREAM_EXISTS:
            raise ConcurrencyError(stream_id, expected_version, 0)
        return state, version

    def _from_snapshot(self, stream_id: str, connection: Any) -> tuple[State, int]:
        """Where to fold the stream's events from: its snapshot's state and version
        when the snapshot decodes and was saved at :attr:`snapshot_version`, else
        the initial state at version 0 (see the class docstring)."""
        try:
            snapshot = self.store.load_snapshot(stream_id, connection=connection)
        except DeserializationError as error:
            logger.warning(
                "the snapshot of stream %r cannot be decoded, so it is not used: the "
                "aggregate is rebuilt from its events, and the next snapshot replaces it "
                "(store.delete_snapshot(%r) removes it now): %s",
                stream_id,
                stream_id,
                error,
            )
            return self.initial_state(), 0
        if snapshot is None:
            return self.initial_state(), 0
        state, saved_at = snapshot.state, 1
        if isinstance(state, VersionedState):
            state, saved_at = state.state, state.version
        if saved_at != self.snapshot_version:
            logger.debug(
                "the snapshot of stream %r was saved at snapshot version %d, not %d: the "
                "aggregate is rebuilt from its events",
                stream_id,
                saved_at,
                self.snapshot_version,
            )
            return self.initial_state(), 0
        return state, snapshot.version

    def _stored_state(self, state: State) -> Any:
        """``state`` as its snapshot stores it at :attr:`snapshot_version`."""
        if self.snapshot_version == 1:
            return state
        return VersionedState(self.snapshot_version, state)

    def _events_after(self, stream_id: str, version: int, connection: Any) -> Iterable[Any]:
        return self.store.iter_events(stream_id, from_version=version + 1, connection=connection)

    def _fold(
        self, state: State, version: int, events: Iterable[RecordedEvent]
    ) -> tuple[State, int]:
        for event in events:
            state = self._evolve(state, self._as_evolved(event))
            version = event.version
        return state, version

    def _save_snapshot(self, stream_id: str, version: int, state: Any, connection: Any) -> None:
        """Save the snapshot after the append; see :meth:`append` for what a failure does."""
        try:
            self.store.save_snapshot(stream_id, version, state, connection=connection)
        except Exception as error:
            if connection is not None and isinstance(error, DatabaseUnavailableError):
                raise
            logger.warning(
                "the snapshot of stream %r at version %d was not saved (%s: %s); the events "
                "are stored and load() replays them",
                stream_id,
                version,
                type(error).__name__,
                error,
                exc_info=error,
            )

    def _as_evolved(self, event: Any) -> Any:
        """The object ``evolve`` receives for ``event`` (see the class docstring)."""
        if isinstance(event, (NewEvent, RecordedEvent)):
            cls = self.store.codec.registry.class_for(event.event_type)
            if cls is not None and isinstance(event.data, cls):
                return event.data
        return event
