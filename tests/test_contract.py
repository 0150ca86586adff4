"""The store contract, written once and run against the PostgreSQL and in-memory stores."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import cbor2
import pytest
from _store_helpers import CONTRACT_STORE_KINDS, store_for, wait_for_feed_horizon
from sqlalchemy import select

from eventstore import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    ConcurrencyError,
    DeserializationError,
    EventRegistry,
    EventStoreError,
    NewEvent,
    PostgresEventStore,
    RecordedEvent,
    SerializationError,
    Snapshot,
    StreamState,
    ValidationError,
)
from eventstore.schema import events as events_table


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int
    price: Decimal


@dataclass(frozen=True)
class OrderPlaced:
    order_id: UUID
    lines: tuple[Line, ...]
    placed_at: datetime
    colour: Colour


@dataclass(frozen=True)
class ItemShipped:
    sku: str
    shipped_on: date


@dataclass(frozen=True)
class CartState:
    items: dict[str, int]
    colour: Colour
    total: Decimal
    last_line: Line | None


@pytest.fixture
def eventstore_registry() -> EventRegistry:
    registry = EventRegistry()
    registry.register(Colour)
    registry.register(Line)
    registry.register(OrderPlaced)
    registry.register(name="Shipped")(ItemShipped)
    registry.register(CartState)
    return registry


@pytest.fixture(params=CONTRACT_STORE_KINDS)
def store(request: pytest.FixtureRequest) -> Any:
    return store_for(request, request.param)


def noted(n: int) -> NewEvent:
    return NewEvent("Noted", {"n": n})


def fill(store: Any, stream_id: str, count: int) -> list[RecordedEvent]:
    """Append ``count`` events one by one and return them as loaded."""
    for n in range(1, count + 1):
        store.append_events(stream_id, [noted(n)], expected_version=n - 1)
    loaded: list[RecordedEvent] = store.load_events(stream_id)
    return loaded


def order_placed() -> OrderPlaced:
    return OrderPlaced(
        order_id=UUID("12345678-1234-5678-1234-567812345678"),
        lines=(Line("A-1", 2, Decimal("9.99")), Line("B-2", 1, Decimal("100.00"))),
        placed_at=datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=timezone.utc),
        colour=Colour.GREEN,
    )


# --- versions -------------------------------------------------------------------------------


def test_versions_start_at_one_and_append_returns_the_new_version(store: Any) -> None:
    assert store.append_events("s", [noted(1)], expected_version=NO_STREAM) == 1
    assert store.append_events("s", [noted(2), noted(3), noted(4)], expected_version=1) == 4
    assert store.append_events("s", (noted(5),), expected_version=4) == 5
    assert store.append_events("s", (noted(n) for n in (6, 7)), expected_version=5) == 7

    loaded = store.load_events("s")
    assert [e.version for e in loaded] == [1, 2, 3, 4, 5, 6, 7]
    assert [e.data for e in loaded] == [{"n": n} for n in range(1, 8)]
    assert all(isinstance(e, RecordedEvent) for e in loaded)
    assert {e.stream_id for e in loaded} == {"s"}
    assert {e.event_type for e in loaded} == {"Noted"}
    assert store.stream_version("s") == 7


def test_stream_version_of_a_missing_stream_is_zero(store: Any) -> None:
    assert store.stream_version("nobody-wrote-here") == 0
    fill(store, "somebody-wrote-here", 2)
    assert store.stream_version("nobody-wrote-here") == 0
    assert store.stream_version("somebody-wrote-here") == 2


# --- expected version -----------------------------------------------------------------------

EXPECTED_VERSION_CASES = [
    # (events already in the stream, expected_version, new version or None for a conflict)
    pytest.param(2, 2, 3, id="exact-match"),
    pytest.param(0, 0, 1, id="exact-zero-on-missing"),
    pytest.param(3, 1, None, id="exact-behind"),
    pytest.param(2, 5, None, id="exact-ahead"),
    pytest.param(2, 3, None, id="exact-one-ahead"),
    pytest.param(0, 1, None, id="exact-ahead-on-missing"),
    pytest.param(2, 0, None, id="exact-zero-on-existing"),
    pytest.param(0, NO_STREAM, 1, id="no-stream-on-missing"),
    pytest.param(2, NO_STREAM, None, id="no-stream-on-existing"),
    pytest.param(0, STREAM_EXISTS, None, id="stream-exists-on-missing"),
    pytest.param(2, STREAM_EXISTS, 3, id="stream-exists-on-existing"),
    pytest.param(0, ANY, 1, id="any-on-missing"),
    pytest.param(2, ANY, 3, id="any-on-existing"),
]


@pytest.mark.parametrize(("existing", "expected", "new_version"), EXPECTED_VERSION_CASES)
def test_expected_version_modes(
    store: Any, existing: int, expected: int | StreamState, new_version: int | None
) -> None:
    stream_id = "account-7"
    before = fill(store, stream_id, existing)
    assert len(before) == existing

    if new_version is not None:
        assert store.append_events(stream_id, [noted(99)], expected_version=expected) == new_version
        after = store.load_events(stream_id)
        assert after[:existing] == before
        assert [e.version for e in after] == list(range(1, new_version + 1))
        assert after[-1].data == {"n": 99}
        return

    with pytest.raises(ConcurrencyError) as caught:
        store.append_events(stream_id, [noted(99)], expected_version=expected)
    error = caught.value
    assert isinstance(error, EventStoreError)
    assert error.stream_id == stream_id
    if isinstance(expected, StreamState):
        assert error.expected is expected
    else:
        assert type(error.expected) is int
        assert error.expected == expected
    assert error.actual == existing
    # a failed append leaves the stream exactly as it was
    assert store.load_events(stream_id) == before
    assert store.stream_version(stream_id) == existing


def test_stream_is_usable_after_a_conflict(store: Any) -> None:
    fill(store, "s", 2)
    with pytest.raises(ConcurrencyError):
        store.append_events("s", [noted(10)], expected_version=1)
    assert store.append_events("s", [noted(3)], expected_version=2) == 3
    assert [e.data["n"] for e in store.load_events("s")] == [1, 2, 3]


# --- batches --------------------------------------------------------------------------------


@pytest.mark.parametrize("existing", [0, 2], ids=["missing-stream", "existing-stream"])
@pytest.mark.parametrize("expected_kind", ["exact", "any"])
def test_batch_with_an_unencodable_third_event_writes_nothing(
    store: Any, existing: int, expected_kind: str
) -> None:
    before = fill(store, "batch", existing)
    expected: int | StreamState = existing if expected_kind == "exact" else ANY
    batch = [noted(10), noted(11), NewEvent("Broken", {"value": object()}), noted(13)]

    with pytest.raises(SerializationError):
        store.append_events("batch", batch, expected_version=expected)

    assert store.load_events("batch") == before
    assert store.stream_version("batch") == existing
    # the stream stays usable at the version it had
    assert store.append_events("batch", [noted(20)], expected_version=existing) == existing + 1


def test_batch_with_invalid_metadata_on_a_later_event_writes_nothing(store: Any) -> None:
    before = fill(store, "batch", 1)
    batch = [noted(10), NewEvent("Noted", {"n": 11}, {"bad": float("nan")})]
    with pytest.raises(ValidationError):
        store.append_events("batch", batch, expected_version=1)
    assert store.load_events("batch") == before


def test_a_batch_is_stored_whole_and_in_order(store: Any) -> None:
    batch = [NewEvent(f"Type{n}", {"n": n}, {"seq": n}) for n in range(1, 51)]
    assert store.append_events("big", batch, expected_version=NO_STREAM) == 50
    loaded = store.load_events("big")
    assert [(e.version, e.event_type, e.data, e.metadata) for e in loaded] == [
        (n, f"Type{n}", {"n": n}, {"seq": n}) for n in range(1, 51)
    ]


# --- range loads ----------------------------------------------------------------------------

RANGE_CASES = [
    # (from_version, to_version, limit, versions loaded) over a stream of 5 events
    pytest.param(1, None, None, [1, 2, 3, 4, 5], id="all"),
    pytest.param(2, 4, None, [2, 3, 4], id="inclusive-both-ends"),
    pytest.param(3, 3, None, [3], id="single-version"),
    pytest.param(5, None, None, [5], id="from-the-last"),
    pytest.param(6, None, None, [], id="from-beyond-the-end"),
    pytest.param(6, 9, None, [], id="from-and-to-beyond-the-end"),
    pytest.param(1, 10, None, [1, 2, 3, 4, 5], id="to-beyond-the-end"),
    pytest.param(4, 10, None, [4, 5], id="from-inside-to-beyond-the-end"),
    pytest.param(1, None, 2, [1, 2], id="limit"),
    pytest.param(2, None, 2, [2, 3], id="from-with-limit"),
    pytest.param(2, 4, 1, [2], id="range-with-limit"),
    pytest.param(2, 4, 10, [2, 3, 4], id="limit-larger-than-range"),
    pytest.param(1, None, 5, [1, 2, 3, 4, 5], id="limit-exactly-the-length"),
    pytest.param(1, None, 100, [1, 2, 3, 4, 5], id="limit-beyond-the-length"),
]


@pytest.mark.parametrize(("from_version", "to_version", "limit", "versions"), RANGE_CASES)
def test_range_loads_are_inclusive_and_oldest_first(
    store: Any, from_version: int, to_version: int | None, limit: int | None, versions: list[int]
) -> None:
    everything = fill(store, "ranged", 5)
    fill(store, "ranged-neighbour", 7)
    loaded = store.load_events(
        "ranged", from_version=from_version, to_version=to_version, limit=limit
    )
    assert [e.version for e in loaded] == versions
    assert loaded == [everything[v - 1] for v in versions]


def test_load_of_a_missing_stream_is_empty(store: Any) -> None:
    fill(store, "present", 2)
    assert store.load_events("absent") == []
    assert store.load_events("absent", from_version=3, to_version=9, limit=4) == []


@pytest.mark.parametrize("batch_size", [1, 2, 3, 7, 8, 1000])
def test_iter_events_pages_to_exactly_what_load_events_returns(store: Any, batch_size: int) -> None:
    fill(store, "paged", 7)
    fill(store, "paged-2", 3)
    ranges = [(1, None), (3, None), (2, 6), (7, 7), (7, None), (8, None), (1, 3), (3, 10)]
    for from_version, to_version in ranges:
        iterator = store.iter_events(
            "paged", from_version=from_version, to_version=to_version, batch_size=batch_size
        )
        assert isinstance(iterator, Iterator)
        expected = store.load_events("paged", from_version=from_version, to_version=to_version)
        assert list(iterator) == expected, (from_version, to_version)
    assert [e.version for e in store.iter_events("paged", batch_size=batch_size)] == list(
        range(1, 8)
    )


def test_iter_events_of_a_missing_stream_yields_nothing(store: Any) -> None:
    fill(store, "present", 3)
    assert list(store.iter_events("absent")) == []
    assert list(store.iter_events("absent", batch_size=1)) == []


# --- snapshots ------------------------------------------------------------------------------


def cart(total: str, *items: str) -> CartState:
    return CartState(
        items={item: 1 for item in items},
        colour=Colour.RED,
        total=Decimal(total),
        last_line=Line(items[-1], 1, Decimal(total)) if items else None,
    )


def test_load_snapshot_without_one_is_none(store: Any) -> None:
    assert store.load_snapshot("cart-1") is None
    fill(store, "cart-1", 2)
    assert store.load_snapshot("cart-1") is None


def test_saved_snapshot_round_trips_a_registered_state(store: Any) -> None:
    fill(store, "cart-1", 3)
    state = cart("12.50", "apple", "pear")
    assert store.save_snapshot("cart-1", 3, state) is True

    snapshot = store.load_snapshot("cart-1")
    assert isinstance(snapshot, Snapshot)
    assert snapshot.stream_id == "cart-1"
    assert snapshot.version == 3
    assert isinstance(snapshot.state, CartState)
    assert isinstance(snapshot.state.last_line, Line)
    assert snapshot.state.colour is Colour.RED
    assert snapshot.state == state
    assert snapshot.created_at.tzinfo is not None
    assert snapshot.created_at.utcoffset() is not None


def test_saved_snapshot_round_trips_plain_state(store: Any) -> None:
    fill(store, "counter", 1)
    state = {
        "count": 2**70,
        "seen": {1, 2, 3},
        "pair": (1, "two"),
        "raw": b"\x00\xff",
        "when": datetime(2024, 1, 2, 3, 4, 5),
        "at": time(9, 30),
        "ratio": 0.25,
        "none": None,
    }
    assert store.save_snapshot("counter", 1, state) is True
    snapshot = store.load_snapshot("counter")
    assert snapshot is not None
    assert snapshot.state == state


def test_older_snapshot_does_not_replace_a_newer_one(store: Any) -> None:
    fill(store, "cart-1", 5)
    newer = cart("5.00", "apple")
    assert store.save_snapshot("cart-1", 4, newer) is True
    kept = store.load_snapshot("cart-1")

    assert store.save_snapshot("cart-1", 2, cart("1.00", "stale")) is False
    assert store.load_snapshot("cart-1") == kept
    assert kept is not None
    assert (kept.version, kept.state) == (4, newer)


def test_snapshot_at_the_same_version_is_kept(store: Any) -> None:
    fill(store, "cart-1", 3)
    first = cart("3.00", "apple")
    assert store.save_snapshot("cart-1", 3, first) is True
    kept = store.load_snapshot("cart-1")

    assert store.save_snapshot("cart-1", 3, cart("9.99", "other")) is False
    assert store.load_snapshot("cart-1") == kept
    assert kept is not None
    assert kept.state == first


def test_newer_snapshot_replaces_an_older_one(store: Any) -> None:
    fill(store, "cart-1", 5)
    assert store.save_snapshot("cart-1", 2, cart("2.00", "apple")) is True
    newest = cart("5.00", "apple", "pear")
    assert store.save_snapshot("cart-1", 5, newest) is True
    snapshot = store.load_snapshot("cart-1")
    assert snapshot is not None
    assert (snapshot.version, snapshot.state) == (5, newest)


def test_snapshot_beyond_the_head_is_refused(store: Any) -> None:
    fill(store, "cart-1", 3)
    assert store.save_snapshot("cart-1", 2, cart("2.00", "apple")) is True
    kept = store.load_snapshot("cart-1")
    with pytest.raises(ValidationError):
        store.save_snapshot("cart-1", 4, cart("4.00", "future"))
    with pytest.raises(ValidationError):
        store.save_snapshot("no-events-yet", 1, cart("1.00", "future"))
    assert store.load_snapshot("cart-1") == kept
    assert store.load_snapshot("no-events-yet") is None


def test_snapshots_belong_to_their_stream(store: Any) -> None:
    fill(store, "order-1", 2)
    fill(store, "order-10", 2)
    assert store.save_snapshot("order-1", 2, {"of": "order-1"}) is True
    assert store.load_snapshot("order-10") is None
    assert store.save_snapshot("order-10", 1, {"of": "order-10"}) is True
    first = store.load_snapshot("order-1")
    tenth = store.load_snapshot("order-10")
    assert first is not None
    assert tenth is not None
    assert (first.stream_id, first.version, first.state) == ("order-1", 2, {"of": "order-1"})
    assert (tenth.stream_id, tenth.version, tenth.state) == ("order-10", 1, {"of": "order-10"})


def test_delete_snapshot_removes_it_and_leaves_the_events(store: Any) -> None:
    events = fill(store, "cart-1", 3)
    assert store.save_snapshot("cart-1", 3, cart("3.00", "apple")) is True

    assert store.delete_snapshot("cart-1") is True

    assert store.load_snapshot("cart-1") is None
    assert store.load_events("cart-1") == events
    assert store.delete_snapshot("cart-1") is False  # nothing left to delete
    assert store.delete_snapshot("never-written") is False
    assert store.delete_snapshot("cart-1\u00e9") is False  # ids are compared verbatim


def test_after_delete_snapshot_a_snapshot_at_the_same_version_is_written(store: Any) -> None:
    """The way out of "a snapshot as new is kept": a snapshot that must not be
    used (stale, undecodable) is replaced by a new one at any version."""
    fill(store, "cart-1", 3)
    assert store.save_snapshot("cart-1", 3, cart("1.00", "stale")) is True
    assert store.save_snapshot("cart-1", 3, cart("3.00", "fresh")) is False

    assert store.delete_snapshot("cart-1") is True
    assert store.save_snapshot("cart-1", 2, cart("2.00", "fresh")) is True

    snapshot = store.load_snapshot("cart-1")
    assert snapshot is not None
    assert (snapshot.version, snapshot.state) == (2, cart("2.00", "fresh"))


def test_delete_snapshot_deletes_only_its_streams_snapshot(store: Any) -> None:
    fill(store, "order-1", 1)
    fill(store, "order-10", 1)
    store.save_snapshot("order-1", 1, {"of": "order-1"})
    store.save_snapshot("order-10", 1, {"of": "order-10"})

    assert store.delete_snapshot("order-1") is True

    kept = store.load_snapshot("order-10")
    assert kept is not None
    assert kept.state == {"of": "order-10"}


def test_delete_snapshot_removes_a_snapshot_that_cannot_be_decoded(store: Any) -> None:
    fill(store, "cart-1", 2)
    # Tag 27 naming CartState with fields it does not have: stored, never decodable.
    store.save_snapshot("cart-1", 2, cbor2.CBORTag(27, ["CartState", {"bogus": 1}]))
    with pytest.raises(DeserializationError, match="cart-1"):
        store.load_snapshot("cart-1")

    assert store.delete_snapshot("cart-1") is True

    assert store.load_snapshot("cart-1") is None


def test_delete_snapshot_in_a_unit_of_work_takes_effect_when_it_commits(store: Any) -> None:
    fill(store, "cart-1", 3)
    store.save_snapshot("cart-1", 3, cart("3.00", "apple"))

    def interrupted() -> None:
        with store.transaction() as connection:
            assert store.delete_snapshot("cart-1", connection=connection) is True
            raise _InterruptedError

    with pytest.raises(_InterruptedError):
        interrupted()
    assert store.load_snapshot("cart-1") is not None  # rolled back: kept

    with store.transaction() as connection:
        assert store.delete_snapshot("cart-1", connection=connection) is True
        assert store.delete_snapshot("cart-1", connection=connection) is False
        assert store.load_snapshot("cart-1") is not None  # not committed yet
    assert store.load_snapshot("cart-1") is None


def test_a_unit_of_work_that_deletes_then_saves_keeps_its_new_snapshot(store: Any) -> None:
    fill(store, "cart-1", 3)
    store.save_snapshot("cart-1", 3, cart("3.00", "stale"))

    with store.transaction() as connection:
        assert store.delete_snapshot("cart-1", connection=connection) is True
        assert store.save_snapshot("cart-1", 2, cart("2.00", "new"), connection=connection)

    snapshot = store.load_snapshot("cart-1")
    assert snapshot is not None
    assert (snapshot.version, snapshot.state) == (2, cart("2.00", "new"))

    with store.transaction() as connection:
        assert store.save_snapshot("cart-1", 3, cart("3.00", "dropped"), connection=connection)
        assert store.delete_snapshot("cart-1", connection=connection) is True
    assert store.load_snapshot("cart-1") is None


# --- payloads and metadata ------------------------------------------------------------------


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param(None, id="none"),
        pytest.param({}, id="empty"),
        pytest.param({"correlation_id": "c-1", "causation_id": "e-9"}, id="flat"),
        pytest.param(
            {
                "trace": {"spans": [1, 2.5, "three", None, True, False], "deep": {"k": []}},
                "user": {"id": 42, "roles": ["admin"], "unicode": "ü→✓ 注文"},
                "big": 2**53,
                "negative": -1.5,
            },
            id="nested",
        ),
    ],
)
def test_metadata_round_trips(store: Any, metadata: dict[str, Any] | None) -> None:
    store.append_events("meta", [NewEvent("Noted", {"n": 1}, metadata)], expected_version=0)
    loaded = store.load_events("meta")[0]
    if metadata is None:
        assert loaded.metadata is None
    else:
        assert loaded.metadata is not None
        assert loaded.metadata == metadata


def test_registered_event_derives_its_type_and_loads_as_the_instance(store: Any) -> None:
    placed = order_placed()
    shipped = ItemShipped("A-1", date(2024, 5, 3))
    version = store.append_events(
        "order-5", [placed, NewEvent("Noted", {"n": 1}), shipped], expected_version=NO_STREAM
    )
    assert version == 3

    first, second, third = store.load_events("order-5")
    assert first.event_type == "OrderPlaced"
    assert isinstance(first.data, OrderPlaced)
    assert first.data == placed
    assert all(isinstance(line, Line) for line in first.data.lines)
    assert first.data.colour is Colour.GREEN
    assert first.metadata is None
    assert (second.event_type, second.data) == ("Noted", {"n": 1})
    assert third.event_type == "Shipped"
    assert third.data == shipped
    assert isinstance(third.data, ItemShipped)


def test_event_with_an_unregistered_type_loads_as_plain_data(store: Any) -> None:
    payload = {"amount": Decimal("1.10"), "tags": ["a", "b"], "nested": {"ok": True}}
    store.append_events("legacy", [NewEvent("LegacyRenamedEvent", payload)], expected_version=0)
    loaded = store.load_events("legacy")[0]
    assert loaded.event_type == "LegacyRenamedEvent"
    assert loaded.data == payload
    assert type(loaded.data) is dict


def test_registered_event_loads_as_fields_through_a_store_without_the_registry(
    event_store: PostgresEventStore,
) -> None:
    event_store.append_events("order-5", [order_placed()], expected_version=NO_STREAM)
    plain_store = PostgresEventStore(event_store.engine)
    loaded = plain_store.load_events("order-5")[0]
    assert loaded.event_type == "OrderPlaced"
    assert isinstance(loaded.data, dict)
    assert loaded.data["order_id"] == order_placed().order_id
    assert loaded.data["lines"][0]["sku"] == "A-1"


def test_stored_payloads_are_copies(store: Any) -> None:
    payload: dict[str, Any] = {"items": [1, 2]}
    metadata: dict[str, Any] = {"tags": ["x"]}
    store.append_events("copy", [NewEvent("Noted", payload, metadata)], expected_version=0)
    payload["items"].append(3)
    metadata["tags"].append("y")

    first = store.load_events("copy")[0]
    assert first.data == {"items": [1, 2]}
    assert first.metadata == {"tags": ["x"]}
    first.data["items"].append(99)
    assert first.metadata is not None
    first.metadata["tags"].append("z")
    again = store.load_events("copy")[0]
    assert again.data == {"items": [1, 2]}
    assert again.metadata == {"tags": ["x"]}


def test_created_at_is_timezone_aware_and_non_decreasing(store: Any) -> None:
    started = datetime.now(timezone.utc)
    store.append_events("timed", [noted(1), noted(2)], expected_version=0)
    store.append_events("timed", [noted(3)], expected_version=2)
    store.append_events("timed", [noted(4), noted(5), noted(6)], expected_version=3)
    stamps = [e.created_at for e in store.load_events("timed")]
    assert all(isinstance(s, datetime) for s in stamps)
    assert all(s.tzinfo is not None and s.utcoffset() is not None for s in stamps)
    assert stamps == sorted(stamps)
    # the server's clock and ours are the same machine's; allow generous skew
    assert started - timedelta(minutes=5) <= stamps[0] <= stamps[-1]
    assert stamps[-1] <= datetime.now(timezone.utc) + timedelta(minutes=5)


# --- stream identity ------------------------------------------------------------------------


def test_streams_are_independent(store: Any) -> None:
    lengths = {"order-1": 2, "order-10": 3, "order-100": 1, "order-": 4, "order-1-a": 2}
    for stream_id, length in lengths.items():
        store.append_events(
            stream_id,
            [NewEvent("Noted", {"stream": stream_id, "n": n}) for n in range(1, length + 1)],
            expected_version=NO_STREAM,
        )
    for stream_id, length in lengths.items():
        assert store.stream_version(stream_id) == length
        loaded = store.load_events(stream_id)
        assert [e.version for e in loaded] == list(range(1, length + 1))
        assert {e.stream_id for e in loaded} == {stream_id}
        assert {e.data["stream"] for e in loaded} == {stream_id}
        assert list(store.iter_events(stream_id, batch_size=1)) == loaded
    assert store.load_events("order") == []
    assert store.stream_version("order-2") == 0


@pytest.mark.parametrize(
    "stream_id",
    [
        pytest.param("'; DROP TABLE events; --", id="sql-injection"),
        pytest.param("order-%", id="like-percent"),
        pytest.param("order-_", id="like-underscore"),
        pytest.param('o\'reilly "quoted" back\\slash', id="quotes"),
        pytest.param("$1 :name %(name)s ?", id="placeholders"),
        pytest.param("注文-①", id="unicode"),
        pytest.param("🧾 receipt", id="emoji"),
        pytest.param(" ", id="whitespace-only"),
        pytest.param(" padded ", id="leading-and-trailing-spaces"),
        pytest.param("tab\tand\nnewline", id="control-characters"),
    ],
)
def test_stream_ids_are_stored_verbatim(store: Any, stream_id: str) -> None:
    store.append_events("order-1", [noted(1)], expected_version=0)
    store.append_events("order-10", [noted(1)], expected_version=0)

    assert store.append_events(stream_id, [noted(1), noted(2)], expected_version=0) == 2
    assert store.save_snapshot(stream_id, 2, {"at": 2}) is True

    loaded = store.load_events(stream_id)
    assert [(e.stream_id, e.version) for e in loaded] == [(stream_id, 1), (stream_id, 2)]
    assert store.stream_version(stream_id) == 2
    snapshot = store.load_snapshot(stream_id)
    assert snapshot is not None
    assert (snapshot.stream_id, snapshot.version) == (stream_id, 2)
    if stream_id.strip() not in ("", stream_id):
        assert store.load_events(stream_id.strip()) == []
    assert [e.version for e in store.load_events("order-1")] == [1]
    assert [e.version for e in store.load_events("order-10")] == [1]

    if isinstance(store, PostgresEventStore):
        with store.engine.connect() as conn:
            stored = conn.execute(
                select(events_table.c.stream_id).distinct().order_by(events_table.c.stream_id)
            ).scalars()
            assert sorted(stored) == sorted({"order-1", "order-10", stream_id})


# --- units of work ---------------------------------------------------------------------------


class _InterruptedError(Exception):
    pass


def test_a_unit_of_work_over_two_streams_is_all_or_nothing(store: Any) -> None:
    """A failure between two streams' appends leaves neither; success leaves both,
    contiguous in the feed in the order they were appended."""
    fill(store, "before", 1)

    def interrupted() -> None:
        with store.transaction() as connection:
            store.append_events("uow-a", [noted(1)], expected_version=0, connection=connection)
            store.save_snapshot("uow-a", 1, {"n": 1}, connection=connection)
            raise _InterruptedError

    with pytest.raises(_InterruptedError):
        interrupted()

    def conflicting() -> None:
        with store.transaction() as connection:
            store.append_events("uow-a", [noted(1)], expected_version=0, connection=connection)
            store.append_events("uow-b", [noted(2)], expected_version=5, connection=connection)

    with pytest.raises(ConcurrencyError):
        conflicting()
    assert store.load_events("uow-a") == store.load_events("uow-b") == []
    assert store.load_snapshot("uow-a") is None

    with store.transaction() as connection:
        store.append_events(
            "uow-a", [noted(1), noted(2)], expected_version=0, connection=connection
        )
        store.append_events("uow-b", [noted(3)], expected_version=NO_STREAM, connection=connection)
        store.append_events("uow-a", [noted(4)], expected_version=2, connection=connection)
    fill(store, "after", 1)

    assert [e.data["n"] for e in store.load_events("uow-a")] == [1, 2, 4]
    assert [e.data["n"] for e in store.load_events("uow-b")] == [3]
    wait_for_feed_horizon(store)
    feed = [(e.stream_id, e.version) for e in store.read_all()]
    assert feed == [
        ("before", 1),
        ("uow-a", 1),
        ("uow-a", 2),
        ("uow-b", 1),
        ("uow-a", 3),
        ("after", 1),
    ]


# --- the feed's head -------------------------------------------------------------------------


def test_feed_head_is_where_a_reader_from_now_starts(store: Any) -> None:
    assert store.feed_head() is None
    fill(store, "old", 3)
    wait_for_feed_horizon(store)

    head = store.feed_head()

    assert head == store.read_all()[-1].position
    assert store.read_all(after=head) == []
    fill(store, "new", 1)
    wait_for_feed_horizon(store)
    assert [(e.stream_id, e.version) for e in store.read_all(after=head)] == [("new", 1)]
    assert store.feed_head() == store.load_events("new")[0].position
    with store.subscribe(after=head, poll_interval=0.05) as subscription:
        assert next(subscription).stream_id == "new"
