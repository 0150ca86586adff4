"""Bulk import (operation 12): ``eventstore.transfer.import_events`` of an export
file of 200,000 events, against a raw binary ``COPY`` of the same rows.

Every side loads the same events into a database of its own, freshly created
and migrated to head (so every side pays the same index maintenance on an empty
``events`` table), one side after the other in each round, the order rotating
between rounds:

- ``library``: ``import_events(url, file)`` of an export file holding the rows
  (stage, verify, accept, commit in batches, as ``eventstore import`` does);
- ``floor``: the cheapest raw load of the same rows, already in memory as
  Python tuples: one psycopg binary ``COPY events (...) FROM STDIN`` in one
  transaction, no checks, no staging;
- ``library/bulk-append``: :func:`eventstore.transfer.bulk_append` of the same
  events as ``NewEvent`` objects grouped by stream (payload dicts CBOR-encoded
  and metadata checked per event, as ``append_events`` does), every stream new;
- ``library/before``: the import as it was at :data:`BEFORE` (the commit before
  the import's fast path), extracted with ``git archive`` and run in a child
  process that times only the ``import_events`` call; left out (with a note)
  when the checkout has no git history holding that commit.

Rates are events per second of each whole call.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import set_json_dumps

from benchmarks._context import Bench
from benchmarks._harness import rotation
from benchmarks._plan import Plan
from benchmarks._results import CaseResult, Target, case_from_rates
from benchmarks._sides import FLOOR, LIBRARY, libpq_url
from eventstore import NewEvent, PostgresEventStore, migrations
from eventstore.transfer import StreamAppend, bulk_append, import_events
from eventstore.transfer._format import ItemWriter

LIBRARY_BULK = "library/bulk-append"
"""The side that writes the same events through ``bulk_append``."""
LIBRARY_BEFORE = "library/before"
"""The side that runs the import as it was at :data:`BEFORE`."""
BEFORE = "a33449c45acdc29bd49d0c74e1f6348b0e7c37bd"
"""The last commit before the import's fast path."""

_EVENTS = {"full": 200_000, "quick": 2_000, "scale": 200_000}
_ROUNDS = {"full": 3, "quick": 1, "scale": 3}
_PER_STREAM = 10
_ROOT = Path(__file__).resolve().parent.parent

Row = tuple[str, int, str, bytes, str, datetime]

COPY_EVENTS = """COPY events (stream_id, version, event_type, event_data, metadata, created_at)
    FROM STDIN (FORMAT BINARY)"""
_TYPES = ["text", "int8", "text", "bytea", "jsonb", "timestamptz"]


def rows(count: int) -> list[Row]:
    """``count`` events in streams of 10, payloads and metadata as an application
    writes them (a small JSON document, a correlation id), a microsecond apart."""
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    made: list[Row] = []
    for index in range(count):
        stream, offset = divmod(index, _PER_STREAM)
        payload = {"order": stream, "line": offset, "sku": "ABC-123", "qty": 3, "price": "19.99"}
        made.append(
            (
                f"order-{stream}",
                offset + 1,
                "OrderLinePlaced",
                json.dumps(payload).encode(),
                json.dumps({"correlation_id": f"c-{stream}", "user": "u-1"}),
                start + timedelta(microseconds=index),
            )
        )
    return made


def write_export(path: Path, events: Sequence[Row]) -> None:
    """An export file holding ``events`` (no snapshots)."""
    streams = len({row[0] for row in events})
    with path.open("wb") as file:
        writer = ItemWriter(file)
        writer.header({"events": len(events), "streams": streams, "snapshots": 0})
        for row in events:
            writer.event(*row)
        writer.end({"events": len(events), "streams": streams, "snapshots": 0})


def new_streams(events: Sequence[Row]) -> list[StreamAppend]:
    """The same events as ``bulk_append`` takes them: one new stream per stream id,
    payloads as dicts, metadata as dicts."""
    grouped: dict[str, list[NewEvent]] = {}
    for stream_id, _, event_type, data, metadata, _ in events:
        grouped.setdefault(stream_id, []).append(
            NewEvent(event_type, json.loads(data), metadata=json.loads(metadata))
        )
    return [(stream_id, 0, stream) for stream_id, stream in grouped.items()]


def raw_copy(url: str, events: Sequence[Row]) -> None:
    """The floor: one binary COPY of the rows into ``events``, in one transaction."""
    with psycopg.connect(libpq_url(url)) as connection:
        with connection.cursor() as cursor:
            set_json_dumps(_as_is, cursor)  # the metadata is JSON text already
            with cursor.copy(COPY_EVENTS) as copy:
                copy.set_types(_TYPES)
                for row in events:
                    copy.write_row(row)
        connection.commit()


def _as_is(text: Any) -> str:
    return str(text)


_CHILD = """
import sys, time
sys.path.insert(0, sys.argv[1])
from eventstore.transfer import import_events
started = time.perf_counter()
import_events(sys.argv[2], sys.argv[3])
print(time.perf_counter() - started)
"""


@contextmanager
def before_tree() -> Iterator[Path | None]:
    """The package as it was at :data:`BEFORE`, in a temporary directory; None
    when git or that commit is not available."""
    with tempfile.TemporaryDirectory(prefix="es-before-") as directory:
        try:
            archive = subprocess.run(
                ["git", "-C", str(_ROOT), "archive", BEFORE, "eventstore", "alembic"],
                capture_output=True,
                check=True,
                timeout=60,
            ).stdout
            subprocess.run(["tar", "-x", "-C", directory], input=archive, check=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            yield None
            return
        yield Path(directory)


def _before_import(tree: Path, url: str, path: Path) -> float:
    """Seconds the import at :data:`BEFORE` takes, timed in a child process."""
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tree), url, str(path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        raise RuntimeError(f"the import at {BEFORE[:7]} failed: {result.stderr.strip()}")
    return float(result.stdout.strip().splitlines()[-1])


def _timed(call: Callable[..., None], *args: Any) -> float:
    started = time.perf_counter()
    call(*args)
    return time.perf_counter() - started


def bulk_import(bench: Bench) -> list[CaseResult]:
    """Operation 12: import rate of the library, the floor and (when git has it)
    the import before its fast path, interleaved round by round."""
    plan = bench.plan
    count = _EVENTS[plan.mode]
    events = rows(count)
    streams = new_streams(events)
    rates: dict[str, list[float]] = {LIBRARY: [], FLOOR: [], LIBRARY_BULK: []}
    extra: dict[str, Any] = {"events": count}
    with tempfile.TemporaryDirectory(prefix="es-import-") as directory, before_tree() as tree:
        path = Path(directory) / "events.cbor"
        write_export(path, events)
        extra["file_bytes"] = path.stat().st_size
        if tree is not None:
            rates[LIBRARY_BEFORE] = []
        else:
            extra["note"] = f"library/before left out: no git history holding {BEFORE[:7]}"

        def fresh() -> str:
            url = bench.scratch.create()
            migrations.upgrade(url)
            return url

        for round_number in range(_ROUNDS[plan.mode]):
            for name in rotation(list(rates), round_number):
                url = fresh()
                if name == LIBRARY:
                    seconds = _timed(_library_import, url, path)
                elif name == FLOOR:
                    seconds = _timed(raw_copy, url, events)
                elif name == LIBRARY_BULK:
                    seconds = _bulk(url, streams)
                else:
                    assert tree is not None
                    seconds = _before_import(tree, url, path)
                _drop(bench, url)
                rates[name].append(count / seconds)
                bench.log(f"  round {round_number + 1} {name}: {count / seconds:,.0f} events/s")
    return [
        case_from_rates(
            key="12.import",
            operation=12,
            title=f"import of {count:,} events (eventstore import) vs raw binary COPY",
            rate_unit="events/s",
            rates=rates,
            extra=extra,
        )
    ]


def _drop(bench: Bench, url: str) -> None:
    """Drop one of this operation's scratch databases (the others stay)."""
    name = url.rsplit("/", 1)[-1].split("?")[0]
    with psycopg.connect(libpq_url(bench.scratch.server_url), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    bench.scratch.names.remove(name)


def _bulk(url: str, streams: list[StreamAppend]) -> float:
    """Seconds ``bulk_append`` takes (the store is opened before the clock starts)."""
    with PostgresEventStore.from_url(url) as store:
        started = time.perf_counter()
        summary = bulk_append(store, streams)
        seconds = time.perf_counter() - started
    assert summary.ok
    return seconds


def _library_import(url: str, path: Path) -> None:
    summary = import_events(url, path)
    assert summary.ok
    assert summary.events > 0


def targets(by_key: dict[str, CaseResult], plan: Plan) -> list[Target]:
    """Import at least 0.7x the raw COPY floor, and at least 2x the import at
    :data:`BEFORE` (when that side ran)."""
    case = by_key.get("12.import")
    if case is None:
        return []
    note = "" if plan.is_claim else "quick run: not a claim"
    found: list[Target] = []
    versus_floor = case.versus_floor.get(LIBRARY)
    found.append(
        _target(
            "import events/s vs raw binary COPY",
            None if versus_floor is None else versus_floor.median,
            0.7,
            note,
        )
    )
    before = case.sides.get(LIBRARY_BEFORE)
    if before is not None:
        library = case.sides[LIBRARY].per_round
        ratios = sorted(a / b for a, b in zip(library, before.per_round, strict=True))
        found.append(
            _target(
                f"import events/s vs the import at {BEFORE[:7]}",
                ratios[len(ratios) // 2],
                2.0,
                note,
            )
        )
    return found


def _target(description: str, measured: float | None, limit: float, note: str) -> Target:
    passed = None if measured is None else measured >= limit
    return Target(12, description, measured, ">=", limit, passed, note)
