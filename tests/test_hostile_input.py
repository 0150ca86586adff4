"""Hostile and malformed input through every public method of both stores.

Three tables, each case with one outcome and a check of what the store holds:

* ``ROUND_TRIPS``: SQL-injection strings, LIKE wildcards, 1024-byte and astral
  identifiers, deep and huge payloads are stored and read back verbatim through
  every method, the filters of the feed match them literally, and the tables are
  still there holding exactly the rows expected.
* ``REFUSED``: input the stores must refuse (payloads nested beyond what the
  decoder accepts, cycles, surrogates in keys, unregistered classes, bad feed
  filters) raises a typed error and the store holds exactly what it held before.
* ``TAMPERED`` (PostgreSQL): rows written behind the library's back (bytes that
  are not CBOR, unknown tags, objects of unknown or renamed classes) come back
  as a :class:`DeserializationError` naming the event, or as plain data; no
  class is ever built from a name the reader did not register.

Argument validation proper (types, ranges, NUL, lengths on the stream methods)
is tested in ``test_bad_input.py``; the codec's own round trips in
``test_codec.py``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cbor2
import pytest
from _store_helpers import STORE_KINDS, store_contents, store_for, wait_for_feed_horizon
from sqlalchemy import text

from eventstore import (
    ANY,
    NO_STREAM,
    DeserializationError,
    EventRegistry,
    EventStoreError,
    NewEvent,
    PostgresEventStore,
    Repository,
    SerializationError,
    ValidationError,
)
from eventstore.codec import MAX_DEPTH, TAG_OBJECT
from eventstore.migrations import VERSION_TABLE


@dataclass(frozen=True)
class Deposited:
    amount: int


@dataclass(frozen=True)
class Node:
    child: Any


@dataclass(frozen=True)
class Unregistered:
    value: int


@pytest.fixture
def eventstore_registry() -> EventRegistry:
    registry = EventRegistry()
    registry.register(Deposited)
    registry.register(Node)
    return registry


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest) -> Any:
    return store_for(request, request.param)


# -- the store every case starts from -----------------------------------------------------------

FIRST = "acct-1"  # 2 events and a snapshot at version 1
SECOND = "bcct-2"  # 1 event
KNOWN_STREAMS = (FIRST, SECOND)
POPULATED_EVENTS = 3
POPULATED_SNAPSHOTS = 1


def populate(store: Any) -> None:
    store.append_events(
        FIRST,
        [NewEvent("Opened", {"owner": "ann"}), NewEvent("Noted", {"n": 1}, {"by": "ann"})],
        expected_version=NO_STREAM,
    )
    store.append_events(SECOND, [NewEvent("Opened", {"owner": "bob"})], expected_version=0)
    assert store.save_snapshot(FIRST, 1, {"owner": "ann"}) is True


def row_counts(store: Any) -> tuple[int, int]:
    """(events, snapshots) held by the store; on PostgreSQL counted with SQL after
    checking that every table of the schema still exists."""
    if isinstance(store, PostgresEventStore):
        with store.engine.connect() as conn:
            for table in ("events", "snapshots", "projection_checkpoints", VERSION_TABLE):
                found = conn.execute(text("SELECT to_regclass(:t)::text"), {"t": table}).scalar()
                assert found == table, f"table {table} is gone"
            counted = conn.execute(
                text("SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM snapshots)")
            ).one()
        return int(counted[0]), int(counted[1])
    stored = list(store.iter_all())
    streams = {event.stream_id for event in stored}
    return len(stored), sum(1 for stream in streams if store.load_snapshot(stream) is not None)


def known_contents(store: Any) -> Any:
    """Everything stored for the populated streams, every column on PostgreSQL."""
    contents = store_contents(store, KNOWN_STREAMS)
    if isinstance(store, PostgresEventStore):
        event_rows, snapshot_rows = contents
        return [r for r in event_rows if r[0] in KNOWN_STREAMS], [
            r for r in snapshot_rows if r[0] in KNOWN_STREAMS
        ]
    return contents


def assert_untouched_and_counted(store: Any, before: Any, added: tuple[int, int]) -> None:
    """The populated streams are exactly as they were, and the tables hold exactly
    ``added`` more (events, snapshots) than populate() wrote."""
    assert known_contents(store) == before
    assert row_counts(store) == (POPULATED_EVENTS + added[0], POPULATED_SNAPSHOTS + added[1])


def repository(store: Any) -> Repository[list[Any]]:
    """A repository whose state is the list of payloads folded so far."""
    return Repository(store, list, lambda state, event: [*state, getattr(event, "data", event)])


def first_from_subscription(store: Any, **filters: Any) -> Any:
    """The first event a new subscription delivers (catch-up: already stored)."""
    with store.subscribe(poll_interval=0.05, **filters) as subscription:
        return next(subscription)


def feed(store: Any, **filters: Any) -> list[Any]:
    wait_for_feed_horizon(store)
    return store.read_all(limit=1000, **filters)


# -- round trips ----------------------------------------------------------------------------------

INJECTIONS = {
    "drop-table": "'; DROP TABLE events; --",
    "drop-snapshots-double-quoted": '"; DROP TABLE snapshots; --',
    "or-true": "' OR '1'='1",
    "dollar-placeholder": "$1",
    "format-placeholder": "%s",
    "pyformat-placeholder": "%(x)s",
    "named-bind": ":stream_id",
    "backslash": "\\",
    "escape-string-nul": "E'\\x00'",
    "like-percent": "%",
    "like-underscore": "_",
    "like-escaped": "acct\\_%",
}


def stream_id_round_trip(stream_id: str) -> Callable[[Any], tuple[int, int]]:
    def run(store: Any) -> tuple[int, int]:
        payload = {"id": stream_id, stream_id: [stream_id]}
        assert store.append_events(stream_id, [NewEvent("Opened", payload)], expected_version=0)
        assert store.append_events(
            stream_id, [NewEvent("Noted", {"n": 2}, {"id": stream_id})], expected_version=1
        )
        assert store.stream_version(stream_id) == 2
        loaded = store.load_events(stream_id)
        assert [(e.stream_id, e.version, e.event_type) for e in loaded] == [
            (stream_id, 1, "Opened"),
            (stream_id, 2, "Noted"),
        ]
        assert loaded[0].data == payload
        assert loaded[1].metadata == {"id": stream_id}
        assert list(store.iter_events(stream_id, batch_size=1)) == loaded
        assert store.save_snapshot(stream_id, 1, [payload]) is True
        snapshot = store.load_snapshot(stream_id)
        assert snapshot is not None
        assert (snapshot.stream_id, snapshot.version, snapshot.state) == (stream_id, 1, [payload])
        # The prefix is literal: "%" or "_" match only ids that start with them.
        everything = feed(store)
        expected = [e for e in everything if e.stream_id.startswith(stream_id)]
        assert [e.stream_id for e in expected] == [stream_id, stream_id]
        assert feed(store, stream_prefix=stream_id) == expected
        assert list(store.iter_all(stream_prefix=stream_id, batch_size=1)) == expected
        assert first_from_subscription(store, stream_prefix=stream_id) == expected[0]
        assert repository(store).load(stream_id) == ([payload, {"n": 2}], 2)
        return 2, 1

    return run


def event_type_round_trip(event_type: str) -> Callable[[Any], tuple[int, int]]:
    def run(store: Any) -> tuple[int, int]:
        store.append_events("typed", [NewEvent(event_type, {"t": event_type})], expected_version=0)
        store.append_events("other", [NewEvent("Other", {})], expected_version=0)
        (event,) = store.load_events("typed")
        assert (event.event_type, event.data) == (event_type, {"t": event_type})
        assert feed(store, event_types=[event_type]) == [event]
        assert list(store.iter_all(event_types=[event_type, "Missing"])) == [event]
        assert first_from_subscription(store, event_types=[event_type]) == event
        assert repository(store).load("typed") == ([{"t": event_type}], 1)
        return 2, 0

    return run


def metadata_round_trip(value: str) -> Callable[[Any], tuple[int, int]]:
    def run(store: Any) -> tuple[int, int]:
        metadata = {value: value, "nested": {value: [value, {value: None}]}}
        store.append_events(
            "meta", [NewEvent("Noted", {value: value}, metadata)], expected_version=NO_STREAM
        )
        (event,) = store.load_events("meta")
        assert event.metadata == metadata
        assert event.data == {value: value}
        (from_feed,) = feed(store, stream_prefix="meta")
        assert from_feed.metadata == metadata
        return 1, 0

    return run


def nested(depth: int, leaf: Any = 0, wrap: Callable[[Any], Any] = lambda v: [v]) -> Any:
    value = leaf
    for _ in range(depth):
        value = wrap(value)
    return value


def payload_round_trip(payload: Any, state: Any = None) -> Callable[[Any], tuple[int, int]]:
    def run(store: Any) -> tuple[int, int]:
        store.append_events("p", [NewEvent("Big", payload)], expected_version=NO_STREAM)
        (event,) = store.load_events("p")
        assert event.data == payload
        written = 0
        if state is not None:
            assert store.save_snapshot("p", 1, state) is True
            saved = store.load_snapshot("p")
            assert saved is not None
            assert saved.state == state
            written = 1
        return 1, written

    return run


def identifier_everywhere(identifier: str) -> Callable[[Any], tuple[int, int]]:
    """An identifier of exactly the 1024-byte limit as stream id, event type,
    feed filter, subscription filter and repository key."""

    def run(store: Any) -> tuple[int, int]:
        assert len(identifier.encode("utf-8")) == 1024
        store.append_events(identifier, [NewEvent(identifier, {"ok": 1})], expected_version=0)
        (event,) = feed(store, stream_prefix=identifier, event_types=[identifier])
        assert (event.stream_id, event.event_type) == (identifier, identifier)
        assert first_from_subscription(store, event_types=[identifier]) == event
        assert repository(store).load(identifier) == ([{"ok": 1}], 1)
        return 1, 0

    return run


def registered_chain(store: Any) -> tuple[int, int]:
    """The deepest chain of registered objects the decoder accepts round trips."""
    chain = nested(133, 0, Node)
    store.append_events("chain", [NewEvent("Chain", {"head": chain})], expected_version=0)
    assert store.load_events("chain")[0].data == {"head": chain}
    return 1, 0


def fifty_megabytes(store: Any) -> tuple[int, int]:
    payload = os.urandom(1024) * (50 * 1024)
    store.append_events("big", [NewEvent("Big", payload)], expected_version=0)
    (event,) = store.load_events("big")
    assert event.data == payload
    (from_feed,) = feed(store, stream_prefix="big")
    assert from_feed.data == payload
    return 1, 0


ROUND_TRIPS = [
    *(pytest.param(stream_id_round_trip(s), id=f"stream-id-{n}") for n, s in INJECTIONS.items()),
    *(pytest.param(event_type_round_trip(s), id=f"event-type-{n}") for n, s in INJECTIONS.items()),
    *(pytest.param(metadata_round_trip(s), id=f"metadata-{n}") for n, s in INJECTIONS.items()),
    pytest.param(stream_id_round_trip("😀 𝄞 ü ☃"), id="stream-id-astral-and-accents"),
    pytest.param(identifier_everywhere("x" * 1024), id="identifier-1024-ascii-bytes-everywhere"),
    pytest.param(identifier_everywhere("𝄞" * 256), id="identifier-1024-four-byte-everywhere"),
    pytest.param(metadata_round_trip("k" * 100_000), id="metadata-100k-character-key"),
    pytest.param(payload_round_trip(nested(100), nested(100)), id="payload-and-state-100-deep"),
    pytest.param(payload_round_trip(nested(100, 0, lambda v: {"k": v})), id="payload-100-deep-map"),
    pytest.param(payload_round_trip(nested(MAX_DEPTH)), id="payload-exactly-decoder-depth"),
    pytest.param(registered_chain, id="payload-133-registered-objects-deep"),
    pytest.param(payload_round_trip({"s": "😀\U0010ffff"}), id="payload-astral-text"),
    pytest.param(fifty_megabytes, id="payload-50-mb"),
]


@pytest.mark.parametrize("run", ROUND_TRIPS)
def test_hostile_input_is_stored_and_read_back_verbatim(
    store: Any, run: Callable[[Any], tuple[int, int]]
) -> None:
    populate(store)
    before = known_contents(store)
    added = run(store)
    assert_untouched_and_counted(store, before, added)


# -- refusals -------------------------------------------------------------------------------------

S, V = SerializationError, ValidationError

TOO_DEEP = nested(MAX_DEPTH + 1)
ABSURDLY_DEEP = nested(100_000)


def cyclic() -> dict[str, Any]:
    value: dict[str, Any] = {}
    value["self"] = value
    return value


def append(stream_id: str, *events: NewEvent, expected: Any = ANY) -> Callable[[Any], Any]:
    return lambda s: s.append_events(stream_id, list(events), expected_version=expected)


def snapshot(state: Any) -> Callable[[Any], Any]:
    return lambda s: s.save_snapshot(FIRST, 2, state)


def repo_append(stream_id: str, *events: Any) -> Callable[[Any], Any]:
    return lambda s: repository(s).append(stream_id, list(events), state=[], expected_version=ANY)


def opened_subscription(**filters: Any) -> Callable[[Any], Any]:
    def call(store: Any) -> None:
        store.subscribe(poll_interval=0.05, **filters).close()

    return call


def deep_metadata(depth: int) -> dict[str, Any]:
    return {"a": nested(depth, 1, lambda v: {"a": v})}


GOOD = NewEvent("Noted", {"n": 1})


def refused(
    call: Callable[[Any], Any],
    error: type[EventStoreError],
    *mentions: str,
    id: str,
    marks: Any = (),
) -> Any:
    return pytest.param(call, error, mentions, id=id, marks=marks)


REFUSED = [
    # payloads the decoder could not read back
    refused(append("deep", NewEvent("Deep", TOO_DEEP)), S, "400", "Deep", id="payload-401-deep"),
    refused(
        append("deep", NewEvent("Deep", nested(MAX_DEPTH + 1, 0, lambda v: {"k": v}))),
        S,
        "400",
        id="payload-401-deep-map",
    ),
    refused(append("deep", NewEvent("Deep", ABSURDLY_DEEP)), S, "400", id="payload-100000-deep"),
    refused(
        append("deep", NewEvent("Deep", {"head": nested(134, 0, Node)})),
        S,
        "400",
        id="payload-134-registered-objects-deep",
    ),
    refused(append("deep", NewEvent("Deep", cyclic())), S, id="payload-cyclic"),
    refused(
        append(FIRST, GOOD, GOOD, NewEvent("Deep", TOO_DEEP), GOOD, expected=2),
        S,
        "event 2",
        id="batch-with-one-too-deep-event",
    ),
    refused(snapshot(TOO_DEEP), S, "400", id="snapshot-401-deep"),
    refused(snapshot(ABSURDLY_DEEP), S, id="snapshot-100000-deep"),
    refused(snapshot(cyclic()), S, id="snapshot-cyclic"),
    refused(repo_append("deep", NewEvent("Deep", TOO_DEEP)), S, id="repository-append-401-deep"),
    # text that is not Unicode, where test_bad_input does not reach
    refused(
        append("k", NewEvent("Noted", {"ok": {"\ud800": 1}})), S, id="payload-surrogate-in-key"
    ),
    refused(
        append("k", NewEvent("Noted", [frozenset({"a\udfff"})])), S, id="payload-surrogate-in-set"
    ),
    refused(snapshot({("\udc00",): 1}), S, id="snapshot-surrogate-in-tuple-key"),
    refused(
        lambda s: repository(s).load("\ud83d\ude00"), V, id="repository-load-surrogate-pair-id"
    ),
    refused(lambda s: repository(s).load("x" * 1025), V, "1024", id="repository-load-1025-bytes"),
    refused(lambda s: repository(s).load("a\x00"), V, id="repository-load-nul-id"),
    refused(repo_append("é" * 513, GOOD), V, "1024", id="repository-append-1026-byte-id"),
    # classes that are not registered
    refused(
        repo_append("u", Unregistered(1)), V, "Unregistered", id="repository-append-unregistered"
    ),
    refused(
        append("u", NewEvent("Wrapped", {"inner": Unregistered(1)})),
        S,
        "Unregistered",
        id="payload-holding-unregistered-object",
    ),
    refused(snapshot([Unregistered(2)]), S, "Unregistered", id="snapshot-holding-unregistered"),
    # feed filters
    refused(
        lambda s: s.read_all(stream_prefix="\ud800"),
        V,
        id="read-all-surrogate-prefix",
    ),
    refused(
        lambda s: s.read_all(event_types=["Opened\x00"]),
        V,
        id="read-all-nul-event-type",
    ),
    refused(
        lambda s: list(s.iter_all(stream_prefix="acct\x00")),
        V,
        id="iter-all-nul-prefix",
    ),
    refused(
        opened_subscription(event_types=["\udfff"]),
        V,
        id="subscribe-surrogate-event-type",
    ),
    refused(lambda s: s.subscribe(event_types="Opened"), V, id="subscribe-str-as-event-types"),
    refused(lambda s: s.subscribe(stream_prefix=b"acct"), V, id="subscribe-bytes-prefix"),
    refused(lambda s: s.subscribe(after="0-0"), V, "Position", id="subscribe-text-position"),
    refused(lambda s: s.subscribe(poll_interval=0), V, id="subscribe-zero-poll-interval"),
    refused(lambda s: s.subscribe(batch_size=0), V, id="subscribe-zero-batch-size"),
    refused(lambda s: s.read_all(event_types=[]), V, id="read-all-empty-event-types"),
    refused(lambda s: s.iter_all(event_types=[1]), V, id="iter-all-int-event-type"),
    # metadata
    refused(
        append("m", NewEvent("Noted", {}, deep_metadata(5000))),
        V,
        id="metadata-5000-deep",
    ),
]


@pytest.mark.parametrize(("call", "error", "mentions"), REFUSED)
def test_hostile_input_is_refused_with_a_typed_error_and_changes_nothing(
    store: Any,
    call: Callable[[Any], Any],
    error: type[EventStoreError],
    mentions: tuple[str, ...],
) -> None:
    populate(store)
    before = store_contents(store, KNOWN_STREAMS)
    counts = row_counts(store)

    with pytest.raises(EventStoreError) as caught:
        call(store)

    assert type(caught.value) is error, f"{type(caught.value).__name__}: {caught.value}"
    for mention in mentions:
        assert mention in str(caught.value), f"{mention!r} not in {caught.value}"
    assert store_contents(store, KNOWN_STREAMS) == before
    assert row_counts(store) == counts


# -- rows written behind the library's back (PostgreSQL) ---------------------------------------

NOT_CBOR = b"\xff\xfe not cbor \x1c"
TRUNCATED = cbor2.dumps({"amount": 10, "note": "x" * 40})[:-7]


def tamper_event(
    store: PostgresEventStore,
    data: bytes,
    event_type: str = "Tampered",
    stream_id: str = FIRST,
    version: int = 3,
) -> None:
    """Insert an event with ``data`` as its payload with plain SQL (version 3 of
    FIRST unless told otherwise)."""
    with store.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO events (stream_id, version, event_type, event_data) "
                "VALUES (:s, :v, :t, :d)"
            ),
            {"s": stream_id, "v": version, "t": event_type, "d": data},
        )


def tamper_snapshot(store: PostgresEventStore, data: bytes) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            text("UPDATE snapshots SET state_data = :d WHERE stream_id = :s"),
            {"s": FIRST, "d": data},
        )


def in_event(data: bytes, call: Callable[[Any], Any], event_type: str = "Tampered") -> Any:
    return (lambda s: tamper_event(s, data, event_type)), call


def in_snapshot(data: bytes, call: Callable[[Any], Any]) -> Any:
    return (lambda s: tamper_snapshot(s, data)), call


EVENT_MENTIONS = (FIRST, "event 3", "Tampered")
SNAPSHOT_MENTIONS = (FIRST, "version 1")

TAMPERED_UNREADABLE = [
    pytest.param(*in_event(NOT_CBOR, lambda s: s.load_events(FIRST)), EVENT_MENTIONS, id="load"),
    pytest.param(
        *in_event(NOT_CBOR, lambda s: list(s.iter_events(FIRST, batch_size=1))),
        EVENT_MENTIONS,
        id="iter-events",
    ),
    pytest.param(
        # The first read returns the events before the bad one; the next raises.
        *in_event(NOT_CBOR, lambda s: feed(s, after=feed(s)[-1].position)),
        EVENT_MENTIONS,
        id="read-all",
    ),
    pytest.param(
        *in_event(NOT_CBOR, lambda s: [wait_for_feed_horizon(s), *s.iter_all(batch_size=2)]),
        EVENT_MENTIONS,
        id="iter-all",
    ),
    pytest.param(
        *in_event(NOT_CBOR, lambda s: first_from_subscription(s, event_types=["Tampered"])),
        EVENT_MENTIONS,
        id="subscribe",
    ),
    pytest.param(
        *in_event(NOT_CBOR, lambda s: repository(s).load(FIRST)),
        EVENT_MENTIONS,
        id="repository-load-event",
    ),
    pytest.param(
        *in_event(TRUNCATED, lambda s: s.load_events(FIRST, from_version=3)),
        EVENT_MENTIONS,
        id="truncated-cbor",
    ),
    pytest.param(
        *in_event(
            cbor2.dumps({"amount": 1, "extra": 2}), lambda s: s.load_events(FIRST), "Deposited"
        ),
        (FIRST, "event 3", "Deposited"),
        id="registered-type-with-fields-that-do-not-fit",
    ),
    pytest.param(
        *in_event(
            cbor2.dumps(cbor2.CBORTag(TAG_OBJECT, ["Node", [1, 2]])), lambda s: s.load_events(FIRST)
        ),
        EVENT_MENTIONS,
        id="registered-object-with-an-array-of-fields",
    ),
    pytest.param(
        *in_snapshot(NOT_CBOR, lambda s: s.load_snapshot(FIRST)),
        SNAPSHOT_MENTIONS,
        id="load-snapshot",
    ),
]


@pytest.mark.parametrize(("tamper", "call", "mentions"), TAMPERED_UNREADABLE)
def test_a_row_that_cannot_be_decoded_raises_deserialization_error_naming_it(
    event_store: PostgresEventStore,
    tamper: Callable[[Any], None],
    call: Callable[[Any], Any],
    mentions: tuple[str, ...],
) -> None:
    populate(event_store)
    tamper(event_store)
    before = store_contents(event_store, KNOWN_STREAMS)

    with pytest.raises(DeserializationError) as caught:
        call(event_store)

    for mention in mentions:
        assert mention in str(caught.value), f"{mention!r} not in {caught.value}"
    assert store_contents(event_store, KNOWN_STREAMS) == before


def test_a_repository_rebuilds_over_a_snapshot_that_is_not_cbor_and_says_so(
    event_store: PostgresEventStore, caplog: pytest.LogCaptureFixture
) -> None:
    populate(event_store)
    tamper_snapshot(event_store, NOT_CBOR)
    before = store_contents(event_store, KNOWN_STREAMS)

    with caplog.at_level(logging.WARNING, logger="eventstore.repository"):
        loaded = repository(event_store).load(FIRST)

    assert loaded == ([{"owner": "ann"}, {"n": 1}], 2)  # from the events
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "eventstore.repository"]
    for mention in (*SNAPSHOT_MENTIONS, "invalid CBOR"):
        assert mention in warning
    assert store_contents(event_store, KNOWN_STREAMS) == before


def test_an_unregistered_tag_comes_back_as_a_cbor_tag(event_store: PostgresEventStore) -> None:
    populate(event_store)
    tamper_event(event_store, cbor2.dumps({"x": cbor2.CBORTag(40_000, [1, {"y": b"z"}])}))

    (event,) = event_store.load_events(FIRST, from_version=3)
    tag = event.data["x"]
    assert type(tag) is cbor2.CBORTag
    assert tag.tag == 40_000
    number, mapping = tag.value  # the content of an unknown tag decodes immutable
    assert (number, dict(mapping)) == (1, {"y": b"z"})
    assert feed(event_store, event_types=["Tampered"]) == [event]


def test_an_object_of_an_unknown_name_comes_back_as_its_fields_and_builds_nothing(
    event_store: PostgresEventStore,
) -> None:
    populate(event_store)
    hostile = cbor2.CBORTag(TAG_OBJECT, ["os.system", {"command": "rm -rf /"}])
    tamper_event(event_store, cbor2.dumps({"run": hostile}))
    tamper_event(
        event_store, cbor2.dumps({"node": cbor2.CBORTag(TAG_OBJECT, ["Node", {}])}), "T", SECOND, 2
    )

    (event,) = event_store.load_events(FIRST, from_version=3)
    assert event.data == {"run": {"command": "rm -rf /"}}
    with pytest.raises(DeserializationError, match="event 2 of stream 'bcct-2'") as raised:
        event_store.load_events(SECOND)
    assert "do not fit Node" in str(raised.value)  # the reason, not only the tag number


def test_events_of_a_class_renamed_or_removed_since_decode_as_plain_data(
    event_store: PostgresEventStore,
) -> None:
    event_store.append_events(
        "renamed", [Deposited(5), NewEvent("Wrapped", {"inner": Node(1)})], expected_version=0
    )
    assert [e.data for e in event_store.load_events("renamed")] == [
        Deposited(5),
        {"inner": Node(1)},
    ]

    @dataclass(frozen=True)
    class DepositedV2:
        amount: int
        currency: str = "EUR"

    renamed = EventRegistry()
    renamed.register(DepositedV2)
    reader = PostgresEventStore(event_store.engine, registry=renamed)
    first, second = reader.load_events("renamed")
    assert (first.event_type, first.data) == ("Deposited", {"amount": 5})
    assert second.data == {"inner": {"child": 1}}
    assert repository(reader).load("renamed") == ([{"amount": 5}, {"inner": {"child": 1}}], 2)

    # Registered again, the stored name rebuilds the class.
    revived = EventRegistry()
    revived.register(DepositedV2, name="Deposited")
    (event,) = PostgresEventStore(event_store.engine, registry=revived).load_events(
        "renamed", to_version=1
    )
    assert event.data == DepositedV2(5)
