"""Export: the events and snapshots of a database, or of the streams whose id starts
with a prefix, written to one file (see :mod:`._format`).

The database is read in one consistent snapshot (a single REPEATABLE READ, READ
ONLY transaction) through server-side cursors, so memory stays bounded whatever
the size of the store. A path is written through a temporary file next to it,
renamed at the end.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata as package_metadata
from pathlib import Path
from typing import IO, Any, cast

import psycopg
from sqlalchemy.engine import URL, Engine

from eventstore.errors import TransferError, ValidationError
from eventstore.transfer import _sql
from eventstore.transfer._common import (
    PathOrFile,
    ProgressCallback,
    as_path,
    connection_at_head,
    one,
)
from eventstore.transfer._format import ItemWriter, gzip_writer, timestamp

_FETCH_ROWS = 1000
"""Rows per round trip of the export's server-side cursors."""


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
    path = as_path(destination)
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
            sink = stack.enter_context(gzip_writer(sink))
        connection, revision = stack.enter_context(connection_at_head(source, "source"))
        events, streams, snapshots = _write_snapshot_of(
            connection, ItemWriter(sink), revision, stream_prefix, progress
        )
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
    writer: ItemWriter,
    revision: str | None,
    prefix: str | None,
    progress: ProgressCallback | None,
) -> tuple[int, int, int]:
    """Write the header, the events, the snapshots and the end marker, all read in one
    snapshot of the database; return the counts of events, streams and snapshots."""
    params = {"prefix": prefix}
    with connection.transaction():
        connection.execute(_sql.READ_ONLY_SNAPSHOT)
        event_total, stream_total = one(connection, _sql.COUNT_EVENTS, params)
        (snapshot_total,) = one(connection, _sql.COUNT_SNAPSHOTS, params)
        writer.header(
            {
                "library_version": _library_version(),
                "schema_revision": revision,
                "created_at": timestamp(datetime.now(timezone.utc)),
                "stream_prefix": prefix,
                "events": event_total,
                "streams": stream_total,
                "snapshots": snapshot_total,
            }
        )
        events = _write_rows(
            connection, "events", _sql.SELECT_EVENTS, params, writer.event, event_total, progress
        )
        snapshots = _write_rows(
            connection,
            "snapshots",
            _sql.SELECT_SNAPSHOTS,
            params,
            writer.snapshot,
            snapshot_total,
            progress,
        )
    # The counts were read in the same snapshot as the rows: they can only agree.
    if (events, snapshots) != (event_total, snapshot_total):  # pragma: no cover
        raise TransferError(
            f"the source changed during the export ({events} events and {snapshots} "
            f"snapshots read, {event_total} and {snapshot_total} counted)"
        )
    writer.end({"events": events, "streams": stream_total, "snapshots": snapshots})
    return events, stream_total, snapshots


def _write_rows(
    connection: psycopg.Connection[Any],
    phase: str,
    query: str,
    params: dict[str, Any],
    write: Callable[..., None],
    total: int,
    progress: ProgressCallback | None,
) -> int:
    """Write each row of ``query`` with ``write``, a page at a time through a
    server-side cursor; return how many there were."""
    written = 0
    with connection.cursor(name=f"eventstore_export_{phase}", binary=True) as cursor:
        cursor.execute(query, params)
        while rows := cursor.fetchmany(_FETCH_ROWS):
            for row in rows:
                write(*row)
            written += len(rows)
            if progress is not None:
                progress(phase, written, total)
    return written


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


def _library_version() -> str:
    try:
        return package_metadata.version("pg-eventstore")
    except package_metadata.PackageNotFoundError:  # pragma: no cover
        return "unknown"
