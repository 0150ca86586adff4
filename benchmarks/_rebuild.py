"""Operation 11: rebuilding a read model from the global feed.

A per-stream counter table (``INSERT ... ON CONFLICT DO UPDATE``, one row per
stream) is rebuilt from every event of the feed, in pages of ``plan.page``, each
page in one transaction with the projection's checkpoint:

- ``library``: a :class:`~eventstore.ProjectionRunner` with a per-event handler,
  one upsert per event through the connection the runner hands it
  (``exec_driver_sql``, the cheapest call on that connection);
- ``library/dbapi``: the same per-event handler writing through the psycopg
  cursor of that same connection (``connection.connection.dbapi_connection``,
  same transaction): the runner's own cost without SQLAlchemy's per-statement
  Python, which the per-event handler pays once per event;
- ``library/batch``: the same runner with a batch handler: one
  ``INSERT ... SELECT FROM unnest(...) ON CONFLICT`` per batch;
- ``floor``: raw psycopg on one connection, every statement prepared: per page,
  the library's own feed query (``READ_ALL`` from :mod:`eventstore._sql`), each
  payload decoded (the runner decodes every event), one upsert per event, the
  checkpoint saved with the library's ``SAVE_CHECKPOINT``, commit;
- ``floor/batch``: the floor with the batch handler's one statement per page.

The runner also takes its lock for each transaction and loads the checkpoint
(two statements per page the floor does without: it keeps its place in memory).
The fill puts ``plan.page`` streams in interleaved order, so a page holds each
stream once and the batch statement writes the same rows as the per-event one.
Each side rebuilds from an emptied table and no checkpoint; the sides take turns,
rotated each round.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import cbor2
import psycopg
from psycopg.types.numeric import Int8

from benchmarks._context import Bench
from benchmarks._harness import rotation
from benchmarks._plan import Plan
from benchmarks._results import CaseResult, Target, case_from_rates
from benchmarks._server import fill, vacuum_analyze, wait_for_feed_horizon
from benchmarks._sides import FLOOR, LIBRARY, libpq_url
from benchmarks._stats import per_round_ratios
from benchmarks._workload import EVENT_TYPE, encode_metadata, encode_payload
from eventstore import PostgresEventStore, Projection, ProjectionRunner, RecordedEvent
from eventstore._sql import READ_ALL, SAVE_CHECKPOINT

LIBRARY_BATCH = "library/batch"
LIBRARY_DBAPI = "library/dbapi"
FLOOR_BATCH = "floor/batch"

_EVENTS = {"full": 200_000, "scale": 200_000, "quick": 2_000}
_ROUNDS = {"full": 3, "scale": 3, "quick": 1}

KEY = "11.rebuild"

CREATE_TABLE = "CREATE TABLE IF NOT EXISTS {table} (stream_id text PRIMARY KEY, n bigint NOT NULL)"

UPSERT_ONE = (
    "INSERT INTO {table} (stream_id, n) VALUES (%(stream_id)s, 1)"
    " ON CONFLICT (stream_id) DO UPDATE SET n = {table}.n + 1"
)
"""One event's row: its stream's counter, created or incremented."""

UPSERT_MANY = (
    "INSERT INTO {table} (stream_id, n)"
    " SELECT * FROM unnest(%(stream_ids)s::text[], %(counts)s::bigint[])"
    " ON CONFLICT (stream_id) DO UPDATE SET n = {table}.n + excluded.n"
)
"""A batch's rows in one statement: one counter per stream, incremented by how
many of the batch's events it has (ON CONFLICT may touch a row only once per
statement, so the handler counts per stream first). One statement, one plan,
two array parameters: cheaper on the server than ``executemany`` (one statement
per row, however pipelined) and than a ``VALUES`` list (a new statement text,
so a new plan, for each batch length)."""


def _tables(side: str) -> str:
    return "rebuild_" + side.replace("/", "_")


def _counted(stream_ids: list[str]) -> dict[str, list[Any]]:
    counts = Counter(stream_ids)
    return {"stream_ids": list(counts), "counts": list(counts.values())}


class _Runner:
    """A library side: a runner over its own projection, rebuilt from scratch each time."""

    def __init__(self, store: PostgresEventStore, side: str, page: int) -> None:
        table = _tables(side)
        one = UPSERT_ONE.format(table=table)
        many = UPSERT_MANY.format(table=table)

        def handle(event: RecordedEvent, connection: Any) -> None:
            connection.exec_driver_sql(one, {"stream_id": event.stream_id})

        cursor: list[Any] = [None, None]  # the DBAPI connection and a cursor kept for it

        def handle_dbapi(event: RecordedEvent, connection: Any) -> None:
            driver = connection.connection.dbapi_connection
            if cursor[0] is not driver:  # a new connection after a reconnect
                cursor[:] = [driver, driver.cursor()]
            cursor[1].execute(one, {"stream_id": event.stream_id}, prepare=True)

        def handle_batch(events: list[RecordedEvent], connection: Any) -> None:
            connection.exec_driver_sql(many, _counted([event.stream_id for event in events]))

        def reset(connection: Any) -> None:
            connection.exec_driver_sql(f"TRUNCATE {table}")

        name = table
        if side == LIBRARY:
            projection = Projection(name, handle, reset=reset)
        elif side == LIBRARY_DBAPI:
            projection = Projection(name, handle_dbapi, reset=reset)
        else:
            projection = Projection(name, handle_batch=handle_batch, reset=reset)
        self.runner = ProjectionRunner(store, projection, batch_size=page)

    def prepare(self) -> None:
        self.runner.reset()

    def rebuild(self) -> int:
        return self.runner.run_once()

    def close(self) -> None:
        self.runner.close()


class _Floor:
    """A floor side: raw psycopg, one transaction per page, checkpoint included."""

    def __init__(self, url: str, side: str, page: int) -> None:
        self.table = _tables(side)
        self.batch = side == FLOOR_BATCH
        self.page = page
        self.connection: psycopg.Connection[Any] = psycopg.connect(libpq_url(url))
        self.cursor: psycopg.Cursor[Any] = self.connection.cursor()

    def prepare(self) -> None:
        with self.connection.transaction():
            self.cursor.execute(f"TRUNCATE {self.table}")
            self.cursor.execute("DELETE FROM projection_checkpoints WHERE name = %s", (self.table,))

    def rebuild(self) -> int:
        cursor = self.cursor
        loads = cbor2.loads
        one = UPSERT_ONE.format(table=self.table)
        many = UPSERT_MANY.format(table=self.table)
        params: dict[str, Any] = {
            "after_xid": "0",
            "after_position": Int8(0),
            "types": None,
            "prefix": None,
            "limit": Int8(self.page),
        }
        checkpoint: dict[str, Any] = {"name": self.table}
        count = 0
        while True:
            with self.connection.transaction():
                rows = cursor.execute(READ_ALL, params, prepare=True).fetchall()
                if not rows:
                    return count
                for row in rows:
                    loads(row[3])
                if self.batch:
                    cursor.execute(many, _counted([row[0] for row in rows]), prepare=True)
                else:
                    for row in rows:
                        cursor.execute(one, {"stream_id": row[0]}, prepare=True)
                last = rows[-1]
                checkpoint["transaction_id"] = Int8(last[6])
                checkpoint["position"] = Int8(last[7])
                cursor.execute(SAVE_CHECKPOINT, checkpoint, prepare=True)
            count += len(rows)
            if len(rows) < self.page:
                return count
            params["after_xid"] = str(last[6])
            params["after_position"] = Int8(last[7])

    def close(self) -> None:
        self.connection.close()


def rebuild(bench: Bench) -> list[CaseResult]:
    """Events/s rebuilding the counter table from every event of the feed, per side."""
    plan = bench.plan
    events = _EVENTS[plan.mode]
    page = plan.page
    url = bench.database("rebuild")
    bench.log(f"filling {events:,} events over {page:,} streams (interleaved)")
    start = time.perf_counter()
    fill(
        url,
        table="events",
        prefix=f"rebuild-{bench.run_id}-",
        streams=page,
        per_stream=events // page,
        event_type=EVENT_TYPE,
        data=encode_payload(),
        metadata=encode_metadata(),
        layout="interleaved",
    )
    fill_seconds = time.perf_counter() - start
    vacuum_analyze(url, "events")
    wait_for_feed_horizon(url)
    names = [LIBRARY, LIBRARY_DBAPI, LIBRARY_BATCH, FLOOR, FLOOR_BATCH]
    with psycopg.connect(libpq_url(url), autocommit=True) as admin:
        for name in names:
            admin.execute(CREATE_TABLE.format(table=_tables(name)))
    store = PostgresEventStore.from_url(url, pool_size=1, max_overflow=0)
    sides: dict[str, Any] = {}
    try:
        for name in (LIBRARY, LIBRARY_DBAPI, LIBRARY_BATCH):
            sides[name] = _Runner(store, name, page)
        for name in (FLOOR, FLOOR_BATCH):
            sides[name] = _Floor(url, name, page)
        rates: dict[str, list[float]] = {name: [] for name in names}
        for round_number in range(_ROUNDS[plan.mode]):
            for name in rotation(names, round_number):
                side = sides[name]
                side.prepare()
                bench.log(f"rebuild through {name} (round {round_number + 1})")
                start = time.perf_counter()
                handled = side.rebuild()
                seconds = time.perf_counter() - start
                if handled != events:
                    raise AssertionError(f"{name} rebuilt from {handled} events, not {events}")
                rates[name].append(events / seconds)
        _check_tables(url, names, events, page)
    finally:
        for side in sides.values():
            side.close()
        store.close()
    return [
        case_from_rates(
            key=KEY,
            operation=11,
            title=f"rebuild a counter table from {events:,} events, pages of {page:,}",
            rate_unit="events/s",
            rates=rates,
            extra={"fill_seconds": {"events": fill_seconds}, "page": page, "streams": page},
        )
    ]


def _check_tables(url: str, names: list[str], events: int, streams: int) -> None:
    """Every side's table holds the same counts: one row per stream, summing to ``events``."""
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        for name in names:
            row = connection.execute(
                f"SELECT count(*), sum(n), min(n), max(n) FROM {_tables(name)}"
            ).fetchone()
            per_stream = events // streams
            if row is None or tuple(row) != (streams, events, per_stream, per_stream):
                raise AssertionError(f"{name} rebuilt the wrong table: {row}")


def targets(by_key: dict[str, CaseResult], plan: Plan) -> list[Target]:
    """Issue 15's rebuild targets: the per-event runner at least 0.8x the floor, the
    batch handler at least 1.5x the per-event runner (per-round ratios)."""
    if KEY not in by_key:
        return []
    case = by_key[KEY]
    note = "" if plan.is_claim else "quick run: not a claim"
    versus_floor = case.versus_floor[LIBRARY].median
    sides = case.sides
    batch = per_round_ratios(sides[LIBRARY_BATCH].per_round, sides[LIBRARY].per_round).median
    dbapi = case.versus_floor.get(LIBRARY_DBAPI)
    if dbapi is not None:
        note = "; ".join(
            filter(
                None, [note, f"{LIBRARY_DBAPI} (no SQLAlchemy in the handler): {dbapi.median:.2f}"]
            )
        )
    return [
        Target(
            11,
            "rebuild events/s, per-event handler vs floor",
            versus_floor,
            ">=",
            0.8,
            versus_floor >= 0.8,
            note,
        ),
        Target(
            11,
            "rebuild events/s, batch handler vs per-event handler",
            batch,
            ">=",
            1.5,
            batch >= 1.5,
            "" if plan.is_claim else "quick run: not a claim",
        ),
    ]
