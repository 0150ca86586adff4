"""Concurrent appends: many writers on their own streams (group commit), and
many writers racing for one stream with exact expected versions."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from benchmarks._context import Bench
from benchmarks._floor import FloorSide
from benchmarks._harness import rotation, run_threads
from benchmarks._library import LibrarySide
from benchmarks._peer import PeerSide
from benchmarks._results import CaseResult, case_from_rates
from benchmarks._sides import (
    FLOOR,
    FLOOR_BARE,
    FLOOR_NO_NOTIFY,
    LIBRARY,
    LIBRARY_NO_NOTIFY,
    PEER,
    ConflictError,
    Side,
)

Append = Callable[[str, int, int], int]


@contextmanager
def thread_sides(bench: Bench, url: str, threads: int) -> Iterator[dict[str, list[Side]]]:
    """Per side, the object each of ``threads`` threads uses: one library store with
    ``pool_size=threads`` (no overflow), one floor connection per thread, one peer
    datastore with ``pool_size=threads``."""
    opened: list[Side] = []
    try:
        library = LibrarySide(url, pool_size=threads)
        opened.append(library)
        floors = []
        for _ in range(threads):
            floors.append(FloorSide(url))
            opened.append(floors[-1])
        per_thread: dict[str, list[Side]] = {LIBRARY: [library] * threads, FLOOR: list(floors)}
        quiet = library.without_notify()
        if quiet is not None:
            opened.append(quiet)
            per_thread[LIBRARY_NO_NOTIFY] = [quiet] * threads
        if bench.peer:
            peer = PeerSide(url, pool_size=threads)
            opened.append(peer)
            per_thread[PEER] = [peer] * threads
        yield per_thread
    finally:
        for side in opened:
            side.close()


def _own_stream_writer(append: Append, stream_id: str) -> Callable[[float], int]:
    def write(deadline: float) -> int:
        clock = time.perf_counter
        version = 0
        while clock() < deadline:
            version = append(stream_id, version, 1)
        return version

    return write


def _appenders(sides: dict[str, list[Side]]) -> dict[str, list[Append]]:
    """Each side's append per thread, plus, on the floor's connections, the bare
    ``INSERT`` (what the server gives with no check and no NOTIFY) and, where the
    library has ``notify=False``, its checked insert without NOTIFY."""
    appenders: dict[str, list[Append]] = {
        name: [side.append for side in per_thread] for name, per_thread in sides.items()
    }
    floors = [side for side in sides[FLOOR] if isinstance(side, FloorSide)]
    appenders[FLOOR_BARE] = [floor.append_bare for floor in floors]
    if LIBRARY_NO_NOTIFY in sides:
        appenders[FLOOR_NO_NOTIFY] = [floor.append_no_notify for floor in floors]
    order = (LIBRARY, FLOOR, LIBRARY_NO_NOTIFY, FLOOR_NO_NOTIFY, PEER, FLOOR_BARE)
    return {name: appenders[name] for name in order if name in appenders}


def _own_streams_rate(appenders: list[Append], prefix: str, seconds: float) -> float:
    """Events/s of one thread per appender, each on its own new stream."""
    writers = [_own_stream_writer(append, f"{prefix}-{i}") for i, append in enumerate(appenders)]
    run = run_threads(writers, seconds)
    return float(sum(run.results)) / run.seconds


def concurrency(bench: Bench) -> list[CaseResult]:
    """Total events/s with 1, 4, 8 and 16 threads each appending
    single events to its own stream, the pool sized to match; and the scaling
    against one thread (median rate over median one-thread rate). ``floor-bare``
    shows what the server gives with no check and no NOTIFY."""
    plan = bench.plan
    url = bench.database("main")
    cases = []
    for threads in plan.thread_counts:
        bench.log(f"{threads} thread(s) on their own streams")
        with thread_sides(bench, url, threads) as sides:
            appenders = _appenders(sides)
            names = list(appenders)
            prefix = f"thr-{bench.run_id}-{threads}"
            for name in names:
                _own_streams_rate(
                    appenders[name], f"{prefix}-{name}-warm", plan.thread_warmup_seconds
                )
            rates: dict[str, list[float]] = {name: [] for name in names}
            for round_number in range(plan.thread_rounds):
                for name in rotation(names, round_number):
                    rates[name].append(
                        _own_streams_rate(
                            appenders[name],
                            f"{prefix}-{name}-r{round_number}",
                            plan.thread_seconds,
                        )
                    )
        cases.append(
            case_from_rates(
                key=f"6.threads{threads}",
                operation=6,
                title=f"{threads} thread(s), own streams",
                rate_unit="events/s",
                rates=rates,
                extra={"threads": threads, "seconds_per_run": plan.thread_seconds},
            )
        )
    one = next((case for case in cases if case.extra["threads"] == 1), None)
    if one is not None:
        for case in cases:
            for name, figures in case.sides.items():
                base = one.sides[name].rate
                if base and figures.rate is not None:
                    figures.extra["scaling_vs_1_thread"] = figures.rate / base
    return cases


def _racing_writer(
    side: Side, stream_id: str, tally: list[tuple[int, int]]
) -> Callable[[float], None]:
    def write(deadline: float) -> None:
        clock = time.perf_counter
        commits = conflicts = 0
        version = 0
        while clock() < deadline:
            try:
                version = side.append(stream_id, version)
                commits += 1
            except ConflictError as conflict:
                conflicts += 1
                version = (
                    conflict.actual
                    if conflict.actual is not None
                    else side.stream_version(stream_id)
                )
        tally.append((commits, conflicts))

    return write


def contention(bench: Bench) -> list[CaseResult]:
    """``plan.contention_threads`` threads appending to ONE stream
    with exact expected versions, retrying on conflict with the version the
    side reported (or read back): committed events/s, the conflict rate, and a
    check that the stream ends contiguous (versions 1..commits, no gap)."""
    plan = bench.plan
    threads = plan.contention_threads
    url = bench.database("main")
    bench.log(f"{threads} threads racing for one stream")
    rates: dict[str, list[float]] = {}
    conflict_rates: dict[str, list[float]] = {}
    contiguous: dict[str, bool] = {}
    with thread_sides(bench, url, threads) as sides:
        names = [name for name in sides if name in (LIBRARY, FLOOR, PEER)]

        def measure(name: str, tag: str, seconds: float) -> tuple[float, float, bool]:
            stream_id = f"race-{bench.run_id}-{name}-{tag}"
            tally: list[tuple[int, int]] = []
            writers = [_racing_writer(side, stream_id, tally) for side in sides[name]]
            run = run_threads(writers, seconds)
            commits = sum(c for c, _ in tally)
            conflicts = sum(c for _, c in tally)
            versions = sides[name][0].versions(stream_id)
            return (
                commits / run.seconds,
                conflicts / max(1, commits + conflicts),
                versions == list(range(1, commits + 1)),
            )

        for name in names:
            measure(name, "warm", plan.thread_warmup_seconds)
            rates[name], conflict_rates[name], contiguous[name] = [], [], True
        for round_number in range(plan.contention_rounds):
            for name in rotation(names, round_number):
                rate, conflict_rate, whole = measure(
                    name, f"r{round_number}", plan.contention_seconds
                )
                rates[name].append(rate)
                conflict_rates[name].append(conflict_rate)
                contiguous[name] = contiguous[name] and whole
    extras = {
        name: {
            "conflict_rate": sum(conflict_rates[name]) / len(conflict_rates[name]),
            "conflict_rate_per_round": conflict_rates[name],
            "contiguous": contiguous[name],
        }
        for name in names
    }
    return [
        case_from_rates(
            key="7.contention",
            operation=7,
            title=f"{threads} threads, one stream, retry on conflict",
            rate_unit="events/s",
            rates=rates,
            extras=extras,
            extra={"threads": threads, "seconds_per_run": plan.contention_seconds},
        )
    ]
