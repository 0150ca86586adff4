"""Table growth: does the cost of appending to, and loading, a 100-event stream
stay flat as the table grows to 10^4, 10^5, 10^6 (and with ``--scale`` 10^7) rows?

The table is filled on the server with ``INSERT ... SELECT generate_series``
(streams of 100 events), then ``VACUUM (ANALYZE)``-ed, as autovacuum would,
for every side's table alike. Each call picks a random stream of the whole
table, so large tables are read where the cache is cold. The streams are
interleaved on disk by default (see :data:`benchmarks._server.LAYOUTS`): a
stream's 100 events lie on 100 heap pages, as when many streams are written at
once; ``--growth-layout clustered`` stores each stream's events together instead.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from benchmarks._context import Bench
from benchmarks._harness import interleave
from benchmarks._peer import EVENTS_TABLE
from benchmarks._reads import fill_stream
from benchmarks._results import CaseResult, case_from_latencies
from benchmarks._server import vacuum_analyze
from benchmarks._sides import PEER, Side


def _appender(
    side: Side, versions: dict[int, int], streams: int, rng: random.Random, prefix: str, start: int
) -> Callable[[], None]:
    def call() -> None:
        number = rng.randint(1, streams)
        versions[number] = side.append(f"{prefix}{number}", versions.get(number, start))

    return call


def _loader(side: Side, streams: int, rng: random.Random, prefix: str) -> Callable[[], None]:
    def call() -> None:
        side.load(f"{prefix}{rng.randint(1, streams)}")

    return call


def growth(bench: Bench) -> list[CaseResult]:
    """p50 of single appends and of loads of 100-event streams at each table size,
    every side interleaved; each side's p50 is also given against its own p50 at
    the smallest size (``p50_vs_smallest``)."""
    plan = bench.plan
    url = bench.database("growth")
    per_stream = plan.growth_stream_events
    prefix = f"g-{bench.run_id}-"
    filled_streams = 0
    # Versions of the streams appended to so far: the library and the floor share
    # the events table, the peer has its own.
    shared_versions: dict[int, int] = {}
    peer_versions: dict[int, int] = {}
    cases: list[CaseResult] = []
    tables = ["events", EVENTS_TABLE] if bench.peer else ["events"]
    for level in plan.growth_levels:
        streams = level // per_stream
        bench.log(f"filling to {level:,} rows")
        fills = fill_stream(
            bench,
            url,
            prefix,
            per_stream,
            streams=streams - filled_streams,
            first_stream=filled_streams + 1,
            layout=plan.growth_layout,
        )
        filled_streams = streams
        start = time.perf_counter()
        checkpointed = vacuum_analyze(url, *tables)
        vacuum_seconds = time.perf_counter() - start
        bench.log(f"measuring at {level:,} rows")
        rng = random.Random(level)
        with bench.sides(url) as sides:
            for kind in ("append", "load"):
                if kind == "append":
                    calls = {
                        name: _appender(
                            side,
                            peer_versions if name == PEER else shared_versions,
                            streams,
                            rng,
                            prefix,
                            per_stream,
                        )
                        for name, side in sides.items()
                    }
                else:
                    calls = {
                        name: _loader(side, streams, rng, prefix) for name, side in sides.items()
                    }
                samples = interleave(
                    calls,
                    rounds=plan.growth_rounds,
                    per_round=plan.growth_calls,
                    warmup=max(3, plan.warmup // 5),
                )
                cases.append(
                    case_from_latencies(
                        key=f"8.{kind}@{level}",
                        operation=8,
                        title=f"{kind} a 100-event stream, {level:,} rows",
                        basis="time",
                        units_per_call=1,
                        rate_unit="ops/s",
                        samples=samples,
                        extra={
                            "rows": level,
                            "kind": kind,
                            "fill_seconds": fills,
                            "vacuum_analyze_seconds": vacuum_seconds,
                            "checkpointed": checkpointed,
                            "layout": plan.growth_layout,
                        },
                    )
                )
    for kind in ("append", "load"):
        series = [case for case in cases if case.extra["kind"] == kind]
        smallest = series[0]
        for case in series:
            for name, figures in case.sides.items():
                base = smallest.sides[name].p50_us
                if base and figures.p50_us is not None:
                    figures.extra["p50_vs_smallest"] = figures.p50_us / base
    return cases
