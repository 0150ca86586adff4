"""Read cost: loading a long stream, iterating a very long one in bounded
memory, reading the global feed, and snapshots (save, and load through
``Repository``).

The library and the floor read the same rows of the ``events`` table; the peer
reads the same number of rows, with the same payload and metadata, from its own
(it has no global feed, so it sits out the feed read).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks._context import Bench
from benchmarks._floor import FloorSide
from benchmarks._harness import interleave, rotation
from benchmarks._library import LibrarySide
from benchmarks._peer import EVENTS_TABLE
from benchmarks._results import CaseResult, case_from_latencies, case_from_rates
from benchmarks._server import fill, vacuum_analyze, wait_for_feed_horizon
from benchmarks._sides import FLOOR, FLOOR_JSONB, LIBRARY, PEER, Side
from benchmarks._workload import (
    EVENT_TYPE,
    encode_metadata,
    encode_payload,
    encode_peer_state,
)

_PROJECT_ROOT = Path(__file__).resolve().parent.parent


def fill_stream(
    bench: Bench,
    url: str,
    prefix: str,
    events: int,
    *,
    streams: int = 1,
    first_stream: int = 1,
    layout: str = "clustered",
) -> dict[str, float]:
    """Fill ``streams`` streams ``<prefix><n>`` of ``events`` events each into the
    ``events`` table and (with the peer) the peer's table, rows in ``layout``
    order (see :data:`benchmarks._server.LAYOUTS`); return the seconds each fill
    took."""
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    fill(
        url,
        table="events",
        prefix=prefix,
        streams=streams,
        per_stream=events,
        first_stream=first_stream,
        event_type=EVENT_TYPE,
        data=encode_payload(),
        metadata=encode_metadata(),
        layout=layout,
    )
    seconds["events"] = time.perf_counter() - start
    if bench.peer:
        start = time.perf_counter()
        fill(
            url,
            table=EVENTS_TABLE,
            prefix=prefix,
            streams=streams,
            per_stream=events,
            first_stream=first_stream,
            event_type=EVENT_TYPE,
            data=encode_peer_state(),
            layout=layout,
        )
        seconds[EVENTS_TABLE] = time.perf_counter() - start
    return seconds


def _checked(call: Callable[[], int], expected: int, what: str) -> Callable[[], None]:
    def checked() -> None:
        got = call()
        if got != expected:
            raise AssertionError(f"{what}: expected {expected}, got {got}")

    return checked


def load_stream(bench: Bench) -> list[CaseResult]:
    """Events/s loading and decoding a whole stream of
    ``plan.load_events`` events (the library ends in ``RecordedEvent`` objects,
    the floor in decoded payloads, the peer in decoded payloads)."""
    plan = bench.plan
    url = bench.database("main")
    prefix = f"load-{bench.run_id}-"
    bench.log(f"filling a {plan.load_events:,}-event stream")
    fills = fill_stream(bench, url, prefix, plan.load_events)
    stream = f"{prefix}1"
    bench.log(f"load a {plan.load_events:,}-event stream")
    with bench.sides(url) as sides:
        calls = {
            name: _checked(partial(side.load, stream), plan.load_events, f"{name} load")
            for name, side in sides.items()
        }
        floor = sides[FLOOR]
        assert isinstance(floor, FloorSide)
        calls[FLOOR_JSONB] = _checked(
            partial(floor.load_jsonb, stream), plan.load_events, f"{FLOOR_JSONB} load"
        )
        samples = interleave(calls, rounds=plan.load_rounds, per_round=plan.load_calls, warmup=1)
    return [
        case_from_latencies(
            key="3.load",
            operation=3,
            title=f"load {plan.load_events:,}-event stream + decode",
            basis="rate",
            units_per_call=plan.load_events,
            rate_unit="events/s",
            samples=samples,
            extra={"fill_seconds": fills},
        )
    ]


def _iterate_once(
    bench: Bench, side: str, url: str, stream: str, warm_stream: str
) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(_PROJECT_ROOT), env.get("PYTHONPATH", "")])
    )
    command = [
        sys.executable,
        "-m",
        "benchmarks._iterate_child",
        "--side",
        side,
        "--url",
        url,
        "--stream",
        stream,
        "--warm-stream",
        warm_stream,
        "--page",
        str(bench.plan.page),
        "--expect",
        str(bench.plan.iterate_events),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"iterating through {side} failed ({done.returncode}): {done.stdout}{done.stderr}"
        )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def iterate_stream(bench: Bench) -> list[CaseResult]:
    """Events/s iterating a ``plan.iterate_events``-event stream in pages of
    ``plan.page`` (``iter_events`` for the library), each side in a child
    process of its own, with the growth of that process's peak RSS; then the
    global feed read over the same table (:func:`read_feed`)."""
    plan = bench.plan
    url = bench.database("iterate")
    prefix = f"iter-{bench.run_id}-"
    bench.log(f"filling a {plan.iterate_events:,}-event stream")
    fills = fill_stream(bench, url, prefix, plan.iterate_events)
    fill_stream(bench, url, f"warm-{bench.run_id}-", plan.page * 2)
    tables = ["events", EVENTS_TABLE] if bench.peer else ["events"]
    start = time.perf_counter()
    checkpointed = vacuum_analyze(url, *tables)
    vacuum_seconds = time.perf_counter() - start
    names = [LIBRARY, FLOOR, *([PEER] if bench.peer else [])]
    rates: dict[str, list[float]] = {name: [] for name in names}
    growth: dict[str, list[float]] = {name: [] for name in names}
    method = ""
    for round_number in range(plan.iterate_rounds):
        for name in rotation(names, round_number):
            bench.log(f"iterate through {name} (round {round_number + 1})")
            result = _iterate_once(bench, name, url, f"{prefix}1", f"warm-{bench.run_id}-1")
            rates[name].append(result["count"] / result["seconds"])
            growth[name].append(result["growth_kb"] / 1024)
            method = result["method"]
    extras = {
        name: {"rss_growth_mb": max(growth[name]), "rss_growth_mb_per_round": growth[name]}
        for name in names
    }
    iterated = case_from_rates(
        key="4.iterate",
        operation=4,
        title=f"iter_events over {plan.iterate_events:,} events",
        rate_unit="events/s",
        rates=rates,
        extras=extras,
        extra={
            "fill_seconds": fills,
            "vacuum_analyze_seconds": vacuum_seconds,
            "checkpointed": checkpointed,
            "page": plan.page,
            "rss_method": method,
        },
    )
    return [iterated, read_feed(bench, url)]


def read_feed(bench: Bench, url: str) -> CaseResult:
    """Events/s reading the first ``plan.feed_events`` events of the global feed
    of ``url`` in pages of ``plan.page``: ``iter_all`` for the library, the
    library's feed query paged the same way for the floor; in this process,
    interleaved. Waits first until every transaction older than the call has
    ended, so the whole fill is below the feed's horizon."""
    plan = bench.plan
    wait_for_feed_horizon(url)
    bench.log(f"read the first {plan.feed_events:,} events of the global feed")
    with closing(LibrarySide(url)) as library, closing(FloorSide(url)) as floor:
        calls = {
            name: _checked(
                partial(side.read_feed, plan.feed_events, plan.page),
                plan.feed_events,
                f"{name} feed read",
            )
            for name, side in ((LIBRARY, library), (FLOOR, floor))
        }
        samples = interleave(calls, rounds=plan.feed_rounds, per_round=plan.feed_calls, warmup=1)
    return case_from_latencies(
        key="4.feed",
        operation=4,
        title=f"iter_all: first {plan.feed_events:,} events of the feed",
        basis="rate",
        units_per_call=plan.feed_events,
        rate_unit="events/s",
        samples=samples,
        extra={"page": plan.page},
    )


def snapshots(bench: Bench) -> list[CaseResult]:
    """Ops/s of a snapshot save (the library's UPSERT; the peer adds a
    row to its snapshot table) and of a load through ``Repository``: the
    snapshot at ``plan.snapshot_at`` plus ``plan.replay_events`` events folded in."""
    plan = bench.plan
    url = bench.database("main")
    saves = plan.warmup + plan.snapshot_rounds * plan.snapshot_calls + 1
    save_prefix = f"snap-{bench.run_id}-"
    replay_prefix = f"replay-{bench.run_id}-"
    total = plan.snapshot_at + plan.replay_events
    bench.log("filling snapshot and replay streams")
    # Streams 1 and 2 take the library's and the floor's saves (each save needs
    # the stream to reach its version); the peer's saves need no events.
    fill(
        url,
        table="events",
        prefix=save_prefix,
        streams=2,
        per_stream=saves,
        event_type=EVENT_TYPE,
        data=encode_payload(),
        metadata=encode_metadata(),
        layout="clustered",
    )
    fill_stream(bench, url, replay_prefix, total)
    replay = f"{replay_prefix}1"
    cases = []
    with bench.sides(url) as sides:
        sides[LIBRARY].save_snapshot(replay, plan.snapshot_at)  # shared with the floor
        if PEER in sides:
            sides[PEER].save_snapshot(replay, plan.snapshot_at)
        targets = {LIBRARY: f"{save_prefix}1", FLOOR: f"{save_prefix}2", PEER: f"{save_prefix}3"}

        def saver(side: Side, stream: str) -> Callable[[], None]:
            versions = iter(range(1, saves + 1))
            return lambda: side.save_snapshot(stream, next(versions))

        def loader(side: Side) -> Callable[[], None]:
            def load() -> None:
                state, version = side.load_aggregate(replay)
                if version != total or state["events"] != plan.replay_events:
                    raise AssertionError(f"{side.name} rebuilt {state['events']} at {version}")

            return load

        for case, title, calls in (
            (
                "save",
                "snapshot save (UPSERT)",
                {name: saver(side, targets[name]) for name, side in sides.items()},
            ),
            (
                "load",
                f"Repository.load: snapshot + {plan.replay_events} events",
                {name: loader(side) for name, side in sides.items()},
            ),
        ):
            bench.log(title)
            samples = interleave(
                calls,
                rounds=plan.snapshot_rounds,
                per_round=plan.snapshot_calls,
                warmup=plan.warmup,
            )
            cases.append(
                case_from_latencies(
                    key=f"5.{case}",
                    operation=5,
                    title=title,
                    basis="rate",
                    units_per_call=1,
                    rate_unit="ops/s",
                    samples=samples,
                )
            )
    return cases
