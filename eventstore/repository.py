"""Rebuild aggregate state from the latest snapshot plus the events after it."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from eventstore._validation import check_int
from eventstore.records import ExpectedVersion, NewEvent, RecordedEvent
from eventstore.store import EventStore

State = TypeVar("State")


class Repository(Generic[State]):
    """Loads and saves one kind of aggregate through an event store.

    ``evolve(state, event) -> state`` folds one event into the state. It is
    called with a registered event as its own object (the dataclass instance),
    and with any other event as its envelope: the :class:`NewEvent` on append,
    the :class:`RecordedEvent` on replay (both have ``.event_type``, ``.data``
    and ``.metadata``). ``initial`` is the state of a stream with no events: a
    value (deep-copied for every load) or a zero-argument callable.
    A snapshot is saved whenever an append crosses a multiple of
    ``snapshot_every``.
    """

    def __init__(
        self,
        store: EventStore,
        initial: State | Callable[[], State],
        evolve: Callable[[State, Any], State],
        *,
        snapshot_every: int = 100,
    ) -> None:
        self.store = store
        self._initial = initial
        self._evolve = evolve
        self.snapshot_every = check_int(snapshot_every, "snapshot_every", minimum=1)

    def initial_state(self) -> State:
        """A fresh initial state."""
        if callable(self._initial):
            return self._initial()
        return copy.deepcopy(self._initial)

    def load(self, stream_id: str) -> tuple[State, int]:
        """The stream's current ``(state, version)``: the latest snapshot plus only
        the events recorded after it; ``(initial, 0)`` for a missing stream."""
        snapshot = self.store.load_snapshot(stream_id)
        if snapshot is None:
            state, version = self.initial_state(), 0
        else:
            state, version = snapshot.state, snapshot.version
        for event in self.store.iter_events(stream_id, from_version=version + 1):
            state = self._evolve(state, self._as_evolved(event))
            version = event.version
        return state, version

    def append(
        self,
        stream_id: str,
        events: Iterable[Any],
        *,
        state: State,
        expected_version: ExpectedVersion,
        connection: Any = None,
    ) -> tuple[State, int]:
        """Fold ``events`` into ``state``, append them, and return the new
        ``(state, version)``. Saves a snapshot when the new version crosses a
        multiple of ``snapshot_every``. Raises what ``append_events`` raises; the
        caller's ``state`` object is then unchanged only if ``evolve`` does not
        mutate it in place."""
        events = list(events)  # evolved and appended: a generator must not run dry
        new_state = state
        for event in events:
            new_state = self._evolve(new_state, self._as_evolved(event))
        version = self.store.append_events(
            stream_id, events, expected_version=expected_version, connection=connection
        )
        previous = version - len(events)
        if version // self.snapshot_every > previous // self.snapshot_every:
            self.store.save_snapshot(stream_id, version, new_state, connection=connection)
        return new_state, version

    def _as_evolved(self, event: Any) -> Any:
        """The object ``evolve`` receives for ``event`` (see the class docstring)."""
        if isinstance(event, (NewEvent, RecordedEvent)):
            cls = self.store.codec.registry.class_for(event.event_type)
            if cls is not None and isinstance(event.data, cls):
                return event.data
        return event
