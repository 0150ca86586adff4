"""The global feed on both stores: read_all and iter_all return every event once, in
an order that respects each stream's versions, resumable from any position.

On PostgreSQL a reader only sees events whose writing transaction is below the
oldest transaction still running. Other sessions on the same server can hold that
horizon back for a moment, so the tests that expect to see everything first wait,
with a deadline, until every transaction that started before the check has ended.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from contextlib import suppress
from itertools import pairwise
from typing import Any

import pytest
from _store_helpers import STORE_KINDS, store_for, wait_for_feed_horizon
from sqlalchemy import text

from eventstore import (
    ANY,
    ConcurrencyError,
    NewEvent,
    Position,
    PostgresEventStore,
    RecordedEvent,
    ValidationError,
)


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest) -> Any:
    return store_for(request, request.param)


@pytest.fixture
def pg_store(event_store: PostgresEventStore) -> PostgresEventStore:
    return event_store


def noted(stream_id: str, n: int, event_type: str = "Noted") -> NewEvent:
    return NewEvent(event_type, {"stream": stream_id, "n": n})


def key(event: RecordedEvent) -> tuple[str, int]:
    return event.stream_id, event.version


def append_mix(store: Any) -> list[tuple[str, int, str]]:
    """Append to several streams, one transaction at a time; return what was written,
    as ``(stream_id, version, event_type)`` in commit order."""
    plan = [
        ("order-1", ["Placed", "Added", "Added"]),
        ("order-2", ["Placed"]),
        ("cart-1", ["Opened"]),
        ("order-1", ["Paid"]),
        ("order-2", ["Added", "Paid"]),
        ("cart-1", ["Closed"]),
        ("order-3", ["Placed"]),
        ("order-1", ["Shipped"]),
    ]
    written: list[tuple[str, int, str]] = []
    for stream_id, types in plan:
        head = store.stream_version(stream_id)
        batch = [noted(stream_id, head + i + 1, t) for i, t in enumerate(types)]
        store.append_events(stream_id, batch, expected_version=head)
        written.extend((stream_id, head + i + 1, t) for i, t in enumerate(types))
    return written


def assert_versions_in_order(events: list[RecordedEvent]) -> None:
    """Each stream's events appear as versions 1, 2, 3, ... in feed order."""
    next_version: dict[str, int] = {}
    for event in events:
        expected = next_version.get(event.stream_id, 1)
        assert event.version == expected, (
            f"{event.stream_id} v{event.version} came where v{expected} was due"
        )
        next_version[event.stream_id] = expected + 1


def assert_positions_increase(events: list[RecordedEvent]) -> None:
    positions = [event.position for event in events if isinstance(event.position, Position)]
    assert len(positions) == len(events), "every event carries a Position"
    assert all(a < b for a, b in pairwise(positions)), positions


# --- read_all -----------------------------------------------------------------------------


def test_read_all_returns_every_event_once_in_commit_order(store: Any) -> None:
    written = append_mix(store)
    wait_for_feed_horizon(store)

    feed = store.read_all()

    assert [(e.stream_id, e.version, e.event_type) for e in feed] == written
    assert [e.data for e in feed] == [{"stream": s, "n": v} for s, v, _ in written]
    assert len({key(e) for e in feed}) == len(feed)
    assert_versions_in_order(feed)
    assert_positions_increase(feed)
    assert store.read_all(after=feed[-1].position) == []


def test_read_all_of_an_empty_store_is_empty(store: Any) -> None:
    assert store.read_all() == []
    assert list(store.iter_all()) == []


@pytest.mark.parametrize("k", [0, 1, 5, 9, 10])
def test_after_resumes_exactly_after_the_checkpoint(store: Any, k: int) -> None:
    append_mix(store)
    wait_for_feed_horizon(store)
    feed = store.read_all()
    assert len(feed) == 11

    rest = store.read_all(after=feed[k].position)

    assert rest == feed[k + 1 :]


def test_after_a_checkpoint_resumes_with_events_appended_since(store: Any) -> None:
    append_mix(store)
    wait_for_feed_horizon(store)
    first = store.read_all()
    checkpoint = first[-1].position

    store.append_events("order-9", [noted("order-9", 1), noted("order-9", 2)], expected_version=0)
    store.append_events("cart-1", [noted("cart-1", 3)], expected_version=2)
    wait_for_feed_horizon(store)

    later = store.read_all(after=checkpoint)
    assert [key(e) for e in later] == [("order-9", 1), ("order-9", 2), ("cart-1", 3)]
    assert all(e.position > checkpoint for e in later)
    assert store.read_all() == first + later


def test_limit_caps_the_batch_and_paging_by_hand_reads_everything(store: Any) -> None:
    append_mix(store)
    wait_for_feed_horizon(store)
    feed = store.read_all()

    assert store.read_all(limit=1) == feed[:1]
    assert store.read_all(limit=5) == feed[:5]
    assert store.read_all(limit=len(feed)) == feed
    assert store.read_all(limit=1000) == feed

    pages: list[list[RecordedEvent]] = []
    after = None
    while True:
        page = store.read_all(after=after, limit=5)
        if not page:
            break
        pages.append(page)
        after = page[-1].position
    assert [len(page) for page in pages] == [5, 5, 1]
    assert [e for page in pages for e in page] == feed


def test_event_types_filter_keeps_feed_order(store: Any) -> None:
    append_mix(store)
    wait_for_feed_horizon(store)
    feed = store.read_all()

    wanted = {"Placed", "Paid"}
    expected = [e for e in feed if e.event_type in wanted]
    assert len(expected) == 5
    assert store.read_all(event_types=["Placed", "Paid"]) == expected
    assert store.read_all(event_types=("Paid", "Placed")) == expected
    assert store.read_all(event_types=iter(["Placed", "Paid"])) == expected
    assert store.read_all(event_types=frozenset(wanted)) == expected
    assert store.read_all(event_types=["Placed"], limit=2) == expected[:2]
    assert store.read_all(event_types=["Nothing-of-this-type"]) == []
    # Resuming after a position of an event the filter dropped.
    assert store.read_all(after=feed[1].position, event_types=["Placed", "Paid"]) == [
        e for e in feed[2:] if e.event_type in wanted
    ]


def test_stream_prefix_filter_matches_plain_prefixes(store: Any) -> None:
    append_mix(store)
    wait_for_feed_horizon(store)
    feed = store.read_all()

    assert store.read_all(stream_prefix="order-") == [
        e for e in feed if e.stream_id.startswith("order-")
    ]
    assert store.read_all(stream_prefix="order-1") == [e for e in feed if e.stream_id == "order-1"]
    assert store.read_all(stream_prefix="cart") == [e for e in feed if e.stream_id == "cart-1"]
    assert store.read_all(stream_prefix="nobody") == []
    assert store.read_all(stream_prefix="order-", event_types=["Placed"]) == [
        e for e in feed if e.stream_id.startswith("order-") and e.event_type == "Placed"
    ]


def test_stream_prefix_wildcard_characters_are_literal(store: Any) -> None:
    stream_ids = [
        "a%b-1",
        "aXb-1",
        "a_b-1",
        "aYb-1",
        "a\\b-1",
        "a\\\\b-1",
        "ab-1",
        "A%b-1",
    ]
    for stream_id in stream_ids:
        store.append_events(stream_id, [noted(stream_id, 1)], expected_version=0)
    wait_for_feed_horizon(store)

    def streams(prefix: str) -> list[str]:
        return [e.stream_id for e in store.read_all(stream_prefix=prefix)]

    assert streams("a%") == ["a%b-1"]
    assert streams("a_") == ["a_b-1"]
    assert streams("a%b") == ["a%b-1"]
    assert streams("a_b-") == ["a_b-1"]
    assert streams("a\\") == ["a\\b-1", "a\\\\b-1"]
    assert streams("a\\b") == ["a\\b-1"]
    assert streams("a\\\\") == ["a\\\\b-1"]
    assert streams("%") == []
    assert streams("_") == []
    assert streams("a") == [s for s in stream_ids if s.startswith("a")]


# --- iter_all -----------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 2, 3, 10, 11, 12, 1000])
def test_iter_all_pages_across_boundaries_like_read_all(store: Any, batch_size: int) -> None:
    append_mix(store)
    wait_for_feed_horizon(store)
    feed = store.read_all()
    assert len(feed) == 11

    assert list(store.iter_all(batch_size=batch_size)) == feed
    assert list(store.iter_all(after=feed[3].position, batch_size=batch_size)) == feed[4:]
    assert list(store.iter_all(after=feed[-1].position, batch_size=batch_size)) == []
    assert list(store.iter_all(event_types=["Added"], batch_size=batch_size)) == [
        e for e in feed if e.event_type == "Added"
    ]
    assert list(store.iter_all(stream_prefix="order-2", batch_size=batch_size)) == [
        e for e in feed if e.stream_id == "order-2"
    ]


def test_iter_all_is_an_iterator(store: Any) -> None:
    append_mix(store)
    wait_for_feed_horizon(store)
    iterator: Iterator[RecordedEvent] = store.iter_all(batch_size=2)
    assert iter(iterator) is iterator
    first = next(iterator)
    assert key(first) == ("order-1", 1)


# --- positions ----------------------------------------------------------------------------


def test_positions_order_by_transaction_then_sequence() -> None:
    assert Position(1, 5) < Position(2, 1) < Position(2, 3) < Position(10, 0)
    assert Position(3, 4) == Position(3, 4)
    assert Position(3, 4) != Position(3, 5)
    assert Position(3, 4) != Position(4, 4)
    assert Position(3, 4) <= Position(3, 4) <= Position(3, 5)
    assert Position(7, 1) > Position(6, 99)
    assert sorted([Position(2, 1), Position(1, 9), Position(2, 0)]) == [
        Position(1, 9),
        Position(2, 0),
        Position(2, 1),
    ]
    assert len({Position(1, 2), Position(1, 2), Position(2, 1)}) == 2
    assert max(Position(1, 100), Position(2, 1)) == Position(2, 1)


def test_position_text_round_trip() -> None:
    for position in [Position(0, 0), Position(12, 34), Position(2**63 - 1, 2**63 - 1)]:
        assert Position.parse(str(position)) == position
    assert str(Position(12, 34)) == "12-34"
    assert Position.parse("12-34") == Position(12, 34)


def test_position_pickles() -> None:
    position = Position(123456789, 42)
    assert pickle.loads(pickle.dumps(position)) == position


@pytest.mark.parametrize(
    "text_value",
    ["", "12", "12-", "-34", "a-b", "1-2-3", "1.5-2", "12:34", "twelve-34", "12--34", "0x1-2"],
)
def test_position_parse_refuses_bad_text(text_value: str) -> None:
    with pytest.raises(ValidationError):
        Position.parse(text_value)


def test_feed_positions_round_trip_through_text_and_pickle(store: Any) -> None:
    append_mix(store)
    wait_for_feed_horizon(store)
    for event in store.read_all():
        assert Position.parse(str(event.position)) == event.position
        assert pickle.loads(pickle.dumps(event.position)) == event.position
    checkpoint = store.read_all()[4].position
    restored = Position.parse(str(checkpoint))
    assert store.read_all(after=restored) == store.read_all()[5:]


def test_loaded_events_carry_the_positions_the_feed_gives(store: Any) -> None:
    append_mix(store)
    wait_for_feed_horizon(store)
    by_key = {key(e): e.position for e in store.read_all()}

    loaded = [
        e
        for stream_id in ("order-1", "order-2", "order-3", "cart-1")
        for e in store.load_events(stream_id)
    ]
    iterated = [e for e in store.iter_events("order-1", batch_size=2)]

    assert len(loaded) == len(by_key)
    for event in loaded + iterated:
        assert event.position is not None
        assert event.position == by_key[key(event)]
    assert store.load_events("order-1", from_version=2, to_version=3) == [
        e for e in store.read_all() if e.stream_id == "order-1" and 2 <= e.version <= 3
    ]


# --- bad arguments ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"limit": 0}, id="limit-zero"),
        pytest.param({"limit": -1}, id="limit-negative"),
        pytest.param({"limit": "10"}, id="limit-str"),
        pytest.param({"limit": 1.5}, id="limit-float"),
        pytest.param({"limit": None}, id="limit-none"),
        pytest.param({"event_types": []}, id="event-types-empty-list"),
        pytest.param({"event_types": set()}, id="event-types-empty-set"),
        pytest.param({"event_types": ()}, id="event-types-empty-tuple"),
        pytest.param({"after": "1-2"}, id="after-str"),
        pytest.param({"after": (1, 2)}, id="after-tuple"),
        pytest.param({"after": 5}, id="after-int"),
        pytest.param({"stream_prefix": 5}, id="prefix-int"),
        pytest.param({"stream_prefix": b"order-"}, id="prefix-bytes"),
    ],
)
def test_read_all_refuses_bad_arguments(store: Any, kwargs: dict[str, Any]) -> None:
    store.append_events("s", [noted("s", 1)], expected_version=0)
    with pytest.raises(ValidationError):
        store.read_all(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"batch_size": 0}, id="batch-size-zero"),
        pytest.param({"batch_size": "2"}, id="batch-size-str"),
        pytest.param({"event_types": []}, id="event-types-empty"),
        pytest.param({"after": "1-2"}, id="after-str"),
        pytest.param({"stream_prefix": 5}, id="prefix-int"),
    ],
)
def test_iter_all_refuses_bad_arguments(store: Any, kwargs: dict[str, Any]) -> None:
    store.append_events("s", [noted("s", 1)], expected_version=0)
    with pytest.raises(ValidationError):
        list(store.iter_all(**kwargs))


# --- PostgreSQL: the transaction horizon --------------------------------------------------


def test_open_transaction_holds_back_its_own_and_later_commits_until_it_ends(
    pg_store: PostgresEventStore,
) -> None:
    store = pg_store
    store.append_events("before", [noted("before", 1)], expected_version=0)
    wait_for_feed_horizon(store)
    base = store.read_all()
    assert [key(e) for e in base] == [("before", 1)]
    checkpoint = base[-1].position

    with store.engine.connect() as open_conn:
        open_tx = open_conn.begin()
        try:
            # Writing gives the open transaction its id: the feed's horizon is now at or
            # below it for as long as it runs.
            store.append_events(
                "slow",
                [noted("slow", 1), noted("slow", 2)],
                expected_version=0,
                connection=open_conn,
            )
            # Another transaction commits after the open one began writing.
            store.append_events("fast", [noted("fast", 1)], expected_version=0)
            with store.engine.connect() as other:
                committed = other.execute(
                    text("SELECT count(*) FROM events WHERE stream_id = 'fast'")
                ).scalar_one()
            assert committed == 1, "the later transaction did commit"

            # Neither the open transaction's events nor the later commit are visible.
            assert store.read_all(after=checkpoint) == []
            assert store.read_all() == base
            assert list(store.iter_all(after=checkpoint)) == []
            open_tx.commit()
        finally:
            if open_tx.is_active:
                open_tx.rollback()

    wait_for_feed_horizon(store)
    rest = store.read_all(after=checkpoint)
    # Nothing skipped: the reader that stayed at its checkpoint sees both, the
    # transaction that began writing first ahead of the one that committed first.
    assert [key(e) for e in rest] == [("slow", 1), ("slow", 2), ("fast", 1)]
    assert_positions_increase(base + rest)
    assert store.read_all() == base + rest


def test_events_committed_before_an_open_transaction_stay_visible(
    pg_store: PostgresEventStore,
) -> None:
    store = pg_store
    store.append_events("early", [noted("early", 1)], expected_version=0)
    wait_for_feed_horizon(store)
    with store.engine.connect() as open_conn, open_conn.begin():
        store.append_events("late", [noted("late", 1)], expected_version=0, connection=open_conn)
        assert [key(e) for e in store.read_all()] == [("early", 1)]
    wait_for_feed_horizon(store)
    assert [key(e) for e in store.read_all()] == [("early", 1), ("late", 1)]


def test_feed_keeps_stream_order_when_an_older_transaction_appends_after_a_newer_commit(
    pg_store: PostgresEventStore,
) -> None:
    """A unit of work writes one stream, then another that a newer transaction has
    meanwhile started: the feed must still give that stream's versions in order."""
    store = pg_store
    with store.engine.connect() as conn, conn.begin():
        store.append_events("first", [noted("first", 1)], expected_version=ANY, connection=conn)
        # A newer transaction creates the second stream and commits.
        store.append_events("second", [noted("second", 1)], expected_version=0)
        # Refusing this append would be one way to keep the feed consistent.
        with suppress(ConcurrencyError):
            store.append_events(
                "second", [noted("second", 2)], expected_version=ANY, connection=conn
            )
    wait_for_feed_horizon(store)

    feed = store.read_all()
    assert_versions_in_order(feed)
    assert_positions_increase(feed)
    assert sorted(key(e) for e in feed) == sorted(
        key(e) for s in ("first", "second") for e in store.load_events(s)
    )


def test_rolled_back_writer_leaves_a_gap_the_reader_ignores(pg_store: PostgresEventStore) -> None:
    store = pg_store
    store.append_events("kept", [noted("kept", 1)], expected_version=0)

    with store.engine.connect() as conn:
        tx = conn.begin()
        store.append_events(
            "lost",
            [noted("lost", n) for n in range(1, 6)],
            expected_version=0,
            connection=conn,
        )
        tx.rollback()

    store.append_events("kept", [noted("kept", 2)], expected_version=1)
    wait_for_feed_horizon(store)

    with store.engine.connect() as conn:
        positions = conn.execute(text("SELECT position FROM events ORDER BY position")).scalars()
        first, second = list(positions)
    assert second - first > 1, "the rolled-back writer's positions are a gap"

    feed = store.read_all()
    assert [key(e) for e in feed] == [("kept", 1), ("kept", 2)]
    assert store.read_all(after=feed[0].position) == feed[1:]
    assert store.read_all(after=feed[0].position, limit=1) == feed[1:]
    assert list(store.iter_all(batch_size=1)) == feed


def test_concurrent_open_transactions_are_all_seen_once_they_end(
    pg_store: PostgresEventStore,
) -> None:
    """Three interleaved transactions committed in the reverse of the order they
    began writing in: a reader following the feed throughout sees each event once."""
    store = pg_store
    seen: list[RecordedEvent] = []
    checkpoint: Position | None = None

    def follow() -> None:
        nonlocal checkpoint
        batch = store.read_all(after=checkpoint)
        seen.extend(batch)
        if batch:
            checkpoint = batch[-1].position

    conns = [store.engine.connect() for _ in range(3)]
    try:
        txs = [conn.begin() for conn in conns]
        for i, conn in enumerate(conns):
            store.append_events(
                f"tx-{i}", [noted(f"tx-{i}", 1)], expected_version=ANY, connection=conn
            )
            follow()
        store.append_events("auto", [noted("auto", 1)], expected_version=0)
        follow()
        for i in reversed(range(3)):
            txs[i].commit()
            follow()
    finally:
        for conn in conns:
            conn.close()
    wait_for_feed_horizon(store)
    follow()

    assert sorted(key(e) for e in seen) == sorted(
        [("tx-0", 1), ("tx-1", 1), ("tx-2", 1), ("auto", 1)]
    )
    assert len(seen) == 4
    assert seen == store.read_all()
