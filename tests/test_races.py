"""Concurrent writers on one stream, on both stores: one winner per version, no gaps.

Every round starts all writers at once on a barrier so they really collide; the
barrier also ends the previous round, so each round's expected version is known.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _store_helpers import STORE_KINDS

from eventstore import (
    ANY,
    NO_STREAM,
    ConcurrencyError,
    NewEvent,
    PostgresEventStore,
    StreamState,
)

WRITERS = 8
DEADLINE_SECONDS = 60.0


@pytest.fixture(params=STORE_KINDS)
def racing_store(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A store whose connection pool has room for every writer at once."""
    if request.param == "memory":
        yield request.getfixturevalue("in_memory_event_store")
        return
    request.getfixturevalue("event_store")  # a migrated database, emptied
    url = request.getfixturevalue("eventstore_database_url")
    store = PostgresEventStore.from_url(url, pool_size=WRITERS, max_overflow=0, pool_timeout=10)
    try:
        yield store
    finally:
        store.close()


def run_writers(writer: Callable[[int], None], count: int = WRITERS) -> None:
    """Run ``writer(0..count-1)`` on threads; re-raise the first failure of any thread."""
    failures: list[BaseException] = []

    def guarded(index: int) -> None:
        try:
            writer(index)
        except BaseException as exc:
            failures.append(exc)
            raise

    threads = [
        threading.Thread(target=guarded, args=(i,), name=f"writer-{i}", daemon=True)
        for i in range(count)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE_SECONDS)
    assert not any(t.is_alive() for t in threads), "writers did not finish before the deadline"
    if failures:
        raise failures[0]


def outcome_of(store: Any, stream_id: str, batch: list[NewEvent], expected: Any) -> tuple[str, Any]:
    """Append; ('won', new version), ('lost', ConcurrencyError) or ('error', anything else)."""
    try:
        return "won", store.append_events(stream_id, batch, expected_version=expected)
    except ConcurrencyError as exc:
        return "lost", exc
    except Exception as exc:
        return "error", exc


def check_rounds(
    outcomes: list[list[tuple[str, Any]]],
    stream_of: Callable[[int], str],
    expected_of: Callable[[int], int | StreamState],
    version_after: Callable[[int, int], int],
) -> list[int]:
    """Check each round has one winner and only ConcurrencyError losers; return the winners."""
    problems: list[str] = []
    winners: list[int] = []
    for round_, results in enumerate(outcomes):
        won = [i for i, (kind, _) in enumerate(results) if kind == "won"]
        errors = [(i, value) for i, (kind, value) in enumerate(results) if kind == "error"]
        for i, value in errors:
            problems.append(f"round {round_}: writer {i} raised {type(value).__name__}: {value}")
        if len(won) != 1:
            problems.append(f"round {round_}: {len(won)} winners {won}")
            winners.append(-1)
            continue
        winner = won[0]
        winners.append(winner)
        new_version = version_after(round_, winner)
        if results[winner][1] != new_version:
            problems.append(f"round {round_}: winner returned {results[winner][1]}")
        for i, (kind, value) in enumerate(results):
            if kind != "lost":
                continue
            seen = (value.stream_id, value.expected, value.actual)
            if seen != (stream_of(round_), expected_of(round_), new_version):
                problems.append(f"round {round_}: writer {i} lost with {seen}")
    assert not problems, f"{len(problems)} problems, first ones: {problems[:10]}"
    return winners


def test_racing_writers_at_the_same_version_get_exactly_one_winner(racing_store: Any) -> None:
    store, stream_id, rounds = racing_store, "contested", 200
    barrier = threading.Barrier(WRITERS, timeout=DEADLINE_SECONDS)
    outcomes = [[("pending", None)] * WRITERS for _ in range(rounds)]

    def writer(index: int) -> None:
        for round_ in range(rounds):
            barrier.wait()
            event = NewEvent("Claimed", {"writer": index, "round": round_})
            outcomes[round_][index] = outcome_of(store, stream_id, [event], round_)

    run_writers(writer)

    winners = check_rounds(
        outcomes,
        stream_of=lambda _: stream_id,
        expected_of=lambda round_: round_,
        version_after=lambda round_, _: round_ + 1,
    )
    loaded = store.load_events(stream_id)
    assert [e.version for e in loaded] == list(range(1, rounds + 1))
    assert [e.data for e in loaded] == [
        {"writer": winner, "round": round_} for round_, winner in enumerate(winners)
    ]
    assert store.stream_version(stream_id) == rounds


def test_racing_creators_of_a_new_stream_get_exactly_one_winner(racing_store: Any) -> None:
    store, rounds = racing_store, 100
    barrier = threading.Barrier(WRITERS, timeout=DEADLINE_SECONDS)
    outcomes = [[("pending", None)] * WRITERS for _ in range(rounds)]

    def expected_of(round_: int) -> int | StreamState:
        return NO_STREAM if round_ % 2 else 0

    def writer(index: int) -> None:
        for round_ in range(rounds):
            barrier.wait()
            event = NewEvent("Created", {"writer": index})
            outcomes[round_][index] = outcome_of(
                store, f"new-{round_}", [event, event], expected_of(round_)
            )

    run_writers(writer)

    winners = check_rounds(
        outcomes,
        stream_of=lambda round_: f"new-{round_}",
        expected_of=expected_of,
        version_after=lambda _round, _winner: 2,
    )
    for round_, winner in enumerate(winners):
        loaded = store.load_events(f"new-{round_}")
        assert [(e.version, e.data) for e in loaded] == [
            (1, {"writer": winner}),
            (2, {"writer": winner}),
        ]


def test_racing_batches_of_mixed_sizes_get_one_winner_and_stay_contiguous(
    racing_store: Any,
) -> None:
    store, stream_id, rounds = racing_store, "batched", 100
    round_starts: list[int] = []
    barrier = threading.Barrier(
        WRITERS,
        action=lambda: round_starts.append(store.stream_version(stream_id)),
        timeout=DEADLINE_SECONDS,
    )
    outcomes = [[("pending", None)] * WRITERS for _ in range(rounds)]

    def size_of(round_: int, index: int) -> int:
        return (index + round_) % 4 + 1

    def writer(index: int) -> None:
        for round_ in range(rounds):
            barrier.wait()
            start = round_starts[round_]
            batch = [
                NewEvent("Part", {"writer": index, "round": round_, "part": part})
                for part in range(size_of(round_, index))
            ]
            outcomes[round_][index] = outcome_of(store, stream_id, batch, start)

    run_writers(writer)

    winners = check_rounds(
        outcomes,
        stream_of=lambda _: stream_id,
        expected_of=lambda round_: round_starts[round_],
        version_after=lambda round_, winner: round_starts[round_] + size_of(round_, winner),
    )
    expected_data = [
        {"writer": winner, "round": round_, "part": part}
        for round_, winner in enumerate(winners)
        for part in range(size_of(round_, winner))
    ]
    loaded = store.load_events(stream_id)
    assert [e.version for e in loaded] == list(range(1, len(expected_data) + 1))
    assert [e.data for e in loaded] == expected_data


def test_racing_writers_with_any_all_succeed_without_gaps_or_duplicates(
    racing_store: Any,
) -> None:
    store, stream_id, rounds = racing_store, "anything-goes", 60
    barrier = threading.Barrier(WRITERS, timeout=DEADLINE_SECONDS)
    outcomes = [[("pending", None)] * WRITERS for _ in range(rounds)]

    def size_of(round_: int, index: int) -> int:
        return (index * 7 + round_) % 3 + 1

    def writer(index: int) -> None:
        for round_ in range(rounds):
            barrier.wait()
            batch = [
                NewEvent("Any", {"writer": index, "round": round_, "part": part})
                for part in range(size_of(round_, index))
            ]
            outcomes[round_][index] = outcome_of(store, stream_id, batch, ANY)

    run_writers(writer)

    failed = [
        (round_, index, value)
        for round_, results in enumerate(outcomes)
        for index, (kind, value) in enumerate(results)
        if kind != "won"
    ]
    assert not failed, f"{len(failed)} ANY appends failed, first ones: {failed[:10]}"

    total = sum(size_of(r, i) for r in range(rounds) for i in range(WRITERS))
    loaded = store.load_events(stream_id)
    assert [e.version for e in loaded] == list(range(1, total + 1))
    assert store.stream_version(stream_id) == total
    by_version = {e.version: e.data for e in loaded}
    keys = [(d["writer"], d["round"], d["part"]) for d in by_version.values()]
    assert len(set(keys)) == total
    # each batch sits whole, in order, just below the version its append returned
    for round_, results in enumerate(outcomes):
        for index, (_, returned) in enumerate(results):
            size = size_of(round_, index)
            assert [by_version[v] for v in range(returned - size + 1, returned + 1)] == [
                {"writer": index, "round": round_, "part": part} for part in range(size)
            ]
