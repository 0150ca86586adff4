"""Every public method of both stores refuses bad input with a typed error and writes nothing."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pytest
from _store_helpers import STORE_KINDS, store_contents, store_for

from eventstore import (
    ANY,
    EventRegistry,
    EventStoreError,
    NewEvent,
    SerializationError,
    ValidationError,
)
from eventstore._validation import MAX_IDENTIFIER_BYTES


@dataclass(frozen=True)
class Registered:
    value: int


@dataclass(frozen=True)
class NotRegisteredPayload:
    value: int


class PlainUnencodable:
    pass


@pytest.fixture
def eventstore_registry() -> EventRegistry:
    registry = EventRegistry()
    registry.register(Registered)
    return registry


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest) -> Any:
    return store_for(request, request.param)


EXISTING = "acct-1"  # 3 events and a snapshot at version 2
OTHER = "acct-2"  # 1 event, no snapshot
MISSING = "acct-new"  # no events
KNOWN_STREAMS = (EXISTING, OTHER, MISSING)

GOOD = NewEvent("Deposited", {"amount": 10}, {"correlation_id": "c-1"})
LONE_SURROGATE = "bad-\ud800-id"
TOO_LONG = "x" * (MAX_IDENTIFIER_BYTES + 1)
MULTI_BYTE_TOO_LONG = "é" * MAX_IDENTIFIER_BYTES  # 1024 characters, 2048 bytes


def populate(store: Any) -> None:
    store.append_events(
        EXISTING,
        [GOOD, NewEvent("Withdrawn", {"amount": 3}), NewEvent("Deposited", {"amount": 5})],
        expected_version=0,
    )
    store.append_events(OTHER, [GOOD], expected_version=0)
    assert store.save_snapshot(EXISTING, 2, {"balance": 7}) is True


def append(stream_id: Any = EXISTING, events: Any = None, expected: Any = ANY) -> Any:
    batch = [GOOD] if events is None else events
    return lambda s: s.append_events(stream_id, batch, expected_version=expected)


def append_one(event: Any, stream_id: str = EXISTING) -> Any:
    return append(stream_id, [GOOD, event])


def with_metadata(metadata: Any) -> Any:
    return append_one(NewEvent("Deposited", {"amount": 1}, metadata))


def load(stream_id: Any = EXISTING, **options: Any) -> Any:
    return lambda s: s.load_events(stream_id, **options)


def iterate(stream_id: Any = EXISTING, **options: Any) -> Any:
    return lambda s: list(s.iter_events(stream_id, **options))


def snapshot(stream_id: Any = EXISTING, version: Any = 3, state: Any = None) -> Any:
    value = {"balance": 12} if state is None else state
    return lambda s: s.save_snapshot(stream_id, version, value)


def case(
    call: Callable[[Any], Any],
    error: type[EventStoreError],
    *mentions: str,
    id: str,
) -> Any:
    return pytest.param(call, error, mentions, id=id)


V, S = ValidationError, SerializationError

CASES = [
    # stream ids, through every method that takes one
    case(append(""), V, id="append-empty-stream-id"),
    case(append(42), V, id="append-int-stream-id"),
    case(append(None), V, id="append-none-stream-id"),
    case(append(b"acct-1"), V, id="append-bytes-stream-id"),
    case(append("acct\x00-1"), V, id="append-nul-stream-id"),
    case(append(LONE_SURROGATE), V, id="append-lone-surrogate-stream-id"),
    case(append(TOO_LONG), V, "1024", id="append-1025-byte-stream-id"),
    case(append(MULTI_BYTE_TOO_LONG), V, "1024", id="append-1024-char-2048-byte-stream-id"),
    case(load(""), V, id="load-empty-stream-id"),
    case(load(7), V, id="load-int-stream-id"),
    case(load("a\x00"), V, id="load-nul-stream-id"),
    case(load(LONE_SURROGATE), V, id="load-lone-surrogate-stream-id"),
    case(load(TOO_LONG), V, id="load-1025-byte-stream-id"),
    case(iterate(""), V, id="iter-empty-stream-id"),
    case(iterate(None), V, id="iter-none-stream-id"),
    case(iterate("a\x00"), V, id="iter-nul-stream-id"),
    case(iterate(MULTI_BYTE_TOO_LONG), V, id="iter-2048-byte-stream-id"),
    case(lambda s: s.stream_version(""), V, id="version-empty-stream-id"),
    case(lambda s: s.stream_version(1), V, id="version-int-stream-id"),
    case(lambda s: s.stream_version("\x00"), V, id="version-nul-stream-id"),
    case(lambda s: s.stream_version(LONE_SURROGATE), V, id="version-lone-surrogate-stream-id"),
    case(lambda s: s.stream_version(TOO_LONG), V, id="version-1025-byte-stream-id"),
    case(snapshot(""), V, id="save-snapshot-empty-stream-id"),
    case(snapshot(5, 1), V, id="save-snapshot-int-stream-id"),
    case(snapshot("acct\x00-1"), V, id="save-snapshot-nul-stream-id"),
    case(snapshot(TOO_LONG, 1), V, id="save-snapshot-1025-byte-stream-id"),
    case(lambda s: s.load_snapshot(""), V, id="load-snapshot-empty-stream-id"),
    case(lambda s: s.load_snapshot(None), V, id="load-snapshot-none-stream-id"),
    case(lambda s: s.load_snapshot("\x00"), V, id="load-snapshot-nul-stream-id"),
    case(lambda s: s.load_snapshot(LONE_SURROGATE), V, id="load-snapshot-lone-surrogate"),
    case(lambda s: s.load_snapshot(MULTI_BYTE_TOO_LONG), V, id="load-snapshot-2048-byte-id"),
    case(lambda s: s.delete_snapshot(""), V, id="delete-snapshot-empty-stream-id"),
    case(lambda s: s.delete_snapshot(None), V, id="delete-snapshot-none-stream-id"),
    case(lambda s: s.delete_snapshot("\x00"), V, id="delete-snapshot-nul-stream-id"),
    case(lambda s: s.delete_snapshot(TOO_LONG), V, id="delete-snapshot-1025-byte-id"),
    case(
        lambda s: s.delete_snapshot(EXISTING, connection=object()),
        V,
        "connection",
        id="delete-snapshot-foreign-connection",
    ),
    # event types
    case(append_one(NewEvent("", {})), V, id="empty-event-type"),
    case(append_one(NewEvent(3, {})), V, id="int-event-type"),
    case(append_one(NewEvent(None, {})), V, id="none-event-type"),
    case(append_one(NewEvent("Dep\x00osited", {})), V, id="nul-event-type"),
    case(append_one(NewEvent("Dep\udc80osited", {})), V, id="lone-surrogate-event-type"),
    case(append_one(NewEvent(TOO_LONG, {})), V, "1024", id="1025-byte-event-type"),
    case(append_one(NewEvent(MULTI_BYTE_TOO_LONG, {})), V, id="2048-byte-event-type"),
    # the events argument
    case(append(events=[]), V, id="empty-event-list"),
    case(append(events=()), V, id="empty-event-tuple"),
    case(append(MISSING, events=[]), V, id="empty-event-list-on-missing-stream"),
    case(append(events=GOOD), V, id="bare-new-event"),
    case(append(events=Registered(1)), V, id="bare-registered-event"),
    case(append(events="Deposited"), V, id="str-as-events"),
    case(append(events={"event_type": "Deposited"}), V, id="mapping-as-events"),
    case(lambda s: s.append_events(EXISTING, None, expected_version=ANY), V, id="none-as-events"),
    case(lambda s: s.append_events(EXISTING, 5, expected_version=ANY), V, id="int-as-events"),
    case(append_one({"amount": 1}), V, "NewEvent", "register", id="dict-item"),
    case(append_one(NotRegisteredPayload(1)), V, "NotRegisteredPayload", id="unregistered-item"),
    case(append_one(object()), V, "NewEvent", id="object-item"),
    # expected_version
    case(append(expected=-1), V, "expected_version", id="negative-expected-version"),
    case(append(MISSING, expected=-1), V, id="negative-expected-version-on-missing-stream"),
    case(append(expected=True), V, "expected_version", id="true-expected-version"),
    case(append(MISSING, expected=False), V, id="false-expected-version"),
    case(append(expected=3.0), V, id="float-expected-version"),
    case(append(expected=None), V, id="none-expected-version"),
    case(append(expected="3"), V, id="str-expected-version"),
    case(append(expected="ANY"), V, id="stream-state-name-as-expected-version"),
    # payloads
    case(append_one(NewEvent("Opened", object())), S, "object", "Opened", id="object-payload"),
    case(
        append_one(NewEvent("Opened", {"owner": PlainUnencodable()})),
        S,
        "PlainUnencodable",
        "Opened",
        id="nested-unencodable-payload",
    ),
    case(
        append_one(NewEvent("Opened", NotRegisteredPayload(1))),
        S,
        "NotRegisteredPayload",
        id="unregistered-dataclass-payload",
    ),
    case(append_one(NewEvent("Opened", "x\ud800y")), S, id="lone-surrogate-payload"),
    case(
        append(MISSING, [GOOD, GOOD, NewEvent("Opened", [1, object()]), GOOD]),
        S,
        "Opened",
        id="unencodable-third-event-on-missing-stream",
    ),
    # metadata
    case(with_metadata([("a", 1)]), V, id="metadata-list"),
    case(with_metadata("correlation"), V, id="metadata-str"),
    case(with_metadata(42), V, id="metadata-int"),
    case(with_metadata({1: "a"}), V, id="metadata-int-key"),
    case(with_metadata({("a",): "b"}), V, id="metadata-tuple-key"),
    case(with_metadata({"x": math.nan}), V, id="metadata-nan"),
    case(with_metadata({"x": math.inf}), V, id="metadata-infinity"),
    case(with_metadata({"x": -math.inf}), V, id="metadata-negative-infinity"),
    case(with_metadata({"x": {"y": [1, math.nan]}}), V, id="metadata-nested-nan"),
    case(with_metadata({"a\x00b": 1}), V, id="metadata-nul-in-key"),
    case(with_metadata({"a": "b\x00"}), V, id="metadata-nul-in-value"),
    case(with_metadata({"a": ["ok", {"b": "\x00"}]}), V, id="metadata-nested-nul"),
    case(with_metadata({"a": {"b\x00": 1}}), V, id="metadata-nested-nul-in-key"),
    case(
        with_metadata({"at": datetime(2024, 1, 1, tzinfo=timezone.utc)}),
        V,
        "datetime",
        id="metadata-datetime",
    ),
    case(with_metadata({"raw": b"bytes"}), V, "bytes", id="metadata-bytes"),
    case(with_metadata({"tags": {"a", "b"}}), V, "set", id="metadata-set"),
    case(with_metadata({"obj": object()}), V, "object", id="metadata-object"),
    case(with_metadata({"a": "\ud800"}), V, id="metadata-lone-surrogate-value"),
    case(with_metadata({"\udfff": 1}), V, id="metadata-lone-surrogate-key"),
    # load_events ranges
    case(load(from_version=0), V, "from_version", id="load-from-version-zero"),
    case(load(from_version=-1), V, id="load-from-version-negative"),
    case(load(from_version=True), V, id="load-from-version-bool"),
    case(load(from_version=1.0), V, id="load-from-version-float"),
    case(load(from_version=None), V, id="load-from-version-none"),
    case(load(to_version=0), V, id="load-to-version-zero"),
    case(load(to_version=True), V, id="load-to-version-bool"),
    case(load(to_version="2"), V, id="load-to-version-str"),
    case(load(from_version=3, to_version=2), V, "from_version", id="load-from-after-to"),
    case(load(MISSING, from_version=3, to_version=2), V, id="load-from-after-to-on-missing"),
    case(load(limit=0), V, "limit", id="load-limit-zero"),
    case(load(limit=-1), V, id="load-limit-negative"),
    case(load(limit=True), V, id="load-limit-bool"),
    case(load(limit=1.5), V, id="load-limit-float"),
    # iter_events ranges and pages
    case(iterate(from_version=0), V, id="iter-from-version-zero"),
    case(iterate(from_version=False), V, id="iter-from-version-bool"),
    case(iterate(from_version=5, to_version=4), V, id="iter-from-after-to"),
    case(iterate(to_version=-3), V, id="iter-to-version-negative"),
    case(iterate(batch_size=0), V, "batch_size", id="iter-batch-size-zero"),
    case(iterate(batch_size=-1), V, id="iter-batch-size-negative"),
    case(iterate(batch_size=True), V, id="iter-batch-size-bool"),
    case(iterate(batch_size=None), V, id="iter-batch-size-none"),
    # snapshots
    case(snapshot(version=0), V, id="snapshot-version-zero"),
    case(snapshot(version=-1), V, id="snapshot-version-negative"),
    case(snapshot(version=True), V, id="snapshot-version-bool"),
    case(snapshot(version=3.0), V, id="snapshot-version-float"),
    case(snapshot(version=None), V, id="snapshot-version-none"),
    case(snapshot(version="3"), V, id="snapshot-version-str"),
    case(snapshot(version=4), V, id="snapshot-beyond-head"),
    case(snapshot(MISSING, version=1), V, id="snapshot-of-missing-stream"),
    case(snapshot(state=object()), S, "object", id="snapshot-object-state"),
    case(
        snapshot(state={"owner": PlainUnencodable()}), S, "PlainUnencodable", id="snapshot-nested"
    ),
    case(snapshot(state=NotRegisteredPayload(2)), S, id="snapshot-unregistered-dataclass"),
    case(snapshot(state="\ud800"), S, id="snapshot-lone-surrogate-state"),
]


@pytest.mark.parametrize(("call", "error", "mentions"), CASES)
def test_bad_input_is_refused_with_a_typed_error_and_writes_nothing(
    store: Any,
    call: Callable[[Any], Any],
    error: type[EventStoreError],
    mentions: tuple[str, ...],
) -> None:
    populate(store)
    before = store_contents(store, KNOWN_STREAMS)

    with pytest.raises(EventStoreError) as caught:
        call(store)

    assert type(caught.value) is error, f"{type(caught.value).__name__}: {caught.value}"
    message = str(caught.value)
    for mention in mentions:
        assert mention in message, f"{mention!r} not in {message!r}"
    assert store_contents(store, KNOWN_STREAMS) == before


def test_validation_error_is_also_a_value_error() -> None:
    assert issubclass(ValidationError, ValueError)
    assert issubclass(ValidationError, EventStoreError)
    assert not issubclass(SerializationError, ValidationError)


def test_identifier_limit_is_1024_bytes() -> None:
    assert MAX_IDENTIFIER_BYTES == 1024


@pytest.mark.parametrize(
    "identifier",
    [
        pytest.param("x" * 1024, id="1024-ascii"),
        pytest.param("é" * 512, id="512-two-byte-characters"),
        pytest.param("€" * 341 + "x", id="341-three-byte-characters-and-one-ascii"),
        pytest.param("𝄞" * 256, id="256-four-byte-characters"),
    ],
)
def test_identifiers_of_exactly_1024_bytes_are_accepted(store: Any, identifier: str) -> None:
    assert len(identifier.encode("utf-8")) == 1024
    assert store.append_events(identifier, [NewEvent(identifier, {"ok": True})], expected_version=0)
    assert store.stream_version(identifier) == 1
    (event,) = store.load_events(identifier, from_version=1, to_version=1, limit=1)
    assert (event.stream_id, event.event_type) == (identifier, identifier)
    assert list(store.iter_events(identifier, batch_size=1)) == [event]
    assert store.save_snapshot(identifier, 1, {"ok": True}) is True
    saved = store.load_snapshot(identifier)
    assert saved is not None
    assert saved.stream_id == identifier


@pytest.mark.parametrize(
    "identifier",
    [
        pytest.param("€" * 342, id="342-three-byte-characters"),
        pytest.param("𝄞" * 257, id="257-four-byte-characters"),
        pytest.param("x" * 1023 + "é", id="1023-ascii-and-one-two-byte-character"),
    ],
)
def test_identifiers_over_1024_bytes_are_refused(store: Any, identifier: str) -> None:
    assert len(identifier) <= 1024 < len(identifier.encode("utf-8"))
    populate(store)
    before = store_contents(store, KNOWN_STREAMS)
    with pytest.raises(ValidationError):
        store.append_events(identifier, [GOOD], expected_version=0)
    with pytest.raises(ValidationError):
        store.append_events(EXISTING, [NewEvent(identifier, {})], expected_version=3)
    with pytest.raises(ValidationError):
        store.load_events(identifier)
    assert store_contents(store, KNOWN_STREAMS) == before
