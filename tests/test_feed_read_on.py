"""Filtered feed readers read on past the events they skip, once.

A subscription or projection that wants a few event types used to read from its
last delivered event every time; with nothing of its types since, each read
scanned every event after it again (on PostgreSQL, every append's NOTIFY wakes
such a reader). A page that comes up short now carries the feed's visible end,
and the reader goes on from there. It must never skip an event it wants: the
end comes from the same snapshot as the page, so a transaction still running
below it is not passed over.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from _store_helpers import STORE_KINDS, store_for, wait_for_feed_horizon

from eventstore import (
    NewEvent,
    Position,
    PostgresEventStore,
    Projection,
    ProjectionRunner,
    RecordedEvent,
)
from eventstore._backend import FeedPage

DEADLINE_SECONDS = 10.0


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest) -> Any:
    return store_for(request, request.param)


def append(store: Any, stream_id: str, event_type: str, count: int = 1) -> Position:
    """Append ``count`` events of ``event_type`` to a new stream; the last one's position."""
    store.append_events(
        stream_id, [NewEvent(event_type, {"n": n}) for n in range(count)], expected_version=0
    )
    (last,) = store.load_events(stream_id, from_version=count)
    assert last.position is not None
    return last.position


class Recorder:
    """A projection handler that remembers what it was given."""

    def __init__(self) -> None:
        self.events: list[RecordedEvent] = []

    def __call__(self, event: RecordedEvent, connection: Any) -> None:
        self.events.append(event)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def runner(store: Any, recorder: Recorder) -> Iterator[ProjectionRunner]:
    projection = Projection("wanted_only", recorder, event_types=["Wanted"])
    with ProjectionRunner(store, projection, batch_size=10, lock_timeout=5) as runner:
        yield runner


def watch_reads(runner: ProjectionRunner) -> list[Position | None]:
    """Record the position each of the runner's feed reads starts after."""
    session = runner._hold()
    original = session.read
    starts: list[Position | None] = []

    def read(connection: Any, after: Position | None, limit: int, types: Any) -> FeedPage:
        starts.append(after)
        return original(connection, after, limit, types)

    session.read = read  # type: ignore[method-assign]
    return starts


def test_an_idle_projection_reads_on_from_where_it_found_nothing(
    store: Any, runner: ProjectionRunner
) -> None:
    starts = watch_reads(runner)
    skipped = append(store, "other-1", "Other", 25)
    wait_for_feed_horizon(store)

    assert runner.run_once() == 0
    assert runner.run_once() == 0
    assert starts == [None, skipped]  # the second read does not scan the 25 again
    assert runner.checkpoint() is None  # nothing handled: an idle read writes nothing


def test_a_wanted_event_after_skipped_ones_is_handled_once(
    store: Any, runner: ProjectionRunner, recorder: Recorder
) -> None:
    append(store, "other-1", "Other", 5)
    wait_for_feed_horizon(store)
    assert runner.run_once() == 0
    wanted = append(store, "wanted-1", "Wanted")
    wait_for_feed_horizon(store)

    assert runner.run_once() == 1
    assert runner.run_once() == 0
    assert [event.position for event in recorder.events] == [wanted]


def test_a_short_batch_checkpoints_past_the_skipped_events_after_it(
    store: Any, runner: ProjectionRunner, recorder: Recorder
) -> None:
    append(store, "wanted-1", "Wanted")
    trailing = append(store, "other-1", "Other", 5)
    wait_for_feed_horizon(store)

    assert runner.run_once() == 1
    assert runner.checkpoint() == trailing
    runner.close()
    with ProjectionRunner(store, runner.projection, batch_size=10, lock_timeout=5) as second:
        starts = watch_reads(second)
        assert second.run_once() == 0
    assert starts == [trailing]  # a new runner resumes after them too
    assert len(recorder.events) == 1


def test_a_full_batch_checkpoints_at_its_last_event(store: Any, recorder: Recorder) -> None:
    append(store, "wanted-1", "Wanted", 3)
    append(store, "other-1", "Other", 5)
    wait_for_feed_horizon(store)
    projection = Projection("wanted_only", recorder, event_types=["Wanted"])
    with ProjectionRunner(store, projection, batch_size=3, lock_timeout=5) as runner:
        starts = watch_reads(runner)
        assert runner.run_once() == 3
    third = recorder.events[-1].position
    # The first batch was full, so it may not be all there is: the next read
    # starts after its last event, not at the feed's end.
    assert starts[:2] == [None, third]


def test_reset_reads_the_feed_from_the_start_again(
    store: Any, runner: ProjectionRunner, recorder: Recorder
) -> None:
    append(store, "wanted-1", "Wanted")
    append(store, "other-1", "Other", 5)
    wait_for_feed_horizon(store)
    assert runner.run_once() == 1

    runner.reset()
    starts = watch_reads(runner)
    assert runner.run_once() == 1
    assert starts[0] is None
    assert len(recorder.events) == 2


def test_a_filtered_subscription_moves_past_events_it_skips(store: Any) -> None:
    skipped = append(store, "other-1", "Other", 5)
    wait_for_feed_horizon(store)
    delivered: list[RecordedEvent] = []
    with store.subscribe(event_types=["Wanted"], poll_interval=0.05) as sub:
        thread = threading.Thread(target=lambda: delivered.extend(sub), daemon=True)
        thread.start()
        deadline = time.monotonic() + DEADLINE_SECONDS
        while sub.position != skipped and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sub.position == skipped
        wanted = append(store, "wanted-1", "Wanted")
        while not delivered and time.monotonic() < deadline:
            time.sleep(0.01)
        sub.stop()
        thread.join(DEADLINE_SECONDS)
    assert [event.position for event in delivered] == [wanted]


def test_iter_all_with_a_filter_ends_at_the_visible_end(store: Any) -> None:
    append(store, "wanted-1", "Wanted")
    append(store, "other-1", "Other", 5)
    wait_for_feed_horizon(store)
    assert [e.stream_id for e in store.iter_all(event_types=["Wanted"], batch_size=1)] == [
        "wanted-1"
    ]


def test_a_wanted_event_committed_late_below_the_end_is_not_skipped(
    event_store: PostgresEventStore, recorder: Recorder
) -> None:
    store = event_store
    projection = Projection("wanted_only", recorder, event_types=["Wanted"])
    with (
        ProjectionRunner(store, projection, batch_size=10, lock_timeout=5) as runner,
        store.engine.connect() as held,
    ):
        transaction = held.begin()
        store.append_events(
            "late", [NewEvent("Wanted", {"late": True})], expected_version=0, connection=held
        )
        after = append(store, "other-1", "Other", 5)  # newer transactions, committed
        with store.subscribe(event_types=["Wanted"], poll_interval=0.05) as sub:
            assert runner.run_once() == 0
            # The subscription reads once, finds nothing it may deliver, and waits.
            delivered: list[RecordedEvent] = []
            thread = threading.Thread(target=lambda: delivered.extend(sub), daemon=True)
            thread.start()
            time.sleep(0.3)
            assert sub.position is None or sub.position < after  # held back below "late"
            transaction.commit()
            wait_for_feed_horizon(store)
            assert runner.run_once() == 1
            deadline = time.monotonic() + DEADLINE_SECONDS
            while not delivered and time.monotonic() < deadline:
                time.sleep(0.01)
            sub.stop()
            thread.join(DEADLINE_SECONDS)
    assert [event.stream_id for event in recorder.events] == ["late"]
    assert [event.stream_id for event in delivered] == ["late"]


def test_a_reset_by_another_runner_voids_what_this_one_had_read_past(
    store: Any, recorder: Recorder
) -> None:
    projection = Projection("wanted_only", recorder, event_types=["Wanted"])
    first = ProjectionRunner(store, projection, batch_size=10, lock_timeout=5)
    append(store, "wanted-1", "Wanted")
    wait_for_feed_horizon(store)
    assert first.run_once() == 1
    append(store, "other-1", "Other", 5)
    wait_for_feed_horizon(store)
    assert first.run_once() == 0  # read past the five, checkpoint still at the Wanted
    first.close()

    with ProjectionRunner(store, projection, lock_timeout=5) as second:
        second.reset()  # a rebuild: the checkpoint is gone

    # The first runner takes the lock again: the rebuild must see the Wanted event.
    with first:
        assert first.run_once() == 1
    assert [event.stream_id for event in recorder.events] == ["wanted-1", "wanted-1"]
