"""Subscriptions to the global feed: catch-up, then live delivery, exactly once.

Each subscription is consumed on its own thread by a :class:`Collector`; the test
thread waits for it with deadlines, never with sleeps. PostgreSQL-only tests prove
that NOTIFY (not polling) wakes a subscriber, that polling alone still delivers,
and that a subscriber whose connections are terminated reconnects and resumes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import psycopg
import pytest
from _store_helpers import STORE_KINDS, store_for
from sqlalchemy import text
from sqlalchemy.engine import make_url

from eventstore import (
    ANY,
    NewEvent,
    Position,
    PostgresEventStore,
    RecordedEvent,
    Subscription,
    ValidationError,
)
from eventstore._sql import NOTIFY_CHANNEL

DEADLINE_SECONDS = 10.0
SUBSCRIBER_APPLICATION_NAME = "eventstore-test-subscriber"


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest) -> Any:
    return store_for(request, request.param)


def noted(stream_id: str, n: int, event_type: str = "Noted") -> NewEvent:
    return NewEvent(event_type, {"stream": stream_id, "n": n})


def key(event: RecordedEvent) -> tuple[str, int]:
    return event.stream_id, event.version


def append_one(store: Any, stream_id: str, event_type: str = "Noted") -> tuple[str, int]:
    version = store.append_events(
        stream_id, [noted(stream_id, 0, event_type)], expected_version=ANY
    )
    return stream_id, version


class Collector:
    """Iterates a subscription on a thread and lets the test wait for what arrives."""

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self.events: list[RecordedEvent] = []
        self.error: BaseException | None = None
        self.finished = threading.Event()
        self._arrived = threading.Condition()
        self.thread = threading.Thread(target=self._run, name="subscriber", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for event in self.subscription:
                with self._arrived:
                    self.events.append(event)
                    self._arrived.notify_all()
        except BaseException as exc:
            self.error = exc
        finally:
            self.finished.set()
            with self._arrived:
                self._arrived.notify_all()

    def wait_for(self, count: int, timeout: float = DEADLINE_SECONDS) -> list[RecordedEvent]:
        """The events delivered once at least ``count`` have arrived; fails at the deadline."""
        with self._arrived:
            self._arrived.wait_for(
                lambda: len(self.events) >= count or self.finished.is_set(), timeout
            )
            delivered = list(self.events)
        if self.error is not None:
            raise AssertionError(f"the subscription raised {self.error!r}") from self.error
        assert len(delivered) >= count, (
            f"{len(delivered)} of {count} events delivered within {timeout}s"
        )
        return delivered

    def stop(self, timeout: float = DEADLINE_SECONDS) -> list[RecordedEvent]:
        """Stop the subscription, wait for its thread, return everything delivered."""
        self.subscription.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"iteration did not end within {timeout}s of stop()"
        if self.error is not None:
            raise AssertionError(f"the subscription raised {self.error!r}") from self.error
        return list(self.events)


def assert_once_in_feed_order(delivered: list[RecordedEvent], store: Any) -> None:
    keys = [key(e) for e in delivered]
    assert len(keys) == len(set(keys)), "an event was delivered twice"
    positions = [e.position for e in delivered]
    assert all(a is not None and b is not None and a < b for a, b in pairwise(positions))
    next_version: dict[str, int] = {}
    for stream_id, version in keys:
        assert version > next_version.get(stream_id, 0), f"{stream_id} v{version} out of order"
        next_version[stream_id] = version


# --- both stores --------------------------------------------------------------------------


def test_subscription_catches_up_then_delivers_live_events(store: Any) -> None:
    caught_up = [append_one(store, f"order-{i % 2}") for i in range(5)]

    with store.subscribe(poll_interval=0.2) as sub:
        collector = Collector(sub)
        assert [key(e) for e in collector.wait_for(5)] == caught_up

        live: list[tuple[str, int]] = []
        writer = threading.Thread(
            target=lambda: live.extend(append_one(store, f"order-{i % 3}") for i in range(5)),
            name="writer",
        )
        writer.start()
        writer.join(DEADLINE_SECONDS)
        assert not writer.is_alive()

        delivered = collector.wait_for(10)
        collector.stop()

    assert [key(e) for e in delivered] == caught_up + live
    assert len(collector.events) == 10, "nothing was delivered twice or invented"
    assert_once_in_feed_order(delivered, store)
    assert delivered == store.read_all()
    assert sub.position == delivered[-1].position


def test_subscription_resumes_after_a_checkpoint(store: Any) -> None:
    for i in range(6):
        append_one(store, f"s-{i % 2}")
    with store.subscribe(poll_interval=0.2) as first:
        start = Collector(first).wait_for(6)
        first.stop()
    checkpoint = start[2].position
    assert isinstance(checkpoint, Position)

    with store.subscribe(after=Position.parse(str(checkpoint)), poll_interval=0.2) as sub:
        assert sub.position == checkpoint
        collector = Collector(sub)
        assert [key(e) for e in collector.wait_for(3)] == [key(e) for e in start[3:]]
        later = append_one(store, "s-9")
        delivered = collector.wait_for(4)
        collector.stop()

    assert [key(e) for e in delivered] == [key(e) for e in start[3:]] + [later]
    assert sub.position == delivered[-1].position


def test_subscription_filters_by_event_type_and_stream_prefix(store: Any) -> None:
    append_one(store, "order-1", "Placed")
    append_one(store, "order-1", "Paid")
    append_one(store, "cart-1", "Placed")
    append_one(store, "order_1", "Placed")

    with store.subscribe(event_types=["Placed"], stream_prefix="order-", poll_interval=0.2) as sub:
        collector = Collector(sub)
        assert [key(e) for e in collector.wait_for(1)] == [("order-1", 1)]
        append_one(store, "cart-2", "Placed")
        append_one(store, "order-2", "Paid")
        append_one(store, "orderX2", "Placed")
        wanted = append_one(store, "order-2", "Placed")
        delivered = collector.wait_for(2)
        collector.stop()

    assert [key(e) for e in delivered] == [("order-1", 1), wanted]
    assert {e.event_type for e in delivered} == {"Placed"}


def test_concurrent_writers_are_each_delivered_once(store: Any) -> None:
    writers, per_writer = 4, 25
    with store.subscribe(poll_interval=0.2, batch_size=7) as sub:
        collector = Collector(sub)
        barrier = threading.Barrier(writers)

        def write(index: int) -> None:
            barrier.wait(DEADLINE_SECONDS)
            for n in range(per_writer):
                store.append_events(
                    f"w-{(index + n) % 3}", [noted(f"w-{index}", n)], expected_version=ANY
                )

        threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(DEADLINE_SECONDS)
        assert not any(t.is_alive() for t in threads)
        delivered = collector.wait_for(writers * per_writer)
        collector.stop()

    assert len(collector.events) == writers * per_writer
    assert_once_in_feed_order(delivered, store)
    assert sorted(key(e) for e in delivered) == sorted(key(e) for e in store.read_all())


def test_stop_from_another_thread_ends_a_waiting_subscription_promptly(store: Any) -> None:
    append_one(store, "s")
    poll_interval = 1.0
    with store.subscribe(poll_interval=poll_interval) as sub:
        collector = Collector(sub)
        collector.wait_for(1)
        stopper = threading.Thread(target=sub.stop, name="stopper")
        started = time.monotonic()
        stopper.start()
        collector.thread.join(poll_interval + 2.0)
        elapsed = time.monotonic() - started
        stopper.join(DEADLINE_SECONDS)
    assert not collector.thread.is_alive(), "iteration did not end after stop()"
    assert collector.error is None
    assert elapsed < poll_interval + 2.0
    with pytest.raises(StopIteration):
        next(sub)


def test_a_stopped_or_exited_subscription_yields_nothing(store: Any) -> None:
    append_one(store, "s")
    sub = store.subscribe(poll_interval=0.2)
    sub.stop()
    with pytest.raises(StopIteration):
        next(sub)
    sub.stop()  # stopping twice is harmless

    with store.subscribe(poll_interval=0.2) as other:
        pass
    with pytest.raises(StopIteration):
        next(other)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"poll_interval": 0}, id="poll-interval-zero"),
        pytest.param({"poll_interval": -1.0}, id="poll-interval-negative"),
        pytest.param({"poll_interval": "1"}, id="poll-interval-str"),
        pytest.param({"batch_size": 0}, id="batch-size-zero"),
        pytest.param({"event_types": []}, id="event-types-empty"),
        pytest.param({"after": "1-2"}, id="after-str"),
        pytest.param({"stream_prefix": 3}, id="prefix-int"),
    ],
)
def test_subscribe_refuses_bad_arguments(store: Any, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        store.subscribe(**kwargs)


# --- PostgreSQL: NOTIFY, polling, reconnection --------------------------------------------


def _libpq_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class ReadWatch:
    """Observes the subscription's feed reads, to know when it has found nothing
    new and gone to wait: anything it delivers after that came from a wake-up."""

    def __init__(self, store: PostgresEventStore) -> None:
        self.idle = threading.Event()
        original = store._feed_rows

        def watched(*args: Any, **kwargs: Any) -> Any:
            rows, end = original(*args, **kwargs)
            if rows:
                self.idle.clear()
            else:
                self.idle.set()
            return rows, end

        store._feed_rows = watched  # type: ignore[method-assign]


def test_notify_wakes_a_subscriber_long_before_its_poll_interval(
    event_store: PostgresEventStore,
) -> None:
    store = event_store
    append_one(store, "warm")
    watch = ReadWatch(store)
    with store.subscribe(poll_interval=30.0) as sub:
        collector = Collector(sub)
        collector.wait_for(1)
        assert watch.idle.wait(DEADLINE_SECONDS), "the subscriber never went idle"

        # Another transaction somewhere on the server can hold a fresh event back for
        # a moment; each further append notifies again. Only a wake-up can deliver:
        # the subscriber is idle and its next poll is 30 s away.
        started = time.monotonic()
        delivered: list[RecordedEvent] = []
        while time.monotonic() - started < 5.0 and len(delivered) < 2:
            append_one(store, "ping")
            with collector._arrived:
                collector._arrived.wait_for(lambda: len(collector.events) >= 2, 1.0)
                delivered = list(collector.events)
        elapsed = time.monotonic() - started
        collector.stop()

    assert len(delivered) >= 2, "NOTIFY did not wake the subscriber within 5 s"
    assert elapsed < 5.0
    assert delivered[1].stream_id == "ping"


def test_appends_notify_the_channel_when_their_transaction_commits(
    event_store: PostgresEventStore, eventstore_database_url: str
) -> None:
    store = event_store
    with psycopg.connect(_libpq_url(eventstore_database_url), autocommit=True) as listener:
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")

        store.append_events("a", [noted("a", 1)], expected_version=0)
        notes = list(listener.notifies(timeout=DEADLINE_SECONDS, stop_after=1))
        assert [n.channel for n in notes] == [NOTIFY_CHANNEL]

        with store.engine.connect() as conn:
            tx = conn.begin()
            store.append_events("b", [noted("b", 1)], expected_version=0, connection=conn)
            assert list(listener.notifies(timeout=0.3)) == [], "notified before the commit"
            tx.commit()
        notes = list(listener.notifies(timeout=DEADLINE_SECONDS, stop_after=1))
        assert [n.channel for n in notes] == [NOTIFY_CHANNEL]

        with store.engine.connect() as conn:
            tx = conn.begin()
            store.append_events("c", [noted("c", 1)], expected_version=0, connection=conn)
            tx.rollback()
        assert list(listener.notifies(timeout=0.3)) == [], "a rolled-back append notified"


def test_polling_delivers_when_no_notification_comes(
    event_store: PostgresEventStore, eventstore_database_url: str
) -> None:
    """What a subscriber behind a pooler that drops LISTEN experiences: events
    arrive with no NOTIFY (written here by plain SQL), and polling delivers them."""
    store = event_store
    append_one(store, "warm")
    watch = ReadWatch(store)
    payload = store.codec.encode_payload({"stream": "quiet", "n": 1})
    with (
        psycopg.connect(_libpq_url(eventstore_database_url), autocommit=True) as listener,
        store.subscribe(poll_interval=0.3) as sub,
    ):
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        collector = Collector(sub)
        collector.wait_for(1)
        assert watch.idle.wait(DEADLINE_SECONDS)
        # The store's notifier sends the wake-up of "warm" after its commit,
        # possibly after this LISTEN began: let it arrive before the plain insert.
        while list(listener.notifies(timeout=0.3)):
            pass

        with store.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO events (stream_id, version, event_type, event_data) "
                    "VALUES ('quiet', 1, 'Noted', :data)"
                ),
                {"data": payload},
            )
        assert list(listener.notifies(timeout=0.2)) == [], "the plain insert notified"

        delivered = collector.wait_for(2)
        collector.stop()

    assert [key(e) for e in delivered] == [("warm", 1), ("quiet", 1)]
    assert delivered[1].data == {"stream": "quiet", "n": 1}


def _subscriber_pids(store: PostgresEventStore, listening_only: bool) -> list[int]:
    condition = "AND query LIKE 'LISTEN%'" if listening_only else ""
    with store.engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    f"AND application_name = :app AND pid <> pg_backend_pid() {condition}"
                ),
                {"app": SUBSCRIBER_APPLICATION_NAME},
            ).scalars()
        )


def _wait_for(condition: Any, what: str, timeout: float = DEADLINE_SECONDS) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout}s"
        time.sleep(0.02)


@pytest.fixture
def subscriber_store(
    event_store: PostgresEventStore, eventstore_database_url: str
) -> Iterator[PostgresEventStore]:
    """A second store on the same (emptied) database whose connections carry an
    application name, so the test can find and terminate them."""
    url = make_url(eventstore_database_url).update_query_dict(
        {"application_name": SUBSCRIBER_APPLICATION_NAME}
    )
    store = PostgresEventStore.from_url(url)
    try:
        yield store
    finally:
        store.close()
        # The listening thread closes its connection soon after close(), not
        # during it: wait, so that no test counts another test's connections.
        _wait_for(
            lambda: not _subscriber_pids(event_store, listening_only=False),
            "the closed subscriber store's connections to end",
        )


@pytest.mark.parametrize("victims", ["listen-connection", "every-connection"])
def test_subscription_survives_terminated_connections_and_delivers_each_event_once(
    event_store: PostgresEventStore, subscriber_store: PostgresEventStore, victims: str
) -> None:
    writer = event_store
    expected = [append_one(writer, f"s-{i % 2}") for i in range(3)]
    listening_only = victims == "listen-connection"

    with subscriber_store.subscribe(poll_interval=0.5, batch_size=2) as sub:
        collector = Collector(sub)
        collector.wait_for(3)

        listen_pids = _wait_for(
            lambda: _subscriber_pids(writer, listening_only=True), "a LISTEN connection"
        )
        victims_pids = _subscriber_pids(writer, listening_only=listening_only)
        assert set(listen_pids) <= set(victims_pids)
        with writer.engine.connect() as conn:
            for pid in victims_pids:
                assert conn.execute(
                    text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}
                ).scalar()
        _wait_for(
            lambda: not set(victims_pids) & set(_subscriber_pids(writer, listening_only=False)),
            "termination",
        )

        # Written while the subscriber has no connection at all.
        expected += [append_one(writer, f"s-{i % 2}") for i in range(3)]
        collector.wait_for(6)

        relistening = _wait_for(
            lambda: set(_subscriber_pids(writer, listening_only=True)) - set(listen_pids),
            "a new LISTEN connection",
        )
        assert relistening

        expected += [append_one(writer, f"s-{i % 3}") for i in range(3)]
        delivered = collector.wait_for(9)
        collector.stop()

    assert [key(e) for e in delivered] == expected
    assert len(collector.events) == 9
    assert_once_in_feed_order(delivered, writer)
    assert delivered == writer.read_all()


# --- notify=False: appends without NOTIFY -------------------------------------------------


def notifications_after(url: str, append: Any) -> int:
    """How many notifications on the store's channel ``append()`` sends."""
    libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq, autocommit=True) as listener:
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        append()
        return sum(1 for _ in listener.notifies(timeout=0.5))


@pytest.mark.parametrize(("notify", "expected"), [(True, 1), (False, 0)])
def test_notify_false_appends_without_a_notification(
    eventstore_database_url: str, event_store: PostgresEventStore, notify: bool, expected: int
) -> None:
    with PostgresEventStore.from_url(eventstore_database_url, notify=notify) as writer:
        assert writer.notify is notify
        one = notifications_after(eventstore_database_url, lambda: append_one(writer, "order-1"))
        batch = notifications_after(
            eventstore_database_url,
            lambda: writer.append_events(
                "order-2", [NewEvent("Placed", {}), NewEvent("Paid", {})], expected_version=0
            ),
        )
    assert (one, batch) == (expected, expected)


def test_a_subscription_still_sees_appends_without_notify_by_polling(
    eventstore_database_url: str, event_store: PostgresEventStore
) -> None:
    with (
        PostgresEventStore.from_url(eventstore_database_url, notify=False) as writer,
        event_store.subscribe(poll_interval=0.2) as sub,
    ):
        collector = Collector(sub)
        written = [append_one(writer, f"order-{i}") for i in range(3)]
        delivered = collector.wait_for(3)
        collector.stop()
    assert [key(e) for e in delivered] == written


@pytest.mark.parametrize("notify", ["yes", 1, None])
def test_notify_must_be_a_bool(eventstore_database_url: str, notify: Any) -> None:
    with pytest.raises(ValidationError, match="notify must be True or False"):
        PostgresEventStore.from_url(eventstore_database_url, notify=notify)
