"""The store's notifier: autocommit appends commit without a NOTIFY and a thread
with a connection of its own sends one, coalesced, after them.

The cross-process test is the contract: a subscriber in another process gets
every event of 8 concurrent writer threads exactly once, long before its poll
could deliver them; with a notifier that drops wake-ups and the same long poll
it does not, so the check can fail.
"""

from __future__ import annotations

import gc
import json
import logging
import multiprocessing
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine

from eventstore import ANY, NewEvent, PostgresEventStore
from eventstore._notifier import COALESCE_INTERVAL, Notifier
from eventstore._sql import NOTIFY_CHANNEL
from eventstore.urls import normalize_url

WRITERS = 8
EVENTS_PER_WRITER = 40
LONG_POLL = 120.0
"""A poll_interval no test waits for: only a wake-up can deliver in time."""
DELIVERY_SECONDS = 10.0
"""How long after the writers finished the subscriber may take (the poll alone would take
LONG_POLL)."""


def _libpq(url: str) -> str:
    return normalize_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def url(event_store: PostgresEventStore, eventstore_database_url: str) -> str:
    """The test database, emptied."""
    return eventstore_database_url


@pytest.fixture
def listener(url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection of the test's own listening on the store's channel."""
    with psycopg.connect(_libpq(url), autocommit=True) as connection:
        connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
        yield connection


def _notifications(listener: psycopg.Connection[Any], seconds: float) -> list[psycopg.Notify]:
    return list(listener.notifies(timeout=seconds))


def _append(store: PostgresEventStore, stream_id: str, **options: Any) -> int:
    return store.append_events(
        stream_id, [NewEvent("Noted", {"s": stream_id})], expected_version=ANY, **options
    )


def _backend_alive(url: str, pid: int) -> bool:
    with psycopg.connect(_libpq(url), autocommit=True) as admin:
        return (
            admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
            is not None
        )


def _wait_until(condition: Any, what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _notifier_pid(store: PostgresEventStore, listener: psycopg.Connection[Any]) -> int:
    """The backend pid of the store's notifier connection (the sender of its NOTIFY)."""
    _append(store, f"find-notifier-{time.monotonic_ns()}")
    notes = _notifications(listener, 5.0)
    assert notes, "the append sent no wake-up"
    assert len({note.pid for note in notes}) == 1
    return notes[0].pid


class _DroppingNotifier(Notifier):
    """A notifier whose wake-ups are lost (the fault the poll exists for)."""

    def signal(self) -> None:
        pass


# --- the cross-process subscriber ---------------------------------------------------------

_SUBSCRIBER = """
import json, sys, time
from eventstore import PostgresEventStore

url, expected, poll, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
store = PostgresEventStore.from_url(url)
try:
    with store.subscribe(after=store.feed_head(), poll_interval=poll) as sub:
        while not store._listener.listening:
            time.sleep(0.01)
        print("ready", flush=True)
        received = []
        import threading
        done = threading.Event()
        def follow():
            for event in sub:
                received.append([event.stream_id, event.version])
                if len(received) >= expected:
                    break
            done.set()
        threading.Thread(target=follow, daemon=True).start()
        sys.stdin.readline()  # the writers finished
        done.wait(seconds)
        sub.stop()
    print(json.dumps(received), flush=True)
finally:
    store.close()
"""


def deliver_across_processes(url: str, *, drop_wakeups: bool) -> dict[str, Any]:
    """8 writer threads append to their own streams through one store while a
    subscriber in another process (poll_interval LONG_POLL) follows the feed;
    returns what it received within DELIVERY_SECONDS of the last append:
    ``missing`` and ``duplicated`` (stream, version) pairs, and ``received``."""
    expected = {(f"w{w}", v) for w in range(WRITERS) for v in range(1, EVENTS_PER_WRITER + 1)}
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _SUBSCRIBER,
            url,
            str(len(expected)),
            str(LONG_POLL),
            str(DELIVERY_SECONDS),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdin is not None
        assert child.stdout.readline().strip() == "ready"
        store = PostgresEventStore.from_url(url, pool_size=WRITERS, max_overflow=0)
        try:
            if drop_wakeups:
                store._notifier = _DroppingNotifier(store.engine)
            errors: list[BaseException] = []

            def write(writer: int) -> None:
                try:
                    for version in range(EVENTS_PER_WRITER):
                        store.append_events(
                            f"w{writer}",
                            [NewEvent("Noted", {"v": version})],
                            expected_version=version,
                        )
                except BaseException as exc:  # pragma: no cover - reported below
                    errors.append(exc)

            threads = [threading.Thread(target=write, args=(w,)) for w in range(WRITERS)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert not errors, errors
        finally:
            store.close()
        child.stdin.write("done\n")
        child.stdin.flush()
        output, _ = child.communicate(timeout=DELIVERY_SECONDS + 30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    received = [tuple(pair) for pair in json.loads(output)]
    return {
        "received": received,
        "missing": expected - set(received),
        "duplicated": {pair for pair in received if received.count(pair) > 1},
    }


def test_a_subscriber_in_another_process_gets_every_event_of_8_writers_exactly_once(
    url: str,
) -> None:
    outcome = deliver_across_processes(url, drop_wakeups=False)
    assert not outcome["missing"], f"{len(outcome['missing'])} events not delivered in time"
    assert not outcome["duplicated"]
    assert len(outcome["received"]) == WRITERS * EVENTS_PER_WRITER
    for writer in range(WRITERS):  # each stream in order
        versions = [v for s, v in outcome["received"] if s == f"w{writer}"]
        assert versions == sorted(versions)


def test_the_cross_process_check_fails_when_wake_ups_are_dropped_and_the_poll_is_too_slow(
    url: str,
) -> None:
    outcome = deliver_across_processes(url, drop_wakeups=True)
    assert outcome["missing"], "events arrived with no wake-up: the check above proves nothing"


# --- coalescing ---------------------------------------------------------------------------------


def test_a_burst_of_signals_sends_a_handful_of_notifies(
    url: str, listener: psycopg.Connection[Any]
) -> None:
    engine = create_engine(normalize_url(url))
    notifier = Notifier(engine)
    try:
        for _ in range(1000):
            notifier.signal()
        notes = _notifications(listener, 0.5)
    finally:
        notifier.close()
        engine.dispose()
    assert 1 <= len(notes) <= 3


def test_close_sends_the_wake_up_still_owed(url: str, listener: psycopg.Connection[Any]) -> None:
    """A commit signalled while the thread waits out its interval is notified when
    the store closes (the writers of a process that exits right after appending)."""
    engine = create_engine(normalize_url(url))
    notifier = Notifier(engine, interval=30.0)
    try:
        notifier.signal()
        assert len(_notifications(listener, 2.0)) == 1
        notifier.signal()  # owed: the next NOTIFY is 30 s away
        assert _notifications(listener, 0.3) == []
        notifier.close()
        assert len(_notifications(listener, 2.0)) == 1, "the owed wake-up was dropped"
    finally:
        notifier.close()
        engine.dispose()


def test_1000_appends_send_at_most_one_notify_per_interval(
    url: str, listener: psycopg.Connection[Any]
) -> None:
    with PostgresEventStore.from_url(url, pool_size=4, max_overflow=0) as store:
        _notifier_pid(store, listener)  # started, and its first wake-up drained
        started = time.monotonic()

        def write(writer: int) -> None:
            for _ in range(250):
                _append(store, f"burst-{writer}")

        threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        seconds = time.monotonic() - started
        notes = _notifications(listener, 0.3)
    assert notes, "the burst sent no wake-up at all"
    assert len(notes) <= seconds / COALESCE_INTERVAL + 2, (len(notes), seconds)


# --- appends through a caller's transaction -------------------------------------------------


def test_connection_appends_wake_on_commit_not_before_and_never_on_rollback(
    url: str, listener: psycopg.Connection[Any]
) -> None:
    with PostgresEventStore.from_url(url) as store:
        with store.transaction() as connection:
            _append(store, "in-tx", connection=connection)
            assert _notifications(listener, 0.3) == [], "woken before the commit"
        assert len(_notifications(listener, 2.0)) == 1, "no wake-up at the commit"

        with store.engine.connect() as connection:
            transaction = connection.begin()
            _append(store, "rolled-back", connection=connection)
            transaction.rollback()
        assert _notifications(listener, 0.3) == [], "a rolled-back append woke subscribers"
        assert not store._notifier.running, "the notifier is for autocommit appends"  # type: ignore[union-attr]


def test_notify_false_has_no_notifier(url: str, listener: psycopg.Connection[Any]) -> None:
    with PostgresEventStore.from_url(url, notify=False) as store:
        _append(store, "quiet")
        assert store._notifier is None
        assert _notifications(listener, 0.3) == []


# --- a lost connection, close, fork, garbage collection -------------------------------------------


def test_a_terminated_notifier_connection_is_reopened_and_wakes_again(
    url: str, listener: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    with PostgresEventStore.from_url(url) as store:
        first = _notifier_pid(store, listener)
        with psycopg.connect(_libpq(url), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first,))
        _wait_until(lambda: not _backend_alive(url, first), "the backend to end")
        with caplog.at_level(logging.WARNING, logger="eventstore._notifier"):
            _append(store, "after-terminate")  # never raises into the appender
            notes = _notifications(listener, 5.0)
        assert notes, "no wake-up after the notifier's connection was terminated"
        assert {note.pid for note in notes} != {first}
        assert any("cannot send the NOTIFY" in record.getMessage() for record in caplog.records)


def test_a_notifier_that_cannot_connect_never_raises_into_the_appender(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")
    notifier = Notifier(engine)
    try:
        with caplog.at_level(logging.WARNING, logger="eventstore._notifier"):
            notifier.signal()
            _wait_until(lambda: caplog.records, "the warning")
            notifier.signal()
        assert notifier.running
    finally:
        notifier.close()
        engine.dispose()
    assert not notifier.running


def test_close_stops_the_thread_and_closes_its_connection(
    url: str, listener: psycopg.Connection[Any]
) -> None:
    store = PostgresEventStore.from_url(url)
    pid = _notifier_pid(store, listener)
    thread = store._notifier._thread  # type: ignore[union-attr]
    assert thread is not None
    assert thread.is_alive()
    store.close()
    assert not thread.is_alive(), "close() did not join the notifier"
    _wait_until(lambda: not _backend_alive(url, pid), "the notifier's backend to end", 5.0)


def _append_in_child(store: PostgresEventStore, queue: Any) -> None:
    try:
        _append(store, "from-the-child")
        queue.put("ok")
    except BaseException as exc:  # pragma: no cover - reported by the parent
        queue.put(repr(exc))
    finally:
        store.close()


def test_a_forked_child_sends_its_own_wake_ups_and_the_parent_keeps_its_own(
    url: str, listener: psycopg.Connection[Any]
) -> None:
    with PostgresEventStore.from_url(url) as store:
        parent = _notifier_pid(store, listener)
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        child = context.Process(target=_append_in_child, args=(store, queue))
        child.start()
        try:
            child.join(20)
            assert queue.get(timeout=5) == "ok"
        finally:
            if child.is_alive():
                child.kill()
                child.join()
        from_child = _notifications(listener, 2.0)
        assert from_child
        assert parent not in {note.pid for note in from_child}
        assert _backend_alive(url, parent), "the child closed the parent's notifier connection"
        assert _notifier_pid(store, listener) == parent


def test_an_unclosed_store_that_is_collected_stops_its_notifier(
    url: str, listener: psycopg.Connection[Any]
) -> None:
    store = PostgresEventStore.from_url(url)
    pid = _notifier_pid(store, listener)
    notifier = weakref.ref(store._notifier)  # type: ignore[arg-type]
    thread = store._notifier._thread  # type: ignore[union-attr]
    engine = store.engine
    gone = weakref.ref(store)
    del store
    gc.collect()
    assert gone() is None, "something holds the store"
    try:
        assert thread is not None
        thread.join(5)
        assert not thread.is_alive(), "the notifier outlived its store"
        assert notifier() is None or not notifier().running  # type: ignore[union-attr]
        _wait_until(lambda: not _backend_alive(url, pid), "the notifier's backend to end", 5.0)
    finally:
        engine.dispose()


# --- the subscriber's side of a wake-up ---------------------------------------------------


def test_a_short_page_ends_the_catch_up_without_an_empty_read(url: str) -> None:
    """Each wake-up costs the subscriber one read, not two: a page shorter than
    batch_size was the end of the visible feed, so the subscription waits
    (armed before that read) instead of reading again to find nothing."""
    with PostgresEventStore.from_url(url, notify=False) as store:
        for i in range(3):
            _append(store, f"short-{i}")
        reads: list[int] = []
        original = store._feed_rows

        def counted(*args: Any, **kwargs: Any) -> Any:
            reads.append(1)
            return original(*args, **kwargs)

        store._feed_rows = counted  # type: ignore[method-assign]
        delivered: list[Any] = []
        with store.subscribe(poll_interval=LONG_POLL) as subscription:
            # Connecting, the listener wakes every waiter once (it may have missed
            # notifications): let that happen before the first read.
            _wait_until(lambda: store._listener.listening, "the listener")
            follower = threading.Thread(target=lambda: delivered.extend(subscription), daemon=True)
            follower.start()
            _wait_until(lambda: len(delivered) == 3, "the catch-up")
            time.sleep(0.3)
            assert len(reads) == 1, "the subscription read again after a short page"
            _append(store, "short-3")  # no wake-up (notify=False): the poll is 120 s away
            time.sleep(0.3)
            assert len(delivered) == 3
        follower.join(5)
