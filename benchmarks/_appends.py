"""Append cost: the latency of single-event appends (new and existing streams,
with an expected-version check), what the global feed adds to it, and the
throughput of batch appends of 10 and 100 events."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from contextlib import closing

from benchmarks._context import Bench
from benchmarks._floor import PRE_FEED_REVISION, FloorSide
from benchmarks._harness import interleave
from benchmarks._results import CaseResult, case_from_latencies
from benchmarks._sides import FLOOR, FLOOR_BARE, FLOOR_PRE_FEED, Side

Append = Callable[[str, int, int], int]


def _appenders(sides: dict[str, Side]) -> dict[str, Append]:
    floor = sides[FLOOR]
    assert isinstance(floor, FloorSide)
    appenders: dict[str, Append] = {name: side.append for name, side in sides.items()}
    appenders[FLOOR_BARE] = floor.append_bare
    return appenders


def _new_streams(append: Append, prefix: str, count: int) -> Callable[[], None]:
    """Each call appends ``count`` events to a brand-new stream (expected version 0)."""
    numbers = itertools.count()

    def call() -> None:
        append(f"{prefix}-{next(numbers)}", 0, count)

    return call


def _existing_streams(append: Append, prefix: str, streams: int) -> Callable[[], None]:
    """Each call appends one event to the next of ``streams`` streams (round robin),
    at its exact current version; the streams are seeded with 10 events first."""
    versions = {f"{prefix}-{n}": append(f"{prefix}-{n}", 0, 10) for n in range(streams)}
    order = itertools.cycle(list(versions))

    def call() -> None:
        stream_id = next(order)
        versions[stream_id] = append(stream_id, versions[stream_id], 1)

    return call


def single_appends(bench: Bench) -> list[CaseResult]:
    """p50/p99 latency of one-event appends with an exact expected version, to
    new streams and to existing ones. ``floor-bare`` is the bare ``INSERT`` (no
    check), the absolute floor; ``floor/pre-feed`` is the append as it was before
    the global feed, on a database at the first revision (what the feed adds)."""
    plan = bench.plan
    url = bench.database("main")
    pre_feed_url = bench.database("pre-feed", revision=PRE_FEED_REVISION)
    cases = []
    with bench.sides(url) as sides, closing(FloorSide(pre_feed_url)) as pre_feed:
        appenders = _appenders(sides)
        appenders[FLOOR_PRE_FEED] = pre_feed.append_pre_feed
        for case, title, make in (
            ("new", "single append, new stream", None),
            ("existing", "single append, existing stream", plan.existing_streams),
        ):
            bench.log(title)
            calls = {
                name: (
                    _new_streams(append, f"one-{case}-{name}-{bench.run_id}", 1)
                    if make is None
                    else _existing_streams(append, f"one-{case}-{name}-{bench.run_id}", make)
                )
                for name, append in appenders.items()
            }
            samples = interleave(
                calls, rounds=plan.single_rounds, per_round=plan.single_calls, warmup=plan.warmup
            )
            cases.append(
                case_from_latencies(
                    key=f"1.{case}",
                    operation=1,
                    title=title,
                    basis="time",
                    units_per_call=1,
                    rate_unit="events/s",
                    samples=samples,
                )
            )
    return cases


def batch_appends(bench: Bench) -> list[CaseResult]:
    """Events/s of one-statement batch appends (10 and 100 events) to new
    streams, expected version 0."""
    plan = bench.plan
    url = bench.database("main")
    cases = []
    with bench.sides(url) as sides:
        appenders = _appenders(sides)
        for size in plan.batch_sizes:
            bench.log(f"batch append of {size}")
            calls = {
                name: _new_streams(append, f"batch{size}-{name}-{bench.run_id}", size)
                for name, append in appenders.items()
            }
            samples = interleave(
                calls,
                rounds=plan.batch_rounds,
                per_round=plan.batch_calls,
                warmup=max(3, plan.warmup // 10),
            )
            cases.append(
                case_from_latencies(
                    key=f"2.batch{size}",
                    operation=2,
                    title=f"batch append of {size}",
                    basis="rate",
                    units_per_call=size,
                    rate_unit="events/s",
                    samples=samples,
                )
            )
    return cases
