"""Versioned event types, aliases and upcasters in the registry, and their stored
format in the codec: tags 62006 and 62007, payload_version, version-1 bytes as
they always were. The stores' side is in test_evolving_events.py."""

from __future__ import annotations

import contextlib
import enum
import pickle
import sys
from dataclasses import dataclass, field
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore import DeserializationError, EventRegistry, ValidationError
from eventstore.codec import CborCodec, payload_version
from eventstore.records import Position, VersionedState


@dataclass(frozen=True)
class Opened:
    owner: str


@dataclass(frozen=True)
class Renamed:
    amount: int


@dataclass(frozen=True)
class Other:
    amount: int


@dataclass(frozen=True)
class Third:
    a: int


@dataclass(frozen=True)
class Point:
    x: int
    y: int = 0


def registry_with(*classes: type, **options: Any) -> EventRegistry:
    registry = EventRegistry()
    for cls in classes:
        registry.register(cls, **options)
    return registry


# -- registering versions and aliases -------------------------------------------------------------


def test_register_takes_a_version_and_aliases_in_every_form() -> None:
    registry = EventRegistry()
    assert registry.register(Opened, version=2, aliases=["AccountOpened"]) is Opened

    @registry.register
    @dataclass
    class Plain:
        a: int

    @registry.register(name="MoneyMoved", version=3, aliases=("Transferred", "Moved"))
    @dataclass
    class Transfer:
        a: int

    assert (registry.version_of(Opened), registry.version_of(Plain)) == (2, 1)
    assert registry.version_of(Transfer(1)) == 3
    assert registry.version_of("Moved") == 3
    assert registry.version_of("MoneyMoved") == 3
    assert registry.version_of("NotRegistered") == 1
    assert registry.name_of(Transfer) == "MoneyMoved"
    assert registry.class_for("Transferred") is Transfer
    assert registry.class_for("AccountOpened") is Opened
    assert registry.canonical_name("Moved") == "MoneyMoved"
    assert registry.canonical_name("MoneyMoved") == "MoneyMoved"
    assert registry.canonical_name("Nope") is None
    assert registry.names_for("Moved") == ("MoneyMoved", "Transferred", "Moved")
    assert registry.names_for("MoneyMoved") == ("MoneyMoved", "Transferred", "Moved")
    assert registry.names_for("Nope") == ("Nope",)
    assert registry.expand_names(["Plain", "Moved", "Nope", "Transferred"]) == [
        "Plain",
        "MoneyMoved",
        "Transferred",
        "Moved",
        "Nope",
    ]
    assert registry.expand_names(None) is None
    assert len(registry) == 3
    assert registry.classes() == {Opened: "Opened", Plain: "Plain", Transfer: "MoneyMoved"}


def test_an_alias_of_another_class_is_refused_naming_both_classes() -> None:
    registry = registry_with(Renamed)
    registry.register(Other, aliases=("Older",))

    with pytest.raises(ValidationError, match=r"'Renamed' of Third is already the name of Renamed"):
        registry.register(Third, aliases=("Renamed",))
    with pytest.raises(ValidationError, match=r"'Older' of Third is already an alias of Other"):
        registry.register(Third, aliases=("Older",))
    with pytest.raises(ValidationError, match=r"name 'Older' of Third is already an alias"):
        registry.register(Third, name="Older")
    assert registry.class_for("Older") is Other
    assert Third not in registry


def test_registering_a_class_under_a_second_name_says_to_use_an_alias() -> None:
    registry = registry_with(Renamed)

    with pytest.raises(ValidationError, match=r"aliases=\('Withdrawn',\)"):
        registry.register(Renamed, name="Withdrawn")


def test_registering_again_with_other_arguments_is_refused_and_with_the_same_is_harmless() -> None:
    registry = EventRegistry()
    registry.register(Renamed, version=2, aliases=("Old",))
    before = registry.generation

    assert registry.register(Renamed, version=2, aliases=("Old",)) is Renamed
    assert registry.generation == before
    with pytest.raises(ValidationError, match="register each class once"):
        registry.register(Renamed, version=3, aliases=("Old",))
    with pytest.raises(ValidationError, match="register each class once"):
        registry.register(Renamed, version=2)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"version": 0}, "version must be an int >= 1"),
        ({"version": "2"}, "version must be an int >= 1"),
        ({"version": True}, "version must be an int >= 1"),
        ({"aliases": "Old"}, r"aliases=\('OldName',\)"),
        ({"aliases": ["Old", "Old"]}, "holds a name twice"),
        ({"aliases": [""]}, "an alias must be a non-empty str"),
        ({"aliases": [3]}, "an alias must be a non-empty str"),
        ({"aliases": ["Renamed"]}, "also in its aliases"),
        ({"renamed_values": {"a": 1}}, "renamed_values is for Enum classes"),
    ],
)
def test_bad_registration_arguments_are_refused(options: dict[str, Any], message: str) -> None:
    registry = EventRegistry()
    with pytest.raises(ValidationError, match=message):
        registry.register(Renamed, **options)
    assert len(registry) == 0


# -- upcasters ------------------------------------------------------------------------------------


def versioned(version: int, fields: dict[str, Any]) -> bytes:
    """A top-level payload as a class at ``version`` stores it."""
    if version == 1:
        return cbor2.dumps(fields)
    return cbor2.dumps(cbor2.CBORTag(62006, [version, fields]))


def test_an_upcaster_chain_takes_stored_fields_to_the_class_version() -> None:
    registry = registry_with(Renamed, version=3)

    @registry.upcaster("Renamed", from_version=1)
    def units(fields: dict[str, Any]) -> dict[str, Any]:
        return {"amount": fields.pop("value")}

    @registry.upcaster("Renamed", from_version=2)
    def cents(fields: dict[str, Any]) -> dict[str, Any]:
        return {"amount": fields["amount"] * 100}

    codec = CborCodec(registry)
    assert codec.decode_payload("Renamed", versioned(1, {"value": 2})) == Renamed(200)
    assert codec.decode_payload("Renamed", versioned(2, {"amount": 3})) == Renamed(300)
    assert codec.decode_payload("Renamed", versioned(3, {"amount": 4})) == Renamed(4)
    assert units.__name__ == "units"  # the decorator returns the function


def test_a_missing_link_is_refused_on_first_decode_naming_the_class_and_version() -> None:
    registry = registry_with(Renamed, version=3)
    registry.upcaster("Renamed", from_version=1)(lambda fields: fields)  # registers fine
    codec = CborCodec(registry)
    assert codec.encode_payload(Renamed(1))  # encoding does not need the chain

    for decode in (
        lambda: codec.decode_payload("Renamed", versioned(3, {"amount": 1})),
        lambda: codec.decode(cbor2.dumps([1])),
        lambda: codec.decode_event_data("s", 1, "Unrelated", cbor2.dumps({})),
    ):
        with pytest.raises(ValidationError) as raised:
            decode()
        assert "Renamed" in str(raised.value)
        assert "no upcaster from version 2" in str(raised.value)
        assert "@registry.upcaster('Renamed', from_version=2)" in str(raised.value)

    registry.upcaster("Renamed", from_version=2)(lambda fields: fields)
    assert codec.decode_payload("Renamed", versioned(1, {"amount": 1})) == Renamed(1)


def test_an_upcaster_past_the_class_version_is_refused_saying_to_raise_the_version() -> None:
    registry = registry_with(Renamed, version=2)
    registry.upcaster("Renamed", from_version=1)(lambda fields: fields)
    registry.upcaster("Renamed", from_version=2)(lambda fields: fields)

    with pytest.raises(ValidationError, match="register it with version=3"):
        CborCodec(registry).decode(cbor2.dumps(1))


def test_an_upcaster_of_an_unregistered_name_is_refused_on_first_decode() -> None:
    registry = registry_with(Renamed)
    registry.upcaster("Renamd", from_version=1)(lambda fields: fields)

    with pytest.raises(ValidationError, match=r"'Renamd'.*names no registered class"):
        CborCodec(registry).decode(cbor2.dumps(1))


def test_an_upcaster_may_be_registered_under_an_alias() -> None:
    registry = EventRegistry()
    registry.register(Renamed, name="MoneyWithdrawn", version=2, aliases=("Withdrawn",))
    registry.upcaster("Withdrawn", from_version=1)(lambda f: {"amount": f["amount"] * 10})

    assert CborCodec(registry).decode_payload("Withdrawn", versioned(1, {"amount": 2})) == Renamed(
        20
    )


def test_two_upcasters_from_one_version_are_refused() -> None:
    registry = EventRegistry()
    registry.upcaster("Renamed", from_version=1)(lambda f: f)

    with pytest.raises(ValidationError, match="already has an upcaster from version 1"):
        registry.upcaster("Renamed", from_version=1)(lambda f: f)

    registry.register(Renamed, version=2, aliases=("Old",))
    registry.upcaster("Old", from_version=1)(lambda f: f)
    with pytest.raises(ValidationError, match="two upcasters from version 1"):
        CborCodec(registry).decode(cbor2.dumps(1))


@pytest.mark.parametrize(
    ("name", "from_version", "message"),
    [
        ("", 1, "an upcaster's name must be a non-empty str"),
        ("Renamed", 0, "from_version must be an int >= 1"),
        ("Renamed", 1.0, "from_version must be an int >= 1"),
    ],
)
def test_bad_upcaster_arguments_are_refused(name: Any, from_version: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        EventRegistry().upcaster(name, from_version=from_version)


def test_an_upcaster_must_be_callable() -> None:
    with pytest.raises(ValidationError, match="must be callable"):
        EventRegistry().upcaster("Renamed", from_version=1)(42)  # type: ignore[type-var]


def test_chains_are_resolved_once_per_registry_change_not_per_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = registry_with(Renamed, version=2)
    registry.upcaster("Renamed", from_version=1)(lambda f: f)
    codec = CborCodec(registry)
    calls = []
    resolved = registry.resolved
    monkeypatch.setattr(registry, "resolved", lambda: calls.append(1) or resolved())
    stored = [versioned(1 + n % 2, {"amount": n}) for n in range(100)]

    for n, data in enumerate(stored):
        assert codec.decode_event_data("s", n + 1, "Renamed", data) == Renamed(n)
        codec.decode_event_data("s", n + 1, "Unregistered", data)
    assert len(calls) == 1

    registry.register(Opened)
    codec.decode_event_data("s", 1, "Renamed", stored[0])
    codec.decode_event_data("s", 2, "Renamed", stored[1])
    assert len(calls) == 2


def test_an_upcaster_sees_nested_registered_objects_already_built() -> None:
    @dataclass(frozen=True)
    class Route:
        start: Point
        end: Point

    registry = registry_with(Point)
    registry.register(Route, version=2)
    seen: list[Any] = []

    @registry.upcaster("Route", from_version=1)
    def from_pair(fields: dict[str, Any]) -> dict[str, Any]:
        seen.append(fields)
        start, end = fields["points"]
        return {"start": start, "end": end}

    old = CborCodec(registry_with(Point)).encode({"points": [Point(1, 2), Point(3)]})

    assert CborCodec(registry).decode_payload("Route", old) == Route(Point(1, 2), Point(3))
    assert seen == [{"points": [Point(1, 2), Point(3)]}]


def test_a_failing_or_bad_upcaster_raises_deserialization_error_naming_it() -> None:
    registry = registry_with(Renamed, version=3)

    @registry.upcaster("Renamed", from_version=1)
    def needs_value(fields: dict[str, Any]) -> dict[str, Any]:
        return {"amount": fields["value"]}

    @registry.upcaster("Renamed", from_version=2)
    def forgets_to_return(fields: dict[str, Any]) -> None:
        fields["amount"] += 1

    codec = CborCodec(registry)
    with pytest.raises(DeserializationError, match=r"version 1 of Renamed \(.*needs_value\) "):
        codec.decode_payload("Renamed", versioned(1, {"amount": 1}))
    with pytest.raises(DeserializationError, match=r"forgets_to_return\) returned a NoneType"):
        codec.decode_payload("Renamed", versioned(2, {"amount": 1}))
    with pytest.raises(DeserializationError) as raised:
        codec.decode_event_data("s-1", 4, "Renamed", versioned(1, {"amount": 1}))
    error = raised.value
    assert (error.stream_id, error.version, error.event_type, error.position) == (
        "s-1",
        4,
        "Renamed",
        None,
    )
    assert str(error).startswith("cannot decode event 4 of stream 's-1' (event type 'Renamed'): ")


def test_fields_that_do_not_fit_still_say_so_when_no_upcaster_was_written() -> None:
    codec = CborCodec(registry_with(Renamed))

    with pytest.raises(DeserializationError, match=r"stored fields \['value'\] do not fit"):
        codec.decode_event_data("s", 1, "Renamed", versioned(1, {"value": 1}))


# -- the stored format ----------------------------------------------------------------------------


def test_version_1_payloads_are_a_plain_map_as_before() -> None:
    codec = CborCodec(registry_with(Point, Renamed))

    assert codec.encode_payload(Renamed(5)) == cbor2.dumps({"amount": 5})
    assert codec.encode({"p": Point(1, 2)}) == cbor2.dumps(
        {"p": cbor2.CBORTag(27, ["Point", {"x": 1, "y": 2}])}
    )
    assert payload_version(codec.encode_payload(Renamed(5))) == 1


def test_a_payload_at_a_later_version_is_tag_62006_of_version_and_fields() -> None:
    registry = registry_with(Renamed, version=2)
    registry.register(Point, version=12)
    codec = CborCodec(registry)

    data = codec.encode_payload(Renamed(5))
    nested = codec.encode({"p": Point(1, 2)})

    assert data == cbor2.dumps(cbor2.CBORTag(62006, [2, {"amount": 5}]))
    assert data.startswith(bytes.fromhex("d9f2368202"))
    assert nested == cbor2.dumps({"p": cbor2.CBORTag(27, ["Point", {"x": 1, "y": 2}, 12])})
    assert payload_version(data) == 2
    assert payload_version(codec.encode_payload(Point(1, 2))) == 12


@pytest.mark.parametrize("version", [2, 23, 24, 255, 256, 65_535, 65_536, 2**32, 2**64 - 1])
def test_payload_version_reads_every_width_of_version_from_the_first_bytes(version: int) -> None:
    head = cbor2.dumps(cbor2.CBORTag(62006, [version, {}]))[:-1]

    assert payload_version(head + b"\xa1") == version  # the rest is not read
    assert payload_version(memoryview(head + b"\xff" * 100)) == version
    assert payload_version(bytearray(head)) == version


@pytest.mark.parametrize(
    "data",
    [b"", b"\xa0", cbor2.dumps([1, 2]), cbor2.dumps(cbor2.CBORTag(27, ["P", {}]))],
    ids=["empty", "map", "array", "object"],
)
def test_payload_version_is_1_without_the_tag(data: bytes) -> None:
    assert payload_version(data) == 1


@pytest.mark.parametrize(
    "data",
    [
        bytes.fromhex("d9f23682"),
        bytes.fromhex("d9f2368200a0"),
        bytes.fromhex("d9f2368220a0"),
        bytes.fromhex("d9f236821901"),
        bytes.fromhex("d9f236826161a0"),
    ],
    ids=["no-version", "zero", "negative", "truncated", "text"],
)
def test_a_tag_62006_header_without_a_version_is_refused(data: bytes) -> None:
    with pytest.raises(DeserializationError, match=r"\[version, fields\], version >= 1"):
        payload_version(data)
    with pytest.raises(DeserializationError):
        CborCodec(registry_with(Renamed)).decode_payload("Renamed", data)


def test_a_versioned_payload_of_an_unregistered_type_decodes_as_its_fields() -> None:
    data = CborCodec(registry_with(Renamed, version=2)).encode_payload(Renamed(5))
    registry_with(Renamed, version=2)
    empty = CborCodec(EventRegistry())

    assert empty.decode_event_data("s", 1, "Renamed", data) == {"amount": 5}
    assert empty.decode_payload("Renamed", data) == {"amount": 5}
    assert empty.decode(data) == {"amount": 5}


def test_an_event_stored_by_a_newer_version_says_which_code_reads_it() -> None:
    codec = CborCodec(registry_with(Renamed))

    with pytest.raises(DeserializationError) as raised:
        codec.decode_event_data("s", 3, "Renamed", versioned(2, {"amount": 1}))

    assert "stored by version 2 of Renamed" in str(raised.value)
    assert "registered at version 1" in str(raised.value)
    assert "registers version 2" in str(raised.value)


def test_a_nested_object_of_a_later_version_than_its_class_is_refused() -> None:
    codec = CborCodec(registry_with(Point))
    data = cbor2.dumps({"p": cbor2.CBORTag(27, ["Point", {"x": 1}, 3])})

    with pytest.raises(DeserializationError, match="stored by version 3 of Point"):
        codec.decode(data)
    with pytest.raises(DeserializationError, match="must be an int >= 1, not 0"):
        codec.decode(cbor2.dumps(cbor2.CBORTag(27, ["Point", {"x": 1}, 0])))
    with pytest.raises(DeserializationError, match=r"\[name, fields, version\]"):
        codec.decode(cbor2.dumps(cbor2.CBORTag(27, ["Point", {"x": 1}, 2, 3])))


def test_events_stored_under_an_alias_load_as_the_class_nested_too() -> None:
    old = EventRegistry()
    old.register(Point, name="Coordinates")
    stored = CborCodec(old).encode({"at": Point(1, 2)})
    registry = EventRegistry()
    registry.register(Point, name="Position2D", aliases=("Coordinates",))

    assert CborCodec(registry).decode(stored) == {"at": Point(1, 2)}
    assert CborCodec(registry).decode_payload("Coordinates", cbor2.dumps({"x": 3})) == Point(3)


# -- snapshot states --------------------------------------------------------------------------


def test_a_versioned_state_is_tag_62007_and_decodes_back() -> None:
    codec = CborCodec(registry_with(Point))
    state = VersionedState(3, {"where": Point(1, 2), "seen": (1, 2)})

    data = codec.encode(state)

    assert data.startswith(bytes.fromhex("d9f2378203"))
    assert cbor2.loads(data).tag == 62007
    assert codec.decode(data) == state
    assert codec.decode_state("s", 1, data) == state
    assert type(codec.decode(data).state["seen"]) is tuple


@pytest.mark.parametrize("version", [0, -1, True, "2", 1.5])
def test_a_versioned_state_needs_a_version_from_1(version: Any) -> None:
    with pytest.raises(ValidationError, match="version must be an int >= 1"):
        VersionedState(version, {})
    with pytest.raises(DeserializationError, match=r"\[version, state\]"):
        CborCodec().decode(cbor2.dumps(cbor2.CBORTag(62007, [version, {}])))


def test_a_snapshot_state_of_version_1_classes_is_upcast_where_nested() -> None:
    registry = registry_with(Renamed, version=2)
    registry.upcaster("Renamed", from_version=1)(lambda f: {"amount": f["amount"] * 100})
    stored = CborCodec(registry_with(Renamed)).encode(VersionedState(2, [Renamed(1)]))

    assert CborCodec(registry).decode_state("s", 1, stored) == VersionedState(2, [Renamed(100)])


# -- enums ----------------------------------------------------------------------------------------


class Status(enum.Enum):
    OPEN = "open"
    SHUT = "shut"


def test_renamed_values_map_a_removed_stored_value_to_a_member() -> None:
    registry = registry_with(Status, renamed_values={"closed": Status.SHUT, 3: Status.OPEN})
    stored = cbor2.dumps([cbor2.CBORTag(27, ["Status", v]) for v in ("open", "closed", 3)])

    assert CborCodec(registry).decode(stored) == [Status.OPEN, Status.SHUT, Status.OPEN]
    with pytest.raises(DeserializationError, match=r"'gone' is not a member of Status.*renamed"):
        CborCodec(registry).decode(cbor2.dumps(cbor2.CBORTag(27, ["Status", "gone"])))
    with pytest.raises(DeserializationError, match=r"not a member of Status"):
        CborCodec(registry).decode(cbor2.dumps(cbor2.CBORTag(27, ["Status", [1]])))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"renamed_values": {"closed": "shut"}}, "'shut', which is not a member of Status"),
        ({"renamed_values": {"open": Status.SHUT}}, "that is the value of Status.OPEN"),
        ({"renamed_values": ["closed"]}, "renamed_values must be a mapping"),
        ({"version": 2}, "an Enum, which has no versions"),
    ],
)
def test_bad_enum_registrations_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        EventRegistry().register(Status, **options)


class Priority(enum.Enum):
    LOW = enum.auto()
    HIGH = enum.auto()


class Size(enum.IntEnum):
    SMALL = 1
    LARGE = enum.auto()


class Perm(enum.IntFlag):
    READ = enum.auto()
    WRITE = enum.auto()


def test_an_int_enum_numbered_by_auto_is_refused_saying_why_and_what_to_do() -> None:
    registry = EventRegistry()

    with pytest.raises(ValidationError) as raised:
        registry.register(Priority)

    message = str(raised.value)
    assert "Priority takes int values from enum.auto() (LOW, HIGH)" in message
    assert "removing or reordering a member would renumber the others" in message
    assert "Give every member an explicit value (today's are LOW = 1, HIGH = 2)" in message
    with pytest.raises(ValidationError, match=r"\(LARGE\)"):
        registry.register(Size)
    with pytest.raises(ValidationError, match=r"enum\.auto"):
        registry.register(Perm)
    assert len(registry) == 0


def test_enums_with_explicit_values_or_text_from_auto_register() -> None:
    class Level(enum.IntEnum):
        LOW = 1
        HIGH = 2

    class Colour(str, enum.Enum):
        @staticmethod
        def _generate_next_value_(name: str, start: int, count: int, last: list[Any]) -> str:
            return name.lower()

        RED = enum.auto()

    registry = registry_with(Level, Colour, Status)
    codec = CborCodec(registry)
    assert codec.decode(codec.encode([Level.HIGH, Colour.RED])) == [Level.HIGH, Colour.RED]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="StrEnum is new in 3.11")
def test_a_str_enum_with_auto_values_registers() -> None:
    class Mode(enum.StrEnum):  # type: ignore[name-defined,misc,unused-ignore]
        FAST = enum.auto()

    assert EventRegistry().register(Mode) is Mode


# -- DeserializationError ------------------------------------------------------------------------


def test_deserialization_error_attributes_default_to_none_and_survive_pickling() -> None:
    plain = DeserializationError("bad bytes")
    assert (plain.stream_id, plain.version, plain.event_type, plain.position) == (None,) * 4
    error = DeserializationError(
        "cannot decode", stream_id="s", version=2, event_type="E", position=Position(5, 1)
    )

    copy = pickle.loads(pickle.dumps(error))

    assert str(copy) == "cannot decode"
    assert (copy.stream_id, copy.version, copy.event_type, copy.position) == (
        "s",
        2,
        "E",
        Position(5, 1),
    )


# -- the property ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Counter:
    value: int
    trail: tuple[int, ...] = field(default=())


def step(from_version: int, scale: int, offset: int) -> Any:
    def upcast(fields: dict[str, Any]) -> dict[str, Any]:
        return {
            "value": fields["value"] * scale + offset,
            "trail": (*fields.get("trail", ()), from_version),
        }

    return upcast


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(st.tuples(st.integers(-3, 3), st.integers(-50, 50)), min_size=0, max_size=6),
    data=st.data(),
)
def test_decoding_stored_version_k_equals_applying_the_chain_from_k_by_hand(
    steps: list[tuple[int, int]], data: st.DataObject
) -> None:
    version = len(steps) + 1
    stored_version = data.draw(st.integers(1, version), label="stored version")
    value = data.draw(st.integers(-(10**6), 10**6), label="stored value")
    chain = [step(n, scale, offset) for n, (scale, offset) in enumerate(steps, start=1)]
    registry = EventRegistry()
    registry.register(Counter, version=version)
    for from_version, upcast in enumerate(chain, start=1):
        registry.upcaster("Counter", from_version=from_version)(upcast)
    writer = EventRegistry()  # the code of the stored version, which needs no chain to write
    writer.register(Counter, version=stored_version)
    stored = CborCodec(writer).encode_payload(Counter(value))
    nested = CborCodec(writer).encode({"c": [Counter(value)]})

    by_hand: dict[str, Any] = {"value": value, "trail": ()}
    for upcast in chain[stored_version - 1 :]:
        by_hand = upcast(by_hand)
    expected = Counter(**by_hand)

    codec = CborCodec(registry)
    assert payload_version(stored) == stored_version
    assert codec.decode_payload("Counter", stored) == expected
    assert codec.decode_event_data("s", 1, "Counter", stored) == expected
    assert codec.decode(nested) == {"c": [expected]}


def hostile_registry() -> EventRegistry:
    """Classes at versions 1 and 2 with upcasters, and an Enum with a renamed value."""
    registry = registry_with(Point, version=2)
    registry.register(Status, renamed_values={"closed": Status.SHUT})
    registry.register(Counter, version=2)
    registry.upcaster("Point", from_version=1)(lambda fields: fields)
    registry.upcaster("Counter", from_version=1)(lambda fields: {**fields, "trail": (1,)})
    return registry


def decode_every_way(codec: CborCodec, event_type: str, data: bytes) -> None:
    """Decode ``data`` as an event, a snapshot and for its version; any failure
    must be a DeserializationError (anything else propagates)."""
    for decode in (
        lambda: codec.decode_event_data("s", 1, event_type, data),
        lambda: codec.decode_state("s", 1, data),
        lambda: payload_version(data),
    ):
        with contextlib.suppress(DeserializationError):
            decode()


@settings(max_examples=300, deadline=None)
@given(
    head=st.sampled_from(
        [b"", bytes.fromhex("d9f236"), bytes.fromhex("d9f23682"), bytes.fromhex("d9f2368202")]
    ),
    tail=st.binary(max_size=40),
    event_type=st.sampled_from(["Counter", "Status", "Point", "Unregistered"]),
)
def test_any_bytes_under_a_version_header_raise_only_deserialization_error(
    head: bytes, tail: bytes, event_type: str
) -> None:
    decode_every_way(CborCodec(hostile_registry()), event_type, head + tail)


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.text(max_size=5),
    st.binary(max_size=3),
)
_TAGGED = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(["x", "y", "value", "trail", "z"]), inner, max_size=3),
        st.builds(
            lambda tag, items: cbor2.CBORTag(tag, items),
            st.sampled_from([27, 62006, 62007]),
            st.one_of(
                inner,
                st.lists(
                    st.one_of(st.sampled_from(["Point", "Counter", "Status", "Nope"]), inner),
                    max_size=4,
                ),
            ),
        ),
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(value=_TAGGED, event_type=st.sampled_from(["Counter", "Point", "Nope"]))
def test_hostile_trees_of_the_version_tags_raise_only_deserialization_error(
    value: Any, event_type: str
) -> None:
    decode_every_way(CborCodec(hostile_registry()), event_type, cbor2.dumps(value))


def test_state_version_reads_the_snapshot_version_from_the_first_bytes() -> None:
    from eventstore.codec import CborCodec, state_version
    from eventstore.records import VersionedState

    codec = CborCodec()
    assert state_version(codec.encode({"balance": 1})) == 1
    assert state_version(codec.encode(VersionedState(3, {"balance": 1}))) == 3
    assert state_version(codec.encode(VersionedState(70_000, []))) == 70_000
    with pytest.raises(DeserializationError, match=r"\[version, state\], version >= 1"):
        state_version(b"\xd9\xf2\x37\x82\x00")
