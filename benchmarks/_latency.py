"""Operation 10: append-to-delivery latency, p50 and p99.

A probe event is appended to a stream named ``probe-<CLOCK_MONOTONIC ns>`` (the
send time travels in the stream id, so no side decodes anything to time it,
and a subscriber in another process reads the same clock); the subscriber
records ``now - sent`` when it gets it. Cases: subscriber in the same process
or in another, idle (one probe at a time) or under 8 writer threads.

Sides:

- ``library``: ``store.subscribe()`` on a ``notify=True`` store; the probes and
  the load are ``append_events`` on that store (the notifier wakes the subscriber).
- ``floor``: raw psycopg, the cheapest LISTEN/NOTIFY loop: the probe is the
  library's silent insert then a ``NOTIFY`` on the same autocommit connection;
  the subscriber LISTENs on one connection and reads the library's ``READ_ALL``
  on another whenever woken; the load is 8 raw connections doing the same
  insert-then-NOTIFY.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
from psycopg.types.numeric import Int8

from benchmarks._context import Bench
from benchmarks._floor import FloorSide
from benchmarks._library import LibrarySide
from benchmarks._plan import Plan
from benchmarks._results import CaseResult, Target, case_from_latencies
from benchmarks._sides import FLOOR, LIBRARY, libpq_url
from eventstore import ANY, NewEvent, PostgresEventStore
from eventstore._sql import APPEND_ONE_SILENT, FEED_HEAD, NOTIFY, NOTIFY_CHANNEL, READ_ALL

_PROBES = {"full": 300, "quick": 20, "scale": 300}
_ROUNDS = {"full": 3, "quick": 1, "scale": 3}
_LOAD_THREADS = 8
_GAP = 0.01
"""Seconds between two probes: each is delivered before the next is sent when idle."""
POLL_INTERVAL = 1.0
"""The subscribers' poll_interval (the library's default): no event may take longer."""
_PAGE = 1000


# -- subscribers ------------------------------------------------------------------------


OnEvent = Callable[[str], None]
"""What a subscriber calls with each delivered event's stream id."""


def _timer(latencies: list[float]) -> OnEvent:
    """Records each probe's latency in ``latencies``."""

    def on_event(stream_id: str) -> None:
        if stream_id.startswith("probe-"):
            latencies.append((time.monotonic_ns() - int(stream_id[6:])) / 1e9)

    return on_event


def follow_library(
    url: str, stop: threading.Event, on_event: OnEvent, ready: threading.Event
) -> None:
    """Consume the feed from its head with ``store.subscribe()`` until ``stop``."""
    store = PostgresEventStore.from_url(url, pool_size=1, max_overflow=0)
    try:
        with store.subscribe(after=store.feed_head(), poll_interval=POLL_INTERVAL) as sub:
            stopper = threading.Thread(target=lambda: (stop.wait(), sub.stop()), daemon=True)
            stopper.start()
            while not store._listener.listening:
                time.sleep(0.005)
            ready.set()
            for event in sub:
                on_event(event.stream_id)
    finally:
        store.close()


def follow_floor(
    url: str, stop: threading.Event, on_event: OnEvent, ready: threading.Event
) -> None:
    """Raw psycopg: LISTEN on one connection, read ``READ_ALL`` on another when woken
    (or every POLL_INTERVAL), from the feed's head, until ``stop``."""
    with (
        psycopg.connect(libpq_url(url), autocommit=True) as listener,
        psycopg.connect(libpq_url(url), autocommit=True) as reader,
    ):
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        head = reader.execute(FEED_HEAD).fetchone()
        after = ("0", 0) if head is None else (str(head[0]), head[1])
        cursor = reader.cursor()
        ready.set()
        while not stop.is_set():
            cursor.execute(
                READ_ALL,
                {
                    "after_xid": after[0],
                    "after_position": Int8(after[1]),
                    "types": None,
                    "prefix": None,
                    "limit": Int8(_PAGE),
                },
                prepare=True,
            )
            rows = cursor.fetchall()
            for row in rows:
                on_event(row[0])
            if rows:
                after = (str(rows[-1][6]), rows[-1][7])
            if len(rows) < _PAGE:
                for _ in listener.notifies(timeout=min(POLL_INTERVAL, 0.1), stop_after=1):
                    pass


FOLLOWERS: dict[str, Callable[[str, threading.Event, OnEvent, threading.Event], None]] = {
    LIBRARY: follow_library,
    FLOOR: follow_floor,
}


@contextmanager
def subscriber(side: str, url: str, where: str) -> Iterator[list[float]]:
    """A running subscriber of ``side`` in this process or another; yields the list
    its latencies land in (filled on exit when in another process)."""
    seen: list[float] = []
    if where == "same":
        stop, ready = threading.Event(), threading.Event()
        thread = threading.Thread(
            target=FOLLOWERS[side], args=(url, stop, _timer(seen), ready), daemon=True
        )
        thread.start()
        if not ready.wait(30):
            raise RuntimeError("the subscriber did not start")
        try:
            yield seen
        finally:
            stop.set()
            thread.join(POLL_INTERVAL + 10)
        return
    child = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._latency", side, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdin is not None
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError("the subscriber process did not start")
        yield seen
        output, _ = child.communicate("stop\n", timeout=POLL_INTERVAL + 30)
        seen.extend(float(line) for line in output.split())
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def _child(side: str, url: str) -> None:
    stop, ready = threading.Event(), threading.Event()
    seen: list[float] = []
    thread = threading.Thread(
        target=FOLLOWERS[side], args=(url, stop, _timer(seen), ready), daemon=True
    )
    thread.start()
    ready.wait(30)
    print("ready", flush=True)
    sys.stdin.readline()
    time.sleep(POLL_INTERVAL + 0.2)  # the last probe is delivered, at worst by the poll
    stop.set()
    thread.join(POLL_INTERVAL + 10)
    print("\n".join(repr(value) for value in seen), flush=True)


# -- writers ----------------------------------------------------------------------------


class _Raw:
    """The floor's writer: the library's silent insert, then a NOTIFY, autocommit."""

    def __init__(self, url: str) -> None:
        self.side = FloorSide(url)

    def append(self, stream_id: str) -> None:
        cursor = self.side.cursor
        cursor.execute(
            APPEND_ONE_SILENT,
            {
                "stream_id": stream_id,
                "lowest": Int8(0),
                "highest": Int8(2**62),
                "type": "Probe",
                "data": b"\xa0",
                "metadata": "{}",
            },
            prepare=True,
        )
        cursor.execute(NOTIFY, prepare=True)

    def close(self) -> None:
        self.side.close()


def _library_append(store: PostgresEventStore) -> Callable[[str], None]:
    def append(stream_id: str) -> None:
        store.append_events(stream_id, [NewEvent("Probe", {})], expected_version=ANY)

    return append


@contextmanager
def _load(side: str, url: str, store: PostgresEventStore, threads: int) -> Iterator[None]:
    """``threads`` writers appending to their own streams until the block ends."""
    if threads == 0:
        yield
        return
    stop = threading.Event()
    raws = [_Raw(url) for _ in range(threads)] if side == FLOOR else []
    appends = [raw.append for raw in raws] if side == FLOOR else [_library_append(store)] * threads

    def write(index: int) -> None:
        stream_id = f"load-{side}-{index}-{time.monotonic_ns()}"
        while not stop.is_set():
            appends[index](stream_id)

    workers = [threading.Thread(target=write, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(0.2)
        yield
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
        for raw in raws:
            raw.close()


def _probe(side: str, url: str, store: PostgresEventStore, probes: int, load: int) -> None:
    """Latencies of ``probes`` probes sent by ``side`` while ``load`` writers run."""
    raw = _Raw(url) if side == FLOOR else None
    append = raw.append if raw is not None else _library_append(store)
    try:
        with _load(side, url, store, load):
            for _ in range(probes):
                append(f"probe-{time.monotonic_ns()}")
                time.sleep(_GAP)
    finally:
        if raw is not None:
            raw.close()


def latency(bench: Bench) -> list[CaseResult]:
    """Append-to-delivery latency per side, subscriber in this process and in another,
    idle and under 8 writers; sides interleaved round by round."""
    plan = bench.plan
    url = bench.database("latency")
    probes = _PROBES[plan.mode]
    library = LibrarySide(url, pool_size=_LOAD_THREADS + 1)
    cases = []
    try:
        for where in ("same", "other"):
            for load in (0, _LOAD_THREADS):
                label = f"{'same' if where == 'same' else 'another'} process, " + (
                    "idle" if load == 0 else f"{load} writers"
                )
                bench.log(f"append-to-delivery latency: {label}")
                samples: dict[str, list[list[float]]] = {LIBRARY: [], FLOOR: []}
                late: dict[str, int] = {LIBRARY: 0, FLOOR: 0}
                for round_number in range(_ROUNDS[plan.mode]):
                    order = [LIBRARY, FLOOR] if round_number % 2 == 0 else [FLOOR, LIBRARY]
                    for side in order:
                        with subscriber(side, url, where) as seen:
                            _probe(side, url, library.store, probes, load)
                            if where == "same":
                                deadline = time.monotonic() + POLL_INTERVAL + 5
                                while len(seen) < probes and time.monotonic() < deadline:
                                    time.sleep(0.01)
                        if len(seen) < probes:
                            raise RuntimeError(f"{side}: {len(seen)} of {probes} probes delivered")
                        samples[side].append(seen)
                        late[side] += sum(1 for value in seen if value > POLL_INTERVAL)
                cases.append(
                    case_from_latencies(
                        key=f"10.{where}.{'idle' if load == 0 else 'load'}",
                        operation=10,
                        title=f"append-to-delivery, {label}",
                        basis="time",
                        units_per_call=1,
                        rate_unit="events/s",
                        samples=samples,
                        extra={
                            "probes": probes,
                            "load_threads": load,
                            "later_than_poll_interval": late,
                            "poll_interval_s": POLL_INTERVAL,
                        },
                    )
                )
    finally:
        library.close()
    return cases


def targets(by_key: dict[str, CaseResult], plan: Plan) -> list[Target]:
    """Issue 15's latency targets: under 8 writers the library's p50 at most twice
    the raw LISTEN/NOTIFY floor's, and no event later than one poll_interval."""
    from benchmarks._targets import _check

    quick = "" if plan.is_claim else "quick run: not a claim"
    found = []
    for where in ("same", "other"):
        key = f"10.{where}.load"
        if key not in by_key:
            continue
        case = by_key[key]
        ratio = case.versus_floor.get(LIBRARY)
        found.append(
            _check(
                10,
                f"append-to-delivery p50 under 8 writers ({where} process) vs raw LISTEN/NOTIFY",
                None if ratio is None else ratio.median,
                "<=",
                2.0,
                quick,
            )
        )
        found.append(
            _check(
                10,
                f"events later than poll_interval under 8 writers ({where} process)",
                float(case.extra["later_than_poll_interval"][LIBRARY]),
                "<=",
                0.0,
                quick,
            )
        )
    return found


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2])
