"""One event that cannot be decoded, in the global feed: every reader gets every
event before it, then a DeserializationError naming it; a projection stops there
(``on_undecodable="raise"``, the default) or records it and goes on (``"skip"``).
Both stores.

The bad event is stored as an application that got the shape wrong would store
it: under a registered class's type, with fields that class does not have. It
is appended like any other (the payload is a plain map) and never decodes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from _store_helpers import STORE_KINDS, store_for, wait_for_feed_horizon
from sqlalchemy import text

from eventstore import (
    DeserializationError,
    EventRegistry,
    NewEvent,
    Position,
    PostgresEventStore,
    Projection,
    ProjectionRunner,
    RecordedEvent,
    ValidationError,
)
from eventstore.projections import SkippedEvent

DEADLINE_SECONDS = 10.0


@dataclass(frozen=True)
class Deposited:
    amount: int


@pytest.fixture
def eventstore_registry() -> EventRegistry:
    registry = EventRegistry()
    registry.register(Deposited)
    return registry


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest) -> Any:
    return store_for(request, request.param)


BAD_STREAM = "acct-bad"
BAD_TYPE = "Deposited"


def bad_event() -> NewEvent:
    """A registered type's name with fields its class does not take."""
    return NewEvent(BAD_TYPE, {"bogus": 1})


def append_around_a_bad_event(store: Any, before: int = 3, after: int = 2) -> None:
    """``before`` healthy events, the bad one (version 2 of its stream), ``after``
    healthy ones, each append its own transaction, in that feed order."""
    store.append_events(BAD_STREAM, [Deposited(100)], expected_version=0)
    for n in range(1, before):
        store.append_events(f"acct-{n}", [Deposited(n)], expected_version=0)
    store.append_events(BAD_STREAM, [bad_event()], expected_version=1)
    for n in range(after):
        store.append_events(f"later-{n}", [NewEvent("Noted", {"n": n})], expected_version=0)
    wait_for_feed_horizon(store)


def assert_names_the_bad_event(error: DeserializationError) -> None:
    """The error names the event: in its message, and in its attributes."""
    message = str(error)
    assert BAD_STREAM in message
    assert BAD_TYPE in message
    assert "2" in message
    expected = {"stream_id": BAD_STREAM, "version": 2, "event_type": BAD_TYPE}
    for name, value in expected.items():
        assert getattr(error, name) == value, name
    assert isinstance(error.position, Position)


# --- read_all, iter_all, subscribe ---------------------------------------------------


def take_all(events: Iterable[RecordedEvent], delivered: list[tuple[str, int]]) -> None:
    """Note each event's (stream, version) in ``delivered`` until ``events`` raises."""
    for event in events:
        delivered.append((event.stream_id, event.version))


def test_read_all_returns_the_events_before_the_bad_one_then_raises_for_it(store: Any) -> None:
    append_around_a_bad_event(store)

    page = store.read_all(limit=1000)

    assert [(e.stream_id, e.version) for e in page] == [
        (BAD_STREAM, 1),
        ("acct-1", 1),
        ("acct-2", 1),
    ]
    with pytest.raises(DeserializationError) as raised:
        store.read_all(after=page[-1].position)
    assert_names_the_bad_event(raised.value)


def test_read_all_of_a_page_that_ends_before_the_bad_event_is_whole(store: Any) -> None:
    append_around_a_bad_event(store)

    first = store.read_all(limit=2)

    assert [(e.stream_id, e.version) for e in first] == [(BAD_STREAM, 1), ("acct-1", 1)]


@pytest.mark.parametrize("batch_size", [1, 2, 3, 1000])
def test_iter_all_yields_every_event_before_the_bad_one_then_raises(
    store: Any, batch_size: int
) -> None:
    append_around_a_bad_event(store)
    delivered: list[tuple[str, int]] = []

    with pytest.raises(DeserializationError) as raised:
        take_all(store.iter_all(batch_size=batch_size), delivered)

    assert delivered == [(BAD_STREAM, 1), ("acct-1", 1), ("acct-2", 1)]
    assert_names_the_bad_event(raised.value)


def test_a_subscription_delivers_every_event_before_the_bad_one_then_raises_and_ends(
    store: Any,
) -> None:
    append_around_a_bad_event(store)
    delivered: list[tuple[str, int]] = []

    with store.subscribe(batch_size=1000, poll_interval=0.05) as subscription:
        with pytest.raises(DeserializationError) as raised:
            take_all(subscription, delivered)
        assert_names_the_bad_event(raised.value)
        last_healthy = subscription.position
        with pytest.raises(StopIteration):
            next(subscription)

    assert delivered == [(BAD_STREAM, 1), ("acct-1", 1), ("acct-2", 1)]
    assert last_healthy == store.read_all(limit=1000)[-1].position


def test_readers_filtering_other_types_pass_the_bad_event_by(store: Any) -> None:
    append_around_a_bad_event(store)

    noted = store.read_all(event_types=["Noted"])
    streamed = list(store.iter_all(stream_prefix="later-"))

    assert [e.stream_id for e in noted] == ["later-0", "later-1"]
    assert streamed == noted
    with store.subscribe(event_types=["Noted"], poll_interval=0.05) as subscription:
        assert [next(subscription).stream_id for _ in range(2)] == ["later-0", "later-1"]


def test_a_stream_read_still_raises_for_the_bad_event(store: Any) -> None:
    """An aggregate's stream is all or nothing: loads never stop short silently."""
    append_around_a_bad_event(store)

    with pytest.raises(DeserializationError):
        store.load_events(BAD_STREAM)
    with pytest.raises(DeserializationError):
        list(store.iter_events(BAD_STREAM))


# --- projections ---------------------------------------------------------------------


class ReadModel:
    """Every event the projection applied, one row per application: a table on
    PostgreSQL (written through the runner's connection), a list in memory."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.postgres = isinstance(store, PostgresEventStore)
        self._applied: list[tuple[str, int]] = []
        if self.postgres:
            with store.engine.begin() as connection:
                connection.execute(text("SET LOCAL lock_timeout = '10s'"))
                connection.execute(text("DROP TABLE IF EXISTS applied_events"))
                connection.execute(
                    text("CREATE TABLE applied_events (stream_id text NOT NULL, version bigint)")
                )

    def drop(self) -> None:
        if self.postgres:
            with self.store.engine.begin() as connection:
                connection.execute(text("SET LOCAL lock_timeout = '10s'"))
                connection.execute(text("DROP TABLE IF EXISTS applied_events"))

    def handle(self, event: RecordedEvent, connection: Any) -> None:
        if self.postgres:
            connection.execute(
                text("INSERT INTO applied_events VALUES (:stream_id, :version)"),
                {"stream_id": event.stream_id, "version": event.version},
            )
        else:
            self._applied.append((event.stream_id, event.version))

    def applied(self) -> list[tuple[str, int]]:
        if not self.postgres:
            return list(self._applied)
        with self.store.engine.connect() as connection:
            rows = connection.execute(
                text("SELECT stream_id, version FROM applied_events ORDER BY stream_id, version")
            )
            return [(str(row[0]), int(row[1])) for row in rows]


@pytest.fixture
def read_model(store: Any) -> Iterator[ReadModel]:
    model = ReadModel(store)
    try:
        yield model
    finally:
        model.drop()


EVERY_HEALTHY_EVENT = [
    ("acct-1", 1),
    ("acct-2", 1),
    (BAD_STREAM, 1),
    ("later-0", 1),
    ("later-1", 1),
]


def run_until(runner: ProjectionRunner, done: threading.Event) -> BaseException | None:
    """Run ``runner.run()`` in a thread until ``done`` is set (or ``run()`` ends);
    return what ``run()`` raised, if anything."""
    stop = threading.Event()
    raised: list[BaseException] = []

    def run() -> None:
        try:
            runner.run(stop)
        except BaseException as error:
            raised.append(error)
        finally:
            done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert done.wait(DEADLINE_SECONDS), "the runner did not get there in time"
    stop.set()
    thread.join(DEADLINE_SECONDS)
    assert not thread.is_alive()
    return raised[0] if raised else None


def test_run_with_skip_passes_over_the_bad_event_records_it_and_applies_every_other_once(
    store: Any, read_model: ReadModel
) -> None:
    append_around_a_bad_event(store)
    feed_before = store.read_all(limit=1000)
    done = threading.Event()
    applied = 0

    def handle(event: RecordedEvent, connection: Any) -> None:
        nonlocal applied
        read_model.handle(event, connection)
        applied += 1
        if event.stream_id == "later-1":
            done.set()

    projection = Projection("balances", handle, on_undecodable="skip")
    # Batches of 2: the bad event is in the middle of the second batch.
    with ProjectionRunner(store, projection, batch_size=2, poll_interval=0.05) as runner:
        assert run_until(runner, done) is None
        skipped = runner.skipped_events()
        checkpoint = runner.checkpoint()

    assert sorted(read_model.applied()) == EVERY_HEALTHY_EVENT  # each exactly once
    assert applied == len(EVERY_HEALTHY_EVENT)
    assert len(skipped) == 1
    (record,) = skipped
    assert isinstance(record, SkippedEvent)
    assert (record.projection, record.stream_id, record.version, record.event_type) == (
        "balances",
        BAD_STREAM,
        2,
        BAD_TYPE,
    )
    assert BAD_STREAM in record.error
    assert "bogus" in record.error
    assert feed_before[-1].position < record.position
    later = store.read_all(event_types=["Noted"])
    assert record.position < later[0].position
    assert checkpoint == later[-1].position
    assert record.skipped_at.tzinfo is not None


def test_skip_with_run_once_counts_only_the_handled_events(
    store: Any, read_model: ReadModel
) -> None:
    append_around_a_bad_event(store)
    projection = Projection("balances", read_model.handle, on_undecodable="skip")

    with ProjectionRunner(store, projection, batch_size=100) as runner:
        assert runner.run_once() == len(EVERY_HEALTHY_EVENT)
        assert runner.run_once() == 0
        assert len(runner.skipped_events()) == 1

    assert sorted(read_model.applied()) == EVERY_HEALTHY_EVENT


def test_run_with_raise_stops_with_the_error_and_the_checkpoint_just_before_the_bad_event(
    store: Any, read_model: ReadModel
) -> None:
    append_around_a_bad_event(store)
    before = store.read_all(limit=1000)
    projection = Projection("balances", read_model.handle)  # on_undecodable="raise"

    with ProjectionRunner(store, projection, batch_size=2, poll_interval=0.05) as runner:
        raised = run_until(runner, threading.Event())
        assert isinstance(raised, DeserializationError)
        assert_names_the_bad_event(raised)
        assert runner.checkpoint() == before[-1].position
        assert runner.skipped_events() == []
        # Again: it handles nothing more, and raises the same.
        with pytest.raises(DeserializationError):
            runner.run_once()
        assert runner.checkpoint() == before[-1].position

    assert sorted(read_model.applied()) == sorted((e.stream_id, e.version) for e in before)


def test_raise_commits_the_batches_before_the_bad_event_and_nothing_after(
    store: Any, read_model: ReadModel
) -> None:
    store.append_events(BAD_STREAM, [Deposited(1), bad_event()], expected_version=0)
    wait_for_feed_horizon(store)
    first = store.read_all()
    projection = Projection("balances", read_model.handle, on_undecodable="raise")

    with ProjectionRunner(store, projection, batch_size=1) as runner:
        with pytest.raises(DeserializationError):
            runner.run_once()  # the first batch is handled, the second is the bad event
        assert runner.checkpoint() == first[-1].position
        with pytest.raises(DeserializationError):
            runner.run_once()  # a batch that starts with it commits nothing
        assert runner.checkpoint() == first[-1].position

    assert read_model.applied() == [(BAD_STREAM, 1)]


def test_reset_forgets_the_skipped_events_and_the_rebuild_records_them_again(
    store: Any, read_model: ReadModel
) -> None:
    append_around_a_bad_event(store)
    projection = Projection("balances", read_model.handle, on_undecodable="skip")

    with ProjectionRunner(store, projection) as runner:
        runner.run_once()
        first = runner.skipped_events()
        runner.reset()
        assert runner.skipped_events() == []
        runner.run_once()
        again = runner.skipped_events()

    assert [(s.stream_id, s.version, s.position) for s in again] == [
        (s.stream_id, s.version, s.position) for s in first
    ]


def test_skipped_events_belong_to_their_projection(store: Any, read_model: ReadModel) -> None:
    append_around_a_bad_event(store)
    skipping = Projection("skipping", lambda event, connection: None, on_undecodable="skip")
    other = Projection("other", lambda event, connection: None, on_undecodable="skip")

    with ProjectionRunner(store, skipping) as runner:
        runner.run_once()
        assert len(runner.skipped_events()) == 1
    with ProjectionRunner(store, other) as runner:
        assert runner.skipped_events() == []


def test_an_error_text_holding_a_nul_is_recorded(store: Any) -> None:
    """The class's complaint quotes the stored field name, NUL and all: a text
    column takes no NUL, so the record writes it as an escape."""
    store.append_events(BAD_STREAM, [NewEvent(BAD_TYPE, {"bo\x00gus": 1})], expected_version=0)
    wait_for_feed_horizon(store)
    skipping = Projection("skipping", lambda event, connection: None, on_undecodable="skip")

    with ProjectionRunner(store, skipping) as runner:
        assert runner.run_once() == 0
        (record,) = runner.skipped_events()

    assert "\x00" not in record.error
    assert "bo\\x00gus" in record.error


@pytest.mark.parametrize("value", ["ignore", "", None, True, "SKIP"])
def test_on_undecodable_takes_raise_or_skip_only(value: Any) -> None:
    with pytest.raises(ValidationError, match="on_undecodable"):
        Projection("p", lambda event, connection: None, on_undecodable=value)
