"""Feed positions and metadata: what one store accepts and gives back, the other does too.

* A :class:`Position` holds two ints in ``0..2**63-1`` (a BIGINT): anything else
  is a ValidationError when it is built or parsed, never a raw OverflowError from
  a read. For every valid position (hypothesis draws them around the stored
  ones and at the extremes), ``read_all(after=...)`` on each store returns
  exactly its events after that position, in feed order.
* Metadata reads back as the same values, of the same types, from PostgreSQL's
  JSONB and from the in-memory store (hypothesis draws nested metadata with
  floats of every magnitude, -0.0, big ints and text). An int too long for
  Python to write as text is a ValidationError naming its key.
"""

from __future__ import annotations

import itertools
import math
import sys
from typing import Any

import pytest
from _store_helpers import STORE_KINDS, store_for, wait_for_feed_horizon
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import InMemoryEventStore, NewEvent, Position, PostgresEventStore, ValidationError

MAX = 2**63 - 1

_examples = itertools.count()


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest) -> Any:
    return store_for(request, request.param)


# -- positions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ((1, 2**63), "sequence must fit in a BIGINT"),
        ((2**63, 1), "transaction_id must fit in a BIGINT"),
        ((2**64 + 5, 0), "transaction_id must fit in a BIGINT"),
        ((-1, 0), "transaction_id must be >= 0"),
        ((0, -5), "sequence must be >= 0"),
        ((True, 1), "transaction_id must be an int, not bool"),
        ((1, False), "sequence must be an int, not bool"),
        ((1.0, 2), "transaction_id must be an int, not float"),
        (("1", 2), "transaction_id must be an int, not str"),
        ((None, 2), "transaction_id must be an int, not NoneType"),
    ],
)
def test_a_position_outside_a_bigint_or_not_of_ints_is_refused(
    fields: tuple[Any, Any], problem: str
) -> None:
    with pytest.raises(ValidationError, match=problem):
        Position(*fields)


@pytest.mark.parametrize(
    "text", ["9223372036854775808-1", "1-9223372036854775808", "99999999999999999999999-0"]
)
def test_parse_refuses_numbers_past_a_bigint(text: str) -> None:
    with pytest.raises(ValidationError, match="must fit in a BIGINT"):
        Position.parse(text)


def test_the_extreme_positions_parse_and_read_on_both_stores(store: Any) -> None:
    store.append_events("s", [NewEvent("E", {})], expected_version=0)
    wait_for_feed_horizon(store)
    assert Position.parse(f"{MAX}-{MAX}") == Position(MAX, MAX)
    assert store.read_all(after=Position(MAX, MAX)) == []
    assert store.read_all(after=Position(1, MAX)) == store.read_all(after=Position(1, MAX))
    assert [e.stream_id for e in store.read_all(after=Position(0, 0))] == ["s"]


def test_an_int_subclass_is_kept_as_a_plain_int() -> None:
    class Offset(int):
        pass

    position = Position(Offset(3), Offset(4))
    assert type(position.transaction_id) is int
    assert type(position.sequence) is int
    assert position == Position(3, 4)


def probe_positions(stored: list[Position]) -> st.SearchStrategy[Position]:
    """Positions at and around the stored ones, and anywhere in range."""
    near = st.sampled_from(stored).flatmap(
        lambda p: st.builds(
            Position,
            st.integers(max(0, p.transaction_id - 2), min(MAX, p.transaction_id + 2)),
            st.integers(max(0, p.sequence - 2), min(MAX, p.sequence + 2)),
        )
    )
    anywhere = st.builds(Position, st.integers(0, MAX), st.integers(0, MAX))
    extremes = st.sampled_from([Position(0, 0), Position(MAX, MAX), Position(0, MAX)])
    return near | anywhere | extremes


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_every_valid_position_reads_exactly_the_events_after_it(
    request: pytest.FixtureRequest, kind: str
) -> None:
    store = store_for(request, kind)
    for round_ in range(3):
        store.append_events(
            f"p-{round_}", [NewEvent("E", {"i": i}) for i in range(3)], expected_version=0
        )
    wait_for_feed_horizon(store)
    everything = store.read_all()
    stored = [event.position for event in everything]
    assert len(stored) == 9

    @settings(max_examples=150, deadline=None, database=None)
    @given(probe_positions(stored), st.integers(1, 12))
    def reads_after(after: Position, limit: int) -> None:
        expected = [e for e in everything if e.position > after][:limit]
        assert store.read_all(after=after, limit=limit) == expected
        assert list(store.iter_all(after=after, batch_size=limit)) == [
            e for e in everything if e.position > after
        ]

    reads_after()


# -- metadata ----------------------------------------------------------------------------


def typed(value: Any) -> Any:
    """``value`` with every number tagged by its type and floats by their exact
    text, so 1e16 != 10000000000000000 and -0.0 != 0.0 (both equal in Python)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        return ("float", value.hex())
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    return [typed(item) for item in value]


def as_stored(value: Any) -> Any:
    """What metadata must read back as: the same values, -0.0 as 0.0 (JSONB
    numbers have no negative zero), tuples as lists."""
    if isinstance(value, float):
        return 0.0 if value == 0 else value
    if isinstance(value, dict):
        return {key: as_stored(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_stored(item) for item in value]
    return value


text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=5)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(10**40), 10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([1e16, -1e16, 1.5e300, 5e-324, -0.0, 0.0, 1e15, 123.0, 2.0**53])
    | text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
metadata_values = st.dictionaries(text, json_values, max_size=4)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(metadata_values)
def test_metadata_reads_back_as_the_same_typed_values_from_both_stores(
    event_store: PostgresEventStore, metadata: dict[str, Any]
) -> None:
    stream_id = f"m-{next(_examples)}"
    memory = InMemoryEventStore()
    for store in (event_store, memory):
        store.append_events(stream_id, [NewEvent("E", {}, metadata)], expected_version=0)

    from_postgres = event_store.load_events(stream_id)[0].metadata
    from_memory = memory.load_events(stream_id)[0].metadata

    assert typed(from_postgres) == typed(from_memory) == typed(as_stored(metadata))


@pytest.mark.parametrize(
    "metadata",
    [
        {"big": 1e16},
        {"big": -1.5e300},
        {"zero": -0.0},
        {"nested": [{"f": 1e22}], "s": "e+"},
        {"ok": 0.5, "tiny": 1e-7},
    ],
)
def test_floats_stay_floats_on_both_stores(store: Any, metadata: dict[str, Any]) -> None:
    store.append_events("f", [NewEvent("E", {}, metadata)], expected_version=0)

    loaded = store.load_events("f")[0].metadata

    assert typed(loaded) == typed(as_stored(metadata))
    assert math.copysign(1.0, loaded.get("zero", 1.0)) == 1.0


@pytest.mark.parametrize(
    "metadata",
    [
        {"big": 10**5000},
        {"outer": {"big": -(10**5000)}},
        {"list": [1, 10**5000]},
    ],
)
def test_an_int_too_long_for_text_is_refused_naming_its_key(
    store: Any, metadata: dict[str, Any]
) -> None:
    key = "big" if "list" not in metadata else "list"
    limit = sys.get_int_max_str_digits()
    with pytest.raises(ValidationError, match=f"'{key}' holds an int of more than {limit} digits"):
        store.append_events("i", [NewEvent("E", {}, metadata)], expected_version=0)
    assert store.stream_version("i") == 0
