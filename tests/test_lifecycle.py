"""A closed store is closed: every public call raises StoreClosedError, its live
subscriptions end, its projection runners return and give up their locks; close()
is idempotent and safe from any thread; a shared engine is left open."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _faults import count_backends, url_with
from _store_helpers import STORE_KINDS
from sqlalchemy import create_engine, text

from eventstore import (
    NO_STREAM,
    InMemoryEventStore,
    NewEvent,
    PostgresEventStore,
    Projection,
    ProjectionRunner,
    RecordedEvent,
)
from eventstore.errors import EventStoreError, StoreClosedError
from eventstore.urls import normalize_url

EVENT = NewEvent("Noted", {"n": 1})
STOP_SECONDS = 5.0
"""A subscription or a runner must end within this after close()."""


@pytest.fixture(params=STORE_KINDS)
def fresh_store(
    request: pytest.FixtureRequest, eventstore_database_url: str
) -> Iterator[PostgresEventStore | InMemoryEventStore]:
    """A store the test closes itself: from_url on the test database, or in memory."""
    if request.param == "memory":
        yield InMemoryEventStore()
        return
    request.getfixturevalue("event_store")  # empties the tables
    name = f"es_lifecycle_{uuid.uuid4().hex[:8]}"
    store = PostgresEventStore.from_url(url_with(eventstore_database_url, application_name=name))
    try:
        yield store
    finally:
        store.close()


def _public_calls(store: Any) -> dict[str, Callable[[], object]]:
    """One call of every public method that touches storage."""
    return {
        "append_events": lambda: store.append_events("s-1", [EVENT], expected_version=1),
        "load_events": lambda: store.load_events("s-1"),
        "iter_events": lambda: list(store.iter_events("s-1")),
        "stream_version": lambda: store.stream_version("s-1"),
        "save_snapshot": lambda: store.save_snapshot("s-1", 1, {"n": 1}),
        "load_snapshot": lambda: store.load_snapshot("s-1"),
        "delete_snapshot": lambda: store.delete_snapshot("s-1"),
        "read_all": lambda: store.read_all(),
        "iter_all": lambda: list(store.iter_all()),
        "subscribe": lambda: store.subscribe(),
        "ProjectionRunner": lambda: ProjectionRunner(store, Projection("p", lambda e, c: None)),
    }


def test_after_close_every_public_call_raises_store_closed_error(
    fresh_store: Any, eventstore_database_url: str
) -> None:
    store = fresh_store
    assert store.append_events("s-1", [EVENT], expected_version=NO_STREAM) == 1
    assert not store.closed
    store.close()
    assert store.closed

    for name, call in _public_calls(store).items():
        with pytest.raises(StoreClosedError) as raised:
            call()
        assert isinstance(raised.value, EventStoreError), name
        assert "the store was closed" in str(raised.value), name
        assert "build a new one" in str(raised.value), name

    if isinstance(store, PostgresEventStore):
        # No call opened a connection after close(): the store holds none.
        application = store.engine.url.query["application_name"]
        assert isinstance(application, str)
        assert count_backends(eventstore_database_url, application) == 0


def test_an_iterator_started_before_close_stops_reading_after_it(fresh_store: Any) -> None:
    store = fresh_store
    store.append_events("s-1", [EVENT, EVENT, EVENT], expected_version=NO_STREAM)
    events = store.iter_events("s-1", batch_size=1)
    assert next(events).version == 1
    store.close()
    with pytest.raises(StoreClosedError):
        next(events)


def test_close_is_idempotent_and_safe_from_many_threads_at_once(fresh_store: Any) -> None:
    store = fresh_store
    store.stream_version("s-1")
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def close() -> None:
        try:
            barrier.wait(5)
            store.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=close) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    store.close()
    assert errors == []
    assert store.closed


def test_the_in_memory_store_is_a_context_manager() -> None:
    with InMemoryEventStore() as store:
        store.append_events("s-1", [EVENT], expected_version=NO_STREAM)
    with pytest.raises(StoreClosedError):
        store.load_events("s-1")


def test_close_ends_a_live_subscription_iterated_in_another_thread(fresh_store: Any) -> None:
    store = fresh_store
    store.append_events("s-1", [EVENT], expected_version=NO_STREAM)
    subscription = store.subscribe(poll_interval=0.05)
    delivered: list[RecordedEvent] = []
    first = threading.Event()

    def follow() -> None:
        for event in subscription:
            delivered.append(event)
            first.set()

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    assert first.wait(STOP_SECONDS), "the subscription delivered nothing"
    started = time.monotonic()
    store.close()
    follower.join(STOP_SECONDS)

    assert not follower.is_alive(), "the subscription kept running after close()"
    assert time.monotonic() - started < STOP_SECONDS
    assert [event.version for event in delivered] == [1]


def test_close_makes_a_running_projection_runner_return_and_release_its_lock(
    fresh_store: Any, eventstore_database_url: str
) -> None:
    store = fresh_store
    store.append_events("s-1", [EVENT, EVENT], expected_version=NO_STREAM)
    handled: list[int] = []
    projection = Projection("lifecycle", lambda event, connection: handled.append(event.version))
    runner = ProjectionRunner(store, projection, poll_interval=0.05)
    stop = threading.Event()
    running = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    running.start()
    deadline = time.monotonic() + STOP_SECONDS
    while handled != [1, 2]:
        assert time.monotonic() < deadline, f"the runner handled {handled}"
        time.sleep(0.01)

    store.close()
    running.join(STOP_SECONDS)

    assert not running.is_alive(), "run() did not return after close()"
    if isinstance(store, PostgresEventStore):
        # Another store takes the projection's lock at once: the closed one let it go.
        with (
            PostgresEventStore.from_url(eventstore_database_url) as other,
            ProjectionRunner(other, projection, lock_timeout=1) as taker,
        ):
            assert taker.run_once() == 0
    else:
        assert not store._projection_locks["lifecycle"].locked()


def test_closing_a_store_on_a_shared_engine_leaves_the_engine_open(
    event_store: PostgresEventStore, eventstore_database_url: str
) -> None:
    engine = create_engine(normalize_url(eventstore_database_url))
    try:
        store = PostgresEventStore(engine)
        store.append_events("s-1", [EVENT], expected_version=NO_STREAM)
        store.close()
        with pytest.raises(StoreClosedError):
            store.stream_version("s-1")
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM events")).scalar() == 1
        assert PostgresEventStore(engine).stream_version("s-1") == 1
    finally:
        engine.dispose()
