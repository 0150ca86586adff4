"""The CBOR codec and the event registry: exact round trips, typed errors, safe decoding."""

from __future__ import annotations

import contextlib
import enum
import math
import sys
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import DeserializationError, EventRegistry, SerializationError, ValidationError
from eventstore.codec import CborCodec

# -- registered types used throughout ----------------------------------------------------------

registry = EventRegistry()


@registry.register
class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


@registry.register
class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


if sys.version_info >= (3, 11):

    @registry.register
    class Mode(enum.StrEnum):
        FAST = "fast"
        SAFE = "safe"

else:  # pragma: no cover - StrEnum is new in 3.11

    @registry.register
    class Mode(str, enum.Enum):
        FAST = "fast"
        SAFE = "safe"


@registry.register
@dataclass(frozen=True)
class Point:
    x: int
    y: int


@registry.register
@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int
    price: Decimal


@registry.register
@dataclass
class Basket:
    owner: str
    lines: list[Line]
    tags: set[str] = field(default_factory=set)


@registry.register(name="ShipmentV2")
@dataclass(frozen=True)
class Shipment:
    priority: Color
    level: Level
    dimensions: tuple[int, int, int]
    shipped_at: datetime | None = None


@dataclass
class Unregistered:
    value: int


class PlainEnum(enum.Enum):
    ONE = 1


def codec() -> CborCodec:
    return CborCodec(registry)


def round_trip(value: Any) -> Any:
    c = codec()
    return c.decode(c.encode(value))


def assert_identical(expected: Any, actual: Any, path: str = "value") -> None:
    """Equal AND of exactly the same type, all the way down."""
    assert type(actual) is type(expected), f"{path}: {type(actual)!r} != {type(expected)!r}"
    if isinstance(expected, float):
        if math.isnan(expected):
            assert math.isnan(actual), path
        else:
            assert actual == expected, path
            assert math.copysign(1.0, actual) == math.copysign(1.0, expected), f"{path}: sign"
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), path
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            assert_identical(e, a, f"{path}[{i}]")
    elif isinstance(expected, dict):
        assert list(actual) == list(expected), f"{path}: keys {list(actual)} != {list(expected)}"
        for key in expected:
            assert_identical(expected[key], actual[key], f"{path}[{key!r}]")
    elif isinstance(expected, (set, frozenset)):
        assert actual == expected, path
        assert sorted(map(repr, map(type, actual))) == sorted(map(repr, map(type, expected)))
    elif isinstance(expected, (datetime, time)):
        assert actual == expected, path
        assert (actual.tzinfo is None) == (expected.tzinfo is None), f"{path}: tzinfo"
        assert actual.utcoffset() == expected.utcoffset(), f"{path}: utcoffset"
        assert actual.isoformat() == expected.isoformat(), path
    elif isinstance(expected, Decimal):
        assert actual.as_tuple() == expected.as_tuple(), f"{path}: {actual!r} != {expected!r}"
    elif isinstance(expected, enum.Enum):
        assert actual is expected, path
    elif hasattr(expected, "__dataclass_fields__"):
        assert actual == expected, path
        for name in expected.__dataclass_fields__:
            assert_identical(getattr(expected, name), getattr(actual, name), f"{path}.{name}")
    else:
        assert actual == expected, path


# -- round trips of every supported type -------------------------------------------------------

IST = timezone(timedelta(hours=5, minutes=30))

ROUND_TRIPS = {
    "none": None,
    "true": True,
    "false": False,
    "zero": 0,
    "int64_max": 2**63 - 1,
    "beyond_uint64": 2**64,
    "below_int64": -(2**64) - 1,
    "huge_positive": 2**200,
    "huge_negative": -(2**200),
    "float": 1.5,
    "negative_zero": -0.0,
    "infinity": math.inf,
    "minus_infinity": -math.inf,
    "str": "héllo wörld ✓ 🎉",
    "empty_str": "",
    "str_with_nul": "a\x00b",
    "bytes": b"\x00\xff\x10",
    "empty_bytes": b"",
    "list": [1, "two", 3.0, None],
    "empty_list": [],
    "tuple": (1, "two", 3.0),
    "empty_tuple": (),
    "one_tuple": (None,),
    "dict": {"a": 1, "b": [2, 3], "c": {"d": None}},
    "empty_dict": {},
    "int_keys": {1: "one", 2: "two"},
    "set": {1, 2, 3},
    "empty_set": set(),
    "frozenset": frozenset({"a", "b"}),
    "empty_frozenset": frozenset(),
    "naive_datetime": datetime(2024, 2, 29, 13, 45, 7, 123456),
    "naive_datetime_min": datetime.min,
    "naive_datetime_max": datetime.max,
    "utc_datetime": datetime(2024, 2, 29, 13, 45, 7, 123456, tzinfo=timezone.utc),
    "ist_datetime": datetime(2024, 2, 29, 13, 45, 7, 123456, tzinfo=IST),
    "negative_offset_datetime": datetime(
        1999, 12, 31, 23, 59, 59, tzinfo=timezone(-timedelta(hours=8))
    ),
    "date": date(2024, 2, 29),
    "date_min": date.min,
    "date_max": date.max,
    "naive_time": time(13, 45, 7, 123456),
    "midnight": time(0, 0),
    "aware_time": time(13, 45, 7, 654321, tzinfo=IST),
    "utc_time": time(23, 59, 59, 999999, tzinfo=timezone.utc),
    "decimal_keeps_exponent": Decimal("1.10"),
    "decimal_integral": Decimal("100"),
    "decimal_exponent_positive": Decimal("1E+3"),
    "decimal_negative": Decimal("-12.3400"),
    "decimal_huge": Decimal("123456789012345678901234567890.123456789012345678901234567890"),
    "decimal_tiny": Decimal("1E-40"),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "uuid_nil": uuid.UUID(int=0),
    "enum_member": Color.GREEN,
    "int_enum_member": Level.HIGH,
    "str_enum_member": Mode.SAFE,
    "dataclass": Point(1, -2),
    "list_of_tuples_of_dicts": [({"a": 1}, {"b": (2, [3])}), ({},)],
    "dict_with_tuple_values": {"k": (1, 2), "nested": ((), (None,), ([1], {"x": (3,)}))},
    "dataclass_with_list_of_dataclasses": Basket(
        "ann",
        [Line("A-1", 2, Decimal("9.99")), Line("B-2", 1, Decimal("0.50"))],
        {"gift"},
    ),
    "dataclass_with_enum_and_tuple": Shipment(
        Color.RED, Level.LOW, (10, 20, 30), datetime(2024, 1, 1, 8, 0)
    ),
    "everything_in_a_dict": {
        "when": datetime(2024, 5, 1, 12, 0, tzinfo=IST),
        "naive": datetime(2024, 5, 1, 12, 0),
        "day": date(2024, 5, 1),
        "at": time(9, 30),
        "amount": Decimal("0.10"),
        "id": uuid.UUID(int=42),
        "color": Color.RED,
        "points": (Point(0, 0), Point(1, 1)),
        "raw": b"\x01",
        "big": -(2**100),
    },
}


@pytest.mark.parametrize("value", list(ROUND_TRIPS.values()), ids=list(ROUND_TRIPS))
def test_value_round_trips_with_exact_type(value: Any) -> None:
    assert_identical(value, round_trip(value))


def test_naive_datetime_stays_naive_and_aware_datetime_keeps_its_offset() -> None:
    naive = round_trip(datetime(2024, 1, 2, 3, 4, 5, 6))
    assert naive.tzinfo is None
    aware = round_trip(datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=IST))
    assert aware.utcoffset() == timedelta(hours=5, minutes=30)
    assert aware.hour == 3
    utc = round_trip(datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=timezone.utc))
    assert utc.utcoffset() == timedelta(0)


def test_time_keeps_microseconds_and_offset() -> None:
    naive = round_trip(time(1, 2, 3, 456789))
    assert (naive.tzinfo, naive.microsecond) == (None, 456789)
    aware = round_trip(time(1, 2, 3, 456789, tzinfo=timezone(-timedelta(hours=3))))
    assert aware.microsecond == 456789
    assert aware.utcoffset() == -timedelta(hours=3)


def test_decimal_keeps_its_exponent() -> None:
    value = round_trip(Decimal("1.10"))
    assert type(value) is Decimal
    assert str(value) == "1.10"
    assert value.as_tuple().exponent == -2


@pytest.mark.parametrize("text", ["Infinity", "-Infinity"])
def test_infinite_decimal_comes_back_as_a_decimal(text: str) -> None:
    assert_identical(Decimal(text), round_trip(Decimal(text)))


def test_nan_decimal_comes_back_as_a_nan_decimal() -> None:
    value = round_trip(Decimal("NaN"))
    assert type(value) is Decimal
    assert value.is_nan()


def test_nan_float_comes_back_as_a_nan_float() -> None:
    value = round_trip(math.nan)
    assert type(value) is float
    assert math.isnan(value)


@pytest.mark.parametrize("member", [Color.RED, Level.LOW, Mode.FAST], ids=repr)
def test_registered_enum_members_come_back_as_the_member_itself(member: enum.Enum) -> None:
    assert round_trip(member) is member
    assert round_trip([member, {"m": member}]) == [member, {"m": member}]
    assert round_trip([member])[0] is member


def test_hashable_codec_types_work_as_set_members_and_dict_keys() -> None:
    value = {
        "set": {(1, 2), frozenset({3, 4}), Point(5, 6), Color.RED, Decimal("1.5")},
        "keys": {
            Color.RED: 1,
            Level.HIGH: 2,
            (1, "a"): 3,
            Point(0, 0): 4,
            date(2024, 1, 1): 5,
            uuid.UUID(int=7): 6,
        },
        "frozen_of_frozen": frozenset({frozenset({1}), frozenset()}),
    }
    decoded = round_trip(value)
    assert decoded == value
    assert {type(k) for k in decoded["keys"]} == {type(k) for k in value["keys"]}
    assert {type(m) for m in decoded["set"]} == {type(m) for m in value["set"]}
    assert type(decoded["frozen_of_frozen"]) is frozenset


def test_unknown_cbor_tag_decodes_as_a_cbor_tag_with_its_content() -> None:
    # cbor2 decodes the content of a tag it does not know immutably (a tuple for
    # an array), so the value is kept but not the exact container type.
    c = codec()
    decoded = c.decode(cbor2.dumps(cbor2.CBORTag(99999, [1, 2])))
    assert isinstance(decoded, cbor2.CBORTag)
    assert decoded.tag == 99999
    assert list(decoded.value) == [1, 2]
    assert c.decode(c.encode(decoded)) == decoded


def test_a_payload_decodes_identically_with_a_fresh_codec_of_an_equal_registry() -> None:
    def build() -> EventRegistry:
        r = EventRegistry()
        r.register(Point)
        r.register(Color)
        r.register(Line)
        r.register(Basket)
        return r

    value = {
        "basket": Basket("bo", [Line("X", 1, Decimal("2.00"))]),
        "colors": (Color.RED, Color.GREEN),
        "origin": Point(0, 0),
    }
    encoded = CborCodec(build()).encode(value)
    assert_identical(value, CborCodec(build()).decode(encoded))


# -- the registry --------------------------------------------------------------------------------


def test_register_call_form_returns_the_class_and_uses_its_name() -> None:
    r = EventRegistry()

    @dataclass
    class OrderPlaced:
        order_id: str

    assert r.register(OrderPlaced) is OrderPlaced
    assert r.name_of(OrderPlaced) == "OrderPlaced"
    assert r.name_of(OrderPlaced("o-1")) == "OrderPlaced"
    assert r.class_for("OrderPlaced") is OrderPlaced


def test_register_decorator_forms() -> None:
    r = EventRegistry()

    @r.register
    @dataclass
    class ItemAdded:
        sku: str

    @r.register(name="OrderShipped.v2")
    @dataclass
    class OrderShipped:
        carrier: str

    @r.register
    class Status(enum.Enum):
        OPEN = 1

    assert ItemAdded("a") == ItemAdded("a")  # the decorator returned the class itself
    assert r.class_for("ItemAdded") is ItemAdded
    assert r.class_for("OrderShipped.v2") is OrderShipped
    assert r.class_for("OrderShipped") is None
    assert r.name_of(OrderShipped("ups")) == "OrderShipped.v2"
    assert r.class_for("Status") is Status


def test_class_for_an_unknown_name_is_none() -> None:
    assert EventRegistry().class_for("Nope") is None


def test_a_taken_name_cannot_be_registered_for_another_class() -> None:
    r = EventRegistry()

    @dataclass
    class First:
        a: int

    @dataclass
    class Second:
        a: int

    r.register(name="Same")(First)
    with pytest.raises(ValidationError):
        r.register(name="Same")(Second)
    assert r.class_for("Same") is First


def test_two_classes_with_the_same_name_cannot_both_use_the_default_name() -> None:
    r = EventRegistry()

    def make() -> type:
        @dataclass
        class Dup:
            a: int

        return Dup

    r.register(make())
    with pytest.raises(ValidationError):
        r.register(make())


def test_registering_the_same_class_under_the_same_name_again_is_harmless() -> None:
    r = EventRegistry()
    assert r.register(Point) is Point
    assert r.register(Point) is Point
    assert r.register(name="Point")(Point) is Point
    assert r.class_for("Point") is Point
    c = CborCodec(r)
    assert c.decode(c.encode(Point(1, 2))) == Point(1, 2)


class NotADataclass:
    pass


@pytest.mark.parametrize(
    "candidate",
    [NotADataclass, int, dict, Point(1, 2), "Point", 42],
    ids=["plain_class", "int", "dict", "dataclass_instance", "str", "number"],
)
def test_only_dataclasses_and_enums_can_be_registered(candidate: Any) -> None:
    r = EventRegistry()
    with pytest.raises(ValidationError):
        r.register(candidate)
    assert len(r.classes()) == 0


# -- encoding errors -------------------------------------------------------------------------------


def test_unregistered_dataclass_raises_serialization_error_naming_the_class() -> None:
    with pytest.raises(SerializationError, match="Unregistered"):
        codec().encode(Unregistered(1))


def test_unregistered_dataclass_nested_in_a_registered_one_raises_serialization_error() -> None:
    with pytest.raises(SerializationError, match="Unregistered"):
        codec().encode(Basket("x", [Unregistered(1)]))  # type: ignore[list-item]


def test_unregistered_enum_member_raises_serialization_error() -> None:
    with pytest.raises(SerializationError, match="PlainEnum"):
        codec().encode({"e": PlainEnum.ONE})


def test_object_raises_serialization_error_naming_its_type() -> None:
    with pytest.raises(SerializationError, match="object"):
        codec().encode(object())


@pytest.mark.parametrize("value", ["\ud800", ["ok", {"k": "x\udfffy"}]], ids=["top", "nested"])
def test_lone_surrogate_raises_serialization_error(value: Any) -> None:
    with pytest.raises(SerializationError):
        codec().encode(value)


def test_cyclic_structure_raises_serialization_error() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(SerializationError):
        codec().encode(cycle)


# -- decoding: garbage in, DeserializationError out -----------------------------------------------

GARBAGE = {
    "empty": b"",
    "break_code": b"\xff",
    "open_indefinite_array": b"\x9f",
    "open_indefinite_map": b"\xbf\x61a",
    "truncated_array": b"\x82\x01",
    "truncated_uint": b"\x19\x01",
    "truncated_text": b"\x65ab",
    "reserved_additional_info": b"\x1c",
    "invalid_utf8_text": b"\x62\xff\xfe",
    "huge_declared_length": b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff",
    "bad_indefinite_chunk": b"\x5f\x01\xff",
    "deep_nesting": b"\x81" * 100_000 + b"\x00",
    "epoch_datetime_of_text": b"\xc1\x61x",
    "rational_over_zero": b"\xd8\x1e\x82\x01\x00",
    "bad_regex": b"\xd8\x23\x61(",
    "datetime_string_garbage": cbor2.dumps(cbor2.CBORTag(0, "not a date")),
    "bignum_of_text": cbor2.dumps(cbor2.CBORTag(2, "x")),
    "decimal_fraction_wrong_shape": cbor2.dumps(cbor2.CBORTag(4, [1])),
    "uuid_too_short": cbor2.dumps(cbor2.CBORTag(37, b"\x01")),
    "shared_reference_out_of_range": cbor2.dumps(cbor2.CBORTag(29, 5)),
    "ip_address_garbage": cbor2.dumps(cbor2.CBORTag(260, b"\x01\x02\x03")),
    "epoch_datetime_overflow": cbor2.dumps(cbor2.CBORTag(1, 1e300)),
}


@pytest.mark.parametrize("data", list(GARBAGE.values()), ids=list(GARBAGE))
def test_garbage_bytes_raise_deserialization_error(data: bytes) -> None:
    with pytest.raises(DeserializationError):
        codec().decode(data)


def _own_tags() -> dict[str, int]:
    """The private tags the codec writes, discovered by encoding samples."""
    samples = {
        "tuple": (1,),
        "frozenset": frozenset({1}),
        "naive_datetime": datetime(2024, 1, 1),
        "time": time(1, 2),
        "dataclass": Point(1, 2),
        "enum": Color.RED,
    }
    tags = {}
    for name, value in samples.items():
        plain = cbor2.loads(codec().encode(value))
        if isinstance(plain, cbor2.CBORTag):
            tags[name] = plain.tag
    return tags


BAD_TAG_CONTENTS = [
    None,
    "garbage",
    "",
    -1,
    10**30,
    1.5,
    b"\x00",
    [],
    ["Point"],
    ["Point", {"x": 1}],
    ["Point", {"x": 1, "y": 2, "z": 3}],
    ["Point", [1, 2]],
    ["Color", "purple"],
    ["Color", ["red"]],
    ["Level", 99],
    [["unhashable"], {}],
    [1, 2, 3],
    {"a": 1},
    [{"x": 1}, {"y": [2]}],
]


@pytest.mark.parametrize("content", BAD_TAG_CONTENTS, ids=repr)
def test_codec_tags_with_bad_content_never_raise_another_exception_type(content: Any) -> None:
    c = codec()
    for tag in sorted(set(_own_tags().values())):
        data = cbor2.dumps(cbor2.CBORTag(tag, content))
        with contextlib.suppress(DeserializationError):
            c.decode(data)


@pytest.mark.parametrize(
    ("tag", "content", "reason"),
    [
        (27, ["Point", {"x": 1, "z": 3}], r"stored fields \['x', 'z'\] do not fit Point"),
        (27, ["Color", "purple"], "'purple' is not a member of Color"),
        (27, ["Point"], r"a tag-27 object must be \[name, fields\]"),
        (62001, 5, r"semantic tag 62001 \(TypeError: 'int' object is not iterable\)"),
        (62003, "nope", r"semantic tag 62003 \(ValueError: Invalid isoformat string"),
        (62005, "1.5", "tag 62005 holds only NaN, infinities and -0"),
    ],
)
def test_a_bad_tag_says_why_it_cannot_be_decoded(tag: int, content: Any, reason: str) -> None:
    with pytest.raises(DeserializationError, match=reason):
        codec().decode(cbor2.dumps(cbor2.CBORTag(tag, content)))


def test_codec_writes_its_own_tags_for_types_cbor_lacks() -> None:
    # guards the test above: it must actually exercise the codec's private tags
    assert {"tuple", "frozenset", "naive_datetime", "time", "dataclass", "enum"} <= set(_own_tags())


@pytest.mark.parametrize(
    "data",
    [cbor2.dumps(cbor2.CBORTag(258, [[1], [2]])), cbor2.dumps({(1, 2): "x"}), b"\xa1\x80\x00"],
    ids=["set_of_arrays", "map_with_array_key", "raw_map_with_array_key"],
)
def test_odd_but_valid_cbor_decodes_or_raises_deserialization_error(data: bytes) -> None:
    with contextlib.suppress(DeserializationError):
        codec().decode(data)


# -- decoding never builds an unregistered class ---------------------------------------------------

constructed: list[str] = []


@dataclass
class Inner:
    x: int

    def __post_init__(self) -> None:
        constructed.append("Inner")


@dataclass
class Outer:
    name: str
    inner: Inner

    def __post_init__(self) -> None:
        constructed.append("Outer")


def test_nested_object_of_an_unregistered_name_decodes_as_a_dict_of_its_fields() -> None:
    writer = EventRegistry()
    writer.register(Inner)
    writer.register(Outer)
    encoded = CborCodec(writer).encode([Outer("o", Inner(7))])
    constructed.clear()

    assert_identical([{"name": "o", "inner": {"x": 7}}], CborCodec(EventRegistry()).decode(encoded))
    assert constructed == []

    reader = EventRegistry()
    reader.register(Outer)
    decoded = CborCodec(reader).decode(encoded)
    assert constructed == ["Outer"]
    assert type(decoded[0]) is Outer
    assert_identical({"x": 7}, decoded[0].inner)


def test_decoding_never_resolves_a_name_to_an_importable_class() -> None:
    writer = EventRegistry()

    @writer.register(name="subprocess.Popen")
    @dataclass
    class Command:
        args: list[str]

    @writer.register(name="builtins.eval")
    @dataclass
    class Expression:
        source: str

    encoded = CborCodec(writer).encode([Command(["echo", "hi"]), Expression("1+1")])
    decoded = CborCodec(EventRegistry()).decode(encoded)
    assert_identical([{"args": ["echo", "hi"]}, {"source": "1+1"}], decoded)


# -- properties ---------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**300), max_value=2**300)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
)

cbor_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.lists(children, max_size=5).map(tuple)
        | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)

fixed_offsets = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)

rich_scalars = (
    st.datetimes()
    | st.datetimes(timezones=fixed_offsets)
    | st.dates()
    | st.times()
    | st.times(timezones=fixed_offsets)
    | st.decimals(allow_nan=False, allow_infinity=False)
    | st.uuids()
    | st.sampled_from([Color.RED, Color.GREEN, Level.LOW, Level.HIGH, Mode.FAST, Mode.SAFE])
    | st.builds(Point, st.integers(), st.integers())
    | st.frozensets(st.integers(), max_size=4)
    | st.sets(st.text(max_size=5), max_size=4)
)

PROPERTY_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(cbor_values)
def test_property_cbor_native_values_round_trip_with_types_preserved(value: Any) -> None:
    assert_identical(value, round_trip(value))


@PROPERTY_SETTINGS
@given(st.lists(rich_scalars | cbor_values, max_size=6).map(tuple))
def test_property_rich_values_round_trip_with_types_preserved(value: Any) -> None:
    assert_identical(value, round_trip(value))


@PROPERTY_SETTINGS
@given(st.binary(max_size=64))
def test_property_arbitrary_bytes_decode_or_raise_deserialization_error(data: bytes) -> None:
    with contextlib.suppress(DeserializationError):
        codec().decode(data)


@PROPERTY_SETTINGS
@given(
    st.sampled_from(list(ROUND_TRIPS.values())),
    st.data(),
)
def test_property_mutated_encodings_decode_or_raise_deserialization_error(
    value: Any, data: st.DataObject
) -> None:
    encoded = bytearray(codec().encode(value))
    if encoded:
        for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
            at = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
            encoded[at] = data.draw(st.integers(min_value=0, max_value=255))
        cut = data.draw(st.integers(min_value=0, max_value=len(encoded)))
        encoded = encoded[:cut]
    with contextlib.suppress(DeserializationError):
        codec().decode(bytes(encoded))
