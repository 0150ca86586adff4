"""Every statement export and import send, with psycopg's parameters (``%(name)s``, ``%s``).

The store's tables are named as in :mod:`eventstore._sql` (from the Core tables of
:mod:`eventstore.schema`); the import's temporary tables are its own.

:data:`STATEMENTS` lists them all. The queries and writes (SELECT, INSERT,
UPDATE, DELETE, WITH) can each be PREPAREd in a session of a database at head
once the statements of :data:`STAGING` (which create the import's temporary
tables) have run in it; the others (:data:`STAGING`, :data:`DROP_STAGE`, the two
COPY statements, :data:`READ_ONLY_SNAPSHOT`) are run, not prepared.
"""

from __future__ import annotations

from eventstore._sql import EVENTS, SNAPSHOTS

# --------------------------------------------------------------------------- export

READ_ONLY_SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
"""The first statement of the export's transaction: everything it reads is one snapshot."""

COUNT_EVENTS = f"""
SELECT count(*), count(DISTINCT stream_id) FROM {EVENTS}
WHERE %(prefix)s::text IS NULL OR starts_with(stream_id, %(prefix)s::text)
"""
COUNT_SNAPSHOTS = f"""
SELECT count(*) FROM {SNAPSHOTS}
WHERE %(prefix)s::text IS NULL OR starts_with(stream_id, %(prefix)s::text)
"""
# Timestamps are formatted by the server, in UTC with all six fractional digits:
# RFC 3339 text for CBOR tag 0, cheaper than formatting datetimes in Python.
_RFC3339 = """to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
SELECT_EVENTS = f"""
SELECT stream_id, version, event_type, event_data, metadata::text, {_RFC3339} FROM {EVENTS}
WHERE %(prefix)s::text IS NULL OR starts_with(stream_id, %(prefix)s::text)
ORDER BY transaction_id, position
"""
"""The events to export, in feed order, as the arguments of ItemWriter.event."""
SELECT_SNAPSHOTS = f"""
SELECT stream_id, version, state_data, {_RFC3339} FROM {SNAPSHOTS}
WHERE %(prefix)s::text IS NULL OR starts_with(stream_id, %(prefix)s::text)
ORDER BY stream_id
"""
"""The snapshots to export, by stream id, as the arguments of ItemWriter.snapshot."""

# --------------------------------------------------------------------------- import: staging

STAGE_TABLES = """
DROP TABLE IF EXISTS pg_temp.eventstore_import_events, pg_temp.eventstore_import_snapshots,
    pg_temp.eventstore_import_streams;
CREATE TEMPORARY TABLE eventstore_import_events (
    ordinal bigint NOT NULL,
    stream_id text NOT NULL,
    version bigint NOT NULL,
    event_type text NOT NULL,
    event_data bytea NOT NULL,
    metadata text,
    created_at timestamptz NOT NULL
);
CREATE TEMPORARY TABLE eventstore_import_snapshots (
    stream_id text NOT NULL,
    version bigint NOT NULL,
    state_data bytea NOT NULL,
    created_at timestamptz NOT NULL
);
"""
"""The temporary tables the file is copied into (the ordinal is the event's place in the file)."""
COPY_EVENTS = """COPY pg_temp.eventstore_import_events
    (ordinal, stream_id, version, event_type, event_data, metadata, created_at)
    FROM STDIN (FORMAT BINARY)"""
EVENT_TYPES = ["int8", "text", "int8", "text", "bytea", "text", "timestamptz"]
"""The types of COPY_EVENTS's columns."""
COPY_SNAPSHOTS = """COPY pg_temp.eventstore_import_snapshots
    (stream_id, version, state_data, created_at) FROM STDIN (FORMAT BINARY)"""
SNAPSHOT_TYPES = ["text", "int8", "bytea", "timestamptz"]
"""The types of COPY_SNAPSHOTS's columns."""

INDEX_STAGE = """
ALTER TABLE pg_temp.eventstore_import_events ADD PRIMARY KEY (ordinal);
CREATE TEMPORARY TABLE eventstore_import_streams AS
    SELECT stream_id, min(version) AS first_version, max(version) AS last_version,
           count(*) AS events, min(ordinal) AS first_ordinal, max(ordinal) AS last_ordinal,
           0::bigint AS target_version, false AS accepted
    FROM pg_temp.eventstore_import_events GROUP BY stream_id;
ALTER TABLE pg_temp.eventstore_import_streams ADD PRIMARY KEY (stream_id);
CREATE INDEX ON pg_temp.eventstore_import_streams (first_ordinal);
-- Autovacuum never analyzes temporary tables: without statistics the planner
-- guesses a few hundred rows and picks plans that sort the whole file on disk.
ANALYZE pg_temp.eventstore_import_events, pg_temp.eventstore_import_snapshots,
    pg_temp.eventstore_import_streams;
"""
"""Run once the file is copied: one row per stream of the file, and the indexes."""

DROP_STAGE = """
DROP TABLE IF EXISTS pg_temp.eventstore_import_events, pg_temp.eventstore_import_snapshots,
    pg_temp.eventstore_import_streams
"""

STAGING = (STAGE_TABLES, INDEX_STAGE)
"""The statements that create the temporary tables the import's other statements use."""

# --------------------------------------------------------------------------- import: verification

STREAM_COUNT = "SELECT count(*) FROM pg_temp.eventstore_import_streams"
BROKEN_SEQUENCE = """
SELECT stream_id, version, previous FROM (
    SELECT stream_id, version,
           lag(version) OVER (PARTITION BY stream_id ORDER BY ordinal) AS previous
    FROM pg_temp.eventstore_import_events
) AS steps
WHERE CASE WHEN previous IS NULL THEN version < 1 ELSE version <> previous + 1 END
LIMIT 1
"""
"""The first event whose version does not follow its stream's previous one in the file."""
CHECK_METADATA = (
    "SELECT count(metadata::jsonb) FROM pg_temp.eventstore_import_events WHERE metadata IS NOT NULL"
)
"""Fails (a DataError) when some metadata is not text JSONB takes."""
DUPLICATE_SNAPSHOT = """
SELECT stream_id FROM pg_temp.eventstore_import_snapshots
GROUP BY stream_id HAVING count(*) > 1 LIMIT 1
"""
STRAY_SNAPSHOT = """
SELECT n.stream_id, n.version, s.last_version
FROM pg_temp.eventstore_import_snapshots AS n
LEFT JOIN pg_temp.eventstore_import_streams AS s USING (stream_id)
WHERE s.stream_id IS NULL OR n.version < 1 OR n.version > s.last_version
LIMIT 1
"""
"""A snapshot of a stream without events in the file, or past the stream's last version."""

# --------------------------------------------------------------------------- import: commit

# A stream is accepted when its first version in the file follows the target's
# head. Run once for every stream, then again inside each batch's transaction for
# that batch's streams (a stream refused then stays refused: never re-accepted).
CHECK_TARGET = f"""
WITH heads AS (
    SELECT s.stream_id, coalesce(last.version, 0) AS version
    FROM pg_temp.eventstore_import_streams AS s
    LEFT JOIN LATERAL (
        SELECT version FROM {EVENTS} AS e WHERE e.stream_id = s.stream_id
        ORDER BY version DESC LIMIT 1
    ) AS last ON true
    WHERE %(all)s::boolean
       OR (s.accepted AND s.first_ordinal BETWEEN %(low)s::bigint AND %(high)s::bigint)
)
UPDATE pg_temp.eventstore_import_streams AS s
SET target_version = heads.version, accepted = (heads.version = s.first_version - 1)
FROM heads
WHERE s.stream_id = heads.stream_id
  AND (%(all)s::boolean OR heads.version <> s.first_version - 1)
"""

# Batches: ranges of file positions (ordinals) in which no accepted stream starts
# before the range and ends inside it, or the reverse; so every batch holds whole
# streams. A segment is such a minimal range; segments are grouped into batches of
# about %(batch)s events.
BATCHES = """
WITH accepted AS (
    SELECT first_ordinal, last_ordinal, events,
           max(last_ordinal) OVER (
               ORDER BY first_ordinal ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
           ) AS reach
    FROM pg_temp.eventstore_import_streams WHERE accepted
), numbered AS (
    SELECT *, sum(CASE WHEN reach IS NULL OR reach < first_ordinal THEN 1 ELSE 0 END)
                  OVER (ORDER BY first_ordinal) AS segment
    FROM accepted
), segments AS (
    SELECT segment, min(first_ordinal) AS low, max(last_ordinal) AS high,
           sum(events)::bigint AS events
    FROM numbered GROUP BY segment
), batched AS (
    SELECT *, ((sum(events) OVER (ORDER BY segment))::bigint - events) / %(batch)s::bigint
              AS batch
    FROM segments
)
SELECT min(low), max(high), sum(events)::bigint FROM batched GROUP BY batch ORDER BY batch
"""
# Refused streams' events are deleted from the staging table, so the insert reads
# a range of the ordinal index, already in file order: no join, no sort.
DROP_REFUSED = """
DELETE FROM pg_temp.eventstore_import_events AS e
USING pg_temp.eventstore_import_streams AS s
WHERE e.stream_id = s.stream_id AND NOT s.accepted
  AND (%(all)s::boolean OR s.first_ordinal BETWEEN %(low)s::bigint AND %(high)s::bigint)
"""
INSERT_EVENTS = f"""
INSERT INTO {EVENTS} (stream_id, version, event_type, event_data, metadata, created_at)
SELECT stream_id, version, event_type, event_data, metadata::jsonb, created_at
FROM pg_temp.eventstore_import_events
WHERE ordinal BETWEEN %(low)s::bigint AND %(high)s::bigint
ORDER BY ordinal
"""
INSERT_SNAPSHOTS = f"""
INSERT INTO {SNAPSHOTS} (stream_id, version, state_data, created_at)
SELECT n.stream_id, n.version, n.state_data, n.created_at
FROM pg_temp.eventstore_import_snapshots AS n
JOIN pg_temp.eventstore_import_streams AS s USING (stream_id)
WHERE s.accepted AND s.first_ordinal BETWEEN %(low)s::bigint AND %(high)s::bigint
ON CONFLICT (stream_id) DO UPDATE
    SET version = EXCLUDED.version,
        state_data = EXCLUDED.state_data,
        created_at = EXCLUDED.created_at
    WHERE {SNAPSHOTS}.version < EXCLUDED.version
"""
BATCH_STREAMS = """
SELECT count(*) FROM pg_temp.eventstore_import_streams
WHERE accepted AND first_ordinal BETWEEN %(low)s::bigint AND %(high)s::bigint
"""
NOW = "SELECT now()"
"""The server's time at the start of the transaction: ``created_at`` of a bulk append."""
NOTIFY = "SELECT pg_notify(%s, '')"
"""Wakes the target's subscribers (the channel name is the parameter)."""
REFUSED = """
SELECT stream_id, first_version, last_version, target_version
FROM pg_temp.eventstore_import_streams WHERE NOT accepted
ORDER BY first_ordinal LIMIT %(limit)s::bigint
"""
"""The refused streams, as the fields of RefusedStream, in file order."""
REFUSED_COUNTS = """
SELECT count(*), coalesce(sum(events), 0)::bigint
FROM pg_temp.eventstore_import_streams WHERE NOT accepted
"""

STATEMENTS = (
    READ_ONLY_SNAPSHOT,
    COUNT_EVENTS,
    COUNT_SNAPSHOTS,
    SELECT_EVENTS,
    SELECT_SNAPSHOTS,
    STAGE_TABLES,
    COPY_EVENTS,
    COPY_SNAPSHOTS,
    INDEX_STAGE,
    NOW,
    STREAM_COUNT,
    BROKEN_SEQUENCE,
    CHECK_METADATA,
    DUPLICATE_SNAPSHOT,
    STRAY_SNAPSHOT,
    CHECK_TARGET,
    REFUSED_COUNTS,
    DROP_REFUSED,
    BATCHES,
    INSERT_EVENTS,
    INSERT_SNAPSHOTS,
    BATCH_STREAMS,
    NOTIFY,
    REFUSED,
    DROP_STAGE,
)
"""Every statement above: the export's, then the import's, in the order they are first sent."""
