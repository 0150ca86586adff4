"""The export file format, version 1: what a program needs to write a file that
:func:`eventstore.transfer.import_events` reads, or to read one that
:func:`eventstore.transfer.export_events` wrote.

Layout
------
A file is a CBOR sequence (RFC 8742: CBOR data items one after the other, with
nothing between or around them), optionally gzip-compressed as a whole (RFC
1952). A reader recognises gzip by its first two bytes, ``1f 8b``, whatever the
file's name; the exporter compresses (level 1: fast) when the name ends in
``.gz``. Everything below is about the uncompressed bytes.

Every item is a CBOR array whose first element says what it is. The items come
in this order, and nothing follows the end marker::

    ["pg-eventstore export", 1, {"library_version": str, "schema_revision": str | null,
        "created_at": datetime, "stream_prefix": str | null,
        "events": int, "streams": int, "snapshots": int}]                  (the header)
    ["event", stream_id, version, event_type, event_data: bytes,
        metadata: str | null (the JSONB as text), created_at: datetime]   (one per event)
    ["snapshot", stream_id, version, state_data: bytes, created_at: datetime]  (one per snapshot)
    ["end", {"events": int, "streams": int, "snapshots": int, "sha256": bytes}]

The header's second element is the format version: a reader refuses a file of
any other version, saying which one it is (a newer pg-eventstore wrote it). In
the header's map only the counts are checked, and only those present;
``library_version``, ``schema_revision`` (the source's Alembic revision),
``created_at`` and ``stream_prefix`` (the export's ``--stream``) describe where
the file came from. The end marker's counts are required. ``sha256`` is the
SHA-256 of every byte of the sequence before the end marker (header included);
a file whose bytes do not hash to it was altered or damaged.

Values
------
- A datetime is CBOR tag 0: RFC 3339 text with a time zone. The exporter writes
  UTC with six fractional digits (``"2024-05-01T12:00:00.000001Z"``); a reader
  takes any offset and keeps the instant.
- ``stream_id`` and ``event_type`` are text strings (major type 3) that
  ``append_events`` accepts: not empty, at most 1,024 bytes of UTF-8, no NUL.
- ``version`` is an integer in ``1..2**63-1``.
- ``event_data`` and ``state_data`` are byte strings (major type 2), copied as
  stored: whatever the codec wrote; they are never decoded.
- ``metadata`` is null or the text of a JSON object that ``append_events``
  accepts and PostgreSQL's JSONB takes (``"null"`` counts as no metadata).

A file's content
----------------
- Events come in the order they are to be appended (the exporter writes feed
  order: transaction id, then position). Within a stream the versions are
  contiguous and increase in file order; a stream's first version in the file
  may be above 1 (it continues the stream in the target), never below.
- Snapshots come after all the events, at most one per stream, of a stream with
  events in the file, at a version from 1 to that stream's last version in the
  file. The exporter writes them by stream id.
- The counts in the end marker (and in the header, where present) are the file's
  events, distinct stream ids among its events, and snapshots.

:class:`ItemReader` checks, item by item as it reads: the header and its format
version, the order of the items, each item's shape and values, the checksum and
that nothing follows the end marker. What needs the whole file at once
(contiguous versions, the stream count, snapshots against their streams, JSONB)
the import checks on the server, after reading (see :mod:`._import`).
:class:`ItemWriter` writes such a file.

This module knows nothing of databases.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import zlib
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from typing import IO, Any, cast

import cbor2
from cbor2 import CBORTag

from eventstore._import_summary import ImportSummary
from eventstore._validation import check_identifier, check_int, check_stored_event
from eventstore.errors import TransferError, ValidationError

FORMAT_NAME = "pg-eventstore export"
"""The first element of a file's header item."""

FORMAT_VERSION = 1
"""The version of the file format this module writes and reads."""

EVENT = "event"
SNAPSHOT = "snapshot"
END = "end"
COUNTS = ("events", "streams", "snapshots")
"""The counts of the end marker (and of the header), in the order they are checked."""

GZIP_MAGIC = b"\x1f\x8b"

NOTHING_IMPORTED = ImportSummary(events=0, streams=0, snapshots=0, seconds=0.0)
"""What a file that fails verification imports."""

EventRow = tuple[str, int, str, bytes, "str | None", datetime]
"""A checked event: stream_id, version, event_type, event_data, metadata, created_at."""
SnapshotRow = tuple[str, int, bytes, datetime]
"""A checked snapshot: stream_id, version, state_data, created_at."""

_FLUSH_BYTES = 1 << 20
"""Encoded bytes buffered before they are hashed and written."""
_READ_BYTES = 1 << 20
"""Bytes read from the file at a time."""
_EOF = object()
"""What :meth:`ItemReader._peek` returns at the end of the file."""


def gzip_writer(sink: IO[bytes]) -> IO[bytes]:
    """A gzip stream onto ``sink`` as the exporter writes it (level 1, no name, no
    time stamp: the same content gives the same bytes). Close it to finish it."""
    return cast(
        IO[bytes], gzip.GzipFile(filename="", mode="wb", fileobj=sink, compresslevel=1, mtime=0)
    )


def decompressed(raw: IO[bytes]) -> IO[bytes]:
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
    if start == GZIP_MAGIC:
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))
    return raw


def timestamp(value: datetime | str) -> CBORTag:
    """A datetime as the format writes it: CBOR tag 0, UTC, six fractional digits.

    A str is taken as such RFC 3339 text already (the exporter has the server
    format its timestamps). A datetime must carry a time zone.
    """
    if isinstance(value, str):
        return CBORTag(0, value)
    if value.tzinfo is None:
        raise ValidationError(f"a datetime in an export needs a time zone, not {value!r}")
    text = value.astimezone(timezone.utc).isoformat(timespec="microseconds")
    return CBORTag(0, text.replace("+00:00", "Z"))


class ItemWriter:
    """Writes a file's items to ``sink``, in order: :meth:`header`, :meth:`event`
    for each event, :meth:`snapshot` for each snapshot, then :meth:`end`.

    Items are encoded into a buffer that is hashed and written a megabyte at a
    time. The writer does not check what it is given: the exporter copies rows
    the store accepted.
    """

    def __init__(self, sink: IO[bytes]) -> None:
        self._sink = sink
        self._buffer = io.BytesIO()
        self._encoder = cbor2.CBOREncoder(self._buffer)
        self._hash = hashlib.sha256()

    def header(self, fields: Mapping[str, Any]) -> None:
        """Write the header item with the map ``fields`` (see the module's docstring)."""
        self._item([FORMAT_NAME, FORMAT_VERSION, dict(fields)])

    def event(
        self,
        stream_id: str,
        version: int,
        event_type: str,
        event_data: bytes,
        metadata: str | None,
        created_at: datetime | str,
    ) -> None:
        """Write an event item; ``created_at`` as :func:`timestamp` takes it."""
        self._item(
            [EVENT, stream_id, version, event_type, event_data, metadata, timestamp(created_at)]
        )

    def snapshot(
        self, stream_id: str, version: int, state_data: bytes, created_at: datetime | str
    ) -> None:
        """Write a snapshot item; ``created_at`` as :func:`timestamp` takes it."""
        self._item([SNAPSHOT, stream_id, version, state_data, timestamp(created_at)])

    def end(self, counts: Mapping[str, int]) -> None:
        """Write the end marker: ``counts`` and the SHA-256 of everything before it."""
        self._flush()
        self._encoder.encode([END, {**counts, "sha256": self._hash.digest()}])
        self._sink.write(self._buffer.getvalue())
        self._sink.flush()

    def _item(self, item: list[Any]) -> None:
        self._encoder.encode(item)
        if self._buffer.tell() >= _FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        data = self._buffer.getvalue()
        self._hash.update(data)
        self._sink.write(data)
        self._buffer.seek(0)
        self._buffer.truncate()


class ItemReader:
    """Reads and checks a file from ``stream`` (uncompressed: see :func:`decompressed`),
    a megabyte at a time, in bounded memory.

    Call :meth:`header`, iterate :meth:`events`, iterate :meth:`snapshots`, then
    call :meth:`end`: each goes on from where the one before stopped. A file that
    fails a check raises :class:`TransferError` (``imported`` empty) naming the
    file as ``name``, and the item by its number (the header is item 0).
    """

    def __init__(self, stream: IO[bytes], name: str) -> None:
        self._stream = stream
        self._name = name
        self._hash = hashlib.sha256()
        self._pending = b""
        self._eof = False
        self._items = self._decode()
        self._item: Any = _EOF
        self._read_ahead = False
        self.index = -1
        """The number of the last item read."""
        self.events_read = 0
        self.snapshots_read = 0

    def corrupt(self, problem: str) -> TransferError:
        """The error for a file that fails verification."""
        return TransferError(
            f"{self._name} is not a valid pg-eventstore export: {problem}; nothing was imported",
            imported=NOTHING_IMPORTED,
        )

    def header(self) -> dict[str, Any]:
        """Read and check the header item; return its map."""
        item = self._take()
        if item is _EOF:
            raise self.corrupt("it is empty")
        if not (type(item) is list and len(item) == 3 and item[0] == FORMAT_NAME):
            raise self.corrupt("it does not start with a pg-eventstore export header")
        version, header = item[1], item[2]
        if version != FORMAT_VERSION:
            raise TransferError(
                f"{self._name} is an export in format version {version!r}; this version of "
                f"pg-eventstore reads format {FORMAT_VERSION}: upgrade pg-eventstore; "
                "nothing was imported",
                imported=NOTHING_IMPORTED,
            )
        if not isinstance(header, dict):
            raise self.corrupt("its header is not a map")
        return header

    def events(self) -> Iterator[EventRow]:
        """The events that follow the header, each checked, up to the first item
        that is not an event."""
        while _is(self._peek(), EVENT):
            event = self._checked_event(self._take())
            self.events_read += 1
            yield event

    def snapshots(self) -> Iterator[SnapshotRow]:
        """The snapshots that follow the events, each checked, up to the first item
        that is not a snapshot."""
        while _is(self._peek(), SNAPSHOT):
            snapshot = self._checked_snapshot(self._take())
            self.snapshots_read += 1
            yield snapshot

    def end(self) -> dict[str, Any]:
        """Read the end marker, check the checksum and that nothing follows; return
        the marker's map (the counts, and ``sha256``)."""
        item = self._take()
        if item is _EOF:
            raise self.corrupt(
                f"it is truncated: it ends after {self.events_read} events and "
                f"{self.snapshots_read} snapshots, without its end marker"
            )
        if not (type(item) is list and len(item) == 2 and item[0] == END):
            kind = item[0] if type(item) is list and item else type(item).__name__
            raise self.corrupt(
                f"item {self.index} ({kind!r}) is out of place: the events come first, "
                "then the snapshots, then the end marker"
            )
        counts = item[1]
        if not (
            isinstance(counts, dict)
            and all(type(counts.get(key)) is int for key in COUNTS)
            and type(counts.get("sha256")) is bytes
        ):
            raise self.corrupt("its end marker is malformed")
        if counts["sha256"] != self._hash.digest():
            raise self.corrupt(
                "its SHA-256 checksum does not match its content (the file was altered or "
                "damaged after it was written)"
            )
        if self._take() is not _EOF:
            raise self.corrupt(f"it goes on after its end marker (item {self.index})")
        return cast(dict[str, Any], counts)

    def check_counts(
        self, end: Mapping[str, Any], header: Mapping[str, Any], found: Mapping[str, int]
    ) -> None:
        """Raise unless the counts ``found`` in the file are the end marker's, and the
        header's where it has them."""
        for key in COUNTS:
            value = found[key]
            for origin, declared in (("end marker", end[key]), ("header", header.get(key))):
                if declared is not None and declared != value:
                    raise self.corrupt(f"it holds {value} {key}, but its {origin} says {declared}")

    def _checked_event(self, item: list[Any]) -> EventRow:
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
                    raise self.corrupt(
                        f"item {self.index} is an event append_events would refuse ({error})"
                    ) from None
                return stream_id, version, event_type, data, meta, created_at
        raise self.corrupt(f"item {self.index} is not a well-formed event")

    def _checked_snapshot(self, item: list[Any]) -> SnapshotRow:
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
                    raise self.corrupt(
                        f"item {self.index} is a snapshot save_snapshot would refuse ({error})"
                    ) from None
                return stream_id, version, state, created_at
        raise self.corrupt(f"item {self.index} is not a well-formed snapshot")

    def _peek(self) -> Any:
        """The next item, without taking it; ``_EOF`` at the end of the file."""
        if not self._read_ahead:
            self._item = self._next_item()
            self._read_ahead = True
        return self._item

    def _take(self) -> Any:
        """The next item, taken; ``_EOF`` at the end of the file."""
        item = self._peek()
        self._read_ahead = False
        return item

    def _next_item(self) -> Any:
        """Decode the next item and hash its bytes (unless it is an end marker)."""
        decoded = next(self._items, None)
        if decoded is None:
            return _EOF
        item, raw = decoded
        self.index += 1
        if not _is(item, END):
            self._hash.update(raw)
        return item

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


def _is(item: Any, kind: str) -> bool:
    """Whether ``item`` is an item of ``kind`` (``"event"``, ``"snapshot"``, ``"end"``)."""
    return type(item) is list and bool(item) and item[0] == kind
