"""Bulk append: the events of many streams written at once, on the import's path.

Every event is checked and encoded as :meth:`append_events` does, then copied
(binary COPY) into the import's temporary tables; each stream is accepted when
the target is at its expected version, and the accepted streams are inserted in
the order given, in transactions of whole streams (see :mod:`._import`, steps 3
and 4).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from contextlib import ExitStack
from typing import Any

import psycopg

from eventstore._import_summary import ImportSummary
from eventstore._validation import MAX_VERSION, check_identifier, check_int, encode_batch
from eventstore.errors import ValidationError
from eventstore.postgres import PostgresEventStore
from eventstore.transfer import _sql
from eventstore.transfer._common import ProgressCallback, connection_at_head, one
from eventstore.transfer._import import accept_streams, commit_accepted, drop_stage

StreamAppend = tuple[str, int, Iterable[Any]]
"""One stream of a bulk append: ``(stream_id, expected_version, events)``."""


def bulk_append(
    store: PostgresEventStore,
    streams: Iterable[StreamAppend],
    *,
    batch_events: int = 20_000,
    progress: ProgressCallback | None = None,
) -> ImportSummary:
    """Append the events of many streams at once; return what was appended and
    what was refused.

    ``streams`` yields ``(stream_id, expected_version, events)``: ``events`` as
    :meth:`append_events` takes them (not empty), ``expected_version`` an int,
    the version the stream must be at (0: it must not exist yet; the
    ``StreamState`` values are not taken). A stream may appear only once (its id
    is kept in memory to check this).

    Every event is checked and encoded first: a bad event, a stream given twice
    or without events raises :class:`ValidationError` and nothing is appended.
    Then each stream is appended whole, in one transaction with other whole
    streams (about ``batch_events`` events each), when the target holds it at
    ``expected_version`` as that transaction commits; a stream at any other
    version is refused, left untouched and listed in ``summary.refused``
    (``summary.ok`` is then false), and the other streams are still appended.
    Events enter the global feed in the order given. Their ``created_at`` is
    the server's time when the call started. Subscribers are woken once per
    transaction unless the store has ``notify=False``. ``progress`` is called
    with ``"writing"`` as batches commit.

    Raises :class:`ValidationError` for bad input, :class:`SchemaError` when the
    database is not at head, :class:`TransferError` when streams kept being
    written to while the call ran (``error.imported`` says what was committed).
    """
    store.lifecycle.check_open()
    if isinstance(batch_events, bool) or not isinstance(batch_events, int) or batch_events < 1:
        raise ValidationError(f"batch_events must be a positive int, not {batch_events!r}")
    started = time.perf_counter()
    with ExitStack() as stack:
        connection, _ = stack.enter_context(connection_at_head(store.engine, "target"))
        stack.callback(drop_stage, connection)
        with connection.transaction():
            connection.execute(_sql.STAGE_TABLES)
            (now,) = one(connection, _sql.NOW)
            _stage(connection, store, streams, now)
            connection.execute(_sql.INDEX_STAGE)
            accept_streams(connection)
        return commit_accepted(connection, batch_events, started, progress, notify=store.notify)


def _stage(
    connection: psycopg.Connection[Any],
    store: PostgresEventStore,
    streams: Iterable[StreamAppend],
    now: Any,
) -> None:
    """Check and encode every stream's events and copy them into the staging table."""
    seen: set[str] = set()
    ordinal = 0
    with connection.cursor() as cursor, cursor.copy(_sql.COPY_EVENTS) as copy:
        copy.set_types(_sql.EVENT_TYPES)
        for item in streams:
            if not (isinstance(item, tuple) and len(item) == 3):
                raise ValidationError(
                    "each stream of a bulk append is a (stream_id, expected_version, events) "
                    f"tuple, not {item!r:.100}"
                )
            stream_id, expected, events = item
            check_identifier(stream_id, "stream_id")
            if stream_id in seen:
                raise ValidationError(f"stream {stream_id!r} is given twice")
            seen.add(stream_id)
            check_int(expected, "expected_version", minimum=0)
            batch = encode_batch(events, store.codec)
            if not len(batch):
                raise ValidationError(f"stream {stream_id!r} is given no events")
            if expected > MAX_VERSION - len(batch):
                raise ValidationError(
                    f"stream {stream_id!r}: {len(batch)} events after version {expected} "
                    "go past the largest version (2**63-1)"
                )
            for version, event in enumerate(batch, start=expected + 1):
                copy.write_row(
                    (ordinal, stream_id, version, event.event_type, event.data, event.metadata, now)
                )
                ordinal += 1
