"""Events read from storage are RecordedEvents in every way that matters, though
they are built on a fast path and parse their metadata only when it is read."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from datetime import datetime, timezone
from typing import Any

import pytest
from _store_helpers import wait_for_feed_horizon

from eventstore import NewEvent, Position, RecordedEvent
from eventstore.records import recorded_event

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


def stored(metadata_json: str | None = '{"user": "alice", "n": [1, 2]}') -> RecordedEvent:
    return recorded_event("order-1", 3, "Placed", {"a": 1}, metadata_json, NOW, 7, 42)


def constructed(metadata: dict[str, Any] | None = None) -> RecordedEvent:
    if metadata is None:
        metadata = {"user": "alice", "n": [1, 2]}
    return RecordedEvent("order-1", 3, "Placed", {"a": 1}, metadata, NOW, Position(7, 42))


def test_a_stored_event_equals_the_constructed_one_both_ways() -> None:
    assert stored() == constructed()
    assert constructed() == stored()
    assert stored() == stored()
    assert stored() != constructed({"user": "bob"})
    assert constructed({"user": "bob"}) != stored()
    assert stored() != dataclasses.replace(constructed(), version=4)
    assert stored() != "not an event"


def test_fields_and_position_are_those_given() -> None:
    event = stored()
    assert isinstance(event, RecordedEvent)
    assert (event.stream_id, event.version, event.event_type, event.data) == (
        "order-1",
        3,
        "Placed",
        {"a": 1},
    )
    assert event.created_at == NOW
    assert event.position == Position(7, 42)
    assert type(event.position) is Position


def test_metadata_is_parsed_once_and_null_stays_none() -> None:
    event = stored()
    first = event.metadata
    assert first == {"user": "alice", "n": [1, 2]}
    assert event.metadata is first
    assert stored(None).metadata is None
    assert stored(None) == dataclasses.replace(constructed(), metadata=None)


def test_repr_reads_as_a_recorded_event() -> None:
    assert repr(stored()) == repr(constructed())


def test_hash_matches_when_metadata_is_hashable() -> None:
    right = RecordedEvent("order-1", 3, "Placed", 5, None, NOW, Position(7, 42))
    left = recorded_event("order-1", 3, "Placed", 5, None, NOW, 7, 42)
    assert hash(left) == hash(right)
    assert {left, right} == {right}


def test_stored_events_are_frozen() -> None:
    event = stored()
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.metadata = {}  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.version = 9  # type: ignore[misc]
    assert event.metadata == {"user": "alice", "n": [1, 2]}


@pytest.mark.parametrize("read_metadata_first", [True, False])
def test_pickle_copy_replace_and_asdict_work(read_metadata_first: bool) -> None:
    event = stored()
    if read_metadata_first:
        _ = event.metadata
    for clone in (
        pickle.loads(pickle.dumps(event)),
        copy.copy(event),
        copy.deepcopy(event),
    ):
        assert clone == constructed()
        assert clone.metadata == {"user": "alice", "n": [1, 2]}
    replaced = dataclasses.replace(event, version=4)
    assert replaced.version == 4
    assert replaced.metadata == {"user": "alice", "n": [1, 2]}
    assert dataclasses.asdict(event) == dataclasses.asdict(constructed())


def test_each_load_gives_fresh_metadata(event_store: Any) -> None:
    event_store.append_events(
        "order-1", [NewEvent("Placed", {}, {"tags": ["a"]})], expected_version=0
    )
    first = event_store.load_events("order-1")[0]
    first.metadata["tags"].append("mutated")
    second = event_store.load_events("order-1")[0]
    assert second.metadata == {"tags": ["a"]}
    wait_for_feed_horizon(event_store)
    assert [e.metadata for e in event_store.read_all()] == [{"tags": ["a"]}]
