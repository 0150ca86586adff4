"""``python -m benchmarks``: parse the options, pick the server, run the
operations, print the table and write the JSON.

Exit status: 0 when every selected operation ran (whether targets passed or
not: the table says), 1 when one failed, 2 for bad options or no server,
130 when interrupted. Scratch databases are dropped in every case.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console

from benchmarks._appends import batch_appends, single_appends
from benchmarks._bulk_import import bulk_import
from benchmarks._concurrency import concurrency, contention
from benchmarks._context import Bench
from benchmarks._growth import growth
from benchmarks._latency import latency
from benchmarks._notify import notify_throughput
from benchmarks._peer import peer_available
from benchmarks._plan import Plan, plan_for
from benchmarks._reads import iterate_stream, load_stream, snapshots
from benchmarks._rebuild import rebuild
from benchmarks._report import (
    FEED_NOTE,
    FLOOR_NOTE,
    PEER_STORES_LESS,
    build_report,
    machine_facts,
    render,
    source_facts,
    write_json,
)
from benchmarks._results import CaseResult
from benchmarks._server import LAYOUTS, NoServerError, ScratchDatabases, server, server_facts
from benchmarks._targets import evaluate

OPERATIONS: dict[int, tuple[str, Callable[[Bench], list[CaseResult]]]] = {
    1: (
        "single-event append latency, new and existing streams, and the global feed's cost",
        single_appends,
    ),
    2: ("batch append throughput, 10 and 100 events", batch_appends),
    3: ("load a 10,000-event stream", load_stream),
    4: ("iterate a 1,000,000-event stream (RSS), and read the global feed", iterate_stream),
    5: ("snapshot save and Repository load", snapshots),
    6: ("1, 4, 8, 16 threads on their own streams", concurrency),
    7: ("8 threads racing for one stream", contention),
    8: ("table growth: 10^4..10^6 rows (10^7 with --scale)", growth),
    9: (
        "1, 4, 8 writer threads with a live subscription, notify=True and False",
        notify_throughput,
    ),
    10: ("append-to-delivery latency, same and another process, idle and under load", latency),
    11: ("projection rebuild from 200,000 events: per-event and batch handlers", rebuild),
    12: ("import of 200,000 events vs raw binary COPY", bulk_import),
}
"""What ``--only`` selects: each measurement's number (the report's ``op``), what
it measures, and the function that measures it."""

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; exits 2 (argparse) on bad options."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure pg-eventstore against raw psycopg (the floor) and eventsourcing "
        "(the peer), interleaved, on one server.",
        epilog="operations: "
        + "; ".join(f"{number}: {title}" for number, (title, _) in OPERATIONS.items()),
    )
    parser.add_argument(
        "--url",
        help="PostgreSQL server to run on (scratch databases are created there and "
        "dropped); default: the test fixtures' chain (configured test URL, Docker, "
        "embedded PostgreSQL)",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick", action="store_true", help="small counts, under a minute: numbers are no claim"
    )
    size.add_argument("--scale", action="store_true", help="also grow the table to 10^7 rows")
    parser.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        metavar="PATH",
        help=f"where to write the JSON report (default: {DEFAULT_JSON})",
    )
    parser.add_argument(
        "--growth-layout",
        choices=sorted(LAYOUTS),
        default=None,
        help="row order of the table-growth measurement (operation 8): interleaved "
        "(default; a stream's events spread over many pages, as with many concurrent "
        "writers) or clustered",
    )
    parser.add_argument(
        "--no-peer",
        action="store_true",
        help="leave eventsourcing out even when it is installed",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        type=int,
        choices=sorted(OPERATIONS),
        metavar="OP",
        help="run only these operations (listed below)",
    )
    return parser.parse_args(argv)


LAYOUT_NOTES = {
    "interleaved": "op 8's streams are interleaved on disk: a 100-event stream spans 100 heap "
    "pages, as when many streams are written at once (--growth-layout clustered stores "
    "each stream's events together).",
    "clustered": "op 8's streams are clustered on disk: each stream's events are stored "
    "together (the default, interleaved, spreads them as concurrent writers do).",
}


def _notes(plan: Plan, peer: bool) -> list[str]:
    notes = [
        FLOOR_NOTE,
        FEED_NOTE,
        "durability: fsync and synchronous_commit are the server's own, never changed by "
        "the suite, for every side alike.",
        "op 4's iteration runs each side in a child process of its own: RSS growth is that "
        "process's peak RSS during the iteration minus its RSS just before.",
        "ops 4 and 8 fill with INSERT ... SELECT generate_series, then VACUUM (ANALYZE) "
        "every side's table, as autovacuum would, and CHECKPOINT (when the role may) so "
        "the fill's WAL is not flushed while latencies are timed.",
        LAYOUT_NOTES[plan.growth_layout],
    ]
    if peer:
        notes.insert(1, PEER_STORES_LESS)
    else:
        notes.insert(
            1,
            "no peer figures: eventsourcing is not installed "
            "(pip install 'pg-eventstore[benchmarks]') or --no-peer was given.",
        )
    if not plan.is_claim:
        notes.insert(
            0, "QUICK RUN: small counts to keep the suite alive; the figures are no claim."
        )
    return notes


def _source(
    at_start: dict[str, Any] | None, at_end: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The checkout as the run began; ``changed_during_run`` says whether it moved
    (child processes import the library later than the parent did)."""
    if at_start is None:
        return None
    return at_start | {"changed_during_run": at_start != at_end}


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite; see the module docstring for the exit status."""
    args = parse_arguments(argv)
    plan = plan_for(quick=args.quick, scale=args.scale, growth_layout=args.growth_layout)
    selected = sorted(set(args.only or OPERATIONS))
    peer = peer_available() and not args.no_peer
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    load_at_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    source_at_start = source_facts()
    start = time.perf_counter()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    # Piped into a file or a log, the table keeps its full width instead of wrapping.
    console = Console(width=None if sys.stdout.isatty() else 200)
    cases: list[CaseResult] = []
    try:
        with ExitStack() as stack:
            url, description = stack.enter_context(server(args.url))
            scratch = ScratchDatabases(url)
            stack.callback(scratch.drop_all)
            facts = server_facts(url) | {"description": description}
            bench = Bench(scratch, plan, peer=peer)
            bench.log(f"server: {facts['version']} ({description}); mode {plan.mode}")
            for number in selected:
                title, operation = OPERATIONS[number]
                bench.log(f"op {number}: {title}")
                cases.extend(operation(bench))
            bench.log("dropping scratch databases")
    except NoServerError as exc:
        print(f"no server: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; scratch databases dropped", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    report = build_report(
        plan=plan,
        started_at=started_at,
        wall_seconds=time.perf_counter() - start,
        server=facts,
        machine=machine_facts() | {"load_average_at_start": load_at_start},
        source=_source(source_at_start, source_facts()),
        cases=cases,
        targets=evaluate(cases, plan),
        notes=_notes(plan, peer),
    )
    render(report, console)
    write_json(report, args.json)
    print(f"JSON written to {args.json}", file=sys.stderr)
    return 0
