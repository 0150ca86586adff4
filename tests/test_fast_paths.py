"""The hot paths of an append give exactly what the general checks give.

``encode_batch`` takes shortcuts for the common case (a plain dict payload,
flat metadata, an ASCII event type). These properties compare each shortcut
with the general path it stands in for, on generated values including the
awkward ones (NUL, lone surrogates, NaN, big integers, deep nesting), so a
shortcut can neither accept what the general path refuses nor encode
differently."""

from __future__ import annotations

import math
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eventstore.codec
from eventstore import NewEvent, SerializationError, ValidationError
from eventstore._validation import (
    _check_json,
    _exact_json,
    check_identifier,
    encode_batch,
    metadata_json,
)
from eventstore.codec import _WIDEST_LEVEL, MAX_DEPTH, CborCodec, _is_plain, _refuse

CODEC = CborCodec()

text = st.text(alphabet=st.characters(codec=None, blacklist_categories=()), max_size=12)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    text,
    st.binary(max_size=8),
)
plain = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(text, children, max_size=4)
    ),
    max_leaves=20,
)
plain_dicts = st.dictionaries(text, plain, max_size=6)
# Dicts whose keys are not all exact str report their keys to the walk as well.
any_key = st.one_of(
    text, st.integers(), st.none(), st.binary(max_size=4), st.floats(), st.booleans()
)
mixed_key_dicts = st.dictionaries(
    any_key,
    st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4), st.dictionaries(any_key, children, max_size=4)
        ),
        max_leaves=20,
    ),
    max_size=6,
)


def general_encode(value: Any) -> bytes:
    """What the codec does for a value that is not plain (every encoder hook on)."""
    return cbor2.dumps(value, encoders=CODEC._current_encoders(), default=_refuse)


def outcome(call: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", call(*args)
    except (SerializationError, ValidationError) as error:
        return "refused", type(error)


@settings(max_examples=300, deadline=None)
@given(st.one_of(plain_dicts, mixed_key_dicts))
def test_a_plain_dict_payload_encodes_to_the_same_bytes_as_the_general_path(
    value: dict[str, Any],
) -> None:
    fast = outcome(CODEC.encode_plain_dict, value)
    general = outcome(CODEC.encode, value)
    assert fast == general
    if fast[0] == "ok":
        assert fast[1] == general_encode(value)


@pytest.mark.parametrize("depth", [99, 100, 101, 150, MAX_DEPTH, MAX_DEPTH + 1, 5000])
def test_deep_plain_payloads_take_the_general_path_and_its_limit(depth: int) -> None:
    value: Any = 1
    for _ in range(depth - 1):
        value = [value]
    payload = {"deep": value}
    assert outcome(CODEC.encode_plain_dict, payload) == outcome(CODEC.encode, payload)
    if depth > MAX_DEPTH:
        with pytest.raises(SerializationError):
            CODEC.encode_plain_dict(payload)


def test_a_dict_with_tuples_or_subclasses_inside_keeps_its_tags() -> None:
    class Sub(dict[str, Any]):
        pass

    for payload in ({"t": (1, 2)}, {"s": {1, 2}}, {"d": Sub(a=1)}, {(1, 2): "k"}):
        assert CODEC.encode_plain_dict(payload) == CODEC.encode(payload)
        assert CODEC.decode(CODEC.encode_plain_dict(payload)) == payload


def test_values_holding_themselves_are_refused_by_the_general_walk() -> None:
    twice: dict[str, Any] = {}
    twice["x"] = [twice, twice]  # doubles at every level of a breadth-first walk
    once: list[Any] = []
    once.append(once)
    for payload in (twice, {"a": once}):
        with pytest.raises(SerializationError, match="nested more than"):
            CODEC.encode_plain_dict(payload)


def test_a_payload_wider_than_the_walk_takes_encodes_the_same() -> None:
    wide = {"xs": list(range(_WIDEST_LEVEL + 1)), "ys": [{"k": [1]}] * 3}
    assert not _is_plain(wide)
    assert CODEC.encode_plain_dict(wide) == CODEC.encode(wide) == cbor2.dumps(wide)


def test_without_cpythons_collector_nothing_is_plain_and_bytes_are_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    payload = {"a": [1, {"b": b"x"}], 2: None}
    assert _is_plain(payload)
    monkeypatch.setattr(eventstore.codec, "_children", None)
    assert not _is_plain(payload)
    assert CODEC.encode_plain_dict(payload) == cbor2.dumps(payload)


def reference_metadata(metadata: Any) -> str:
    """The general check, then the encoding that keeps floats floats in JSONB,
    without any shortcut."""
    _check_json(metadata, "metadata of 'E'")
    return _exact_json(metadata)


flat_metadata = st.dictionaries(
    st.one_of(text, st.integers(), st.none()),
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        text,
    ),
    max_size=5,
)


@settings(max_examples=500, deadline=None)
@given(st.one_of(flat_metadata, st.dictionaries(text, plain, max_size=3)))
def test_metadata_shortcut_agrees_with_the_general_check(metadata: dict[Any, Any]) -> None:
    assert outcome(metadata_json, metadata, "E") == outcome(reference_metadata, metadata)


@pytest.mark.parametrize(
    "metadata",
    [
        {"k": "a\x00b"},
        {"k": "\ud800"},
        {"\x00": 1},
        {"k": math.nan},
        {"k": math.inf},
        {1: "int key"},
        {"k": "\\u0000 is fine as text"},
        {"k": "caf\u00e9"},
    ],
)
def test_metadata_edge_cases_agree(metadata: dict[Any, Any]) -> None:
    assert outcome(metadata_json, metadata, "E") == outcome(reference_metadata, metadata)


@settings(max_examples=300, deadline=None)
@given(st.one_of(text, st.text(max_size=1030), st.integers(), st.none()))
def test_event_type_shortcut_agrees_with_check_identifier(event_type: Any) -> None:
    batch = outcome(encode_batch, [NewEvent(event_type, {})], CODEC)
    general = outcome(check_identifier, event_type, "event_type of event 0")
    assert batch[0] == general[0]
    if batch[0] == "ok":
        assert batch[1].event_types == [event_type]


def test_a_batch_is_encoded_by_column_in_order() -> None:
    events = [NewEvent("A", {"n": 1}, {"m": 1}), NewEvent("B", {"n": (2,)}), NewEvent("C", [3])]
    batch = encode_batch(events, CODEC)
    assert len(batch) == 3
    assert batch.event_types == ["A", "B", "C"]
    assert [CODEC.decode(data) for data in batch.data] == [{"n": 1}, {"n": (2,)}, [3]]
    assert batch.metadata == ['{"m":1}', None, None]
    assert [event.event_type for event in batch] == ["A", "B", "C"]


def per_event_reference(events: list[Any]) -> tuple[str, Any]:
    """Each event encoded alone by the general path: what a batch must store."""
    try:
        rows = [
            (event.event_type, CODEC.encode_payload(event.data), metadata_json(event.metadata, "E"))
            for event in events
        ]
    except (SerializationError, ValidationError) as error:
        return "refused", type(error)
    return "ok", rows


payloads = st.one_of(
    plain_dicts,
    mixed_key_dicts,
    st.dictionaries(text, st.tuples(scalars), max_size=2),  # needs the tuple tag
    st.lists(scalars, max_size=3),  # not a dict: the general path
)


@settings(max_examples=300, deadline=None)
@given(st.lists(payloads, min_size=1, max_size=6))
def test_a_batch_checked_at_once_stores_what_each_event_alone_would(data: list[Any]) -> None:
    events = [NewEvent("E", payload, {"k": index}) for index, payload in enumerate(data)]
    expected = per_event_reference(events)
    got = outcome(encode_batch, events, CODEC)
    assert got[0] == expected[0]
    if got[0] == "ok":
        assert list(zip(got[1].event_types, got[1].data, got[1].metadata, strict=True)) == [
            (event_type, data, metadata) for event_type, data, metadata in expected[1]
        ]


def test_one_deep_payload_sends_the_whole_batch_to_the_general_walk() -> None:
    deep: Any = 1
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    events = [NewEvent("E", {"n": 1}), NewEvent("E", {"deep": deep})]
    with pytest.raises(SerializationError, match="payload of event 1"):
        encode_batch(events, CODEC)


def test_every_distinct_event_type_of_a_batch_is_checked() -> None:
    ok = "Placed"
    for bad in ("", "a\x00b", "\ud800", "x" * 1025):
        events = [NewEvent(ok, {}), NewEvent(ok, {}), NewEvent(bad, {}), NewEvent(ok, {})]
        with pytest.raises(ValidationError, match="event_type of event 2"):
            encode_batch(events, CODEC)


def test_a_batch_given_as_a_generator_is_encoded_like_a_list() -> None:
    events = [NewEvent("A", {"n": 1}), NewEvent("B", {"t": (1,)})]
    assert encode_batch(iter(events), CODEC) == encode_batch(events, CODEC)
