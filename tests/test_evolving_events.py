"""Events and snapshot states written by version-1 classes read through changed
classes, on both stores and every read path.

The golden files (tests/golden/*.cbor) are the stored bytes of
tests/golden/v1_model.py's events and snapshot state, written once by
tests/golden/write_golden.py. Here they are read with version 2 of the model: a
field added with a default, fields renamed and removed (upcasters), a class
renamed (an alias), field types changed (int to str, str to a nested dataclass),
a nested object changed, an Enum value renamed. The cross-process tests write the
same events with the version-1 classes in another process and read them here.
"""

from __future__ import annotations

import enum
import itertools
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cbor2
import pytest
from _store_helpers import STORE_KINDS, store_for, wait_for_feed_horizon
from sqlalchemy import select

from eventstore import (
    DeserializationError,
    EventRegistry,
    NewEvent,
    Position,
    PostgresEventStore,
    Projection,
    ProjectionRunner,
    RecordedEvent,
    Repository,
    ValidationError,
)
from eventstore._validation import EncodedBatch
from eventstore.codec import CborCodec, payload_version
from eventstore.schema import events as events_table

GOLDEN = Path(__file__).resolve().parent / "golden"
STREAM = "account-1"
SNAPSHOT_VERSION = 6
DEADLINE_SECONDS = 20.0


def golden_events() -> list[tuple[str, bytes]]:
    """``(event type, stored payload)`` of each golden event, in stream order."""
    files = sorted(GOLDEN.glob("event-*.cbor"), key=lambda path: int(path.stem.split("-")[1]))
    return [(path.stem.split("-", 2)[2], path.read_bytes()) for path in files]


def golden_snapshot() -> bytes:
    return (GOLDEN / f"snapshot-{SNAPSHOT_VERSION}.cbor").read_bytes()


# -- version 2 of the model ----------------------------------------------------------------------


class Status(enum.Enum):
    OPEN = "open"
    SHUT = "shut"  # stored as "closed" by version 1


@dataclass(frozen=True)
class Line:  # version 2: qty renamed quantity
    sku: str
    quantity: int


@dataclass(frozen=True)
class AccountOpened:  # a field added with a default: no new version, no upcaster
    owner: str
    currency: str = "EUR"


@dataclass(frozen=True)
class Deposited:  # version 2: amount (in units) became amount_cents; note removed
    amount_cents: int


@dataclass(frozen=True)
class MoneyWithdrawn:  # the class Withdrawn, renamed
    amount: int


@dataclass(frozen=True)
class Tagged:  # version 2: code was an int
    code: str


@dataclass(frozen=True)
class StatusChanged:
    status: Status


@dataclass(frozen=True)
class Ordered:  # unchanged, but its lines are version-2 Lines
    lines: list[Line]


@dataclass(frozen=True)
class Address:
    street: str
    city: str


@dataclass(frozen=True)
class Moved:  # version 2: address was a str
    address: Address


@dataclass(frozen=True)
class AccountState:  # version 2: balance became balance_cents; address added
    owner: str
    balance_cents: int
    status: Status
    lines: tuple[Line, ...]
    address: Address | None = None


def v2_registry() -> EventRegistry:
    registry = EventRegistry()
    registry.register(Status, renamed_values={"closed": Status.SHUT})
    registry.register(Line, version=2)
    registry.register(AccountOpened)
    registry.register(Deposited, version=2)
    registry.register(MoneyWithdrawn, aliases=("Withdrawn",))
    registry.register(Tagged, version=2)
    registry.register(StatusChanged)
    registry.register(Ordered)
    registry.register(Address)
    registry.register(Moved, version=2)
    registry.register(AccountState, version=2)

    @registry.upcaster("Line", from_version=1)
    def quantity_was_qty(fields: dict[str, Any]) -> dict[str, Any]:
        fields["quantity"] = fields.pop("qty")
        return fields

    @registry.upcaster("Deposited", from_version=1)
    def amount_in_cents(fields: dict[str, Any]) -> dict[str, Any]:
        return {"amount_cents": fields["amount"] * 100}

    @registry.upcaster("Tagged", from_version=1)
    def code_as_text(fields: dict[str, Any]) -> dict[str, Any]:
        return {"code": f"T-{fields['code']}"}

    @registry.upcaster("Moved", from_version=1)
    def address_parsed(fields: dict[str, Any]) -> dict[str, Any]:
        street, city = fields["address"].split(", ")
        return {"address": Address(street, city)}

    @registry.upcaster("AccountState", from_version=1)
    def balance_in_cents(fields: dict[str, Any]) -> dict[str, Any]:
        fields["balance_cents"] = fields.pop("balance") * 100
        return fields

    return registry


LINES = (Line("A-1", 2), Line("B-2", 1))
EXPECTED = [
    ("AccountOpened", AccountOpened("ann", "EUR")),
    ("Deposited", Deposited(10_000)),
    ("Withdrawn", MoneyWithdrawn(30)),
    ("Tagged", Tagged("T-7")),
    ("StatusChanged", StatusChanged(Status.SHUT)),
    ("Ordered", Ordered(list(LINES))),
    ("Moved", Moved(Address("1 Main St", "Springfield"))),
]
"""What the golden stream reads as with version 2: (stored event type, payload)."""

SNAPSHOT_STATE = AccountState("ann", 7_000, Status.SHUT, LINES)
FINAL_STATE = replace(SNAPSHOT_STATE, address=Address("1 Main St", "Springfield"))
INITIAL_STATE = AccountState("", 0, Status.OPEN, ())


def evolve(state: AccountState, event: Any) -> AccountState:
    if isinstance(event, AccountOpened):
        return replace(state, owner=event.owner)
    if isinstance(event, Deposited):
        return replace(state, balance_cents=state.balance_cents + event.amount_cents)
    if isinstance(event, MoneyWithdrawn):
        return replace(state, balance_cents=state.balance_cents - event.amount * 100)
    if isinstance(event, StatusChanged):
        return replace(state, status=event.status)
    if isinstance(event, Ordered):
        return replace(state, lines=(*state.lines, *event.lines))
    if isinstance(event, Moved):
        return replace(state, address=event.address)
    return state


@pytest.fixture
def eventstore_registry() -> EventRegistry:
    return v2_registry()


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest) -> Any:
    return store_for(request, request.param)


def store_raw(store: Any, stream_id: str, payloads: list[tuple[str, bytes]]) -> None:
    """Store ``payloads`` as they are (no encoding), as a new stream."""
    types = [event_type for event_type, _ in payloads]
    data = [payload for _, payload in payloads]
    store._append(stream_id, EncodedBatch(types, data, [None] * len(types)), 0, 0, 0, None)


def store_golden(store: Any) -> None:
    store_raw(store, STREAM, golden_events())
    written, _ = store._save_snapshot(STREAM, SNAPSHOT_VERSION, golden_snapshot(), None)
    assert written
    wait_for_feed_horizon(store)


# -- every read path -----------------------------------------------------------------------------


def take(subscription: Any, count: int) -> list[RecordedEvent]:
    """Up to ``count`` events of ``subscription``, giving up after the deadline."""
    timer = threading.Timer(DEADLINE_SECONDS, subscription.stop)
    timer.start()
    try:
        return list(itertools.islice(subscription, count))
    finally:
        timer.cancel()
        subscription.close()


def projected(store: Any, event_types: list[str] | None = None) -> list[RecordedEvent]:
    handled: list[RecordedEvent] = []
    projection = Projection(
        "golden", lambda event, _: handled.append(event), event_types=event_types
    )
    with ProjectionRunner(store, projection, lock_timeout=5) as runner:
        runner.run_once()
    return handled


READS: dict[str, Callable[[Any], list[RecordedEvent]]] = {
    "load_events": lambda store: store.load_events(STREAM),
    "iter_events": lambda store: list(store.iter_events(STREAM, batch_size=2)),
    "read_all": lambda store: store.read_all(),
    "iter_all": lambda store: list(store.iter_all(batch_size=2)),
    "subscribe": lambda store: take(store.subscribe(batch_size=3), len(EXPECTED)),
    "projection": projected,
}

FILTERED_READS: dict[str, Callable[[Any, list[str]], list[RecordedEvent]]] = {
    "read_all": lambda store, types: store.read_all(event_types=types),
    "iter_all": lambda store, types: list(store.iter_all(event_types=types)),
    "subscribe": lambda store, types: take(store.subscribe(event_types=types), 2),
    "projection": lambda store, types: projected(store, types),
}


@pytest.mark.parametrize("path", list(READS))
def test_golden_events_read_as_the_changed_classes(store: Any, path: str) -> None:
    store_golden(store)

    read = READS[path](store)

    assert [(event.event_type, event.data) for event in read] == EXPECTED
    assert [event.version for event in read] == list(range(1, len(EXPECTED) + 1))


def test_the_golden_snapshot_state_reads_as_the_changed_class(store: Any) -> None:
    store_golden(store)

    snapshot = store.load_snapshot(STREAM)

    assert snapshot.version == SNAPSHOT_VERSION
    assert snapshot.state == SNAPSHOT_STATE
    assert type(snapshot.state.lines[0]) is Line


def test_a_repository_loads_the_golden_stream_from_its_snapshot_and_in_full(store: Any) -> None:
    store_golden(store)
    store_raw(store, "account-2", golden_events())  # the same events, no snapshot
    seen: list[Any] = []

    def recording(state: AccountState, event: Any) -> AccountState:
        seen.append(event)
        return evolve(state, event)

    repository = Repository(store, INITIAL_STATE, recording)

    assert repository.load(STREAM) == (FINAL_STATE, len(EXPECTED))
    assert seen == [EXPECTED[-1][1]]  # the snapshot, then only the event after it
    assert repository.load("account-2") == (FINAL_STATE, len(EXPECTED))


def test_version_1_classes_still_write_the_golden_bytes() -> None:
    sys.path.insert(0, str(GOLDEN))
    try:
        import v1_model
    finally:
        sys.path.remove(str(GOLDEN))
    codec = CborCodec(v1_model.registry)

    written = [(v1_model.registry.name_of(e), codec.encode_payload(e)) for e in v1_model.EVENTS]

    assert written == golden_events()
    assert codec.encode(v1_model.SNAPSHOT_STATE) == golden_snapshot()


# -- renamed classes in filters ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["MoneyWithdrawn", "Withdrawn"])
@pytest.mark.parametrize("path", list(FILTERED_READS))
def test_a_filter_by_either_name_of_a_renamed_class_matches_events_stored_under_both(
    store: Any, path: str, name: str
) -> None:
    store_golden(store)
    store.append_events(STREAM, [MoneyWithdrawn(5)], expected_version=len(EXPECTED))
    wait_for_feed_horizon(store)

    read = FILTERED_READS[path](store, [name])

    assert [(event.event_type, event.data) for event in read] == [
        ("Withdrawn", MoneyWithdrawn(30)),
        ("MoneyWithdrawn", MoneyWithdrawn(5)),
    ]


def test_the_stored_event_type_of_a_renamed_class_is_kept_and_new_events_take_the_new_name(
    store: Any,
) -> None:
    store_golden(store)
    store.append_events(STREAM, [MoneyWithdrawn(5)], expected_version=len(EXPECTED))

    *_, old, new = [e for e in store.load_events(STREAM) if isinstance(e.data, MoneyWithdrawn)]

    assert (old.event_type, new.event_type) == ("Withdrawn", "MoneyWithdrawn")


# -- errors name the event ------------------------------------------------------------------------


def newer_deposit() -> bytes:
    """A Deposited payload stored by a version 3 this code does not know."""
    return cbor2.dumps(cbor2.CBORTag(62006, [3, {"amount_cents": 1, "source": "x"}]))


@pytest.mark.parametrize("path", ["load_events", "iter_events", "read_all", "iter_all"])
def test_an_event_stored_by_a_newer_version_raises_an_error_naming_it(
    store: Any, path: str
) -> None:
    store_golden(store)
    store_raw(store, "account-3", [("Deposited", newer_deposit())])
    wait_for_feed_horizon(store)
    last_good = store.load_events(STREAM)[-1]
    read = {
        "load_events": lambda: store.load_events("account-3"),
        "iter_events": lambda: list(store.iter_events("account-3")),
        "read_all": lambda: store.read_all(after=last_good.position),
        "iter_all": lambda: list(store.iter_all()),
    }[path]

    with pytest.raises(DeserializationError) as raised:
        read()

    error = raised.value
    assert (error.stream_id, error.version, error.event_type) == ("account-3", 1, "Deposited")
    assert isinstance(error.position, Position)
    assert error.position > last_good.position
    assert "cannot decode event 1 of stream 'account-3' (event type 'Deposited')" in str(error)
    assert "stored by version 3 of Deposited" in str(error)
    assert "registers version 3" in str(error)  # what to do


def test_an_upcaster_that_fails_raises_an_error_naming_the_event_and_the_upcaster(
    store: Any,
) -> None:
    store_raw(store, "account-4", [("Tagged", cbor2.dumps({"cod": 7}))])

    with pytest.raises(DeserializationError) as raised:
        store.load_events("account-4")

    error = raised.value
    assert (error.stream_id, error.version, error.event_type) == ("account-4", 1, "Tagged")
    assert "the upcaster from version 1 of Tagged" in str(error)
    assert "code_as_text" in str(error)
    assert "KeyError" in str(error)


def test_a_snapshot_that_fails_to_decode_names_the_stream_and_version(store: Any) -> None:
    store_raw(store, STREAM, golden_events())
    state = cbor2.dumps(cbor2.CBORTag(27, ["AccountState", {"owner": "ann"}]))
    store._save_snapshot(STREAM, SNAPSHOT_VERSION, state, None)

    with pytest.raises(DeserializationError) as raised:
        store.load_snapshot(STREAM)

    error = raised.value
    assert (error.stream_id, error.version, error.event_type, error.position) == (
        STREAM,
        SNAPSHOT_VERSION,
        None,
        None,
    )
    assert "the upcaster from version 1 of AccountState" in str(error)


def test_a_missing_upcaster_is_refused_when_the_store_first_decodes(store: Any) -> None:
    store_golden(store)

    @dataclass(frozen=True)
    class Closed:
        reason: str

    store.registry.register(Closed, version=3)
    store.registry.upcaster("Closed", from_version=1)(lambda fields: fields)

    with pytest.raises(ValidationError, match=r"Closed.*no upcaster from version 2"):
        store.load_events(STREAM)
    with pytest.raises(ValidationError, match=r"from_version=2"):
        store.read_all()

    store.registry.upcaster("Closed", from_version=2)(lambda fields: fields)
    assert [e.data for e in store.load_events(STREAM)] == [data for _, data in EXPECTED]


# -- across processes ----------------------------------------------------------------------------


WRITE_WITH_VERSION_1 = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[2])
    from v1_model import EVENTS, SNAPSHOT_STATE, SNAPSHOT_VERSION, STREAM, registry
    from eventstore import PostgresEventStore
    store = PostgresEventStore.from_url(sys.argv[1], registry=registry)
    store.append_events(STREAM, EVENTS, expected_version=0)
    store.save_snapshot(STREAM, SNAPSHOT_VERSION, SNAPSHOT_STATE)
    store.close()
    """
)


@pytest.fixture
def written_by_version_1(
    event_store: PostgresEventStore, eventstore_database_url: str
) -> PostgresEventStore:
    """The test database, emptied, after another process appended the golden
    stream and saved its snapshot with the version-1 classes."""
    subprocess.run(
        [sys.executable, "-c", WRITE_WITH_VERSION_1, eventstore_database_url, str(GOLDEN)],
        check=True,
        timeout=120,
    )
    wait_for_feed_horizon(event_store)
    return event_store


def test_events_another_process_appended_with_version_1_are_stored_as_the_golden_bytes(
    written_by_version_1: PostgresEventStore,
) -> None:
    with written_by_version_1.engine.connect() as connection:
        rows = connection.execute(
            select(events_table.c.event_type, events_table.c.event_data)
            .where(events_table.c.stream_id == STREAM)
            .order_by(events_table.c.version)
        ).all()
    assert [(event_type, bytes(data)) for event_type, data in rows] == golden_events()


@pytest.mark.parametrize("path", list(READS))
def test_events_another_process_appended_with_version_1_read_as_version_2(
    written_by_version_1: PostgresEventStore, path: str
) -> None:
    read = READS[path](written_by_version_1)

    assert [(event.event_type, event.data) for event in read] == EXPECTED


def test_a_snapshot_another_process_saved_with_version_1_loads_as_version_2(
    written_by_version_1: PostgresEventStore,
) -> None:
    store = written_by_version_1
    assert store.load_snapshot(STREAM).state == SNAPSHOT_STATE
    assert Repository(store, INITIAL_STATE, evolve).load(STREAM) == (FINAL_STATE, len(EXPECTED))
    assert store.read_all(event_types=["MoneyWithdrawn"])[0].data == MoneyWithdrawn(30)


def test_new_events_of_version_2_round_trip_next_to_version_1_ones(store: Any) -> None:
    store_golden(store)
    appended = [
        Deposited(250),
        Tagged("T-9"),
        Ordered([Line("C-3", 4)]),
        Moved(Address("2 High St", "Shelbyville")),
        NewEvent("Noted", {"line": Line("D-4", 1)}),
    ]
    store.append_events(STREAM, appended, expected_version=len(EXPECTED))

    loaded = store.load_events(STREAM, from_version=len(EXPECTED) + 1)

    assert [event.data for event in loaded[:-1]] == appended[:-1]
    assert loaded[-1].data == {"line": Line("D-4", 1)}


def test_a_new_event_of_a_versioned_type_is_stored_at_the_class_version(store: Any) -> None:
    """A NewEvent's field map under a versioned class's type holds the current
    fields: it is stored with the class's version, so no upcaster runs on it."""
    store.append_events(
        "account-new-event",
        [NewEvent("Deposited", {"amount_cents": 250}), NewEvent("Tagged", {"code": "T-9"})],
        expected_version=0,
    )
    loaded = store.load_events("account-new-event")
    assert [event.data for event in loaded] == [Deposited(250), Tagged("T-9")]
    assert [payload_version(store_row_data(store, e)) for e in loaded] == [2, 2]


def test_a_new_event_under_an_alias_of_an_unversioned_class_is_stored_as_it_is(
    store: Any,
) -> None:
    store.append_events(
        "account-alias-new-event", [NewEvent("Withdrawn", {"amount": 5})], expected_version=0
    )
    assert store.load_events("account-alias-new-event")[0].data == MoneyWithdrawn(5)


def store_row_data(store: Any, event: RecordedEvent) -> bytes:
    """The stored payload bytes of ``event``, as the store keeps them."""
    rows = store._load_rows(event.stream_id, event.version, event.version, 1, None)
    return bytes(rows[0][3])
