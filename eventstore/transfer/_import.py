"""Import: a file (see :mod:`._format`) loaded into a database at head.

1. **Stage.** The whole file is copied into temporary tables on the target
   (bounded memory on the client), each item checked as it is read.
2. **Verify.** The staged file is checked as a whole: the counts, that each
   stream's versions are contiguous and increasing in file order, that the
   metadata is JSONB, the snapshots against their streams. A file that fails any
   check, here or in step 1, imports nothing.
3. **Accept.** Each stream is accepted when its first version in the file
   directly follows the target's version of it (0 for a stream the target does
   not have): a stream with any of its versions already in the target is refused
   and left untouched, and the import goes on with the other streams.
4. **Commit.** Accepted events are inserted in file order, so the target's feed
   keeps the source's order, in transactions that each hold whole streams with
   their snapshots: a stream is imported entirely or not at all. Each batch
   checks its streams again first (a writer may have appended to one since step
   3, and such a stream is then refused); a batch that loses that race anyway is
   checked and tried again, three times in all, after which the import stops
   with a TransferError saying what it had committed. The target assigns new
   positions and transaction ids.

While it runs, the temporary tables take about the file's uncompressed size on
the target server's disk. Running an import again after it stopped part-way
imports the streams still missing and refuses the ones already there.
"""

from __future__ import annotations

import time
from contextlib import ExitStack, suppress
from typing import IO, Any, cast

import psycopg
import psycopg.errors
from sqlalchemy.engine import URL, Engine

from eventstore._import_summary import ImportSummary, RefusedStream
from eventstore._sql import NOTIFY_CHANNEL
from eventstore._translate import first_line
from eventstore.errors import TransferError, ValidationError
from eventstore.transfer import _sql
from eventstore.transfer._common import (
    PathOrFile,
    ProgressCallback,
    as_path,
    connection_at_head,
    one,
    run,
)
from eventstore.transfer._format import ItemReader, decompressed

_PROGRESS_EVERY = 2000
"""Events read between two progress reports."""
_MAX_REPORTED_REFUSALS = 1000
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
    path = as_path(source)
    name = str(path) if path is not None else "the file"
    with ExitStack() as stack:
        raw = stack.enter_context(path.open("rb")) if path is not None else cast(IO[bytes], source)
        stream = decompressed(raw)
        if stream is not raw:
            stack.callback(stream.close)
        connection, _ = stack.enter_context(connection_at_head(target, "target"))
        stack.callback(drop_stage, connection)
        with connection.transaction():
            items = ItemReader(stream, name)
            header, end = _stage(connection, items, progress)
            _verify(connection, items, header, end)
            accept_streams(connection)
        return commit_accepted(connection, batch_events, started, progress)


def _stage(
    connection: psycopg.Connection[Any], items: ItemReader, progress: ProgressCallback | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Copy the file's events and snapshots into temporary tables, checking each item
    as it is read (see ItemReader); return the header's map and the end marker's."""
    header = items.header()
    expected_events = header.get("events")
    total = expected_events if isinstance(expected_events, int) else None
    connection.execute(_sql.STAGE_TABLES)
    cursor = connection.cursor()
    try:
        with cursor.copy(_sql.COPY_EVENTS) as copy:
            copy.set_types(_sql.EVENT_TYPES)
            for ordinal, event in enumerate(items.events()):
                copy.write_row((ordinal, *event))
                if progress is not None and (ordinal + 1) % _PROGRESS_EVERY == 0:
                    progress("reading", ordinal + 1, total)
        if progress is not None:
            progress("reading", items.events_read, total)
        with cursor.copy(_sql.COPY_SNAPSHOTS) as copy:
            copy.set_types(_sql.SNAPSHOT_TYPES)
            for snapshot in items.snapshots():
                copy.write_row(snapshot)
    except psycopg.DataError as error:
        raise items.corrupt(f"it holds a value PostgreSQL rejects: {first_line(error)}") from None
    return header, items.end()


def _verify(
    connection: psycopg.Connection[Any],
    items: ItemReader,
    header: dict[str, Any],
    end: dict[str, Any],
) -> None:
    """Check the staged file as a whole; raise TransferError if it is bad."""
    connection.execute(_sql.INDEX_STAGE)
    (streams,) = one(connection, _sql.STREAM_COUNT)
    found = {"events": items.events_read, "streams": streams, "snapshots": items.snapshots_read}
    items.check_counts(end, header, found)
    broken = connection.execute(_sql.BROKEN_SEQUENCE).fetchone()
    if broken is not None:
        stream_id, version, previous = broken
        if previous is None:
            where = f"it starts at version {version}"
        else:
            where = f"version {version} follows version {previous}"
        raise items.corrupt(f"stream {stream_id!r} is not a contiguous sequence: {where}")
    try:
        connection.execute(_sql.CHECK_METADATA)
    except psycopg.DataError as error:
        raise items.corrupt(f"it holds metadata that is not JSON: {first_line(error)}") from None
    duplicate = connection.execute(_sql.DUPLICATE_SNAPSHOT).fetchone()
    if duplicate is not None:
        raise items.corrupt(f"it holds two snapshots of stream {duplicate[0]!r}")
    stray = connection.execute(_sql.STRAY_SNAPSHOT).fetchone()
    if stray is not None:
        stream_id, version, last = stray
        why = "which has no events in the file" if last is None else f"whose last is {last}"
        raise items.corrupt(
            f"it holds a snapshot of stream {stream_id!r} at version {version}, {why}"
        )


def accept_streams(connection: psycopg.Connection[Any]) -> None:
    """Accept the streams whose first version in the file follows the target's; drop
    the staged events of the others."""
    everything = {"all": True, "low": 0, "high": 0}
    if run(connection, _sql.CHECK_TARGET, everything) and one(connection, _sql.REFUSED_COUNTS)[0]:
        run(connection, _sql.DROP_REFUSED, everything)


def commit_accepted(
    connection: psycopg.Connection[Any],
    batch_events: int,
    started: float,
    progress: ProgressCallback | None,
    *,
    notify: bool = True,
) -> ImportSummary:
    """Insert the accepted streams in batches of whole streams, one transaction each
    (each sending the store's NOTIFY unless ``notify`` is false); return what was
    inserted and what was refused."""
    batches = connection.execute(_sql.BATCHES, {"batch": batch_events}).fetchall()
    connection.commit()
    total = sum(int(count) for _, _, count in batches)
    events = streams = snapshots = 0

    def summary() -> ImportSummary:
        refused_streams, refused_events = one(connection, _sql.REFUSED_COUNTS)
        refused = tuple(
            RefusedStream(*row)
            for row in connection.execute(_sql.REFUSED, {"limit": _MAX_REPORTED_REFUSALS})
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
                    if run(connection, _sql.CHECK_TARGET, bounds):
                        run(connection, _sql.DROP_REFUSED, bounds)
                    inserted = run(connection, _sql.INSERT_EVENTS, bounds)
                    saved = run(connection, _sql.INSERT_SNAPSHOTS, bounds)
                    (batch_streams,) = one(connection, _sql.BATCH_STREAMS, bounds)
                    if notify:
                        connection.execute(_sql.NOTIFY, (NOTIFY_CHANNEL,))
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


def drop_stage(connection: psycopg.Connection[Any]) -> None:
    """Drop the temporary tables, so a pooled connection goes back clean."""
    if connection.closed or connection.info.transaction_status not in (
        psycopg.pq.TransactionStatus.IDLE,
        psycopg.pq.TransactionStatus.INTRANS,
    ):
        return
    with suppress(psycopg.Error), connection.transaction():
        connection.execute(_sql.DROP_STAGE)
