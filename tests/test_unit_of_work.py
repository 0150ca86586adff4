"""``store.transaction()``: one unit of work over several streams, on both stores.

Everything appended or snapshotted through the connection it yields commits
together at the end of the block, or not at all when the block raises. Reads
through that connection see its own writes; others do not until it commits. A
writer to a stream the unit of work has written waits until it ends, then gets
the usual answer. The in-memory store refuses, instead of waiting forever, a
write by the same thread outside the unit of work, and a deadlock between two
units of work.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from _store_helpers import STORE_KINDS, store_for, wait_for_feed_horizon

from eventstore import (
    ANY,
    ConcurrencyError,
    InMemoryEventStore,
    NewEvent,
    Repository,
    ValidationError,
)

WAIT = 0.3
"""How long a blocked writer is watched to stay blocked (it may only stay so longer)."""


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest) -> Any:
    return store_for(request, request.param)


def noted(n: int) -> NewEvent:
    return NewEvent("Noted", {"n": n})


class BoomError(Exception):
    pass


def in_failed_unit_of_work(store: Any, body: Callable[[Any], object]) -> None:
    """Run ``body(connection)`` in a unit of work whose block then raises."""

    def run() -> None:
        with store.transaction() as connection:
            body(connection)
            raise BoomError

    with pytest.raises(BoomError):
        run()


def test_reads_through_the_unit_of_work_see_its_own_writes_and_others_do_not(
    store: Any,
) -> None:
    store.append_events("a", [noted(1)], expected_version=0)
    with store.transaction() as connection:
        assert store.append_events("a", [noted(2)], expected_version=1, connection=connection) == 2
        store.append_events("b", [noted(3), noted(4)], expected_version=0, connection=connection)

        inside = store.load_events("a", connection=connection)
        assert [e.data["n"] for e in inside] == [1, 2]
        assert [e.version for e in store.load_events("b", connection=connection)] == [1, 2]
        assert [
            e.data["n"] for e in store.load_events("b", from_version=2, connection=connection)
        ] == [4]
        assert [e.version for e in store.load_events("a")] == [1]
        assert store.load_events("b") == []
        assert store.stream_version("b") == 0
        assert store.save_snapshot("b", 2, {"state": 2}, connection=connection) is True
        assert store.load_snapshot("b") is None
    assert store.stream_version("a") == 2
    assert store.load_snapshot("b").state == {"state": 2}


def test_a_conflict_inside_leaves_the_unit_of_work_usable(store: Any) -> None:
    store.append_events("a", [noted(1)], expected_version=0)
    with store.transaction() as connection:
        with pytest.raises(ConcurrencyError) as conflict:
            store.append_events("a", [noted(9)], expected_version=0, connection=connection)
        assert (conflict.value.expected, conflict.value.actual) == (0, 1)
        store.append_events("a", [noted(2)], expected_version=1, connection=connection)
        with pytest.raises(ValidationError, match="its last event is version 2"):
            store.save_snapshot("a", 3, {}, connection=connection)
    assert [e.data["n"] for e in store.load_events("a")] == [1, 2]


def test_a_snapshot_saved_inside_is_dropped_with_the_unit_of_work(store: Any) -> None:
    store.append_events("a", [noted(1)], expected_version=0)

    def body(connection: Any) -> None:
        store.append_events("a", [noted(2)], expected_version=1, connection=connection)
        store.save_snapshot("a", 2, {"at": 2}, connection=connection)

    in_failed_unit_of_work(store, body)
    assert store.load_snapshot("a") is None
    assert store.stream_version("a") == 1


def test_a_repository_appends_and_snapshots_inside_a_unit_of_work(store: Any) -> None:
    orders = Repository(store, 0, lambda total, event: total + event.data["n"], snapshot_every=2)
    with store.transaction() as connection:
        total, version = orders.append(
            "order-1", [noted(5), noted(7)], state=0, expected_version=0, connection=connection
        )
        assert (total, version) == (12, 2)
    assert orders.load("order-1") == (12, 2)
    assert store.load_snapshot("order-1").version == 2


# -- connections the store refuses --------------------------------------------------------


def test_a_unit_of_work_used_after_its_block_is_refused(store: Any) -> None:
    with store.transaction() as connection:
        store.append_events("a", [noted(1)], expected_version=0, connection=connection)
    with pytest.raises(ValidationError, match="ended"):
        store.append_events("a", [noted(2)], expected_version=1, connection=connection)
    with pytest.raises(ValidationError, match="ended"):
        store.load_events("a", connection=connection)
    with pytest.raises(ValidationError, match="ended"):
        store.save_snapshot("a", 1, {}, connection=connection)
    assert store.stream_version("a") == 1


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_a_unit_of_work_of_the_other_kind_of_store_is_refused(
    request: pytest.FixtureRequest, kind: str
) -> None:
    store = store_for(request, kind)
    other = store_for(request, "memory" if kind == "postgres" else "postgres")
    with other.transaction() as foreign:
        check_refused(store, foreign)


def check_refused(store: Any, foreign: Any) -> None:
    with pytest.raises(ValidationError, match="connection"):
        store.append_events("a", [noted(1)], expected_version=0, connection=foreign)
    with pytest.raises(ValidationError, match="connection"):
        store.load_events("a", connection=foreign)
    assert store.stream_version("a") == 0


def test_the_in_memory_store_refuses_another_stores_unit_of_work() -> None:
    mine, theirs = InMemoryEventStore(), InMemoryEventStore()
    with theirs.transaction() as foreign:
        with pytest.raises(ValidationError, match="another store"):
            mine.append_events("a", [noted(1)], expected_version=0, connection=foreign)
        with pytest.raises(ValidationError, match="another store"):
            mine.save_snapshot("a", 1, {}, connection=foreign)
    assert mine.stream_version("a") == theirs.stream_version("a") == 0


@pytest.mark.parametrize("connection", ["conn", 0, object()])
def test_the_in_memory_store_refuses_what_is_not_its_unit_of_work(connection: Any) -> None:
    store = InMemoryEventStore()
    with pytest.raises(ValidationError, match=r"store\.transaction\(\)"):
        store.append_events("a", [noted(1)], expected_version=0, connection=connection)
    assert store.stream_version("a") == 0


# -- writers that meet a unit of work --------------------------------------------------------


def in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Start ``call`` in a thread; the list gets its result or its exception."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


@pytest.mark.parametrize("commit", [True, False])
def test_another_writer_waits_for_the_unit_of_work_then_gets_the_usual_answer(
    store: Any, commit: bool
) -> None:
    started: list[tuple[threading.Thread, list[Any]]] = []

    def body(connection: Any) -> None:
        store.append_events("a", [noted(1)], expected_version=0, connection=connection)
        thread, outcome = in_thread(
            lambda: store.append_events("a", [noted(2)], expected_version=0)
        )
        started.append((thread, outcome))
        thread.join(WAIT)
        assert thread.is_alive(), "the other writer went ahead of the unit of work"
        assert outcome == []

    if commit:
        with store.transaction() as connection:
            body(connection)
    else:
        in_failed_unit_of_work(store, body)
    [(thread, outcome)] = started
    thread.join(10)
    assert not thread.is_alive()
    if commit:
        assert isinstance(outcome[0], ConcurrencyError)
        assert [e.data["n"] for e in store.load_events("a")] == [1]
    else:
        assert outcome == [1]
        assert [e.data["n"] for e in store.load_events("a")] == [2]


def test_an_any_writer_waits_and_then_appends_after_the_unit_of_work(store: Any) -> None:
    with store.transaction() as connection:
        store.append_events("a", [noted(1)], expected_version=0, connection=connection)
        thread, outcome = in_thread(
            lambda: store.append_events("a", [noted(2)], expected_version=ANY)
        )
        thread.join(WAIT)
        assert thread.is_alive()
    thread.join(10)
    assert outcome == [2]
    assert [e.data["n"] for e in store.load_events("a")] == [1, 2]


def test_in_memory_the_same_thread_writing_a_reserved_stream_is_refused_not_hung() -> None:
    store = InMemoryEventStore()
    with store.transaction() as connection:
        store.append_events("a", [noted(1)], expected_version=0, connection=connection)
        with pytest.raises(ValidationError, match="open unit of work of this thread"):
            store.append_events("a", [noted(2)], expected_version=ANY)
        with (
            store.transaction() as second,
            pytest.raises(ValidationError, match="open unit of work of this thread"),
        ):
            store.append_events("a", [noted(3)], expected_version=ANY, connection=second)
        store.append_events("b", [noted(4)], expected_version=0)  # another stream is free
    assert [e.data["n"] for e in store.load_events("a")] == [1]


def test_two_units_of_work_waiting_on_each_other_fail_one_not_hang(store: Any) -> None:
    first_holds_a = threading.Event()
    second_holds_b = threading.Event()

    def first() -> int:
        with store.transaction() as connection:
            store.append_events("a", [noted(1)], expected_version=0, connection=connection)
            first_holds_a.set()
            second_holds_b.wait(10)
            return store.append_events("b", [noted(2)], expected_version=ANY, connection=connection)

    def second() -> int:
        with store.transaction() as connection:
            first_holds_a.wait(10)
            store.append_events("b", [noted(3)], expected_version=0, connection=connection)
            second_holds_b.set()
            return store.append_events("a", [noted(4)], expected_version=ANY, connection=connection)

    threads = [in_thread(first), in_thread(second)]
    for thread, _ in threads:
        thread.join(10)
        assert not thread.is_alive(), "two units of work deadlocked"
    outcomes = [outcome[0] for _, outcome in threads]
    failed = [o for o in outcomes if isinstance(o, ConcurrencyError)]
    assert len(failed) == 1
    assert "deadlock" in str(failed[0])
    # The loser's unit of work was dropped, so the winner's ANY append lands at 1.
    assert [o for o in outcomes if not isinstance(o, Exception)] == [1]
    assert store.stream_version("a") == store.stream_version("b") == 1


def test_many_units_of_work_race_on_two_streams_and_stay_whole(store: Any) -> None:
    """50 rounds of 4 threads, each moving both streams on by one event in one
    unit of work at the versions it read: every round, exactly the winners'
    pairs are stored, and each pair sits together in the feed."""
    rounds, writers = 50, 4
    wins = 0
    for round_ in range(rounds):
        barrier = threading.Barrier(writers)

        def move(writer: int, round_: int = round_, barrier: threading.Barrier = barrier) -> bool:
            versions = store.stream_version("x"), store.stream_version("y")
            barrier.wait(10)
            try:
                with store.transaction() as connection:
                    tag = {"round": round_, "writer": writer}
                    store.append_events(
                        "x",
                        [NewEvent("X", tag)],
                        expected_version=versions[0],
                        connection=connection,
                    )
                    store.append_events(
                        "y",
                        [NewEvent("Y", tag)],
                        expected_version=versions[1],
                        connection=connection,
                    )
                    time.sleep(0.001)  # let the other writers run into the held streams
            except ConcurrencyError:
                return False
            return True

        threads = [in_thread(lambda w=w: move(w)) for w in range(writers)]
        for thread, _ in threads:
            thread.join(30)
        results = [outcome[0] for _, outcome in threads]
        assert all(isinstance(r, bool) for r in results), results
        wins += sum(results)
    xs = [e.data for e in store.load_events("x")]
    ys = [e.data for e in store.load_events("y")]
    assert xs == ys
    assert len(xs) == wins == rounds  # one winner per round
    wait_for_feed_horizon(store)
    feed = store.read_all(limit=10 * rounds * writers)
    assert [(e.stream_id, e.data) for e in feed] == [
        (stream, tag) for tag in xs for stream in ("x", "y")
    ]


def test_feed_head_stops_where_read_all_stops_while_a_unit_of_work_is_open(store: Any) -> None:
    store.append_events("a", [noted(1)], expected_version=0)
    wait_for_feed_horizon(store)
    before = store.feed_head()
    with store.transaction() as connection:
        store.append_events("held", [noted(2)], expected_version=0, connection=connection)
        store.append_events("b", [noted(3)], expected_version=0)  # commits behind it
        visible = store.read_all()
        assert store.feed_head() == (visible[-1].position if visible else None)
        assert "held" not in [e.stream_id for e in visible]
        assert store.feed_head() >= before
    wait_for_feed_horizon(store)
    everything = store.read_all()
    assert {e.stream_id for e in everything} == {"a", "held", "b"}
    assert store.feed_head() == everything[-1].position
