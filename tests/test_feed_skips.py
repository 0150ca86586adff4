"""The feed never skips an event that commits late, under load, on PostgreSQL.

Eight writers append small batches in their own transactions and sleep a few
milliseconds between the insert and the commit, so transactions that drew a lower
position often commit after ones that drew a higher position. A reader follows the
feed from the start throughout. When the writers stop and the reader has drained,
it must have seen every committed row exactly once, each stream's versions in order.

The same load makes a naive reader (``position > last``) skip events: that is
what the feed reader is tested against, and it shows this test can fail.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from itertools import pairwise

import pytest
from sqlalchemy import text

from eventstore import ANY, ConcurrencyError, NewEvent, Position, PostgresEventStore, RecordedEvent
from eventstore.erasure import allow_rewrite

WRITERS = 8
STREAMS = [f"skip-{i}" for i in range(5)]
ROUND_SECONDS = 0.6
FEED_ROUNDS = 6
NAIVE_BUDGET_SECONDS = 12.0
DRAIN_DEADLINE_SECONDS = 8.0
JOIN_DEADLINE_SECONDS = 15.0
MAX_SLEEP_IN_TRANSACTION = 0.005
READ_LIMIT = 500

Key = tuple[str, int]


@pytest.fixture
def load_store(
    event_store: PostgresEventStore, eventstore_database_url: str
) -> Iterator[PostgresEventStore]:
    """A store whose pool holds every writer and reader at once (on an emptied database)."""
    store = PostgresEventStore.from_url(
        eventstore_database_url, pool_size=WRITERS + 4, max_overflow=0, pool_timeout=10
    )
    try:
        yield store
    finally:
        store.close()


@dataclass
class Round:
    """What one round of load wrote and what each reader saw."""

    committed: list[Key] = field(default_factory=list)
    max_position: int = 0
    feed_seen: list[RecordedEvent] = field(default_factory=list)
    naive_seen: list[Key] = field(default_factory=list)
    refused: int = 0


def empty_events(store: PostgresEventStore) -> None:
    with store.engine.begin() as conn:
        conn.execute(text("SET LOCAL lock_timeout = '10s'"))
        allow_rewrite(conn)
        conn.execute(text("TRUNCATE events"))


def committed_rows(store: PostgresEventStore) -> tuple[list[Key], int]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT stream_id, version FROM events ORDER BY stream_id, version")
        ).all()
        top = conn.execute(text("SELECT coalesce(max(position), 0) FROM events")).scalar_one()
    return [(str(s), int(v)) for s, v in rows], int(top)


def run_threads(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(JOIN_DEADLINE_SECONDS)
    alive = [t.name for t in threads if t.is_alive()]
    assert not alive, f"threads still running past the deadline: {alive}"


def run_round(
    store: PostgresEventStore, seed: int, *, feed_reader: bool, naive_reader: bool
) -> Round:
    """Run the writers for ROUND_SECONDS with the chosen readers following along."""
    empty_events(store)
    result = Round()
    failures: list[BaseException] = []
    stop_writers = threading.Event()
    drain_target: list[int] = []  # [rows committed, max position], set after the writers
    target_known = threading.Event()

    def guarded(body: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                body()
            except BaseException as exc:
                failures.append(exc)
                stop_writers.set()
                target_known.set()

        return run

    def writer(index: int) -> None:
        rng = random.Random(seed * 100 + index)
        n = 0
        while not stop_writers.is_set():
            stream_id = rng.choice(STREAMS)
            batch = [
                NewEvent("Tick", {"writer": index, "n": n + i}) for i in range(rng.randint(1, 3))
            ]
            n += len(batch)
            try:
                with store.engine.begin() as conn:
                    store.append_events(stream_id, batch, expected_version=ANY, connection=conn)
                    # The position is drawn; hold the commit back so later writers overtake.
                    time.sleep(rng.uniform(0, MAX_SLEEP_IN_TRANSACTION))
            except ConcurrencyError:
                # A store may refuse an append whose transaction is older than the
                # stream's head (to keep the feed in stream order); the block rolled back.
                result.refused += 1

    def follow_feed() -> None:
        checkpoint: Position | None = None
        deadline: float | None = None
        while True:
            batch = store.read_all(after=checkpoint, limit=READ_LIMIT)
            if batch:
                result.feed_seen.extend(batch)
                checkpoint = batch[-1].position
                continue
            if target_known.is_set():
                if failures or len(result.feed_seen) >= drain_target[0]:
                    return
                deadline = deadline or time.monotonic() + DRAIN_DEADLINE_SECONDS
                if time.monotonic() > deadline:
                    return
            time.sleep(0.001)

    def follow_naively() -> None:
        last = 0
        deadline: float | None = None
        autocommit = store.engine.execution_options(isolation_level="AUTOCOMMIT")
        with autocommit.connect() as conn:
            while True:
                rows = conn.execute(
                    text(
                        "SELECT stream_id, version, position FROM events "
                        "WHERE position > :last ORDER BY position LIMIT :limit"
                    ),
                    {"last": last, "limit": READ_LIMIT},
                ).all()
                if rows:
                    result.naive_seen.extend((str(s), int(v)) for s, v, _ in rows)
                    last = int(rows[-1][2])
                    continue
                if target_known.is_set():
                    if failures or last >= drain_target[1]:
                        return
                    deadline = deadline or time.monotonic() + DRAIN_DEADLINE_SECONDS
                    if time.monotonic() > deadline:
                        return
                time.sleep(0.001)

    readers = []
    if feed_reader:
        readers.append(threading.Thread(target=guarded(follow_feed), name="feed-reader"))
    if naive_reader:
        readers.append(threading.Thread(target=guarded(follow_naively), name="naive-reader"))
    writers = [
        threading.Thread(target=guarded(partial(writer, i)), name=f"writer-{i}")
        for i in range(WRITERS)
    ]
    for thread in readers + writers:
        thread.daemon = True
        thread.start()
    stop_writers.wait(ROUND_SECONDS)
    stop_writers.set()
    run_threads(writers)

    result.committed, result.max_position = committed_rows(store)
    drain_target[:] = [len(result.committed), result.max_position]
    target_known.set()
    run_threads(readers)
    if failures:
        raise failures[0]
    assert len(result.committed) > 100, "the load wrote too little to prove anything"
    return result


def check_exactly_once(result: Round, round_number: int) -> None:
    """The feed reader saw every committed row exactly once, positions increasing."""
    seen = [(e.stream_id, e.version) for e in result.feed_seen]
    missing = sorted(set(result.committed) - set(seen))
    duplicates = len(seen) - len(set(seen))
    extra = sorted(set(seen) - set(result.committed))
    where = f"round {round_number}, {len(result.committed)} committed"
    assert not missing, f"{where}: feed reader missed {len(missing)}, first {missing[:5]}"
    assert not duplicates, f"{where}: feed reader saw {duplicates} events twice"
    assert not extra, f"{where}: feed reader saw {len(extra)} events never committed"
    positions = [e.position for e in result.feed_seen]
    assert all(a is not None and b is not None and a < b for a, b in pairwise(positions))


def check_stream_order(result: Round, round_number: int) -> None:
    """The feed reader saw each stream's versions as 1, 2, 3, ..."""
    last: dict[str, RecordedEvent] = {}
    out_of_order: list[str] = []
    for event in result.feed_seen:
        before = last.get(event.stream_id)
        if event.version != (before.version + 1 if before else 1):
            out_of_order.append(
                f"{event.stream_id} v{event.version} at {event.position} after "
                + (f"v{before.version} at {before.position}" if before else "nothing")
            )
        if before is None or event.version > before.version:
            last[event.stream_id] = event
    assert not out_of_order, (
        f"round {round_number}: {len(out_of_order)} events out of stream order, "
        f"first: {out_of_order[:3]}"
    )


def test_feed_reader_sees_every_late_commit_once_in_stream_order(
    load_store: PostgresEventStore,
) -> None:
    total = 0
    for round_number in range(FEED_ROUNDS):
        result = run_round(load_store, round_number, feed_reader=True, naive_reader=False)
        check_exactly_once(result, round_number)
        check_stream_order(result, round_number)
        total += len(result.committed)
    assert total > FEED_ROUNDS * 100


def test_naive_position_reader_skips_late_commits(load_store: PostgresEventStore) -> None:
    """Under the same load, ``position > last`` misses late commits while the feed
    reader, following at the same time, misses nothing."""
    started = time.monotonic()
    skipped_rounds: list[tuple[int, int, int]] = []
    round_number = 0
    while time.monotonic() - started < NAIVE_BUDGET_SECONDS:
        result = run_round(load_store, 1000 + round_number, feed_reader=True, naive_reader=True)
        check_exactly_once(result, round_number)
        naive_missing = set(result.committed) - set(result.naive_seen)
        assert len(result.naive_seen) == len(set(result.naive_seen)), "naive reader saw a row twice"
        if naive_missing:
            skipped_rounds.append((round_number, len(naive_missing), len(result.committed)))
            break
        round_number += 1
    assert skipped_rounds, (
        f"the naive reader skipped nothing in {round_number + 1} rounds: the load does not "
        "produce late commits, so the feed reader's test proves nothing"
    )
