"""Property tests: random stream histories agree between PostgreSQL and the in-memory model.

The codec's own properties (round trips of every supported type with types
preserved, arbitrary and mutated bytes decoding to a value or
``DeserializationError`` only) are in ``test_codec.py``
(``test_property_*``); they are not repeated here.

Here hypothesis draws 50 sequences of up to 20 operations over three streams:
appends of batches of 1-4 events with the right expected version, a wrong
one (ahead, behind, negative), ``ANY``, ``NO_STREAM`` and ``STREAM_EXISTS``;
snapshots at, before and past the head; ranged loads. Each operation runs
against the PostgreSQL store and against :class:`InMemoryEventStore`, and the
two must agree on everything: the returned value or the error's type and
attributes, and then, after every step, every stream's version, events
``(version, type, data, metadata)`` and snapshot. At the end the global feed
of the example's streams must list the same events in the same order.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from _store_helpers import wait_for_feed_horizon
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    ConcurrencyError,
    EventStoreError,
    InMemoryEventStore,
    NewEvent,
    PostgresEventStore,
)

STREAMS = 3
_examples = itertools.count()

payloads = (
    st.none() | st.integers(-5, 5) | st.text(max_size=4) | st.lists(st.integers(0, 3), max_size=3)
)
metadata = st.none() | st.dictionaries(
    st.sampled_from(["a", "b", "'; --"]), st.integers(0, 9), max_size=2
)
new_events = st.builds(
    NewEvent, st.sampled_from(["Opened", "Noted", "%", "Closed"]), payloads, metadata
)


@dataclass(frozen=True)
class Append:
    stream: int
    expected: str  # how the expected version is chosen from the model's current version
    offset: int
    events: tuple[NewEvent, ...]


@dataclass(frozen=True)
class SaveSnapshot:
    stream: int
    offset: int  # from the model's current version
    state: Any


@dataclass(frozen=True)
class Load:
    stream: int
    from_version: int
    to_version: int | None
    limit: int | None


operations = st.one_of(
    st.builds(
        Append,
        st.integers(0, STREAMS - 1),
        st.sampled_from(["right", "wrong", "any", "no_stream", "stream_exists"]),
        st.sampled_from([-2, -1, 1, 2]),
        st.lists(new_events, min_size=1, max_size=4).map(tuple),
    ),
    st.builds(SaveSnapshot, st.integers(0, STREAMS - 1), st.integers(-2, 1), payloads),
    st.builds(
        Load,
        st.integers(0, STREAMS - 1),
        st.integers(1, 6),
        st.none() | st.integers(1, 8),
        st.none() | st.integers(1, 3),
    ),
)


def outcome(call: Callable[[], Any]) -> tuple[Any, ...]:
    """What a call did, comparably: its result, or its error's type and attributes."""
    try:
        result = call()
    except ConcurrencyError as exc:
        return ("ConcurrencyError", exc.stream_id, exc.expected, exc.actual)
    except EventStoreError as exc:
        return (type(exc).__name__,)
    if isinstance(result, list):
        return ("ok", [(e.stream_id, e.version, e.event_type, e.data, e.metadata) for e in result])
    return ("ok", result)


def expected_version(op: Append, current: int) -> Any:
    return {
        "right": current,
        "wrong": current + op.offset,
        "any": ANY,
        "no_stream": NO_STREAM,
        "stream_exists": STREAM_EXISTS,
    }[op.expected]


def run(store: Any, op: Any, stream_id: str, current: int) -> tuple[Any, ...]:
    if isinstance(op, Append):
        expected = expected_version(op, current)
        return outcome(
            lambda: store.append_events(stream_id, list(op.events), expected_version=expected)
        )
    if isinstance(op, SaveSnapshot):
        return outcome(lambda: store.save_snapshot(stream_id, current + op.offset, op.state))
    return outcome(
        lambda: store.load_events(
            stream_id, from_version=op.from_version, to_version=op.to_version, limit=op.limit
        )
    )


def state_of(store: Any, stream_ids: list[str]) -> list[Any]:
    """Every stream's version, events and snapshot, comparably."""
    state = []
    for stream_id in stream_ids:
        snapshot = store.load_snapshot(stream_id)
        state.append(
            (
                store.stream_version(stream_id),
                outcome(lambda s=stream_id: store.load_events(s)),
                None if snapshot is None else (snapshot.version, snapshot.state),
            )
        )
    return state


HISTORY_SETTINGS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@HISTORY_SETTINGS
@given(st.lists(operations, min_size=1, max_size=20))
def test_random_histories_agree_with_the_in_memory_model(
    event_store: PostgresEventStore, history: list[Any]
) -> None:
    # Every example gets streams of its own, so no example sees another's events.
    prefix = f"h{next(_examples)}-"
    stream_ids = [f"{prefix}{i}" for i in range(STREAMS)]
    model = InMemoryEventStore(registry=event_store.registry)

    for step, op in enumerate(history):
        stream_id = stream_ids[op.stream]
        current = model.stream_version(stream_id)
        expected = run(model, op, stream_id, current)
        actual = run(event_store, op, stream_id, current)
        assert actual == expected, f"step {step}: {op}"
        assert state_of(event_store, stream_ids) == state_of(model, stream_ids), f"after {step}"

    wait_for_feed_horizon(event_store)
    assert outcome(lambda: event_store.read_all(stream_prefix=prefix, limit=200)) == outcome(
        lambda: model.read_all(stream_prefix=prefix, limit=200)
    )


def test_the_operations_cover_every_kind_of_expected_version() -> None:
    """The strategy can draw each expected-version kind (so the property exercises them)."""
    kinds = operations.filter(lambda op: isinstance(op, Append)).map(lambda op: op.expected)
    seen: set[str] = set()

    @settings(max_examples=200, deadline=None, database=None)
    @given(kinds)
    def collect(kind: str) -> None:
        seen.add(kind)

    collect()
    assert seen == {"right", "wrong", "any", "no_stream", "stream_exists"}
