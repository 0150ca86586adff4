"""The floor: raw psycopg 3 on one connection in autocommit, every statement
prepared (``prepare=True``) on one cursor kept for the connection, sending the
SAME SQL text the library sends
(imported from :mod:`eventstore._sql`, so the two never drift), plus a bare
``INSERT`` as the absolute floor for appends, and the append as it was before
the global feed, which prices the feed.

It encodes and decodes per call as the library does (CBOR payloads, JSON
metadata), but builds no objects beyond psycopg's row tuples.
"""

from __future__ import annotations

from typing import Any

import cbor2
import psycopg
import psycopg.errors
from psycopg.types.numeric import Int8

from benchmarks._sides import FLOOR, ConflictError, libpq_url
from benchmarks._workload import (
    EVENT_TYPE,
    METADATA,
    PAYLOAD,
    STATE,
    encode_metadata,
    fold,
)
from eventstore._sql import (
    APPEND,
    APPEND_ONE,
    APPEND_ONE_SILENT,
    APPEND_SILENT,
    LOAD_SNAPSHOT,
    LOAD_STREAM,
    READ_ALL,
    SAVE_SNAPSHOT,
    STREAM_VERSION,
)
from eventstore._validation import MAX_VERSION

LOAD_STREAM_JSONB = LOAD_STREAM.replace("metadata::text", "metadata")
"""The library's stream load with the metadata column as JSONB (psycopg parses it)."""
assert LOAD_STREAM_JSONB != LOAD_STREAM, "the library's load SQL changed: update the floor"

BARE_INSERT_ONE = """
INSERT INTO events (stream_id, version, event_type, event_data, metadata)
VALUES (%(stream_id)s, %(version)s, %(type)s, %(data)s, %(metadata)s::jsonb)
"""
"""The absolute floor for one event: no version check, no stream-order check, no NOTIFY."""

BARE_INSERT_MANY = """
INSERT INTO events (stream_id, version, event_type, event_data, metadata)
SELECT %(stream_id)s, batch.version, batch.event_type, batch.event_data, batch.metadata::jsonb
FROM unnest(%(versions)b::bigint[], %(types)b::text[], %(data)b::bytea[], %(metadata)b::text[])
    AS batch(version, event_type, event_data, metadata)
"""
"""The absolute floor for a batch: one ``unnest`` insert, nothing checked, arrays
sent in binary (text arrays would quote and escape every element in Python)."""

PRE_FEED_REVISION = "eventstore_0001"
"""The schema before the global feed: ``events`` without ``transaction_id``,
``position`` and their index."""

PRE_FEED_APPEND_ONE = """
WITH head AS (
    SELECT coalesce(max(version), 0) AS version FROM events WHERE stream_id = %(stream_id)s
), inserted AS (
    INSERT INTO events (stream_id, version, event_type, event_data, metadata)
    SELECT %(stream_id)s, head.version + 1, %(type)s, %(data)s, %(metadata)s::jsonb
    FROM head
    WHERE head.version BETWEEN %(lowest)s::bigint AND %(highest)s::bigint
    RETURNING version
)
SELECT (SELECT version FROM inserted), (SELECT version FROM head)
"""
"""The single-event append as the library sent it before the global feed: the
same version check, no stream-order check, no NOTIFY (for :data:`PRE_FEED_REVISION`)."""

PRE_FEED_APPEND = """
WITH head AS (
    SELECT coalesce(max(version), 0) AS version FROM events WHERE stream_id = %(stream_id)s
), inserted AS (
    INSERT INTO events (stream_id, version, event_type, event_data, metadata)
    SELECT %(stream_id)s, head.version + batch.ordinal,
           batch.event_type, batch.event_data, batch.metadata
    FROM head,
         unnest(%(types)b::text[], %(data)b::bytea[], %(metadata)b::text[]::jsonb[])
             WITH ORDINALITY AS batch(event_type, event_data, metadata, ordinal)
    WHERE head.version BETWEEN %(lowest)s::bigint AND %(highest)s::bigint
    RETURNING version
)
SELECT (SELECT max(version) FROM inserted), (SELECT version FROM head)
"""
"""The batch append before the global feed, with arrays sent in binary as today."""

_INT8_MAX = Int8(MAX_VERSION)
_INT8_ONE = Int8(1)
_PAGE = Int8(1000)


class FloorSide:
    """Raw psycopg on one autocommit connection (one per thread when threaded)."""

    name = FLOOR

    def __init__(self, url: str) -> None:
        self.connection: psycopg.Connection[Any] = psycopg.connect(libpq_url(url), autocommit=True)
        # One cursor for every statement: Connection.execute builds a new cursor
        # per call, which costs about as much Python as the rest of an append.
        self.cursor: psycopg.Cursor[Any] = self.connection.cursor()

    def append(self, stream_id: str, expected: int, count: int = 1) -> int:
        """The library's checked insert in autocommit (``APPEND_ONE_SILENT`` or
        ``APPEND_SILENT``: the store's notifier sends the wake-up after the
        commit, off the append's path), raw."""
        return self._checked(stream_id, expected, count, APPEND_ONE_SILENT, APPEND_SILENT)

    def append_no_notify(self, stream_id: str, expected: int, count: int = 1) -> int:
        """The library's checked insert without a NOTIFY (what ``notify=False``
        stores send), raw: the same statement as :meth:`append`."""
        return self._checked(stream_id, expected, count, APPEND_ONE_SILENT, APPEND_SILENT)

    def append_notify_in_commit(self, stream_id: str, expected: int, count: int = 1) -> int:
        """The checked insert with its NOTIFY inside the statement (``APPEND_ONE``
        or ``APPEND``: what a ``notify=True`` append sent before the notifier, and
        what an append through ``connection=`` sends), raw."""
        return self._checked(stream_id, expected, count, APPEND_ONE, APPEND)

    def append_pre_feed(self, stream_id: str, expected: int, count: int = 1) -> int:
        """The checked insert as it was before the global feed (``PRE_FEED_APPEND_ONE``
        or ``PRE_FEED_APPEND``), raw; on a database at :data:`PRE_FEED_REVISION`."""
        return self._checked(stream_id, expected, count, PRE_FEED_APPEND_ONE, PRE_FEED_APPEND)

    def _checked(self, stream_id: str, expected: int, count: int, one: str, many: str) -> int:
        bound = Int8(expected)
        params: dict[str, Any] = {"stream_id": stream_id, "lowest": bound, "highest": bound}
        if count == 1:
            sql = one
            params.update(
                type=EVENT_TYPE, data=cbor2.dumps(PAYLOAD), metadata=encode_metadata(METADATA)
            )
        else:
            sql = many
            params.update(
                types=[EVENT_TYPE] * count,
                data=[cbor2.dumps(PAYLOAD) for _ in range(count)],
                metadata=[encode_metadata(METADATA) for _ in range(count)],
            )
        try:
            row = self.cursor.execute(sql, params, prepare=True).fetchone()
        except psycopg.errors.UniqueViolation:
            raise ConflictError(None) from None
        assert row is not None
        if row[0] is None:
            raise ConflictError(int(row[1]))
        return int(row[0])

    def append_bare(self, stream_id: str, expected: int, count: int = 1) -> int:
        """A bare ``INSERT`` at versions the caller vouches for (no check at all)."""
        if count == 1:
            self.cursor.execute(
                BARE_INSERT_ONE,
                {
                    "stream_id": stream_id,
                    "version": Int8(expected + 1),
                    "type": EVENT_TYPE,
                    "data": cbor2.dumps(PAYLOAD),
                    "metadata": encode_metadata(METADATA),
                },
                prepare=True,
            )
        else:
            self.cursor.execute(
                BARE_INSERT_MANY,
                {
                    "stream_id": stream_id,
                    "versions": [Int8(expected + i) for i in range(1, count + 1)],
                    "types": [EVENT_TYPE] * count,
                    "data": [cbor2.dumps(PAYLOAD) for _ in range(count)],
                    "metadata": [encode_metadata(METADATA) for _ in range(count)],
                },
                prepare=True,
            )
        return expected + count

    def stream_version(self, stream_id: str) -> int:
        row = self.cursor.execute(STREAM_VERSION, {"stream_id": stream_id}, prepare=True).fetchone()
        assert row is not None
        return int(row[0])

    def _rows(self, stream_id: str, low: Int8, limit: Int8 | None) -> list[Any]:
        params = {"stream_id": stream_id, "low": low, "high": _INT8_MAX, "limit": limit}
        return self.cursor.execute(LOAD_STREAM, params, prepare=True).fetchall()

    def load(self, stream_id: str) -> int:
        """``LOAD_STREAM``, ``fetchall``, ``cbor2.loads`` per row."""
        loads = cbor2.loads
        rows = self._rows(stream_id, _INT8_ONE, None)
        decoded = [loads(row[3]) for row in rows]
        return len(decoded)

    def load_jsonb(self, stream_id: str) -> int:
        """:meth:`load` with the metadata parsed by psycopg on every row."""
        loads = cbor2.loads
        params = {"stream_id": stream_id, "low": _INT8_ONE, "high": _INT8_MAX, "limit": None}
        rows = self.cursor.execute(LOAD_STREAM_JSONB, params, prepare=True).fetchall()
        decoded = [loads(row[3]) for row in rows]
        return len(decoded)

    def iterate(self, stream_id: str, page: int) -> int:
        """Page through the stream as ``iter_events`` does (same SQL, by version)."""
        loads = cbor2.loads
        limit = Int8(page)
        low = 1
        count = 0
        while True:
            rows = self._rows(stream_id, Int8(low), limit)
            for row in rows:
                loads(row[3])
            count += len(rows)
            if len(rows) < page:
                return count
            low = rows[-1][1] + 1

    def read_feed(self, events: int, page: int) -> int:
        """Read the first ``events`` events of the global feed (whole pages of
        ``page``) with the library's feed query, after the last row's
        ``(transaction_id, position)`` as ``iter_all`` reads on; decode each payload."""
        loads = cbor2.loads
        params: dict[str, Any] = {
            "after_xid": "0",
            "after_position": Int8(0),
            "types": None,
            "prefix": None,
            "limit": Int8(page),
        }
        count = 0
        while count < events:
            rows = self.cursor.execute(READ_ALL, params, prepare=True).fetchall()
            for row in rows:
                loads(row[3])
            count += len(rows)
            if len(rows) < page:
                break
            params["after_xid"] = str(rows[-1][6])
            params["after_position"] = Int8(rows[-1][7])
        return count

    def versions(self, stream_id: str) -> list[int]:
        return [int(row[1]) for row in self._rows(stream_id, _INT8_ONE, None)]

    def save_snapshot(self, stream_id: str, version: int) -> None:
        params = {"stream_id": stream_id, "version": Int8(version), "state": cbor2.dumps(STATE)}
        row = self.cursor.execute(SAVE_SNAPSHOT, params, prepare=True).fetchone()
        if row is None or not row[0]:
            raise AssertionError(f"snapshot of {stream_id} at {version} was not written")

    def load_aggregate(self, stream_id: str) -> tuple[dict[str, Any], int]:
        """``LOAD_SNAPSHOT``, then the events after it in pages of 1000 (as
        ``Repository.load`` reads them), each folded into the state."""
        loads = cbor2.loads
        row = self.cursor.execute(LOAD_SNAPSHOT, {"stream_id": stream_id}, prepare=True).fetchone()
        if row is None:
            raise AssertionError(f"no snapshot for {stream_id}")
        version = int(row[0])
        state: dict[str, Any] = loads(row[1])
        while True:
            rows = self._rows(stream_id, Int8(version + 1), _PAGE)
            for event in rows:
                state = fold(state, loads(event[3]))
            if rows:
                version = rows[-1][1]
            if len(rows) < _PAGE:
                return state, version

    def close(self) -> None:
        self.connection.close()
