"""``eventstore export`` / ``import``: exact round trips, refusals, verification, bounded memory.

The source database holds 100,000 generated events (interleaved across 1,000
streams, about 60 MB of payload) plus streams appended through the store with
metadata and snapshots, and rows with awkward bytes, JSON and timestamps.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import cbor2
import psycopg
import pytest
from click.testing import CliRunner

from eventstore import NewEvent, PostgresEventStore, migrations
from eventstore.cli import cli
from eventstore.errors import SchemaError
from eventstore.transfer import (
    FORMAT_NAME,
    TransferError,
    export_events,
    import_events,
)
from eventstore.urls import normalize_url

EVENTSTORE = Path(sys.executable).with_name("eventstore")

GENERATED_STREAMS = 1_000
GENERATED_EVENTS = 100_000
PAYLOAD_BYTES = 608  # 38 md5 digests
SOURCE_EVENTS = GENERATED_EVENTS + 3 + 4 + 2
SOURCE_SNAPSHOTS = 4
PREFIX_STREAMS = ("acct%1", "acct_1", "acctX1", "acct%")

UTC = timezone.utc


def libpq(url: str) -> str:
    """A URL psycopg.connect() accepts."""
    return normalize_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def new_database(server_url: str) -> Iterator[str]:
    """A brand-new database on the server of ``server_url``, dropped afterwards."""
    name = f"es_transfer_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(libpq(server_url), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield normalize_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(libpq(server_url), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fill_source(url: str) -> None:
    with psycopg.connect(libpq(url)) as conn:
        # One statement, rows in i order: the streams interleave in the feed.
        conn.execute(
            """
            INSERT INTO events (stream_id, version, event_type, event_data, metadata, created_at)
            SELECT 'gen-' || (i %% %(streams)s), i / %(streams)s + 1, 'Generated',
                   decode(repeat(md5(i::text), 38), 'hex'),
                   CASE i %% 4 WHEN 0 THEN NULL WHEN 1 THEN 'null'::jsonb
                        ELSE jsonb_build_object('i', i, 'price', 1.50, 'tag', 'ü "q" \\')
                   END,
                   timestamptz '2024-02-29 23:59:59.999999+00' - i * interval '1.000007 second'
            FROM generate_series(0, %(events)s - 1) AS i ORDER BY i
            """,
            {"streams": GENERATED_STREAMS, "events": GENERATED_EVENTS},
        )
        # Bytes that are not CBOR at all, an empty payload, a pre-1970 timestamp.
        conn.execute(
            """
            INSERT INTO events (stream_id, version, event_type, event_data, metadata, created_at)
            VALUES ('raw-bytes', 1, 'Raw', %s, '{"big": 123456789012345678901234567890}',
                    '1969-12-31 23:59:59.999999+00'),
                   ('raw-bytes', 2, 'Raw', '', '{"": []}', '2000-01-01 12:00:00.000001+05:30')
            """,
            (bytes(range(256)),),
        )
        conn.execute(
            "INSERT INTO snapshots (stream_id, version, state_data, created_at) "
            "VALUES ('raw-bytes', 2, '\\x00ff', '1969-07-20 20:17:40.5+00')"
        )
    with PostgresEventStore.from_url(url) as store:
        store.append_events(
            "order-1",
            [
                NewEvent(
                    "OrderPlaced",
                    {"id": 1},
                    metadata={"correlation_id": "req-1", "ü": [1, 2.5, None], "n": {"x": ""}},
                )
            ],
            expected_version=0,
        )
        store.append_events(
            "order-1",
            [NewEvent("ItemAdded", {"sku": "pen"}), NewEvent("ItemAdded", {"sku": "ink"}, {})],
            expected_version=1,
        )
        store.save_snapshot("order-1", 2, {"items": ["pen"]})
        for stream_id in PREFIX_STREAMS:
            store.append_events(
                stream_id,
                [NewEvent("Opened", {"id": stream_id}, {"by": "test"})],
                expected_version=0,
            )
        store.save_snapshot("acct%1", 1, {"open": True})
        store.save_snapshot("gen-7", 60, {"n": 60})


@pytest.fixture(scope="module")
def source_url(eventstore_database_url: str) -> Iterator[str]:
    """A migrated database holding the events described in the module docstring."""
    with new_database(eventstore_database_url) as url:
        migrations.upgrade(url)
        fill_source(url)
        yield url


@pytest.fixture
def target_url(scratch_database_url: str) -> str:
    """An empty database migrated to head."""
    migrations.upgrade(scratch_database_url)
    return scratch_database_url


def event_rows(url: str, where: str = "true") -> list[tuple[Any, ...]]:
    """Every column but position and transaction id, in feed order."""
    with psycopg.connect(libpq(url)) as conn:
        return conn.execute(
            "SELECT stream_id, version, event_type, event_data, metadata::text, created_at "
            f"FROM events WHERE {where} ORDER BY transaction_id, position"
        ).fetchall()


def snapshot_rows(url: str, where: str = "true") -> list[tuple[Any, ...]]:
    with psycopg.connect(libpq(url)) as conn:
        return conn.execute(
            "SELECT stream_id, version, state_data, created_at FROM snapshots "
            f"WHERE {where} ORDER BY stream_id"
        ).fetchall()


def assert_same_rows(found: Sequence[Any], expected: Sequence[Any]) -> None:
    """Row lists equal, failing on the first difference (not a 100,000-row diff)."""
    for index, (got, want) in enumerate(zip(found, expected, strict=False)):
        assert got == want, f"row {index} differs"
    assert len(found) == len(expected)


def items_of(path: Path) -> list[Any]:
    """The items of an export file, read the way its format is documented."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    stream = io.BytesIO(data)
    decoder = cbor2.CBORDecoder(stream)
    items = []
    while stream.tell() < len(data):
        items.append(decoder.decode())
    return items


def write_export(
    path: Path,
    events: Sequence[tuple[Any, ...]],
    snapshots: Sequence[tuple[Any, ...]] = (),
    *,
    declared: dict[str, int] | None = None,
    format_version: int = 1,
) -> None:
    """Write a file by the documented format, with a correct checksum."""
    streams = len({event[0] for event in events})
    counts = {"events": len(events), "streams": streams, "snapshots": len(snapshots)}
    counts.update(declared or {})
    header = {"library_version": "test", "schema_revision": "test", **counts}
    items = [[FORMAT_NAME, format_version, header]]
    items += [["event", *event] for event in events]
    items += [["snapshot", *snapshot] for snapshot in snapshots]
    body = b"".join(cbor2.dumps(item) for item in items)
    end = ["end", {**counts, "sha256": hashlib.sha256(body).digest()}]
    path.write_bytes(body + cbor2.dumps(end))


T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


# -- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("file_name", ["backup.cbor", "backup.cbor.gz"])
def test_round_trip_copies_every_row_exactly_in_feed_order(
    source_url: str, target_url: str, tmp_path: Path, file_name: str
) -> None:
    path = tmp_path / file_name
    calls: list[tuple[str, int, int | None]] = []

    exported = export_events(source_url, path, progress=lambda *call: calls.append(call))
    imported = import_events(target_url, path, batch_events=30_000)

    assert (exported.events, exported.streams, exported.snapshots) == (
        SOURCE_EVENTS,
        GENERATED_STREAMS + 2 + len(PREFIX_STREAMS),
        SOURCE_SNAPSHOTS,
    )
    assert exported.compressed is file_name.endswith(".gz")
    assert (path.read_bytes()[:2] == b"\x1f\x8b") is exported.compressed
    assert exported.bytes_written == path.stat().st_size
    assert calls[-2] == ("events", SOURCE_EVENTS, SOURCE_EVENTS)
    assert calls[-1] == ("snapshots", SOURCE_SNAPSHOTS, SOURCE_SNAPSHOTS)
    assert imported.ok
    assert (imported.events, imported.streams, imported.snapshots) == (
        exported.events,
        exported.streams,
        exported.snapshots,
    )
    # Same rows, compared column by column in feed order: the target's feed
    # (its own transaction ids and positions) lists them in the source's order.
    assert_same_rows(event_rows(target_url), event_rows(source_url))
    assert snapshot_rows(target_url) == snapshot_rows(source_url)


def test_import_puts_each_stream_in_one_transaction_and_keeps_the_feed_order(
    source_url: str, target_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "small.cbor"
    source_where = "stream_id NOT LIKE 'gen-%'"
    write_export(
        path,
        [
            (stream_id, version, event_type, data, meta, created_at)
            for stream_id, version, event_type, data, meta, created_at in event_rows(
                source_url, source_where
            )
        ]
        # Two streams interleaved (one segment), then a stream on its own.
        + [
            ("pair-a", 1, "A", b"a1", None, T0),
            ("pair-b", 1, "B", b"b1", None, T0),
            ("pair-a", 2, "A", b"a2", None, T0),
            ("pair-b", 2, "B", b"b2", None, T0),
            ("alone", 1, "C", b"c1", None, T0),
        ],
    )

    summary = import_events(target_url, path, batch_events=1)

    assert summary.ok
    assert summary.events == 14
    with psycopg.connect(libpq(target_url)) as conn:
        per_stream = dict(
            conn.execute(
                "SELECT stream_id, count(DISTINCT transaction_id) FROM events GROUP BY stream_id"
            ).fetchall()
        )
        (transactions,) = conn.execute(
            "SELECT count(DISTINCT transaction_id) FROM events"
        ).fetchone() or (0,)
        (together,) = conn.execute(
            "SELECT count(DISTINCT transaction_id) FROM events "
            "WHERE stream_id IN ('pair-a', 'pair-b')"
        ).fetchone() or (0,)
    assert set(per_stream.values()) == {1}
    assert transactions > 1  # batches of about one event: many transactions
    assert together == 1  # interleaved streams cannot be split
    order = [(row[0], row[1]) for row in event_rows(target_url)]
    assert order[-5:] == [("pair-a", 1), ("pair-b", 1), ("pair-a", 2), ("pair-b", 2), ("alone", 1)]
    assert order[:-5] == [(row[0], row[1]) for row in event_rows(source_url, source_where)]


def test_stream_prefix_is_literal_so_percent_and_underscore_match_only_themselves(
    source_url: str, tmp_path: Path
) -> None:
    percent = tmp_path / "percent.cbor"
    underscore = tmp_path / "underscore.cbor.gz"

    by_percent = export_events(source_url, percent, stream_prefix="acct%")
    by_underscore = export_events(source_url, underscore, stream_prefix="acct_")

    def streams(path: Path) -> tuple[set[str], set[str]]:
        items = items_of(path)
        return (
            {item[1] for item in items if item[0] == "event"},
            {item[1] for item in items if item[0] == "snapshot"},
        )

    assert streams(percent) == ({"acct%1", "acct%"}, {"acct%1"})
    assert streams(underscore) == ({"acct_1"}, set())
    assert (by_percent.events, by_percent.streams, by_percent.snapshots) == (2, 2, 1)
    assert (by_underscore.events, by_underscore.streams, by_underscore.snapshots) == (1, 1, 0)


def test_the_file_follows_the_documented_format(source_url: str, tmp_path: Path) -> None:
    path = tmp_path / "order.cbor"
    export_events(source_url, path, stream_prefix="order-")
    data = path.read_bytes()
    items = items_of(path)

    header, *body, end = items
    assert header[:2] == [FORMAT_NAME, 1]
    assert header[2]["schema_revision"] == migrations.current(source_url)
    assert header[2]["stream_prefix"] == "order-"
    assert [item[0] for item in body] == ["event"] * 3 + ["snapshot"]
    assert [item[2] for item in body[:3]] == [1, 2, 3]
    first = body[0]
    assert json.loads(first[5]) == {"correlation_id": "req-1", "ü": [1, 2.5, None], "n": {"x": ""}}
    assert first[6].tzinfo is not None
    assert end[0] == "end"
    assert {key: end[1][key] for key in ("events", "streams", "snapshots")} == {
        "events": 3,
        "streams": 1,
        "snapshots": 1,
    }
    end_size = len(cbor2.dumps(end))
    assert end[1]["sha256"] == hashlib.sha256(data[:-end_size]).digest()


# -- refusals ------------------------------------------------------------------------------


def test_import_refuses_a_stream_the_target_has_and_imports_the_others(
    source_url: str, target_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "acct.cbor"
    export_events(source_url, path, stream_prefix="acct")
    with PostgresEventStore.from_url(target_url) as store:
        store.append_events("acct_1", [NewEvent("Local", {"mine": True})], expected_version=0)
        store.save_snapshot("acct_1", 1, {"local": True})
    before = event_rows(target_url), snapshot_rows(target_url)

    summary = import_events(target_url, path)

    assert not summary.ok
    assert (summary.refused_streams, summary.refused_events) == (1, 1)
    (refused,) = summary.refused
    assert (refused.stream_id, refused.first_version, refused.target_version) == ("acct_1", 1, 1)
    assert "already has versions 1..1" in refused.reason
    assert (summary.events, summary.streams, summary.snapshots) == (3, 3, 1)
    assert event_rows(target_url, "stream_id = 'acct_1'") == before[0]
    assert snapshot_rows(target_url, "stream_id = 'acct_1'") == before[1]
    assert event_rows(target_url, "stream_id <> 'acct_1'") == event_rows(
        source_url, "stream_id IN ('acct%1', 'acctX1', 'acct%')"
    )


def test_a_stream_continuing_the_target_is_appended_and_a_gap_is_refused(
    target_url: str, tmp_path: Path
) -> None:
    with PostgresEventStore.from_url(target_url) as store:
        store.append_events("cont", [NewEvent("E", 1), NewEvent("E", 2)], expected_version=0)
    path = tmp_path / "tail.cbor"
    write_export(
        path,
        [
            ("cont", 3, "E", b"\x03", None, T0),
            ("gap", 5, "E", b"\x05", None, T0),
            ("cont", 4, "E", b"\x04", '{"k": 1}', T0 + timedelta(microseconds=1)),
        ],
        [("cont", 4, b"state", T0)],
    )

    summary = import_events(target_url, path)

    assert (summary.events, summary.streams, summary.snapshots) == (2, 1, 1)
    (gap,) = summary.refused
    assert (gap.stream_id, gap.first_version, gap.target_version) == ("gap", 5, 0)
    assert "versions 1..4 would be missing" in gap.reason
    assert [row[1:4] for row in event_rows(target_url, "stream_id = 'cont'")][2:] == [
        (3, "E", b"\x03"),
        (4, "E", b"\x04"),
    ]
    assert event_rows(target_url, "stream_id = 'gap'") == []


def test_a_stream_written_in_the_target_during_the_import_is_refused_whole(
    target_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "race.cbor"
    write_export(
        path,
        [
            ("late", 1, "E", b"1", None, T0),
            ("kept", 1, "E", b"k", None, T0),
            ("late", 2, "E", b"2", None, T0),
        ],
        [("late", 2, b"s", T0)],
    )

    def write_late_stream(phase: str, done: int, total: int | None) -> None:
        # Called after the file is verified and the streams accepted, before any insert.
        if (phase, done) == ("writing", 0):
            with PostgresEventStore.from_url(target_url) as store:
                store.append_events("late", [NewEvent("Other", 0)], expected_version=0)

    summary = import_events(target_url, path, progress=write_late_stream)

    assert [refused.stream_id for refused in summary.refused] == ["late"]
    assert summary.events == 1
    assert summary.snapshots == 0
    assert [row[2] for row in event_rows(target_url, "stream_id = 'late'")] == ["Other"]
    assert snapshot_rows(target_url) == []
    assert [row[:2] for row in event_rows(target_url, "stream_id = 'kept'")] == [("kept", 1)]


DOOM_TRIGGER = """
CREATE SEQUENCE doom_count;
CREATE FUNCTION doom() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- A concurrent writer, as seen by the import: version 2 of 'doomed' appears
    -- between the import's check and its insert. nextval() is not rolled back,
    -- so the trigger knows how often it has fired.
    IF NEW.stream_id = 'doomed' AND NEW.version = 1 AND nextval('doom_count') <= %(times)s THEN
        INSERT INTO events (stream_id, version, event_type, event_data)
        VALUES ('doomed', 2, 'Intruder', '');
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER doom BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION doom();
"""


def doom_stream(url: str, times: int) -> None:
    with psycopg.connect(libpq(url)) as conn:
        conn.execute(DOOM_TRIGGER.replace("%(times)s", str(times)))


FIRST_EVENTS = 20_000  # one default batch: 'doomed' goes in the next transaction


def write_first_and_doomed(path: Path) -> None:
    write_export(
        path,
        [("first", version, "E", b"1", None, T0) for version in range(1, FIRST_EVENTS + 1)]
        + [("doomed", 1, "E", b"1", None, T0), ("doomed", 2, "E", b"2", None, T0)],
    )


def test_a_batch_that_loses_a_race_is_checked_again_and_retried(
    target_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "race.cbor"
    write_first_and_doomed(path)
    doom_stream(target_url, times=1)

    summary = import_events(target_url, path, batch_events=1)

    assert summary.ok
    assert summary.events == FIRST_EVENTS + 2
    assert [row[:3] for row in event_rows(target_url, "stream_id = 'doomed'")] == [
        ("doomed", 1, "E"),
        ("doomed", 2, "E"),
    ]


def test_an_import_that_keeps_losing_races_stops_and_says_what_it_kept(
    target_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "race.cbor"
    write_first_and_doomed(path)
    doom_stream(target_url, times=1_000)

    result = CliRunner().invoke(cli, ["import", str(path), "--url", target_url])
    with pytest.raises(TransferError, match="kept being written to") as again:
        import_events(target_url, path, batch_events=1)

    assert result.exit_code == 1
    assert "the import stopped: streams of the file kept being written to" in result.stderr
    assert "already imported and kept: 20,000 events of 1 streams" in result.stderr
    assert {row[0] for row in event_rows(target_url)} == {"first"}
    assert again.value.imported is not None
    assert again.value.imported.events == 0  # 'first' was refused this time


# -- verification --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_export(source_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("exports") / "small.cbor"
    export_events(source_url, path, stream_prefix="gen-99")  # gen-99, gen-990..gen-999
    return path


def import_fails(target_url: str, path: Path) -> str:
    with pytest.raises(TransferError) as failure:
        import_events(target_url, path)
    assert failure.value.imported is not None
    assert failure.value.imported.events == 0
    assert event_rows(target_url) == []
    assert snapshot_rows(target_url) == []
    return str(failure.value)


@pytest.mark.parametrize("keep", [0.5, "all but the end marker"])
def test_a_truncated_file_fails_verification_and_imports_nothing(
    small_export: Path, target_url: str, tmp_path: Path, keep: float | str
) -> None:
    data = small_export.read_bytes()
    if keep == "all but the end marker":
        end = cbor2.dumps(items_of(small_export)[-1])
        data = data[: -len(end)]
    else:
        data = data[: int(len(data) * float(keep))]
    path = tmp_path / "cut.cbor"
    path.write_bytes(data)

    message = import_fails(target_url, path)

    assert "is truncated" in message
    assert "nothing was imported" in message
    assert str(path) in message


def test_a_truncated_gzip_file_fails_verification(
    small_export: Path, target_url: str, tmp_path: Path
) -> None:
    compressed = gzip.compress(small_export.read_bytes())
    path = tmp_path / "cut.cbor.gz"
    path.write_bytes(compressed[: len(compressed) // 2])

    assert "truncated" in import_fails(target_url, path)


def test_a_flipped_byte_fails_the_checksum(
    small_export: Path, target_url: str, tmp_path: Path
) -> None:
    data = bytearray(small_export.read_bytes())
    payload = bytes.fromhex(hashlib.md5(b"99").hexdigest())  # inside event i = 99's data
    at = data.index(payload) + 3
    data[at] ^= 0x01
    path = tmp_path / "flipped.cbor"
    path.write_bytes(bytes(data))

    assert "SHA-256 checksum does not match" in import_fails(target_url, path)


def test_a_damaged_gzip_file_fails_verification(
    small_export: Path, target_url: str, tmp_path: Path
) -> None:
    data = bytearray(gzip.compress(small_export.read_bytes()))
    data[-8] ^= 0x01  # the CRC-32 of the compressed member
    path = tmp_path / "flipped.cbor.gz"
    path.write_bytes(bytes(data))

    assert "its gzip compression is damaged (CRC check failed" in import_fails(target_url, path)


@pytest.mark.parametrize(
    ("events", "declared", "problem"),
    [
        (
            [("s", 1, "E", b"", None, T0), ("s", 3, "E", b"", None, T0)],
            None,
            "stream 's' is not a contiguous sequence: version 3 follows version 1",
        ),
        (
            [("s", 2, "E", b"", None, T0), ("s", 1, "E", b"", None, T0)],
            None,
            "version 1 follows version 2",
        ),
        ([("s", 0, "E", b"", None, T0)], None, "version must be >= 1, got 0"),
        ([("s", 1, "E", b"", None, T0)], {"events": 2}, "it holds 1 events, but its"),
        ([("s", 1, "E", b"", None, T0)], {"streams": 3}, "it holds 1 streams, but its"),
        ([("s", 1, "E", b"", "{not json", T0)], None, "metadata that is not JSON"),
        ([("s", 1, "E", b"", None, T0.isoformat())], None, "not a well-formed event"),
        ([("s", 1, "E\x00", b"", None, T0)], None, "must not contain NUL characters"),
    ],
)
def test_a_file_with_inconsistent_content_imports_nothing(
    target_url: str,
    tmp_path: Path,
    events: list[tuple[Any, ...]],
    declared: dict[str, int] | None,
    problem: str,
) -> None:
    path = tmp_path / "bad.cbor"
    write_export(path, events, declared=declared)

    assert problem in import_fails(target_url, path)


GOOD_STREAM = [("good", 1, "E", b"", '{"ok": 1}', T0), ("good", 2, "E", b"", None, T0)]


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        (("s", 2**63, "E", b"", None, T0), "version must fit in a BIGINT"),
        (("", 1, "E", b"", None, T0), "stream_id must not be empty"),
        (("s" * 1025, 1, "E", b"", None, T0), "stream_id is 1025 bytes in UTF-8; the limit is"),
        (("s", 1, "", b"", None, T0), "event_type must not be empty"),
        (("s", 1, "é" * 513, b"", None, T0), "event_type is 1026 bytes in UTF-8"),
        (("s", 1, "E", b"", "[]", T0), "must be a mapping (a JSON object), not list"),
        (("s", 1, "E", b"", "5", T0), "must be a mapping (a JSON object), not int"),
        (("s", 1, "E", b"", '"text"', T0), "must be a mapping (a JSON object), not str"),
        (("s", 1, "E", b"", '{"a": NaN}', T0), "JSON has no NaN or Infinity"),
        (("s", 1, "E", b"", '{"a": "\\u0000"}', T0), "contains a NUL character"),
        (("s", 1, "E", b"", '{"a": ' + "[" * 101 + "]" * 101 + "}", T0), "nests deeper than"),
        (("s", 1, "E", b"", '{"big": ' + "9" * 5000 + "}", T0), "'big' holds an int of"),
    ],
)
def test_a_record_append_events_would_refuse_imports_nothing(
    target_url: str, tmp_path: Path, bad: tuple[Any, ...], problem: str
) -> None:
    """Import checks each event as append_events does: a stream it let in could
    be neither loaded nor erased afterwards."""
    path = tmp_path / "bad.cbor"
    write_export(path, [*GOOD_STREAM, bad])

    message = import_fails(target_url, path)

    assert problem in message
    assert "item 3 is an event append_events would refuse" in message


def test_a_snapshot_at_an_impossible_version_imports_nothing(
    target_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "bad.cbor"
    write_export(path, GOOD_STREAM, [("good", 2**63, b"", T0)])

    assert "version must fit in a BIGINT" in import_fails(target_url, path)


def test_the_command_reports_an_impossible_record_in_one_line(
    target_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "huge.cbor"
    write_export(path, [("s", 2**63, "E", b"", None, T0)])

    result = run_eventstore("import", str(path), "--url", target_url)

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("Error: ")
    assert "version must fit in a BIGINT" in result.stderr
    assert "nothing was imported" in result.stderr
    assert event_rows(target_url) == []


def test_a_snapshot_past_its_streams_events_imports_nothing(
    target_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "bad.cbor"
    write_export(path, [("s", 1, "E", b"", None, T0)], [("s", 2, b"", T0)])

    assert "snapshot of stream 's' at version 2, whose last is 1" in import_fails(target_url, path)


def test_files_that_are_not_exports_are_named_as_such(target_url: str, tmp_path: Path) -> None:
    text_file = tmp_path / "notes.txt"
    text_file.write_text("hello, this is not an export\n")
    newer = tmp_path / "newer.cbor"
    write_export(newer, [], format_version=2)
    empty = tmp_path / "empty.cbor"
    empty.write_bytes(b"")

    assert "does not start with a pg-eventstore export header" in import_fails(
        target_url, text_file
    )
    assert "format version 2" in import_fails(target_url, newer)
    assert "it is empty" in import_fails(target_url, empty)


def test_unmigrated_databases_are_refused_and_an_existing_file_is_kept(
    scratch_database_url: str, small_export: Path, tmp_path: Path
) -> None:
    existing = tmp_path / "existing.cbor"
    existing.write_bytes(b"keep me")

    with pytest.raises(SchemaError, match="source database has no event store tables: run `e"):
        export_events(scratch_database_url, existing)
    with pytest.raises(SchemaError, match="target database has no event store tables"):
        import_events(scratch_database_url, small_export)
    migrations.upgrade(scratch_database_url, "eventstore_0001")
    with pytest.raises(SchemaError, match="at schema revision eventstore_0001, not eventstore_0"):
        import_events(scratch_database_url, small_export)

    assert existing.read_bytes() == b"keep me"
    assert [path.name for path in tmp_path.iterdir()] == ["existing.cbor"]


def test_export_reads_one_snapshot_while_the_store_is_written(
    target_url: str, tmp_path: Path
) -> None:
    with PostgresEventStore.from_url(target_url) as store:
        for number in range(3):
            store.append_events(
                f"s-{number}",
                [NewEvent("E", index) for index in range(1_000)],
                expected_version=0,
            )
        path = tmp_path / "during.cbor"

        def write_meanwhile(phase: str, done: int, total: int | None) -> None:
            if (phase, done) == ("events", 1_000):  # after the first page of rows
                store.append_events("s-0", [NewEvent("Late", 0)], expected_version=1_000)
                store.append_events("s-new", [NewEvent("Late", 0)], expected_version=0)
                store.save_snapshot("s-1", 1_000, {"late": True})

        summary = export_events(target_url, path, progress=write_meanwhile)

    items = items_of(path)
    assert (summary.events, summary.streams, summary.snapshots) == (3_000, 3, 0)
    assert len(items) == 1 + 3_000 + 1
    assert "Late" not in {item[3] for item in items[1:-1]}
    assert event_rows(target_url, "event_type = 'Late'") != []


# -- memory --------------------------------------------------------------------------------

# Peaks are read from /proc (VmHWM, reset through clear_refs before each phase):
# getrusage's ru_maxrss keeps the high-water mark of the process that spawned the
# script (it survives exec), so after a large test it reads as no growth at all.
MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import psycopg
    from eventstore.transfer import export_events, import_events

    source, target, path, warm, libpq_source = sys.argv[1:6]

    def status_mb(field):
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
        raise LookupError(field)

    def growth(work):
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # the peak becomes the current size
        before = status_mb("VmRSS")
        result = work()
        return status_mb("VmHWM") - before, result

    def hold_every_payload():
        with psycopg.connect(libpq_source) as conn:
            return conn.execute("SELECT event_data FROM events").fetchall()

    # Load every module and connect once before measuring.
    export_events(source, warm, stream_prefix="order-")
    import_events(target, warm)
    export_growth, exported = growth(lambda: export_events(source, path))
    import_growth, imported = growth(lambda: import_events(target, path))
    # The control: what holding every payload at once costs, seen by the same instrument.
    control_growth, _ = growth(hold_every_payload)
    print(json.dumps({
        "export_growth_mb": round(export_growth, 1),
        "import_growth_mb": round(import_growth, 1),
        "control_growth_mb": round(control_growth, 1),
        "export_rate": round(exported.events / exported.seconds),
        "import_rate": round(imported.events / imported.seconds),
        "imported": imported.events,
    }))
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="reads peak memory from /proc")
def test_export_and_import_run_in_bounded_memory(
    source_url: str, target_url: str, tmp_path: Path
) -> None:
    data_mb = GENERATED_EVENTS * PAYLOAD_BYTES / 1e6  # about 61 MB of payload alone
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            MEMORY_SCRIPT,
            source_url,
            target_url,
            str(tmp_path / "all.cbor"),
            str(tmp_path / "warm.cbor"),
            libpq(source_url),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout)
    print(f"memory and rates for {SOURCE_EVENTS:,} events: {measured}")
    assert measured["imported"] == SOURCE_EVENTS - 3  # order-1 came with the warm-up
    # Holding the payloads takes more than their size (the control shows the
    # instrument sees it); streaming stays within a few MB.
    assert measured["control_growth_mb"] > data_mb, measured
    assert measured["export_growth_mb"] < data_mb / 2, measured
    assert measured["import_growth_mb"] < data_mb / 2, measured


# -- the command line ----------------------------------------------------------------------


def test_cli_exports_and_imports_with_a_summary_line(
    source_url: str, target_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "acct.cbor.gz"
    runner = CliRunner()

    exported = runner.invoke(
        cli, ["export", str(path), "--stream", "acct", "--url", source_url], catch_exceptions=False
    )
    imported = runner.invoke(cli, ["import", str(path), "--url", target_url])

    assert exported.exit_code == 0, exported.output
    assert "exported 4 events of 4 streams and 1 snapshots" in exported.stdout
    assert "events/s" in exported.stdout
    assert exported.stderr == ""
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    assert imported.exit_code == 0, imported.output
    assert "imported 4 events of 4 streams and 1 snapshots" in imported.stdout
    assert event_rows(target_url) == event_rows(source_url, "stream_id LIKE 'acct%'")


def test_cli_pipes_through_standard_output_and_input(source_url: str, target_url: str) -> None:
    runner = CliRunner()

    exported = runner.invoke(cli, ["export", "-", "--stream", "order-", "--url", source_url])
    imported = runner.invoke(cli, ["import", "-", "--url", target_url], input=exported.stdout_bytes)

    assert exported.exit_code == 0, exported.stderr
    assert exported.stdout_bytes[:1] == b"\x83"  # the header: a CBOR array of 3
    assert "exported 3 events" in exported.stderr
    assert imported.exit_code == 0, imported.output
    assert event_rows(target_url) == event_rows(source_url, "stream_id = 'order-1'")


def test_cli_import_exits_1_listing_refused_streams(small_export: Path, target_url: str) -> None:
    runner = CliRunner()
    first = runner.invoke(cli, ["import", str(small_export), "--url", target_url])

    again = runner.invoke(cli, ["import", str(small_export), "--url", target_url])

    assert first.exit_code == 0, first.output
    assert again.exit_code == 1
    assert "imported 0 events of 0 streams" in again.stdout
    assert "refused 11 streams (1,100 events)" in again.stderr
    assert "'gen-99': the target already has versions 1..100" in again.stderr


def test_cli_reports_a_damaged_file_and_usage_errors(
    small_export: Path, target_url: str, tmp_path: Path
) -> None:
    damaged = tmp_path / "damaged.cbor"
    damaged.write_bytes(small_export.read_bytes()[:-40])
    runner = CliRunner()

    bad_file = runner.invoke(cli, ["import", str(damaged), "--url", target_url])
    missing = runner.invoke(cli, ["import", str(tmp_path / "nope.cbor"), "--url", target_url])
    unwritable = runner.invoke(
        cli, ["export", str(tmp_path / "no-dir" / "x.cbor"), "--url", target_url]
    )

    assert bad_file.exit_code == 1
    assert "is not a valid pg-eventstore export" in bad_file.stderr
    assert "nothing was imported" in bad_file.stderr
    assert missing.exit_code == 2
    assert "does not exist" in missing.stderr
    assert unwritable.exit_code == 1
    assert "cannot write" in unwritable.stderr


def run_eventstore(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EVENTSTORE), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_the_installed_command_round_trips_and_reports_failures(
    source_url: str, target_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "order.cbor"

    exported = run_eventstore("export", str(path), "--stream", "order-", "--url", source_url)
    imported = run_eventstore("import", str(path), "--url", target_url)
    refused = run_eventstore("import", str(path), "--url", target_url)
    path.write_bytes(path.read_bytes().replace(b"OrderPlaced", b"OrderPlacex"))
    damaged = run_eventstore("import", str(path), "--url", target_url)

    assert exported.returncode == 0, exported.stderr
    assert "exported 3 events of 1 streams and 1 snapshots" in exported.stdout
    assert imported.returncode == 0, imported.stderr
    assert "imported 3 events of 1 streams and 1 snapshots" in imported.stdout
    assert refused.returncode == 1
    assert "'order-1': the target already has versions 1..3" in refused.stderr
    assert damaged.returncode == 1
    assert "SHA-256 checksum does not match" in damaged.stderr
    assert "\x1b[" not in damaged.stderr + exported.stderr  # no progress bar off a terminal
    assert event_rows(target_url) == event_rows(source_url, "stream_id = 'order-1'")
