"""The operations guide's monitoring queries, collected into one report.

:func:`collect_stats` measures the store: the size of its tables and of each
index, how many events and streams it holds, the busiest streams, which streams
are far past their snapshot, how far the global feed is held back by the oldest
running transaction, and how far each projection lags behind the feed and how
many events it skipped because they could not be decoded.

Cost: one statement reads every row of ``events`` once (an index-only scan of the
primary key or a sequential scan, grouped by stream) to count events and streams
and to find the busiest streams and the snapshot coverage. Everything else reads
catalogs or ranges of the feed index. On a store of many millions of events, run it
when a full read of the table's keys is acceptable.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.engine import URL

from eventstore._backend import SkippedEvent
from eventstore._catalog import present_relations
from eventstore._engines import engine_for
from eventstore._validation import check_int
from eventstore.errors import SchemaError
from eventstore.records import Position

__all__ = [
    "ProjectionLag",
    "ProjectionSkips",
    "RunningTransaction",
    "StatsReport",
    "StreamCount",
    "StreamPastSnapshot",
    "TableSize",
    "collect_stats",
    "oldest_transaction",
    "skipped_events",
]

TABLES = ("events", "snapshots", "projection_checkpoints", "projection_skipped_events")
"""The tables whose sizes the report shows, in this order."""

_TABLE_SIZES = """
SELECT t.name, pg_total_relation_size(c.oid), pg_relation_size(c.oid), pg_indexes_size(c.oid)
FROM unnest(%(tables)s::text[]) WITH ORDINALITY AS t(name, ordinal)
JOIN pg_class AS c ON c.oid = to_regclass(t.name)
ORDER BY t.ordinal
"""

_INDEX_SIZES = """
SELECT t.relname, i.relname, pg_relation_size(i.oid)
FROM pg_index AS x
JOIN pg_class AS i ON i.oid = x.indexrelid
JOIN pg_class AS t ON t.oid = x.indrelid
WHERE x.indrelid = ANY(ARRAY(SELECT to_regclass(name) FROM unnest(%(tables)s::text[]) AS name))
ORDER BY t.relname, i.relname
"""

# One pass over events, grouped by stream. A stream's head is max(version): with
# contiguous versions it equals the count, and it is what a snapshot is measured
# against.
_STREAMS = """
WITH per_stream AS MATERIALIZED (
    SELECT stream_id, count(*) AS events, max(version) AS head
    FROM events GROUP BY stream_id
), behind AS MATERIALIZED (
    SELECT p.stream_id, p.head, s.version AS snapshot_version,
           p.head - coalesce(s.version, 0) AS since
    FROM per_stream AS p LEFT JOIN snapshots AS s ON s.stream_id = p.stream_id
    WHERE p.head - coalesce(s.version, 0) > %(threshold)s::bigint
)
SELECT 'totals', NULL::text, count(*), coalesce(sum(events), 0), NULL::bigint
FROM per_stream
UNION ALL
SELECT 'with_snapshot', NULL, count(*), NULL, NULL
FROM per_stream AS p JOIN snapshots AS s ON s.stream_id = p.stream_id
UNION ALL
SELECT 'past_threshold', NULL, count(*), NULL, NULL FROM behind
UNION ALL
(SELECT 'busiest', stream_id, events, head, NULL FROM per_stream
 ORDER BY events DESC, stream_id LIMIT %(top)s::bigint)
UNION ALL
(SELECT 'behind', stream_id, head, since, snapshot_version FROM behind
 ORDER BY since DESC, stream_id LIMIT %(top)s::bigint)
"""

_OLDEST_TRANSACTION = """
SELECT pid, datname, state, backend_type, application_name,
       extract(epoch FROM clock_timestamp() - xact_start)::float8,
       backend_xid IS NOT NULL
FROM pg_stat_activity
WHERE (backend_xid IS NOT NULL OR backend_xmin IS NOT NULL)
  AND xact_start IS NOT NULL
  AND pid <> pg_backend_pid()
ORDER BY xact_start, pid
LIMIT 1
"""

_FEED = """
SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint,
       (SELECT count(*) FROM events
        WHERE transaction_id >= pg_snapshot_xmin(pg_current_snapshot()))
"""

# Lag: the events a projection would read next, i.e. those after its checkpoint
# that the feed shows now (below the oldest running transaction).
_PROJECTIONS = """
SELECT c.name, c.transaction_id, c.position, c.updated_at,
       extract(epoch FROM clock_timestamp() - c.updated_at)::float8,
       (SELECT count(*) FROM events AS e
        WHERE (e.transaction_id, e.position) > (c.transaction_id::text::xid8, c.position)
          AND e.transaction_id < pg_snapshot_xmin(pg_current_snapshot()))
FROM projection_checkpoints AS c
ORDER BY c.name
"""

# Per projection that skipped any: how many, and the latest (revision eventstore_0004).
_SKIPPED = """
SELECT DISTINCT ON (projection) projection, count(*) OVER (PARTITION BY projection),
       transaction_id, position, stream_id, version, event_type, error, skipped_at
FROM projection_skipped_events
ORDER BY projection, transaction_id DESC, position DESC
"""


@dataclass(frozen=True)
class TableSize:
    """A table's size on disk, in bytes: ``total`` counts the table, its indexes
    and TOAST; ``indexes`` maps each index name to its size."""

    name: str
    total_bytes: int
    table_bytes: int
    indexes_bytes: int
    indexes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class StreamCount:
    """A stream, its number of events and its version (last event's version)."""

    stream_id: str
    events: int
    version: int


@dataclass(frozen=True)
class StreamPastSnapshot:
    """A stream more than the threshold past its snapshot (``None``: no snapshot)."""

    stream_id: str
    version: int
    snapshot_version: int | None
    events_since_snapshot: int


@dataclass(frozen=True)
class RunningTransaction:
    """The oldest transaction running in the cluster (any database).

    ``holds_feed`` is True when it has a transaction id (it has written or
    locked rows): readers of the feed then wait for it to end. A transaction
    without one (a long read) holds back vacuum, not the feed.
    """

    pid: int
    database: str | None
    state: str | None
    backend_type: str | None
    application_name: str | None
    age_seconds: float
    holds_feed: bool


@dataclass(frozen=True)
class ProjectionLag:
    """A projection's checkpoint and the feed events visible after it.

    ``lag_events`` counts every visible event after the checkpoint, whatever its
    type: a projection that takes only some types saves its checkpoint at the
    last event it handled, so events of other types after it count too.
    """

    name: str
    checkpoint: Position
    updated_at: datetime
    seconds_since_update: float
    lag_events: int
    skipped_events: int = 0
    """Events it passed over because they could not be decoded
    (``on_undecodable="skip"``): its read model lacks them."""


@dataclass(frozen=True)
class ProjectionSkips:
    """How many events a projection skipped because they could not be decoded, and
    the latest of them."""

    projection: str
    count: int
    latest: SkippedEvent


@dataclass(frozen=True)
class StatsReport:
    """What :func:`collect_stats` measured; :meth:`to_dict` gives its JSON form."""

    database: str
    server_version: str
    collected_at: datetime
    tables: list[TableSize]
    events: int
    streams: int
    top: int
    busiest_streams: list[StreamCount]
    threshold: int
    streams_with_snapshot: int
    streams_past_threshold: int
    past_threshold: list[StreamPastSnapshot]
    feed_horizon: int | None
    held_back_events: int | None
    oldest_transaction: RunningTransaction | None
    projections: list[ProjectionLag]

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (str, int, float, bool, None, lists, dicts).

        Keys, all always present::

            database, server_version, collected_at (ISO 8601)
            tables: {name: {total_bytes, table_bytes, indexes_bytes,
                            indexes: {index name: bytes}}}
            events, streams
            busiest_streams: {top, streams: [{stream_id, events, version}]}
            snapshot_coverage: {threshold, streams_with_snapshot, streams_past_threshold,
                                streams: [{stream_id, version, snapshot_version,
                                           events_since_snapshot}]}
            feed: {horizon, held_back_events,
                   oldest_transaction: null or {pid, database, state, backend_type,
                                                application_name, age_seconds, holds_feed}}
            projections: [{name, checkpoint, updated_at, seconds_since_update, lag_events,
                           skipped_events}]

        ``streams`` lists hold at most ``top`` entries, largest first.
        ``feed.horizon`` and ``feed.held_back_events`` are null on a schema
        without the feed (revision eventstore_0001).
        """
        oldest = self.oldest_transaction
        return {
            "database": self.database,
            "server_version": self.server_version,
            "collected_at": self.collected_at.isoformat(),
            "tables": {
                table.name: {
                    "total_bytes": table.total_bytes,
                    "table_bytes": table.table_bytes,
                    "indexes_bytes": table.indexes_bytes,
                    "indexes": dict(table.indexes),
                }
                for table in self.tables
            },
            "events": self.events,
            "streams": self.streams,
            "busiest_streams": {
                "top": self.top,
                "streams": [
                    {"stream_id": s.stream_id, "events": s.events, "version": s.version}
                    for s in self.busiest_streams
                ],
            },
            "snapshot_coverage": {
                "threshold": self.threshold,
                "streams_with_snapshot": self.streams_with_snapshot,
                "streams_past_threshold": self.streams_past_threshold,
                "streams": [
                    {
                        "stream_id": s.stream_id,
                        "version": s.version,
                        "snapshot_version": s.snapshot_version,
                        "events_since_snapshot": s.events_since_snapshot,
                    }
                    for s in self.past_threshold
                ],
            },
            "feed": {
                "horizon": self.feed_horizon,
                "held_back_events": self.held_back_events,
                "oldest_transaction": None
                if oldest is None
                else {
                    "pid": oldest.pid,
                    "database": oldest.database,
                    "state": oldest.state,
                    "backend_type": oldest.backend_type,
                    "application_name": oldest.application_name,
                    "age_seconds": oldest.age_seconds,
                    "holds_feed": oldest.holds_feed,
                },
            },
            "projections": [
                {
                    "name": p.name,
                    "checkpoint": str(p.checkpoint),
                    "updated_at": p.updated_at.isoformat(),
                    "seconds_since_update": p.seconds_since_update,
                    "lag_events": p.lag_events,
                    "skipped_events": p.skipped_events,
                }
                for p in self.projections
            ],
        }


def collect_stats(
    url_or_engine: str | URL | Engine, *, threshold: int = 100, top: int = 10
) -> StatsReport:
    """Measure the event store in ``url_or_engine`` (a PostgreSQL URL or Engine).

    ``threshold``: a stream counts as past its snapshot when its version exceeds
    the snapshot's version (0 without one) by more than this. ``top``: how many
    streams the busiest and the past-threshold lists hold. Everything is read in
    one read-only repeatable-read transaction, so the numbers agree with each
    other. Reads all of ``events`` once (see the module docstring). Raises
    :class:`ValidationError` for a bad URL or argument and :class:`SchemaError`
    when the database has no ``events`` table (not migrated).
    """
    threshold = check_int(threshold, "threshold", minimum=0)
    top = check_int(top, "top", minimum=1)
    with _read_only(url_or_engine) as connection:
        return _collect(connection, threshold, top)


def oldest_transaction(connection: Connection) -> RunningTransaction | None:
    """The oldest transaction in the cluster other than ``connection``'s own, or None.

    Considers sessions with a transaction id or a snapshot (``backend_xid`` or
    ``backend_xmin`` in ``pg_stat_activity``). Other roles' sessions are visible
    only to superusers and members of ``pg_read_all_stats``.
    """
    row = connection.exec_driver_sql(_OLDEST_TRANSACTION).fetchone()
    if row is None:
        return None
    return RunningTransaction(
        pid=int(row[0]),
        database=row[1],
        state=row[2],
        backend_type=row[3],
        application_name=row[4] or None,
        age_seconds=float(row[5]),
        holds_feed=bool(row[6]),
    )


def skipped_events(connection: Connection) -> list[ProjectionSkips]:
    """For each projection that skipped events it could not decode, how many and the
    latest, by projection name. Needs the table ``projection_skipped_events``
    (revision eventstore_0004)."""
    return [
        ProjectionSkips(
            projection=name,
            count=int(count),
            latest=SkippedEvent(
                name,
                Position(int(transaction_id), int(position)),
                stream_id,
                int(version),
                event_type,
                error,
                skipped_at,
            ),
        )
        for (
            name,
            count,
            transaction_id,
            position,
            stream_id,
            version,
            event_type,
            error,
            skipped_at,
        ) in connection.exec_driver_sql(_SKIPPED)
    ]


def _collect(connection: Connection, threshold: int, top: int) -> StatsReport:
    present = present_relations(connection, TABLES)
    if not {"events", "snapshots"} <= present:
        raise SchemaError(
            "the event store's tables are missing (not migrated): run `eventstore migrate upgrade`"
        )
    database, server_version, collected_at = connection.exec_driver_sql(
        "SELECT current_database(), current_setting('server_version'), now()"
    ).one()

    indexes: dict[str, dict[str, int]] = {}
    for table_name, index_name, size in connection.exec_driver_sql(
        _INDEX_SIZES, {"tables": list(TABLES)}
    ):
        indexes.setdefault(table_name, {})[index_name] = int(size)
    tables = [
        TableSize(
            name=name,
            total_bytes=int(total),
            table_bytes=int(table),
            indexes_bytes=int(index_total),
            indexes=indexes.get(name, {}),
        )
        for name, total, table, index_total in connection.exec_driver_sql(
            _TABLE_SIZES, {"tables": list(TABLES)}
        )
    ]

    events = streams = with_snapshot = past_count = 0
    busiest: list[StreamCount] = []
    past: list[StreamPastSnapshot] = []
    for kind, stream_id, a, b, c in connection.exec_driver_sql(
        _STREAMS, {"threshold": threshold, "top": top}
    ):
        if kind == "totals":
            streams, events = int(a), int(b)
        elif kind == "with_snapshot":
            with_snapshot = int(a)
        elif kind == "past_threshold":
            past_count = int(a)
        elif kind == "busiest":
            busiest.append(StreamCount(stream_id, int(a), int(b)))
        else:
            past.append(
                StreamPastSnapshot(stream_id, int(a), None if c is None else int(c), int(b))
            )
    # UNION ALL keeps each branch's order in practice, but SQL does not promise it.
    busiest.sort(key=lambda s: (-s.events, s.stream_id))
    past.sort(key=lambda s: (-s.events_since_snapshot, s.stream_id))

    horizon: int | None = None
    held_back: int | None = None
    projections: list[ProjectionLag] = []
    if "projection_checkpoints" in present:
        horizon, held_back = (int(v) for v in connection.exec_driver_sql(_FEED).one())
        skipped = (
            {skips.projection: skips.count for skips in skipped_events(connection)}
            if "projection_skipped_events" in present
            else {}
        )
        projections = [
            ProjectionLag(
                name=name,
                checkpoint=Position(int(transaction_id), int(position)),
                updated_at=updated_at,
                seconds_since_update=float(age),
                lag_events=int(lag),
                skipped_events=skipped.get(name, 0),
            )
            for name, transaction_id, position, updated_at, age, lag in connection.exec_driver_sql(
                _PROJECTIONS
            )
        ]

    return StatsReport(
        database=str(database),
        server_version=str(server_version),
        collected_at=collected_at,
        tables=tables,
        events=events,
        streams=streams,
        top=top,
        busiest_streams=busiest,
        threshold=threshold,
        streams_with_snapshot=with_snapshot,
        streams_past_threshold=past_count,
        past_threshold=past,
        feed_horizon=horizon,
        held_back_events=held_back,
        oldest_transaction=oldest_transaction(connection),
        projections=projections,
    )


@contextmanager
def _read_only(url_or_engine: str | URL | Engine) -> Iterator[Connection]:
    with engine_for(url_or_engine, psycopg_driver=False) as engine, engine.connect() as connection:
        connection = connection.execution_options(isolation_level="REPEATABLE READ")
        with connection.begin():
            connection.exec_driver_sql("SET TRANSACTION READ ONLY")
            yield connection
