"""The export file format on its own, without a database: what the docstring of
eventstore.transfer._format specifies, written with ItemWriter and read back
with ItemReader, and the files ItemReader refuses."""

from __future__ import annotations

import gzip
import hashlib
import io
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cbor2 import CBORTag

from eventstore.errors import TransferError, ValidationError
from eventstore.transfer import FORMAT_NAME, FORMAT_VERSION
from eventstore.transfer._format import (
    ItemReader,
    ItemWriter,
    decompressed,
    gzip_writer,
    timestamp,
)

UTC = timezone.utc
T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
EVENTS = [
    ("order-1", 1, "OrderPlaced", b"\xa1bid\x01", '{"correlation_id": "req-1"}', T0),
    ("acct%1", 1, "Opened", b"", None, T0 + timedelta(seconds=1)),
    ("order-1", 2, "ItemAdded", bytes(range(256)), "{}", T0 + timedelta(seconds=2)),
]
SNAPSHOTS = [("order-1", 2, b"\x00\xff", T0 + timedelta(seconds=3))]
COUNTS = {"events": 3, "streams": 2, "snapshots": 1}
HEADER = {"library_version": "test", "schema_revision": None, "stream_prefix": None, **COUNTS}


def written(
    events: list[tuple[Any, ...]] = EVENTS,
    snapshots: list[tuple[Any, ...]] = SNAPSHOTS,
    header: dict[str, Any] = HEADER,
    counts: dict[str, int] = COUNTS,
) -> bytes:
    sink = io.BytesIO()
    writer = ItemWriter(sink)
    writer.header(header)
    for event in events:
        writer.event(*event)
    for snapshot in snapshots:
        writer.snapshot(*snapshot)
    writer.end(counts)
    return sink.getvalue()


def read(data: bytes) -> tuple[dict[str, Any], list[Any], list[Any], dict[str, Any]]:
    """Everything ItemReader gives for ``data``, in the order it reads it."""
    reader = ItemReader(decompressed(io.BytesIO(data)), "backup.cbor")
    header = reader.header()
    events = list(reader.events())
    snapshots = list(reader.snapshots())
    return header, events, snapshots, reader.end()


def refusal(data: bytes) -> str:
    with pytest.raises(TransferError) as failure:
        read(data)
    assert failure.value.imported is not None
    assert failure.value.imported.events == 0
    message = str(failure.value)
    assert message.endswith("nothing was imported")
    return message


def items(data: bytes) -> list[Any]:
    """The file's items, read as the docstring says, with plain cbor2."""
    stream = io.BytesIO(data)
    decoder = cbor2.CBORDecoder(stream)
    found = []
    while stream.tell() < len(data):
        found.append(decoder.decode())
    return found


def with_checksum(raw_items: list[Any]) -> bytes:
    """A file of ``raw_items`` and an end marker with the right checksum."""
    body = b"".join(cbor2.dumps(item) for item in raw_items)
    end = ["end", {**COUNTS, "sha256": hashlib.sha256(body).digest()}]
    return body + cbor2.dumps(end)


def header_item(version: Any = FORMAT_VERSION) -> list[Any]:
    return [FORMAT_NAME, version, HEADER]


def event_item(*fields: Any) -> list[Any]:
    return ["event", *fields]


# -- what is written -----------------------------------------------------------------------


def test_what_is_written_reads_back_as_written() -> None:
    header, events, snapshots, end = read(written())

    assert header == HEADER
    assert events == EVENTS
    assert snapshots == SNAPSHOTS
    assert {key: end[key] for key in COUNTS} == COUNTS


def test_the_bytes_are_the_documented_cbor_sequence() -> None:
    data = written()
    found = items(data)

    assert [item[0] for item in found] == [
        FORMAT_NAME,
        "event",
        "event",
        "event",
        "snapshot",
        "end",
    ]
    assert found[0][1] == FORMAT_VERSION == 1
    assert found[1] == ["event", *EVENTS[0]]
    assert found[4] == ["snapshot", *SNAPSHOTS[0]]
    end_size = len(cbor2.dumps(found[-1]))
    assert found[-1][1]["sha256"] == hashlib.sha256(data[:-end_size]).digest()


def test_datetimes_are_tag_0_text_in_utc_with_microseconds() -> None:
    cet = timezone(timedelta(hours=1))
    on_the_second = datetime(1969, 12, 31, 23, 59, 59, tzinfo=cet)

    assert timestamp(on_the_second) == CBORTag(0, "1969-12-31T22:59:59.000000Z")
    assert timestamp(T0) == CBORTag(0, "2024-05-01T12:00:00.123456Z")
    assert timestamp("2000-01-01T00:00:00.000001Z") == CBORTag(0, "2000-01-01T00:00:00.000001Z")
    with pytest.raises(ValidationError, match="needs a time zone"):
        timestamp(datetime(2024, 5, 1))
    assert b"\xc0x\x1b1969-12-31T22:59:59.000000Z" in written(
        events=[("s", 1, "E", b"", None, on_the_second)], snapshots=[]
    )


def test_a_reader_keeps_the_instant_of_any_offset() -> None:
    data = with_checksum([header_item(), event_item("s", 1, "E", b"", None, T0.astimezone())])

    (event,) = read(data)[1]

    assert event[5] == T0
    assert event[5].tzinfo is not None


def test_an_item_larger_than_a_read_and_an_empty_file_body() -> None:
    big = (("big", 1, "E", bytes(3 << 20), None, T0),)
    counts = {"events": 1, "streams": 1, "snapshots": 0}

    _, events, snapshots, _ = read(written(list(big), [], {**HEADER, **counts}, counts))
    nothing = read(written([], [], {}, {"events": 0, "streams": 0, "snapshots": 0}))

    assert events == list(big)
    assert snapshots == []
    assert nothing[1:3] == ([], [])


# -- gzip ------------------------------------------------------------------------------------


def gzipped(data: bytes) -> bytes:
    sink = io.BytesIO()
    with gzip_writer(sink) as compressed:
        compressed.write(data)
    return sink.getvalue()


def test_gzip_is_recognised_by_its_magic_bytes_and_is_deterministic() -> None:
    data = written()
    compressed = gzipped(data)

    assert compressed[:2] == b"\x1f\x8b"
    assert gzip.decompress(compressed) == data
    assert gzipped(data) == compressed  # no name, no time stamp
    assert read(compressed)[1] == EVENTS


class _Pipe(io.RawIOBase):
    """A stream that can neither seek nor peek, like standard input."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self._data.read(min(len(buffer), 7))
        buffer[: len(chunk)] = chunk
        return len(chunk)


@pytest.mark.parametrize("compress", [False, True])
def test_gzip_is_recognised_on_a_stream_that_cannot_seek(compress: bool) -> None:
    data = written()
    source = _Pipe(gzipped(data) if compress else data)

    stream = decompressed(source)  # type: ignore[arg-type]

    assert stream.read() == data


def test_a_damaged_or_truncated_gzip_stream_is_refused() -> None:
    compressed = bytearray(gzipped(written()))
    truncated = bytes(compressed[: len(compressed) // 2])
    compressed[len(compressed) // 2] ^= 0xFF

    assert "its gzip compression is damaged" in refusal(bytes(compressed))
    assert "it is truncated: its gzip stream ends early" in refusal(truncated)


# -- what a reader refuses ------------------------------------------------------------------------


def test_a_changed_byte_fails_the_checksum() -> None:
    data = written().replace(b"OrderPlaced", b"OrderPlacex")

    assert "its SHA-256 checksum does not match its content" in refusal(data)


def test_a_truncated_file_says_where_it_ends() -> None:
    data = written()
    header_size = len(cbor2.dumps(header_item()))
    end_size = len(cbor2.dumps(items(data)[-1]))

    assert "it is truncated: it ends in the middle of item 0" in refusal(data[:10])
    assert "it ends in the middle of item 1" in refusal(data[: header_size + 10])
    assert "it ends after 3 events and 1 snapshots, without its end marker" in refusal(
        data[:-end_size]
    )


def test_a_header_of_another_format_version_asks_for_a_newer_library() -> None:
    message = refusal(with_checksum([header_item(version=2)]))

    assert message == (
        "backup.cbor is an export in format version 2; this version of pg-eventstore "
        "reads format 1: upgrade pg-eventstore; nothing was imported"
    )


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "it is empty"),
        (b"hello, this is not an export\n", "it does not start with a pg-eventstore export header"),
        (cbor2.dumps(["some other format", 1, {}]), "does not start with a pg-eventstore"),
        (cbor2.dumps([FORMAT_NAME, 1, ["not", "a", "map"]]), "its header is not a map"),
        (b"\xff\xff", "item 0 is not valid CBOR"),
    ],
    ids=["empty", "text", "other header", "header not a map", "not CBOR"],
)
def test_a_file_that_is_not_an_export_is_named_as_such(data: bytes, problem: str) -> None:
    message = refusal(data)

    assert message.startswith("backup.cbor is not a valid pg-eventstore export: ")
    assert problem in message


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        (("s", 1, "E", b""), "item 1 is not a well-formed event"),
        (("s", 1, "E", "text, not bytes", None, T0), "item 1 is not a well-formed event"),
        (("s", True, "E", b"", None, T0), "item 1 is not a well-formed event"),
        (("s", 1, "E", b"", None, "2024-05-01T12:00:00Z"), "not a well-formed event"),
        (("", 1, "E", b"", None, T0), "append_events would refuse (stream_id must not be empty"),
        (("s", 0, "E", b"", None, T0), "would refuse (version must be >= 1, got 0)"),
        (("s", 2**63, "E", b"", None, T0), "would refuse (version must fit in a BIGINT"),
        (("s", 1, "E" * 1025, b"", None, T0), "event_type is 1025 bytes in UTF-8"),
        (("s", 1, "E", b"", "[]", T0), "item 1 is an event append_events would refuse"),
        (("s", 1, "E", b"", "not json", T0), "has metadata that is not JSON"),
    ],
    ids=[
        "short",
        "data not bytes",
        "bool version",
        "time as plain text",
        "empty id",
        "version 0",
        "version 2**63",
        "long type",
        "metadata a list",
        "metadata not JSON",
    ],
)
def test_an_event_the_store_could_not_hold_is_refused(event: tuple[Any, ...], problem: str) -> None:
    assert problem in refusal(with_checksum([header_item(), event_item(*event)]))


@pytest.mark.parametrize(
    ("snapshot", "problem"),
    [
        (("s", 1, b""), "item 2 is not a well-formed snapshot"),
        (("s", 1, None, T0), "item 2 is not a well-formed snapshot"),
        (("s", 2**63, b"", T0), "item 2 is a snapshot save_snapshot would refuse (version"),
        (("s\x00", 1, b"", T0), "save_snapshot would refuse (stream_id must not contain NUL"),
    ],
    ids=["short", "state not bytes", "version 2**63", "NUL in id"],
)
def test_a_snapshot_the_store_could_not_hold_is_refused(
    snapshot: tuple[Any, ...], problem: str
) -> None:
    data = with_checksum(
        [header_item(), event_item("s", 1, "E", b"", None, T0), ["snapshot", *snapshot]]
    )

    assert problem in refusal(data)


def test_items_out_of_order_or_after_the_end_are_refused() -> None:
    snapshot_first = with_checksum(
        [header_item(), ["snapshot", "s", 1, b"", T0], event_item("s", 1, "E", b"", None, T0)]
    )
    unknown_item = with_checksum([header_item(), ["comment", "hello"]])
    not_an_array = with_checksum([header_item(), 5])
    trailing = written() + cbor2.dumps(["event", "s", 1, "E", b"", None, T0])

    assert "item 2 ('event') is out of place: the events come first, then the snapshots, then" in (
        refusal(snapshot_first)
    )
    assert "item 1 ('comment') is out of place" in refusal(unknown_item)
    assert "item 1 ('int') is out of place" in refusal(not_an_array)
    assert "it goes on after its end marker (item 6)" in refusal(trailing)


@pytest.mark.parametrize(
    "counts",
    [
        {"events": 0, "streams": 0, "snapshots": 0},
        {"events": 0, "streams": 0, "sha256": b""},
        {"events": "0", "streams": 0, "snapshots": 0, "sha256": b""},
        ["not", "a", "map"],
    ],
    ids=["no checksum", "no snapshot count", "count not an int", "not a map"],
)
def test_a_malformed_end_marker_is_refused(counts: Any) -> None:
    data = cbor2.dumps(header_item()) + cbor2.dumps(["end", counts])

    assert "its end marker is malformed" in refusal(data)


def test_an_end_marker_that_is_not_a_pair_is_out_of_place() -> None:
    data = cbor2.dumps(header_item()) + cbor2.dumps(["end", COUNTS, "extra"])

    assert "item 1 ('end') is out of place" in refusal(data)


def test_counts_are_checked_against_the_end_marker_and_the_header_where_it_has_them() -> None:
    reader = ItemReader(io.BytesIO(written()), "backup.cbor")
    header = reader.header()
    list(reader.events())
    list(reader.snapshots())
    end = reader.end()

    reader.check_counts(end, header, COUNTS)
    reader.check_counts(end, {}, COUNTS)  # the header's counts are optional
    with pytest.raises(TransferError, match="it holds 2 events, but its end marker says 3"):
        reader.check_counts(end, header, {**COUNTS, "events": 2})
    with pytest.raises(TransferError, match="it holds 3 streams, but its header says 2"):
        reader.check_counts({**end, "streams": 3}, header, {**COUNTS, "streams": 3})


# -- no database -----------------------------------------------------------------------------


def test_the_format_module_imports_no_database_library() -> None:
    """Loaded without the package's __init__ (which imports the stores), the format
    module brings in neither psycopg, SQLAlchemy nor Alembic."""
    package = Path(__file__).resolve().parent.parent / "eventstore"
    script = """
import sys, types
package = sys.argv[1]
for name, path in (("eventstore", package), ("eventstore.transfer", package + "/transfer")):
    module = types.ModuleType(name)
    module.__path__ = [path]
    sys.modules[name] = module
import eventstore.transfer._format
print(sorted({name.split(".")[0] for name in sys.modules} & {"psycopg", "sqlalchemy", "alembic"}))
"""
    result = subprocess.run(
        [sys.executable, "-c", script, str(package)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )

    assert result.stdout.strip() == "[]"
