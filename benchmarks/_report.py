"""The report: a table on stdout and the same data as JSON.

JSON shape (``schema`` 1)::

    {"schema": 1, "mode": "full" | "quick" | "scale", "started_at": ISO 8601,
     "wall_seconds": float, "server": {"description", "version", "settings"},
     "source": {"commit", "modified", "changed_during_run"} or null (the checkout
                the library ran from, as the run began),
     "machine": {"load_average", "load_average_at_start", "cpu_count", "cpu_model",
                 "memory_gb", "platform", "python",
                 "packages": {name: version or None}},
     "plan": {...}, "notes": [str],
     "cases": [{"key", "operation", "title", "basis", "rate_unit",
                "sides": {side: {"side", "p50_us", "p99_us", "rate", "per_round",
                                 "samples_us", "extra"}},
                "versus_floor": {side: {"median", "low", "high", "per_round"}},
                "versus_peer": {...}, "extra": {...}}],
     "targets": [{"operation", "description", "measured", "comparison", "limit",
                  "passed", "note"}]}
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import math
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from benchmarks._plan import Plan
from benchmarks._results import CaseResult, Target
from benchmarks._stats import RatioSummary

SCHEMA = 1

PACKAGES = ("pg-eventstore", "psycopg", "psycopg-binary", "SQLAlchemy", "cbor2", "eventsourcing")

PEER_STORES_LESS = (
    "eventsourcing's PostgresAggregateRecorder stores less than this library: no metadata "
    "column (the same metadata rides inside its CBOR payload), one index (its primary key) "
    "where the events table has four (primary key plus created_at, event_type and the feed's "
    "(transaction_id, position)), no global-feed columns (transaction_id, position) and no "
    "created_at, and no NOTIFY on append; its version check is the primary key alone (no "
    "stream-order check). Its snapshots are rows added to a second table, not an UPSERT."
)

FLOOR_NOTE = (
    "floor: raw psycopg 3, autocommit, prepare=True, the library's own SQL text "
    "(eventstore._sql); floor-bare: a bare INSERT with no check (the absolute floor "
    "for appends). Every side encodes CBOR (and JSON metadata) per call. Op 6's "
    "library/no-notify is PostgresEventStore(notify=False), compared with floor/no-notify "
    "(the library's own SQL without NOTIFY). The floor's appends run the silent insert, "
    "as the library's autocommit appends do (its notifier sends the wake-up after the "
    "commit); op 9's floor/notify-in-commit sends the NOTIFY inside the insert."
)

FEED_NOTE = (
    "the global feed's cost: op 1's floor/pre-feed is the single append as it was before "
    "the feed (the same version check, no stream-order check, no NOTIFY), raw, on a "
    "database at the first revision (no transaction_id or position column, no feed "
    "index); its ratio to floor is that append's time over today's, so its inverse is "
    "what the feed and its NOTIFY cost an append. Op 4's feed read is iter_all over the "
    "iterated table against the floor paging the library's own feed query, in this "
    "process, interleaved; the peer has no global feed."
)

TARGETS_TITLE = "performance targets (docs/benchmarks.md)"


def machine_facts() -> dict[str, Any]:
    """CPU count and model, memory, platform, Python and package versions, and the
    1/5/15-minute load average (other work on the machine skews absolute figures)."""
    model = None
    memory_gb = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            model = next(
                (
                    line.split(":", 1)[1].strip()
                    for line in cpuinfo
                    if line.startswith("model name")
                ),
                None,
            )
        with open("/proc/meminfo", encoding="utf-8") as meminfo:
            first = meminfo.readline().split()
            memory_gb = round(int(first[1]) / 1024 / 1024, 1)
    except (OSError, IndexError, ValueError):
        pass
    packages: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": memory_gb,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": packages,
    }


def source_facts() -> dict[str, Any] | None:
    """The git commit of the checkout and its modified files under ``eventstore/``
    (the library's figures depend on them); None outside a git checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "eventstore", "alembic"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"commit": commit, "modified": [line[3:] for line in status.splitlines()]}


def build_report(
    *,
    plan: Plan,
    started_at: str,
    wall_seconds: float,
    server: dict[str, Any],
    machine: dict[str, Any],
    source: dict[str, Any] | None = None,
    cases: Sequence[CaseResult],
    targets: Sequence[Target],
    notes: Sequence[str],
) -> dict[str, Any]:
    """The JSON-ready report (see the module docstring for its shape)."""
    return {
        "schema": SCHEMA,
        "mode": plan.mode,
        "started_at": started_at,
        "wall_seconds": round(wall_seconds, 1),
        "server": server,
        "machine": machine,
        "source": source,
        "plan": dataclasses.asdict(plan),
        "notes": list(notes),
        "cases": [dataclasses.asdict(case) for case in cases],
        "targets": [dataclasses.asdict(target) for target in targets],
    }


def _finite(value: Any) -> Any:
    """JSON has no infinity or NaN: such floats become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def write_json(report: dict[str, Any], path: Path) -> None:
    """Write ``report`` to ``path`` (parents created), strict JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(report), indent=1, allow_nan=False) + "\n")


def _loads(values: list[float] | None) -> str:
    return "?" if not values else "/".join(f"{value:.1f}" for value in values)


def _latency(us: float | None) -> str:
    if us is None:
        return ""
    return f"{us / 1000:.2f} ms" if us >= 10_000 else f"{us:.0f} us"


def _rate(value: float | None, unit: str) -> str:
    if value is None or not math.isfinite(value):
        return ""
    return f"{value:,.0f} {unit}"


def _ratio(summary: dict[str, Any] | RatioSummary | None) -> str:
    if summary is None:
        return ""
    if isinstance(summary, RatioSummary):
        summary = dataclasses.asdict(summary)
    return f"{summary['median']:.2f} [{summary['low']:.2f}-{summary['high']:.2f}]"


def _side_note(extra: dict[str, Any]) -> str:
    parts = []
    if "rss_growth_mb" in extra:
        parts.append(f"RSS +{extra['rss_growth_mb']:.1f} MB")
    if "scaling_vs_1_thread" in extra:
        parts.append(f"{extra['scaling_vs_1_thread']:.2f}x 1 thread")
    if "conflict_rate" in extra:
        parts.append(f"conflicts {extra['conflict_rate']:.0%}")
        parts.append("contiguous" if extra.get("contiguous") else "NOT CONTIGUOUS")
    if "p50_vs_smallest" in extra:
        parts.append(f"p50 {extra['p50_vs_smallest']:.2f}x smallest")
    return ", ".join(parts)


def _fill_lines(cases: Sequence[dict[str, Any]]) -> list[str]:
    """One entry per distinct fill: what was filled and how long each table took."""
    lines = []
    seen = set()
    for case in cases:
        fill = case["extra"].get("fill_seconds")
        if not fill:
            continue
        label = (
            f"op 8 to {case['extra']['rows']:,} rows"
            if case["operation"] == 8
            else f"op {case['operation']} ({case['title']})"
        )
        if label in seen:
            continue
        seen.add(label)
        tables = ", ".join(f"{table} {seconds:.1f}" for table, seconds in fill.items())
        vacuum = case["extra"].get("vacuum_analyze_seconds")
        extra = "" if vacuum is None else f", then VACUUM (ANALYZE) + CHECKPOINT {vacuum:.1f}"
        lines.append(f"{label}: {tables}{extra}")
    return lines


def render(report: dict[str, Any], console: Console) -> None:
    """Print the report's cases, targets and notes as tables."""
    server = report["server"]
    settings = ", ".join(f"{k}={v}" for k, v in server.get("settings", {}).items())
    machine = report["machine"]
    console.print(
        f"[bold]pg-eventstore benchmarks[/bold] ({report['mode']}, {report['wall_seconds']} s)\n"
        f"server: {server.get('version')}\n  {settings}\n  from {server.get('description')}\n"
        f"machine: {machine['cpu_count']} CPU ({machine['cpu_model']}), "
        f"{machine['memory_gb']} GB, Python {machine['python']}, "
        + ", ".join(f"{k} {v}" for k, v in machine["packages"].items() if v)
        + f"\n  load average (1/5/15 min) {_loads(machine.get('load_average_at_start'))}"
        f" at start, {_loads(machine.get('load_average'))} at end"
    )
    source = report.get("source")
    if source:
        modified = ", ".join(source["modified"]) or "none"
        moved = " (CHANGED DURING THE RUN)" if source.get("changed_during_run") else ""
        console.print(
            f"library source at start: {source['commit'][:12]}, modified: {modified}{moved}"
        )
    table = Table(
        title=escape(
            "ratios: median of per-round ratios [lowest-highest round]; time basis: "
            "p50 / reference p50 (lower is faster); rate basis: rate / reference rate "
            "(higher is faster)"
        ),
        title_justify="left",
    )
    for column, justify in (
        ("op", "right"),
        ("case", "left"),
        ("basis", "left"),
        ("side", "left"),
        ("p50", "right"),
        ("p99", "right"),
        ("rate", "right"),
        ("vs floor", "right"),
        ("vs peer", "right"),
        ("notes", "left"),
    ):
        table.add_column(
            column,
            justify=justify,  # type: ignore[arg-type]
            no_wrap=column in ("case", "notes", "side"),
        )
    for index, case in enumerate(report["cases"]):
        first = True
        for name, figures in case["sides"].items():
            table.add_row(
                str(case["operation"]) if first else "",
                case["title"] if first else "",
                case["basis"] if first else "",
                name,
                _latency(figures["p50_us"]),
                _latency(figures["p99_us"]),
                _rate(figures["rate"], case["rate_unit"]),
                escape(_ratio(case["versus_floor"].get(name))),
                escape(_ratio(case["versus_peer"].get(name))),
                _side_note(figures["extra"]),
                end_section=name == list(case["sides"])[-1] and index < len(report["cases"]) - 1,
            )
            first = False
    console.print(table)
    if report["targets"]:
        targets = Table(title=TARGETS_TITLE, title_justify="left")
        for column in ("op", "target", "measured", "limit", "result", "note"):
            targets.add_column(column)
        for target in report["targets"]:
            measured = target["measured"]
            result = {True: "[green]PASS[/green]", False: "[red]FAIL[/red]", None: "n/a"}[
                target["passed"]
            ]
            targets.add_row(
                str(target["operation"]),
                target["description"],
                "" if measured is None else f"{measured:.2f}",
                f"{target['comparison']} {target['limit']:g}",
                result,
                target["note"],
            )
        console.print(targets)
    for line in _fill_lines(report["cases"]):
        console.print(f"- fill time (seconds), {line}", soft_wrap=True)
    for note in report["notes"]:
        console.print(f"- {escape(note)}", soft_wrap=True)
