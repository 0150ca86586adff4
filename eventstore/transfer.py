"""Logical backup: export streams and snapshots to one portable file, import them elsewhere.

:func:`export_events` writes the events (in feed order) and snapshots of a
database, or of the streams whose id starts with a prefix, to a single file;
:func:`import_events` loads such a file into another database migrated to head.
Event and snapshot bytes are copied as stored, never decoded, so no event class
needs to be importable; metadata and ``created_at`` are kept exactly.

The file (format version 1) is a CBOR sequence (RFC 8742: CBOR items one after
the other), gzip-compressed (level 1: fast) when its name ends in ``.gz``; import
recognises gzip by its magic bytes, whatever the name. Every item is an array::

    ["pg-eventstore export", 1, {"library_version": str, "schema_revision": str | null,
        "created_at": datetime, "stream_prefix": str | null,
        "events": int, "streams": int, "snapshots": int}]
    ["event", stream_id, version, event_type, event_data: bytes,
        metadata: str | null (the JSONB as text), created_at: datetime]   (one per event)
    ["snapshot", stream_id, version, state_data: bytes, created_at: datetime]  (one per snapshot)
    ["end", {"events": int, "streams": int, "snapshots": int, "sha256": bytes}]

Datetimes are CBOR tag 0 (RFC 3339 text, UTC, microseconds). Events come in feed
order (transaction id, then position), snapshots by stream id. ``sha256`` is the
SHA-256 of every byte of the (uncompressed) sequence before the ``"end"`` item.

Export reads one consistent snapshot of the database (a single REPEATABLE READ,
READ ONLY transaction) through server-side cursors, so memory stays bounded
whatever the size of the store.

Import first reads the whole file into temporary tables on the target (bounded
memory on the client), verifying the format, the counts, the checksum, and that
each stream's versions are contiguous and increasing in file order; a file that
fails any check imports nothing. Then each stream is accepted when its first
version in the file directly follows the target's version of it (0 for a
stream the target does not have): a stream with any of its versions already in
the target is refused and left untouched, and the import goes on with the other
streams. Accepted events are inserted in file order, so the target's feed keeps
the source's order, in transactions that each hold whole streams with their
snapshots: a stream is imported entirely or not at all. The target assigns new
positions and transaction ids. While it runs, the temporary tables take about
the file's uncompressed size on the target server's disk. Running an import
again after it stopped part-way imports the streams still missing and refuses
the ones already there.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata as package_metadata
from pathlib import Path
from typing import IO, Any, BinaryIO, Union, cast

import cbor2
import psycopg
import psycopg.errors
from cbor2 import CBORTag
from sqlalchemy.engine import URL, Engine

from eventstore import migrations
from eventstore._engines import engine_for
from eventstore._sql import NOTIFY_CHANNEL
from eventstore._validation import check_identifier, check_int, check_stored_event
from eventstore.errors import SchemaError, TransferError, ValidationError

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "ExportSummary",
    "ImportSummary",
    "ProgressCallback",
    "RefusedStream",
    "TransferError",
    "export_events",
    "import_events",
]

FORMAT_NAME = "pg-eventstore export"
"""The first element of a file's header item."""

FORMAT_VERSION = 1
"""The version of the file format this module writes and reads."""

ProgressCallback = Callable[[str, int, "int | None"], None]
"""``progress(phase, done, total)``: called as work advances (``total`` None when unknown).

Export reports the phases ``"events"`` and ``"snapshots"``; import reports
``"reading"`` (events read from the file) and ``"writing"`` (events inserted).
"""

PathOrFile = Union[str, "os.PathLike[str]", BinaryIO, IO[bytes]]

_GZIP_MAGIC = b"\x1f\x8b"
_FETCH_ROWS = 1000
"""Rows per round trip of the export's server-side cursors."""
_FLUSH_BYTES = 1 << 20
"""Encoded bytes buffered before they are hashed and written."""
_READ_BYTES = 1 << 20
"""Bytes read from the file at a time on import."""
_PROGRESS_EVERY = 2000
_MAX_REPORTED_REFUSALS = 1000

_EVENT = "event"
_SNAPSHOT = "snapshot"
_END = "end"


@dataclass(frozen=True)
class ExportSummary:
    """What :func:`export_events` wrote."""

    events: int
    streams: int
    snapshots: int
    seconds: float
    bytes_written: int
    """Size of the file as written (after compression)."""
    compressed: bool


@dataclass(frozen=True)
class RefusedStream:
    """A stream in the file that the import left alone, and why."""

    stream_id: str
    first_version: int
    """The stream's first version in the file."""
    last_version: int
    """The stream's last version in the file."""
    target_version: int
    """The stream's version in the target when it was refused."""

    @property
    def reason(self) -> str:
        """Why the stream was refused, in words."""
        if self.target_version >= self.first_version:
            overlap = min(self.target_version, self.last_version)
            return (
                f"the target already has versions {self.first_version}..{overlap} "
                f"(it is at version {self.target_version})"
            )
        return (
            f"the target is at version {self.target_version} and the file starts at "
            f"{self.first_version}: versions {self.target_version + 1}.."
            f"{self.first_version - 1} would be missing"
        )


@dataclass(frozen=True)
class ImportSummary:
    """What :func:`import_events` did.

    ``events``, ``streams`` and ``snapshots`` count what was inserted.
    ``refused_streams`` counts the streams left alone; ``refused`` lists them (the
    first 1000). ``ok`` is true when nothing was refused.
    """

    events: int
    streams: int
    snapshots: int
    seconds: float
    refused_streams: int = 0
    refused_events: int = 0
    refused: tuple[RefusedStream, ...] = ()

    @property
    def ok(self) -> bool:
        """True when every stream of the file was imported."""
        return self.refused_streams == 0


_NOTHING_IMPORTED = ImportSummary(events=0, streams=0, snapshots=0, seconds=0.0)


# --------------------------------------------------------------------------- export

_COUNT_EVENTS = """
SELECT count(*), count(DISTINCT stream_id) FROM events
WHERE %(prefix)s::text IS NULL OR starts_with(stream_id, %(prefix)s::text)
"""
_COUNT_SNAPSHOTS = """
SELECT count(*) FROM snapshots
WHERE %(prefix)s::text IS NULL OR starts_with(stream_id, %(prefix)s::text)
"""
# Timestamps are formatted by the server, in UTC with all six fractional digits:
# RFC 3339 text for CBOR tag 0, cheaper than formatting datetimes in Python.
_RFC3339 = """to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
_SELECT_EVENTS = f"""
SELECT stream_id, version, event_type, event_data, metadata::text, {_RFC3339} FROM events
WHERE %(prefix)s::text IS NULL OR starts_with(stream_id, %(prefix)s::text)
ORDER BY transaction_id, position
"""
_SELECT_SNAPSHOTS = f"""
SELECT stream_id, version, state_data, {_RFC3339} FROM snapshots
WHERE %(prefix)s::text IS NULL OR starts_with(stream_id, %(prefix)s::text)
ORDER BY stream_id
"""


def export_events(
    source: str | URL | Engine,
    destination: PathOrFile,
    *,
    stream_prefix: str | None = None,
    compress: bool | None = None,
    progress: ProgressCallback | None = None,
) -> ExportSummary:
    """Write the events and snapshots of ``source`` to ``destination``; return the counts.

    ``source`` is a PostgreSQL URL or a SQLAlchemy Engine (psycopg); the database
    must be migrated to head. ``destination`` is a path or a binary file opened
    for writing. A path is written through a temporary file next to it and
    renamed at the end, so a failed export leaves no partial file (and an
    existing file stays as it was). ``stream_prefix`` limits the export to the
    streams whose id starts with it (a literal prefix: ``%`` and ``_`` are plain
    characters). ``compress`` gzips the file; None means "when the path ends in
    .gz" (never for a file object). ``progress`` is called as events and
    snapshots are written.

    Everything is read from one REPEATABLE READ snapshot, through server-side
    cursors (bounded memory). Raises :class:`SchemaError` when the source is not
    migrated to head, :class:`ValidationError` for bad arguments,
    :class:`OSError` when the file cannot be written.
    """
    if stream_prefix is not None and not isinstance(stream_prefix, str):
        raise ValidationError(f"stream_prefix must be a str or None, not {stream_prefix!r}")
    started = time.perf_counter()
    path = _as_path(destination)
    if compress is None:
        compress = path is not None and path.name.endswith(".gz")
    with ExitStack() as stack:
        if path is None:
            raw = cast(IO[bytes], destination)
        else:
            partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
            raw = stack.enter_context(_replaced_on_success(partial, path))
        counter = _CountingWriter(raw)
        sink = cast(IO[bytes], counter)
        if compress:
            compressor = gzip.GzipFile(
                filename="", mode="wb", fileobj=sink, compresslevel=1, mtime=0
            )
            sink = cast(IO[bytes], stack.enter_context(compressor))
        connection = stack.enter_context(_driver_connection(source))
        writer = _ItemWriter(sink)
        events, streams, snapshots = _write_snapshot_of(connection, writer, stream_prefix, progress)
        stack.close()  # flush gzip and the file, then rename
        return ExportSummary(
            events=events,
            streams=streams,
            snapshots=snapshots,
            seconds=time.perf_counter() - started,
            bytes_written=counter.written,
            compressed=compress,
        )


def _write_snapshot_of(
    connection: psycopg.Connection[Any],
    writer: _ItemWriter,
    prefix: str | None,
    progress: ProgressCallback | None,
) -> tuple[int, int, int]:
    params = {"prefix": prefix}
    with connection.transaction():
        connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        revision = _checked_schema(connection, "source")
        event_total, stream_total = _one(connection, _COUNT_EVENTS, params)
        (snapshot_total,) = _one(connection, _COUNT_SNAPSHOTS, params)
        writer.item(
            [
                FORMAT_NAME,
                FORMAT_VERSION,
                {
                    "library_version": _library_version(),
                    "schema_revision": revision,
                    "created_at": datetime.now(timezone.utc),
                    "stream_prefix": prefix,
                    "events": event_total,
                    "streams": stream_total,
                    "snapshots": snapshot_total,
                },
            ]
        )
        events = 0
        with connection.cursor(name="eventstore_export_events", binary=True) as cursor:
            cursor.execute(_SELECT_EVENTS, params)
            while rows := cursor.fetchmany(_FETCH_ROWS):
                for stream_id, version, event_type, data, meta, created_at in rows:
                    writer.item(
                        [
                            _EVENT,
                            stream_id,
                            version,
                            event_type,
                            data,
                            meta,
                            CBORTag(0, created_at),
                        ]
                    )
                events += len(rows)
                if progress is not None:
                    progress("events", events, event_total)
        snapshots = 0
        with connection.cursor(name="eventstore_export_snapshots", binary=True) as cursor:
            cursor.execute(_SELECT_SNAPSHOTS, params)
            while rows := cursor.fetchmany(_FETCH_ROWS):
                for stream_id, version, state, created_at in rows:
                    writer.item([_SNAPSHOT, stream_id, version, state, CBORTag(0, created_at)])
                snapshots += len(rows)
                if progress is not None:
                    progress("snapshots", snapshots, snapshot_total)
    # The counts were read in the same snapshot as the rows: they can only agree.
    if (events, snapshots) != (event_total, snapshot_total):  # pragma: no cover
        raise TransferError(
            f"the source changed during the export ({events} events and {snapshots} "
            f"snapshots read, {event_total} and {snapshot_total} counted)"
        )
    writer.end({"events": events, "streams": stream_total, "snapshots": snapshots})
    return events, stream_total, snapshots


class _ItemWriter:
    """Encodes items into a buffer; hashes and writes it a megabyte at a time."""

    def __init__(self, sink: IO[bytes]) -> None:
        self._sink = sink
        self._buffer = io.BytesIO()
        self._encoder = cbor2.CBOREncoder(self._buffer)
        self._hash = hashlib.sha256()

    def item(self, item: list[Any]) -> None:
        self._encoder.encode(item)
        if self._buffer.tell() >= _FLUSH_BYTES:
            self._flush()

    def end(self, counts: dict[str, int]) -> None:
        """Write the end marker: ``counts`` and the SHA-256 of everything before it."""
        self._flush()
        self._encoder.encode([_END, {**counts, "sha256": self._hash.digest()}])
        self._sink.write(self._buffer.getvalue())
        self._sink.flush()

    def _flush(self) -> None:
        data = self._buffer.getvalue()
        self._hash.update(data)
        self._sink.write(data)
        self._buffer.seek(0)
        self._buffer.truncate()


class _CountingWriter:
    """Passes writes through, counting the bytes."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.written = 0

    def write(self, data: Any) -> int:
        self._raw.write(data)
        size = memoryview(data).nbytes
        self.written += size
        return size

    def flush(self) -> None:
        self._raw.flush()


@contextmanager
def _replaced_on_success(partial: Path, path: Path) -> Iterator[IO[bytes]]:
    """A new file at ``partial``, renamed to ``path`` when the block succeeds, else removed."""
    try:
        with partial.open("xb") as file:
            yield file
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


# --------------------------------------------------------------------------- import

_STAGE_TABLES = """
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
_COPY_EVENTS = """COPY pg_temp.eventstore_import_events
    (ordinal, stream_id, version, event_type, event_data, metadata, created_at)
    FROM STDIN (FORMAT BINARY)"""
_EVENT_TYPES = ["int8", "text", "int8", "text", "bytea", "text", "timestamptz"]
_COPY_SNAPSHOTS = """COPY pg_temp.eventstore_import_snapshots
    (stream_id, version, state_data, created_at) FROM STDIN (FORMAT BINARY)"""
_SNAPSHOT_TYPES = ["text", "int8", "bytea", "timestamptz"]

_INDEX_STAGE = """
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
_BROKEN_SEQUENCE = """
SELECT stream_id, version, previous FROM (
    SELECT stream_id, version,
           lag(version) OVER (PARTITION BY stream_id ORDER BY ordinal) AS previous
    FROM pg_temp.eventstore_import_events
) AS steps
WHERE CASE WHEN previous IS NULL THEN version < 1 ELSE version <> previous + 1 END
LIMIT 1
"""
_CHECK_METADATA = (
    "SELECT count(metadata::jsonb) FROM pg_temp.eventstore_import_events WHERE metadata IS NOT NULL"
)
_DUPLICATE_SNAPSHOT = """
SELECT stream_id FROM pg_temp.eventstore_import_snapshots
GROUP BY stream_id HAVING count(*) > 1 LIMIT 1
"""
_STRAY_SNAPSHOT = """
SELECT n.stream_id, n.version, s.last_version
FROM pg_temp.eventstore_import_snapshots AS n
LEFT JOIN pg_temp.eventstore_import_streams AS s USING (stream_id)
WHERE s.stream_id IS NULL OR n.version < 1 OR n.version > s.last_version
LIMIT 1
"""
_STREAM_COUNT = "SELECT count(*) FROM pg_temp.eventstore_import_streams"

# A stream is accepted when its first version in the file follows the target's
# head. Run once for every stream, then again inside each batch's transaction for
# that batch's streams (a stream refused then stays refused: never re-accepted).
_CHECK_TARGET = """
WITH heads AS (
    SELECT s.stream_id, coalesce(last.version, 0) AS version
    FROM pg_temp.eventstore_import_streams AS s
    LEFT JOIN LATERAL (
        SELECT version FROM events AS e WHERE e.stream_id = s.stream_id
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
_BATCHES = """
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
_DROP_REFUSED = """
DELETE FROM pg_temp.eventstore_import_events AS e
USING pg_temp.eventstore_import_streams AS s
WHERE e.stream_id = s.stream_id AND NOT s.accepted
  AND (%(all)s::boolean OR s.first_ordinal BETWEEN %(low)s::bigint AND %(high)s::bigint)
"""
_INSERT_EVENTS = """
INSERT INTO events (stream_id, version, event_type, event_data, metadata, created_at)
SELECT stream_id, version, event_type, event_data, metadata::jsonb, created_at
FROM pg_temp.eventstore_import_events
WHERE ordinal BETWEEN %(low)s::bigint AND %(high)s::bigint
ORDER BY ordinal
"""
_INSERT_SNAPSHOTS = """
INSERT INTO snapshots (stream_id, version, state_data, created_at)
SELECT n.stream_id, n.version, n.state_data, n.created_at
FROM pg_temp.eventstore_import_snapshots AS n
JOIN pg_temp.eventstore_import_streams AS s USING (stream_id)
WHERE s.accepted AND s.first_ordinal BETWEEN %(low)s::bigint AND %(high)s::bigint
ON CONFLICT (stream_id) DO UPDATE
    SET version = EXCLUDED.version,
        state_data = EXCLUDED.state_data,
        created_at = EXCLUDED.created_at
    WHERE snapshots.version < EXCLUDED.version
"""
_BATCH_STREAMS = """
SELECT count(*) FROM pg_temp.eventstore_import_streams
WHERE accepted AND first_ordinal BETWEEN %(low)s::bigint AND %(high)s::bigint
"""
_REFUSED = """
SELECT stream_id, first_version, last_version, target_version
FROM pg_temp.eventstore_import_streams WHERE NOT accepted
ORDER BY first_ordinal LIMIT %(limit)s::bigint
"""
_REFUSED_COUNTS = """
SELECT count(*), coalesce(sum(events), 0)::bigint
FROM pg_temp.eventstore_import_streams WHERE NOT accepted
"""
_DROP_STAGE = """
DROP TABLE IF EXISTS pg_temp.eventstore_import_events, pg_temp.eventstore_import_snapshots,
    pg_temp.eventstore_import_streams
"""
_BATCH_ATTEMPTS = 3


def import_events(
    target: str | URL | Engine,
    source: PathOrFile,
    *,
    progress: ProgressCallback | None = None,
    batch_events: int = 20_000,
) -> ImportSummary:
    """Load an export file into ``target``; return what was imported and what was refused.

    ``target`` is a PostgreSQL URL or a SQLAlchemy Engine (psycopg), migrated to
    head. ``source`` is a path or a binary file opened for reading; gzip is
    recognised by its magic bytes. The whole file is read and verified first
    (format, counts, SHA-256, contiguous versions, valid metadata); a file that
    fails raises :class:`TransferError` and imports nothing.

    A stream is refused, and left untouched, when the target already holds any
    of the file's versions of it (or when the file's first version would leave a
    gap after the target's last); the other streams are still imported, and the
    refused ones are listed in the summary (``summary.ok`` is then false). Each
    stream goes in with its snapshot in one transaction, whole or not at all;
    events are inserted in file order, in transactions of about ``batch_events``
    events that never split a stream. ``progress`` is called as events are read
    and written.

    Raises :class:`SchemaError` when the target is not migrated to head,
    :class:`TransferError` when the file fails verification or the import stops
    part-way (``error.imported`` says what was committed), :class:`OSError` when
    the file cannot be read.
    """
    if isinstance(batch_events, bool) or not isinstance(batch_events, int) or batch_events < 1:
        raise ValidationError(f"batch_events must be a positive int, not {batch_events!r}")
    started = time.perf_counter()
    path = _as_path(source)
    name = str(path) if path is not None else "the file"
    with ExitStack() as stack:
        raw = stack.enter_context(path.open("rb")) if path is not None else cast(IO[bytes], source)
        stream = _decompressed(raw)
        if stream is not raw:
            stack.callback(stream.close)
        connection = stack.enter_context(_driver_connection(target))
        stack.callback(_drop_stage, connection)
        with connection.transaction():
            _checked_schema(connection, "target")
            _stage(connection, _ItemReader(stream, name), progress)
        return _insert_batches(connection, batch_events, started, progress)


def _stage(
    connection: psycopg.Connection[Any], items: _ItemReader, progress: ProgressCallback | None
) -> None:
    """Copy the file into temporary tables and verify it; raise TransferError if it is bad."""
    header = items.header()
    expected_events = header.get("events")
    total = expected_events if isinstance(expected_events, int) else None
    connection.execute(_STAGE_TABLES)
    cursor = connection.cursor()
    item: Any = None
    events = 0
    snapshots = 0
    try:
        with cursor.copy(_COPY_EVENTS) as copy:
            copy.set_types(_EVENT_TYPES)
            for item in items:
                if type(item) is not list or not item or item[0] != _EVENT:
                    break
                copy.write_row((events, *_checked_event(item, items)))
                events += 1
                if progress is not None and events % _PROGRESS_EVERY == 0:
                    progress("reading", events, total)
            else:
                item = None
        if progress is not None:
            progress("reading", events, total)
        if item is not None and type(item) is list and item and item[0] == _SNAPSHOT:
            with cursor.copy(_COPY_SNAPSHOTS) as copy:
                copy.set_types(_SNAPSHOT_TYPES)
                copy.write_row(_checked_snapshot(item, items))
                snapshots = 1
                for item in items:
                    if type(item) is not list or not item or item[0] != _SNAPSHOT:
                        break
                    copy.write_row(_checked_snapshot(item, items))
                    snapshots += 1
                else:
                    item = None
    except psycopg.DataError as error:
        raise items.corrupt(f"it holds a value PostgreSQL rejects: {_first_line(error)}") from None
    if item is None:
        raise items.corrupt(
            f"it is truncated: it ends after {events} events and {snapshots} snapshots, "
            "without its end marker"
        )
    counts = items.end(item)
    items.expect_eof()
    _verify_staged(connection, items, counts, header, events, snapshots)
    everything = {"all": True, "low": 0, "high": 0}
    if _run(connection, _CHECK_TARGET, everything) and _one(connection, _REFUSED_COUNTS)[0]:
        _run(connection, _DROP_REFUSED, everything)


def _verify_staged(
    connection: psycopg.Connection[Any],
    items: _ItemReader,
    counts: dict[str, Any],
    header: dict[str, Any],
    events: int,
    snapshots: int,
) -> None:
    connection.execute(_INDEX_STAGE)
    (streams,) = _one(connection, _STREAM_COUNT)
    found = {"events": events, "streams": streams, "snapshots": snapshots}
    for key, value in found.items():
        for origin, declared in (("end marker", counts[key]), ("header", header.get(key))):
            if declared is not None and declared != value:
                raise items.corrupt(f"it holds {value} {key}, but its {origin} says {declared}")
    broken = connection.execute(_BROKEN_SEQUENCE).fetchone()
    if broken is not None:
        stream_id, version, previous = broken
        if previous is None:
            where = f"it starts at version {version}"
        else:
            where = f"version {version} follows version {previous}"
        raise items.corrupt(f"stream {stream_id!r} is not a contiguous sequence: {where}")
    try:
        connection.execute(_CHECK_METADATA)
    except psycopg.DataError as error:
        raise items.corrupt(f"it holds metadata that is not JSON: {_first_line(error)}") from None
    duplicate = connection.execute(_DUPLICATE_SNAPSHOT).fetchone()
    if duplicate is not None:
        raise items.corrupt(f"it holds two snapshots of stream {duplicate[0]!r}")
    stray = connection.execute(_STRAY_SNAPSHOT).fetchone()
    if stray is not None:
        stream_id, version, last = stray
        why = "which has no events in the file" if last is None else f"whose last is {last}"
        raise items.corrupt(
            f"it holds a snapshot of stream {stream_id!r} at version {version}, {why}"
        )


def _insert_batches(
    connection: psycopg.Connection[Any],
    batch_events: int,
    started: float,
    progress: ProgressCallback | None,
) -> ImportSummary:
    batches = connection.execute(_BATCHES, {"batch": batch_events}).fetchall()
    connection.commit()
    total = sum(int(count) for _, _, count in batches)
    events = streams = snapshots = 0

    def summary() -> ImportSummary:
        refused_streams, refused_events = _one(connection, _REFUSED_COUNTS)
        refused = tuple(
            RefusedStream(*row)
            for row in connection.execute(_REFUSED, {"limit": _MAX_REPORTED_REFUSALS})
        )
        connection.commit()
        return ImportSummary(
            events=events,
            streams=streams,
            snapshots=snapshots,
            seconds=time.perf_counter() - started,
            refused_streams=refused_streams,
            refused_events=refused_events,
            refused=refused,
        )

    if progress is not None:
        progress("writing", 0, total)
    for low, high, _ in batches:
        bounds = {"low": low, "high": high, "all": False}
        for attempt in range(_BATCH_ATTEMPTS):
            try:
                with connection.transaction():
                    if _run(connection, _CHECK_TARGET, bounds):
                        _run(connection, _DROP_REFUSED, bounds)
                    inserted = _run(connection, _INSERT_EVENTS, bounds)
                    saved = _run(connection, _INSERT_SNAPSHOTS, bounds)
                    (batch_streams,) = _one(connection, _BATCH_STREAMS, bounds)
                    connection.execute("SELECT pg_notify(%s, '')", (NOTIFY_CHANNEL,))
            except psycopg.errors.UniqueViolation:
                # A writer appended to one of these streams after the check: check again.
                if attempt == _BATCH_ATTEMPTS - 1:
                    raise TransferError(
                        "the import stopped: streams of the file kept being written to in "
                        "the target while it ran",
                        imported=summary(),
                    ) from None
                continue
            break
        events += inserted
        streams += batch_streams
        snapshots += saved
        if progress is not None:
            progress("writing", events, total)
    return summary()


def _checked_event(item: list[Any], items: _ItemReader) -> tuple[Any, ...]:
    if len(item) == 7:
        _, stream_id, version, event_type, data, meta, created_at = item
        if (
            type(stream_id) is str
            and type(version) is int
            and type(event_type) is str
            and type(data) is bytes
            and (meta is None or type(meta) is str)
            and isinstance(created_at, datetime)
            and created_at.tzinfo is not None
        ):
            try:
                check_stored_event(stream_id, version, event_type, meta)
            except ValidationError as error:
                raise items.corrupt(
                    f"item {items.index} is an event append_events would refuse ({error})"
                ) from None
            return stream_id, version, event_type, data, meta, created_at
    raise items.corrupt(f"item {items.index} is not a well-formed event")


def _checked_snapshot(item: list[Any], items: _ItemReader) -> tuple[Any, ...]:
    if len(item) == 5:
        _, stream_id, version, state, created_at = item
        if (
            type(stream_id) is str
            and type(version) is int
            and type(state) is bytes
            and isinstance(created_at, datetime)
            and created_at.tzinfo is not None
        ):
            try:
                check_identifier(stream_id, "stream_id")
                check_int(version, "version", minimum=1)
            except ValidationError as error:
                raise items.corrupt(
                    f"item {items.index} is a snapshot save_snapshot would refuse ({error})"
                ) from None
            return stream_id, version, state, created_at
    raise items.corrupt(f"item {items.index} is not a well-formed snapshot")


class _ItemReader:
    """The items of a CBOR sequence, read a megabyte at a time, hashing each item's bytes.

    Iterating yields items up to the end of the file; ``index`` is the number of
    the last one yielded (the header is item 0). Every item's raw bytes go into
    the hash except the end marker's, which :meth:`end` checks the hash against.
    """

    def __init__(self, stream: IO[bytes], name: str) -> None:
        self._stream = stream
        self._name = name
        self._hash = hashlib.sha256()
        self._pending = b""
        self._eof = False
        self._items = self._decode()
        self.index = -1

    def corrupt(self, problem: str) -> TransferError:
        """The error for a file that fails verification."""
        return TransferError(
            f"{self._name} is not a valid pg-eventstore export: {problem}; nothing was imported",
            imported=_NOTHING_IMPORTED,
        )

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        item, raw = next(self._items)
        self.index += 1
        if not (type(item) is list and item and item[0] == _END):
            self._hash.update(raw)
        return item

    def header(self) -> dict[str, Any]:
        """Read and check the header item; return its map."""
        try:
            item = next(self)
        except StopIteration:
            raise self.corrupt("it is empty") from None
        if not (type(item) is list and len(item) == 3 and item[0] == FORMAT_NAME):
            raise self.corrupt("it does not start with a pg-eventstore export header")
        version, header = item[1], item[2]
        if version != FORMAT_VERSION:
            raise TransferError(
                f"{self._name} is an export in format version {version!r}; this version of "
                f"pg-eventstore reads format {FORMAT_VERSION}: upgrade pg-eventstore; "
                "nothing was imported",
                imported=_NOTHING_IMPORTED,
            )
        if not isinstance(header, dict):
            raise self.corrupt("its header is not a map")
        return header

    def end(self, item: Any) -> dict[str, Any]:
        """Check the end marker ``item`` against the hash; return its counts."""
        if not (type(item) is list and len(item) == 2 and item[0] == _END):
            kind = item[0] if type(item) is list and item else type(item).__name__
            raise self.corrupt(
                f"item {self.index} ({kind!r}) is out of place: the events come first, "
                "then the snapshots, then the end marker"
            )
        counts = item[1]
        keys = ("events", "streams", "snapshots")
        if not (
            isinstance(counts, dict)
            and all(type(counts.get(key)) is int for key in keys)
            and type(counts.get("sha256")) is bytes
        ):
            raise self.corrupt("its end marker is malformed")
        if counts["sha256"] != self._hash.digest():
            raise self.corrupt(
                "its SHA-256 checksum does not match its content (the file was altered or "
                "damaged after it was written)"
            )
        return cast(dict[str, Any], counts)

    def expect_eof(self) -> None:
        """Raise when anything follows the end marker."""
        for _ in self:
            raise self.corrupt(f"it goes on after its end marker (item {self.index})")

    def _decode(self) -> Iterator[tuple[Any, memoryview]]:
        while True:
            more = self._read()
            pending = self._pending
            if not pending:
                return
            buffer = io.BytesIO(pending)
            decoder = cbor2.CBORDecoder(buffer)
            view = memoryview(pending)
            start = 0
            while start < len(pending):
                try:
                    item = decoder.decode()
                except cbor2.CBORDecodeEOF:
                    if not more:
                        raise self.corrupt(
                            f"it is truncated: it ends in the middle of item {self.index + 1}"
                        ) from None
                    break
                except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError) as error:
                    raise self.corrupt(
                        f"item {self.index + 1} is not valid CBOR ({error})"
                    ) from None
                end = buffer.tell()
                yield item, view[start:end]
                start = end
            self._pending = pending[start:]

    def _read(self) -> bool:
        """Append the next chunk to the pending bytes; False at the end of the file."""
        if self._eof:
            return False
        try:
            # At least as much as is pending, so an item larger than a read is
            # re-decoded a logarithmic number of times, not a linear one.
            chunk = self._stream.read(max(_READ_BYTES, len(self._pending)))
        except (gzip.BadGzipFile, zlib.error) as error:
            raise self.corrupt(f"its gzip compression is damaged ({error})") from None
        except EOFError:
            raise self.corrupt("it is truncated: its gzip stream ends early") from None
        if not chunk:
            self._eof = True
            return False
        self._pending += chunk
        return True


def _decompressed(raw: IO[bytes]) -> IO[bytes]:
    """``raw``, or a gzip reader over it when it starts with the gzip magic bytes."""
    peek = getattr(raw, "peek", None)
    if peek is not None:
        start = bytes(peek(2)[:2])
    elif raw.seekable():
        position = raw.tell()
        start = raw.read(2)
        raw.seek(position)
    else:
        buffered = io.BufferedReader(cast(Any, raw))
        start = buffered.peek(2)[:2]
        raw = cast(IO[bytes], buffered)
    if start == _GZIP_MAGIC:
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))
    return raw


def _drop_stage(connection: psycopg.Connection[Any]) -> None:
    """Drop the temporary tables, so a pooled connection goes back clean."""
    if connection.closed or connection.info.transaction_status not in (
        psycopg.pq.TransactionStatus.IDLE,
        psycopg.pq.TransactionStatus.INTRANS,
    ):
        return
    with suppress(psycopg.Error), connection.transaction():
        connection.execute(_DROP_STAGE)


# --------------------------------------------------------------------------- shared


def _as_path(target: PathOrFile) -> Path | None:
    if isinstance(target, (str, os.PathLike)):
        return Path(target)
    if hasattr(target, "read") or hasattr(target, "write"):
        return None
    raise ValidationError(f"expected a path or a binary file, not {type(target).__name__}")


@contextmanager
def _driver_connection(url_or_engine: str | URL | Engine) -> Iterator[psycopg.Connection[Any]]:
    """A psycopg connection from the engine's pool, or from a URL (closed afterwards)."""
    with engine_for(url_or_engine) as engine:
        pooled = engine.raw_connection()
        try:
            yield cast(psycopg.Connection[Any], pooled.driver_connection)
        finally:
            pooled.close()


def _checked_schema(connection: psycopg.Connection[Any], role: str) -> str | None:
    """The database's schema revision; SchemaError unless its schema is the newest.

    A database whose revisions were merged into the application's own Alembic
    history records no revision of its own: its tables are checked instead.
    """
    revision = None
    if _one(connection, "SELECT to_regclass(%s) IS NOT NULL", (migrations.VERSION_TABLE,))[0]:
        row = connection.execute(f"SELECT version_num FROM {migrations.VERSION_TABLE}").fetchone()
        revision = None if row is None else str(row[0])
    head = _head_revision()
    if revision == head or (revision is None and _one(connection, _HAS_TABLES)[0]):
        return revision
    if revision is None:
        problem = "has no event store tables"
    else:
        problem = f"is at schema revision {revision}, not {head}"
    raise SchemaError(
        f"the {role} database {problem}: run `eventstore migrate upgrade` on it first"
    )


_HAS_TABLES = """
SELECT to_regclass('snapshots') IS NOT NULL AND EXISTS (
    SELECT 1 FROM pg_attribute
    WHERE attrelid = to_regclass('events') AND attname = 'transaction_id' AND NOT attisdropped
)
"""


def _head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(migrations.alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships revisions
        raise SchemaError("pg-eventstore's migrations have no head revision")
    return head


def _library_version() -> str:
    try:
        return package_metadata.version("pg-eventstore")
    except package_metadata.PackageNotFoundError:  # pragma: no cover
        return "unknown"


def _one(
    connection: psycopg.Connection[Any],
    query: str,
    params: dict[str, Any] | tuple[Any, ...] | None = None,
) -> tuple[Any, ...]:
    row = connection.execute(query, params).fetchone()
    assert row is not None
    return tuple(row)


def _run(connection: psycopg.Connection[Any], query: str, params: dict[str, Any]) -> int:
    return connection.execute(query, params).rowcount


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
