"""The Repository: snapshot + replay on load, evolve + append + snapshot on append.

Runs against both stores.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import pytest

from eventstore import (
    NO_STREAM,
    ConcurrencyError,
    EventRegistry,
    EventStore,
    NewEvent,
    RecordedEvent,
    Repository,
    ValidationError,
)

registry = EventRegistry()


@registry.register
@dataclass(frozen=True)
class OrderPlaced:
    order_id: str
    customer: str


@registry.register
@dataclass(frozen=True)
class ItemAdded:
    sku: str
    quantity: int
    unit_price: Decimal


@registry.register
@dataclass(frozen=True)
class OrderShipped:
    carrier: str


@registry.register
@dataclass(frozen=True)
class Order:
    order_id: str | None = None
    customer: str | None = None
    lines: tuple[tuple[str, int, Decimal], ...] = ()
    status: str = "new"
    notes: tuple[str, ...] = ()


def evolve(state: Order, event: Any) -> Order:
    if isinstance(event, OrderPlaced):
        return replace(state, order_id=event.order_id, customer=event.customer, status="placed")
    if isinstance(event, ItemAdded):
        return replace(state, lines=(*state.lines, (event.sku, event.quantity, event.unit_price)))
    if isinstance(event, OrderShipped):
        return replace(state, status=f"shipped by {event.carrier}")
    if event.event_type == "NoteAdded":
        return replace(state, notes=(*state.notes, event.data["text"]))
    raise AssertionError(f"unexpected event {event!r}")


class RecordingEvolve:
    """``evolve`` that remembers what it was called with."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def __call__(self, state: Order, event: Any) -> Order:
        self.seen.append(event)
        return evolve(state, event)


def item(n: int) -> ItemAdded:
    return ItemAdded(f"SKU-{n}", n, Decimal(f"{n}.10"))


@pytest.fixture
def eventstore_registry() -> EventRegistry:
    return registry


@pytest.fixture(params=["postgres", "memory"])
def store(request: pytest.FixtureRequest) -> EventStore:
    name = "event_store" if request.param == "postgres" else "in_memory_event_store"
    result: EventStore = request.getfixturevalue(name)
    return result


def test_loading_a_missing_stream_gives_the_initial_state_at_version_0(store: EventStore) -> None:
    repository = Repository(store, Order(), evolve)
    assert repository.load("order-missing") == (Order(), 0)


def test_append_evolves_the_state_and_returns_the_new_version(store: EventStore) -> None:
    repository = Repository(store, Order(), evolve)
    state, version = repository.append(
        "order-1",
        [OrderPlaced("o-1", "ann"), item(1), item(2)],
        state=Order(),
        expected_version=NO_STREAM,
    )
    assert version == 3
    assert state == Order(
        "o-1", "ann", (("SKU-1", 1, Decimal("1.10")), ("SKU-2", 2, Decimal("2.10"))), "placed"
    )
    state, version = repository.append(
        "order-1", [OrderShipped("ups")], state=state, expected_version=3
    )
    assert (state.status, version) == ("shipped by ups", 4)
    assert store.stream_version("order-1") == 4


def test_load_rebuilds_the_state_that_append_returned(store: EventStore) -> None:
    repository = Repository(store, Order(), evolve, snapshot_every=1000)
    state, version = repository.append(
        "order-2", [OrderPlaced("o-2", "bob"), item(5)], state=Order(), expected_version=0
    )
    state, version = repository.append(
        "order-2",
        [NewEvent("NoteAdded", {"text": "leave at door"}), OrderShipped("dhl")],
        state=state,
        expected_version=version,
    )
    loaded = Repository(store, Order(), evolve).load("order-2")
    assert loaded == (state, version)
    assert type(loaded[0].lines[0][2]) is Decimal


def test_snapshots_are_saved_exactly_when_the_version_crosses_a_multiple(
    store: EventStore,
) -> None:
    repository = Repository(store, Order(), evolve, snapshot_every=3)
    state, version = Order(), 0
    expected_snapshot_versions = {2: None, 4: 4, 5: 4, 9: 9, 10: 9, 11: 9, 12: 12, 15: 15}
    states_at: dict[int, Order] = {}
    for batch_size in (2, 2, 1, 4, 1, 1, 1, 3):
        events = [item(version + i + 1) for i in range(batch_size)]
        state, version = repository.append("order-3", events, state=state, expected_version=version)
        states_at[version] = state
        snapshot = store.load_snapshot("order-3")
        wanted = expected_snapshot_versions[version]
        if wanted is None:
            assert snapshot is None, f"at version {version}"
        else:
            assert snapshot is not None, f"at version {version}"
            assert snapshot.version == wanted, f"at version {version}"
            assert snapshot.state == states_at[wanted]
            assert type(snapshot.state) is Order
    assert version == 15


def test_crossing_a_multiple_inside_a_batch_snapshots_at_the_new_version(
    store: EventStore,
) -> None:
    repository = Repository(store, Order(), evolve, snapshot_every=100)
    state, version = repository.append(
        "order-4", [item(i) for i in range(98)], state=Order(), expected_version=0
    )
    assert store.load_snapshot("order-4") is None
    state, version = repository.append(
        "order-4", [item(i) for i in range(3)], state=state, expected_version=version
    )
    assert version == 101
    snapshot = store.load_snapshot("order-4")
    assert snapshot is not None
    assert (snapshot.version, snapshot.state) == (101, state)


def test_snapshot_every_1_snapshots_every_append(store: EventStore) -> None:
    repository = Repository(store, Order(), evolve, snapshot_every=1)
    state, version = repository.append("order-5", [item(1)], state=Order(), expected_version=0)
    snapshot = store.load_snapshot("order-5")
    assert snapshot is not None
    assert snapshot.version == 1
    repository.append("order-5", [item(2), item(3)], state=state, expected_version=version)
    snapshot = store.load_snapshot("order-5")
    assert snapshot is not None
    assert snapshot.version == 3


def test_load_replays_only_the_events_after_the_snapshot(store: EventStore) -> None:
    writer = Repository(store, Order(), evolve, snapshot_every=3)
    state, version = writer.append(
        "order-6", [OrderPlaced("o-6", "cy"), item(1)], state=Order(), expected_version=0
    )
    state, version = writer.append(
        "order-6", [item(2), item(3)], state=state, expected_version=version
    )
    state, version = writer.append(
        "order-6", [OrderShipped("fedex")], state=state, expected_version=version
    )
    snapshot = store.load_snapshot("order-6")
    assert snapshot is not None
    assert snapshot.version == 4

    recording = RecordingEvolve()
    loaded = Repository(store, Order(), recording, snapshot_every=3).load("order-6")
    assert loaded == (state, 5)
    assert recording.seen == [OrderShipped("fedex")]


def test_load_starts_from_the_stored_snapshot(store: EventStore) -> None:
    repository = Repository(store, Order(), evolve, snapshot_every=1000)
    _, version = repository.append(
        "order-7",
        [OrderPlaced("o-7", "dee"), item(1), item(2), item(3), OrderShipped("ups")],
        state=Order(),
        expected_version=0,
    )
    assert store.load_snapshot("order-7") is None
    marker = Order("o-7", "dee", (), "from the snapshot", ("recognisable",))
    assert store.save_snapshot("order-7", 3, marker) is True

    state, loaded_version = repository.load("order-7")
    assert loaded_version == version == 5
    assert state == replace(marker, lines=(("SKU-3", 3, Decimal("3.10")),), status="shipped by ups")


def test_evolve_gets_registered_events_as_themselves_and_others_as_envelopes(
    store: EventStore,
) -> None:
    recording = RecordingEvolve()
    repository = Repository(store, Order(), recording, snapshot_every=1000)
    note = NewEvent("NoteAdded", {"text": "fragile"}, metadata={"by": "clerk-7"})
    repository.append(
        "order-8", [OrderPlaced("o-8", "eve"), note], state=Order(), expected_version=0
    )
    placed, appended_note = recording.seen
    assert type(placed) is OrderPlaced
    assert placed == OrderPlaced("o-8", "eve")
    assert appended_note is note

    replaying = RecordingEvolve()
    state, _ = Repository(store, Order(), replaying).load("order-8")
    placed, replayed_note = replaying.seen
    assert type(placed) is OrderPlaced
    assert placed == OrderPlaced("o-8", "eve")
    assert isinstance(replayed_note, RecordedEvent)
    assert (replayed_note.stream_id, replayed_note.version) == ("order-8", 2)
    assert replayed_note.event_type == "NoteAdded"
    assert replayed_note.data == {"text": "fragile"}
    assert replayed_note.metadata == {"by": "clerk-7"}
    assert state.notes == ("fragile",)


def test_a_concurrency_error_propagates_and_changes_nothing(store: EventStore) -> None:
    repository = Repository(store, Order(), evolve, snapshot_every=1)
    state, version = repository.append(
        "order-9", [OrderPlaced("o-9", "fay")], state=Order(), expected_version=0
    )
    stale_state, stale_version = state, version
    before = copy.deepcopy(stale_state)
    state, version = repository.append("order-9", [item(1)], state=state, expected_version=version)

    with pytest.raises(ConcurrencyError) as raised:
        repository.append(
            "order-9", [OrderShipped("ups")], state=stale_state, expected_version=stale_version
        )
    assert (raised.value.stream_id, raised.value.expected, raised.value.actual) == (
        "order-9",
        1,
        2,
    )
    assert stale_state == before
    assert store.stream_version("order-9") == 2
    snapshot = store.load_snapshot("order-9")
    assert snapshot is not None
    assert (snapshot.version, snapshot.state) == (2, state)
    assert repository.load("order-9") == (state, 2)


@pytest.mark.parametrize("snapshot_every", [0, -1, True, False, 1.5, "3", None], ids=repr)
def test_snapshot_every_must_be_a_positive_int(store: EventStore, snapshot_every: Any) -> None:
    with pytest.raises(ValidationError):
        Repository(store, Order(), evolve, snapshot_every=snapshot_every)


def test_callable_initial_gives_a_fresh_state_on_every_load(store: EventStore) -> None:
    made: list[dict[str, Any]] = []

    def initial() -> dict[str, Any]:
        fresh: dict[str, Any] = {"skus": []}
        made.append(fresh)
        return fresh

    def evolve_in_place(state: dict[str, Any], event: Any) -> dict[str, Any]:
        state["skus"].append(event.sku)
        return state

    repository = Repository(store, initial, evolve_in_place, snapshot_every=1000)
    first, _ = repository.load("cart-1")
    first["skus"].append("SCRIBBLE")
    second, _ = repository.load("cart-1")
    assert second == {"skus": []}
    assert second is not first

    assert repository.append("cart-1", [item(1)], state=second, expected_version=0)[1] == 1
    loaded_a, _ = repository.load("cart-1")
    loaded_b, _ = repository.load("cart-1")
    assert loaded_a == loaded_b == {"skus": ["SKU-1"]}
    assert loaded_a is not loaded_b
    assert loaded_a["skus"] is not loaded_b["skus"]
    assert len(made) == 4  # one per load; append evolves the state it is given


def test_initial_value_is_not_shared_between_loads(store: EventStore) -> None:
    initial: dict[str, Any] = {"skus": []}

    def evolve_in_place(state: dict[str, Any], event: Any) -> dict[str, Any]:
        state["skus"].append(event.sku)
        return state

    repository = Repository(store, initial, evolve_in_place, snapshot_every=1000)
    store.append_events("cart-2", [item(1)], expected_version=0)
    assert repository.load("cart-2") == ({"skus": ["SKU-1"]}, 1)
    assert repository.load("cart-2") == ({"skus": ["SKU-1"]}, 1)
    assert repository.load("cart-missing") == ({"skus": []}, 0)
    assert initial == {"skus": []}


def test_append_accepts_any_iterable_of_events_like_append_events(store: EventStore) -> None:
    repository = Repository(store, Order(), evolve, snapshot_every=2)
    state, version = repository.append(
        "order-10",
        (event for event in [OrderPlaced("o-10", "gus"), item(1), item(2)]),  # type: ignore[arg-type]
        state=Order(),
        expected_version=0,
    )
    assert version == 3
    assert len(state.lines) == 2
    assert repository.load("order-10") == (state, 3)
