"""Operation 9: 1, 4 and 8 writer threads on their own streams while a live
subscription in the same process consumes everything they write.

Sides (interleaved round by round):

- ``library``: a ``notify=True`` store (wake-ups through the store's notifier)
  and ``store.subscribe()``;
- ``library/no-notify``: the same engine with ``notify=False`` (no wake-ups; the
  subscription polls);
- ``floor``: raw psycopg, the cheapest way: one autocommit connection per
  writer running the library's silent insert, and the raw LISTEN/READ_ALL
  subscriber of operation 10 (nothing wakes it: it polls);
- ``floor/notify-in-commit``: the same raw writers running the insert with its
  NOTIFY inside the statement (what every ``notify=True`` append sent before the
  notifier): the price of the commit-path NOTIFY.

After each run the subscriber must have caught up with everything written.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from benchmarks._context import Bench
from benchmarks._floor import FloorSide
from benchmarks._harness import interleave, rotation, run_threads
from benchmarks._latency import POLL_INTERVAL, follow_floor, follow_library
from benchmarks._library import LibrarySide
from benchmarks._plan import Plan
from benchmarks._results import CaseResult, Target, case_from_latencies, case_from_rates
from benchmarks._sides import FLOOR, LIBRARY, LIBRARY_NO_NOTIFY

FLOOR_NOTIFY_IN_COMMIT = "floor/notify-in-commit"

_THREADS = (1, 4, 8)
_ROUNDS = {"full": 3, "quick": 1, "scale": 3}
_SECONDS = {"full": 2.0, "quick": 0.2, "scale": 2.0}
_SINGLE_CALLS = {"full": 300, "quick": 20, "scale": 300}
"""Timed single appends per side per round (no subscriber): the notifier's cost on
one appender's latency."""

Append = Callable[[str, int, int], int]


def _writer(append: Append, stream_id: str) -> Callable[[float], int]:
    def write(deadline: float) -> int:
        clock = time.perf_counter
        version = 0
        while clock() < deadline:
            version = append(stream_id, version, 1)
        return version

    return write


def _rate_with_subscriber(
    url: str, appends: list[Append], follow: Callable[..., None], prefix: str, seconds: float
) -> float:
    """Events/s of one writer per append while ``follow`` consumes the feed; fails
    if the subscriber has not caught up within a poll_interval of the end."""
    stop, ready = threading.Event(), threading.Event()
    counted = [0]

    def count(stream_id: str) -> None:
        counted[0] += 1

    follower = threading.Thread(target=follow, args=(url, stop, count, ready), daemon=True)
    try:
        follower.start()
        if not ready.wait(30):
            raise RuntimeError("the subscriber did not start")
        run = run_threads(
            [_writer(append, f"{prefix}-{i}") for i, append in enumerate(appends)], seconds
        )
        written = sum(run.results)
        deadline = time.monotonic() + POLL_INTERVAL + 5
        while counted[0] < written and time.monotonic() < deadline:
            time.sleep(0.01)
        if counted[0] != written:
            raise RuntimeError(f"the subscriber got {counted[0]} of {written} events")
    finally:
        stop.set()
        follower.join(POLL_INTERVAL + 10)
    return written / run.seconds


def _single_appends(bench: Bench, url: str) -> CaseResult:
    """One thread's single-event append p50: ``notify=True`` (the silent insert,
    then a signal to the notifier, whose thread sends the NOTIFY meanwhile) against
    ``notify=False`` on the same pool, and the raw silent insert; interleaved."""
    plan = bench.plan
    library = LibrarySide(url, pool_size=1)
    quiet = library.without_notify()
    floor = FloorSide(url)
    try:
        assert quiet is not None
        versions = {LIBRARY: 0, LIBRARY_NO_NOTIFY: 0, FLOOR: 0}
        appends: dict[str, Append] = {
            LIBRARY: library.append,
            LIBRARY_NO_NOTIFY: quiet.append,
            FLOOR: floor.append_no_notify,
        }

        def call(name: str) -> Callable[[], object]:
            stream_id = f"single-{bench.run_id}-{name}"

            def append() -> None:
                versions[name] = appends[name](stream_id, versions[name], 1)

            return append

        samples = interleave(
            {name: call(name) for name in appends},
            rounds=_ROUNDS[plan.mode] * 3,
            per_round=_SINGLE_CALLS[plan.mode],
            warmup=plan.warmup,
        )
    finally:
        library.close()
        floor.close()
    return case_from_latencies(
        key="9.single",
        operation=9,
        title="single append p50, notify=True (notifier) vs notify=False",
        basis="time",
        units_per_call=1,
        rate_unit="events/s",
        samples=samples,
    )


def notify_throughput(bench: Bench) -> list[CaseResult]:
    """Total events/s of 1, 4 and 8 writers with a live subscriber, per side; and
    one appender's single-append p50 with and without the notifier."""
    plan = bench.plan
    url = bench.database("notify")
    bench.log("single appends, notify=True and False")
    cases = [_single_appends(bench, url)]
    for threads in _THREADS:
        bench.log(f"{threads} writer(s) with a live subscription")
        library = LibrarySide(url, pool_size=threads)
        quiet = library.without_notify()
        floors = [FloorSide(url) for _ in range(threads)]
        try:
            assert quiet is not None
            ways: dict[str, tuple[list[Append], Callable[..., None]]] = {
                LIBRARY: ([library.append] * threads, follow_library),
                LIBRARY_NO_NOTIFY: ([quiet.append] * threads, follow_library),
                FLOOR: ([floor.append_no_notify for floor in floors], follow_floor),
                FLOOR_NOTIFY_IN_COMMIT: (
                    [floor.append_notify_in_commit for floor in floors],
                    follow_floor,
                ),
            }
            names = list(ways)
            rates: dict[str, list[float]] = {name: [] for name in names}
            for round_number in range(_ROUNDS[plan.mode]):
                for name in rotation(names, round_number):
                    appends, follow = ways[name]
                    prefix = f"n-{bench.run_id}-{threads}-{name}-r{round_number}"
                    rates[name].append(
                        _rate_with_subscriber(url, appends, follow, prefix, _SECONDS[plan.mode])
                    )
        finally:
            library.close()
            for floor in floors:
                floor.close()
        cases.append(
            case_from_rates(
                key=f"9.writers{threads}",
                operation=9,
                title=f"{threads} writer(s) with a live subscription",
                rate_unit="events/s",
                rates=rates,
                extra={"threads": threads, "seconds_per_run": _SECONDS[plan.mode]},
            )
        )
    one = next((case for case in cases if case.extra.get("threads") == 1), None)
    if one is not None:
        for case in cases[1:]:
            for name, figures in case.sides.items():
                base = one.sides[name].rate
                if base and figures.rate is not None:
                    figures.extra["scaling_vs_1_writer"] = figures.rate / base
    return cases


def targets(by_key: dict[str, CaseResult], plan: Plan) -> list[Target]:
    """Issue 15's throughput targets for 8 writers with a live subscriber."""
    from benchmarks._stats import per_round_ratios
    from benchmarks._targets import _check

    quick = "" if plan.is_claim else "quick run: not a claim"
    found = []
    if "9.single" in by_key:
        single = by_key["9.single"].sides
        found.append(
            _check(
                9,
                "single append p50, notify=True (notifier) vs notify=False",
                per_round_ratios(
                    single[LIBRARY].per_round, single[LIBRARY_NO_NOTIFY].per_round
                ).median,
                "<=",
                1.03,
                quick,
            )
        )
    if "9.writers8" not in by_key:
        return found
    sides = by_key["9.writers8"].sides
    versus_quiet = per_round_ratios(sides[LIBRARY].per_round, sides[LIBRARY_NO_NOTIFY].per_round)
    return [
        *found,
        _check(
            9,
            "8 writers + live subscriber, notify=True vs notify=False",
            versus_quiet.median,
            ">=",
            0.9,
            quick,
        ),
        _check(
            9,
            "8 writers + live subscriber vs 1 writer, notify=True",
            sides[LIBRARY].extra.get("scaling_vs_1_writer"),
            ">=",
            2.5,
            quick,
        ),
    ]
