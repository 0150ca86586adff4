"""The import's fast path: metadata decided by a bare parse, every column through
binary COPY with edge values, and what a failed or interrupted import leaves
behind (nothing); ``bulk_append`` on the same path.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import cbor2
import psycopg
import pytest

from eventstore import NewEvent, PostgresEventStore, migrations
from eventstore._sql import NOTIFY_CHANNEL
from eventstore._validation import (
    _parse_json_int,
    _plain_metadata_accepted,
    check_stored_event,
    metadata_json,
)
from eventstore.errors import ValidationError
from eventstore.transfer import FORMAT_NAME, TransferError, bulk_append, import_events
from eventstore.urls import normalize_url

UTC = timezone.utc


def libpq(url: str) -> str:
    return normalize_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def target(scratch_database_url: str) -> str:
    migrations.upgrade(scratch_database_url)
    return scratch_database_url


def file_bytes(events: list[tuple[Any, ...]], *, damage_checksum: bool = False) -> bytes:
    """An export file by the documented format (no snapshots)."""
    streams = len({event[0] for event in events})
    counts = {"events": len(events), "streams": streams, "snapshots": 0}
    items = [[FORMAT_NAME, 1, dict(counts)], *(["event", *event] for event in events)]
    body = b"".join(cbor2.dumps(item) for item in items)
    digest = hashlib.sha256(body).digest()
    if damage_checksum:
        digest = bytes(32)
    return body + cbor2.dumps(["end", {**counts, "sha256": digest}])


def stored(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(libpq(url)) as connection:
        return connection.execute(
            "SELECT stream_id, version, event_type, event_data, metadata::text, created_at "
            "FROM events ORDER BY transaction_id, position"
        ).fetchall()


def leftovers(url: str) -> tuple[int, int, int]:
    """Events and snapshots in the target, and the import's temporary tables or open
    transactions anywhere in its database."""
    with psycopg.connect(libpq(url), autocommit=True) as connection:
        (events,) = connection.execute("SELECT count(*) FROM events").fetchone() or (0,)
        (snapshots,) = connection.execute("SELECT count(*) FROM snapshots").fetchone() or (0,)
        (staged,) = connection.execute(
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'eventstore_import_%'"
        ).fetchone() or (0,)
        (open_transactions,) = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND state LIKE 'idle in transaction%'"
        ).fetchone() or (0,)
    return events + snapshots, staged, open_transactions


# -- metadata: the bare parse decides exactly as the full check ----------------------------

METADATA_TEXTS = [
    "{}",
    "null",
    '{"a":1,"b":"x","c":null,"d":true,"e":2.5}',
    '{"ü":"é ☃ 😀","nested":{"list":[1,[2,[3]],{"x":""}]}}',
    '{"a": 1, "b": [1, 2]}',
    '{"a":-0.0}',
    "[]",
    '"text"',
    "1",
    "{bad",
    '{"a":1} trailing',
    ' {"a":1}',
    '{"a":NaN}',
    '{"a":Infinity}',
    '{"a":-Infinity}',
    '{"a":1e400}',
    '{"a":1e16}',
    '{"a":1E5}',
    '{"a":"\\u0000"}',
    '{"a":"\\ud800"}',
    '{"a":"\\u00e9"}',
    '{"a":"tab\there"}',
    '{"a":' + "9" * 400 + "}",
    '{"a":' + "9" * 5000 + "}",
    '{"a":' + "1" * 400 + ".5}",
    '{"a":' + "[" * 100 + "]" * 100 + "}",
    '{"a":' + "[" * 101 + "]" * 101 + "}",
    '{"a":"' + "[" * 150 + '"}',
    '{"a":1,"a":2}',
]


def full_check(text: str) -> bool:
    """Whether the full check (parse with int guard, then metadata_json) accepts."""
    try:
        metadata_json(json.loads(text, parse_int=_parse_json_int), "E")
    except (ValueError, ValidationError):
        return False
    return True


@pytest.mark.parametrize("text", METADATA_TEXTS)
def test_the_bare_parse_accepts_only_what_the_full_check_accepts(text: str) -> None:
    try:
        check_stored_event("s", 1, "E", text)
        accepted = True
    except ValidationError:
        accepted = False

    assert accepted == full_check(text)
    if _plain_metadata_accepted(text):
        assert full_check(text)


def test_common_metadata_takes_the_bare_parse() -> None:
    for text in ("{}", "null", '{"correlation_id":"c-1","user":"u"}', '{"ü":[1,{"x":null}]}'):
        assert _plain_metadata_accepted(text)


# -- every column through binary COPY ------------------------------------------------------


def test_every_column_and_edge_value_survives_the_import(target: str, tmp_path: Path) -> None:
    zones = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
    long_id = "é" * 512  # 1,024 bytes of UTF-8: the longest id the store takes
    big = bytes(range(256)) * 40_000  # 10 MB, every byte value, NUL included
    events: list[tuple[Any, ...]] = [
        (long_id, 1, "Ünïcode.Typé", b"", None, datetime(2024, 5, 1, 12, tzinfo=zones[1])),
        (long_id, 2, "E", big, "null", datetime(1970, 1, 1, tzinfo=UTC)),
        (
            "s-2",
            1,
            "E" * 1024,
            b"\x00",
            '{"ü":"é ☃ 😀","n":{"l":[1,2.5,null,true]},"big":' + "9" * 400 + "}",
            datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=zones[2]),
        ),
        ("s-2", 2, "E", b"\xff" * 3, '{"e":1e16,"z":-0.0}', datetime(9999, 1, 1, tzinfo=UTC)),
    ]
    path = tmp_path / "edge.cbor"
    path.write_bytes(file_bytes(events))

    summary = import_events(target, path)

    assert (summary.events, summary.streams, summary.ok) == (4, 2, True)
    rows = stored(target)
    assert [row[:4] for row in rows] == [event[:4] for event in events]
    assert [row[5] for row in rows] == [event[5] for event in events]  # the same instants
    assert rows[0][4] is None
    assert rows[1][4] == "null"
    assert json.loads(rows[2][4]) == json.loads(events[2][4])
    assert json.loads(rows[3][4]) == {"e": 10000000000000000, "z": 0.0}


# -- a failed or interrupted import leaves nothing -----------------------------------------


def many_events(count: int) -> list[tuple[Any, ...]]:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    return [
        (f"s-{n // 10}", n % 10 + 1, "E", b"x" * 100, f'{{"n":{n}}}', start) for n in range(count)
    ]


@pytest.mark.parametrize(
    ("events", "damage_checksum", "problem"),
    [
        (many_events(5_000), True, "checksum does not match"),
        ([*many_events(5_000), ("s-0", 12, "E", b"", None, datetime.now(UTC))], False, "s-0"),
        ([*many_events(5_000), ("s-x", 1, "E", b"", "[1]", datetime.now(UTC))], False, "item"),
    ],
    ids=["checksum at the end", "gap found on the server", "last item refused"],
)
def test_a_file_refused_at_its_end_leaves_nothing(
    target: str, tmp_path: Path, events: list[tuple[Any, ...]], damage_checksum: bool, problem: str
) -> None:
    path = tmp_path / "bad.cbor"
    path.write_bytes(file_bytes(events, damage_checksum=damage_checksum))

    with pytest.raises(TransferError, match="nothing was imported") as caught:
        import_events(target, path)

    assert problem in str(caught.value)
    assert leftovers(target) == (0, 0, 0)


class _BreaksAfter(io.RawIOBase):
    """A file whose reads fail once ``limit`` bytes were read."""

    def __init__(self, data: bytes, limit: int) -> None:
        self._data = io.BytesIO(data)
        self._limit = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._data.tell() >= self._limit:
            raise OSError("the disk went away")
        chunk = self._data.read(min(len(buffer), self._limit - self._data.tell()))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_an_import_interrupted_in_the_middle_of_its_copy_leaves_nothing(
    target: str, scratch_database_url: str
) -> None:
    data = file_bytes(many_events(30_000))
    broken = io.BufferedReader(_BreaksAfter(data, len(data) // 2))

    with pytest.raises(OSError, match="the disk went away"):
        import_events(target, broken)

    assert leftovers(target) == (0, 0, 0)
    # The same connection pool's next import works: nothing was left half-done.
    whole = io.BytesIO(data)
    assert import_events(target, whole).events == 30_000


# -- bulk_append ---------------------------------------------------------------------------


@pytest.fixture
def store(target: str) -> Iterator[PostgresEventStore]:
    with PostgresEventStore.from_url(target) as opened:
        yield opened


def feed(url: str) -> list[tuple[str, int, str]]:
    with psycopg.connect(libpq(url)) as connection:
        return [
            (stream_id, version, event_type)
            for stream_id, version, event_type in connection.execute(
                "SELECT stream_id, version, event_type FROM events "
                "ORDER BY transaction_id, position"
            )
        ]


def test_bulk_append_appends_each_stream_at_its_expected_version_and_refuses_the_others(
    store: PostgresEventStore, target: str
) -> None:
    store.append_events("old", [NewEvent("Old", {"n": 1})], expected_version=0)
    store.append_events("stale", [NewEvent("Old", {"n": 1})], expected_version=0)

    summary = bulk_append(
        store,
        [
            ("new", 0, [NewEvent("A", {"n": 1}, metadata={"ü": "é"}), NewEvent("B", {"n": 2})]),
            ("old", 1, [NewEvent("C", {"n": 3})]),
            ("stale", 0, [NewEvent("D", {"n": 4})]),
            ("late", 3, [NewEvent("E", {"n": 5})]),
        ],
    )

    assert (summary.events, summary.streams, summary.ok) == (3, 2, False)
    assert [(r.stream_id, r.first_version, r.target_version) for r in summary.refused] == [
        ("stale", 1, 1),
        ("late", 4, 0),
    ]
    assert feed(target) == [
        ("old", 1, "Old"),
        ("stale", 1, "Old"),
        ("new", 1, "A"),
        ("new", 2, "B"),
        ("old", 2, "C"),
    ]
    loaded = store.load_events("new")
    assert [(e.data, e.metadata) for e in loaded] == [({"n": 1}, {"ü": "é"}), ({"n": 2}, None)]


@pytest.mark.parametrize(
    ("streams", "problem"),
    [
        ([("a", 0, [NewEvent("E", {})]), ("b", 0, [NewEvent("E", {}, metadata=[1])])], "metadata"),
        ([("a", 0, [NewEvent("E", {})]), ("a", 1, [NewEvent("E", {})])], "given twice"),
        ([("a", 0, [NewEvent("E", {})]), ("b", 0, [])], "empty"),
        ([("a", -1, [NewEvent("E", {})])], "expected_version must be >= 0"),
        ([("a", 2**63 - 1, [NewEvent("E", {})])], "largest version"),
        ([("a", 0)], "tuple"),
    ],
    ids=["bad metadata", "stream twice", "no events", "negative version", "past 2**63-1", "shape"],
)
def test_bulk_append_checks_everything_before_it_writes(
    store: PostgresEventStore, target: str, streams: list[Any], problem: str
) -> None:
    with pytest.raises(ValidationError, match=problem):
        bulk_append(store, streams)

    assert leftovers(target) == (0, 0, 0)


def test_bulk_append_refuses_a_stream_written_while_it_runs(
    store: PostgresEventStore, target: str
) -> None:
    def write_late_stream(phase: str, done: int, total: int | None) -> None:
        # Called once the streams are accepted, before the first batch commits.
        if (phase, done) == ("writing", 0):
            store.append_events("late", [NewEvent("Other", {})], expected_version=0)

    summary = bulk_append(
        store,
        [("late", 0, [NewEvent("E", {})]), ("kept", 0, [NewEvent("E", {})])],
        progress=write_late_stream,
    )

    assert [refused.stream_id for refused in summary.refused] == ["late"]
    assert feed(target) == [("late", 1, "Other"), ("kept", 1, "E")]


@pytest.mark.parametrize("notify", [True, False])
def test_bulk_append_wakes_subscribers_unless_the_store_does_not_notify(
    target: str, notify: bool
) -> None:
    with psycopg.connect(libpq(target), autocommit=True) as listener:
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        with PostgresEventStore.from_url(target, notify=notify) as quiet_or_not:
            bulk_append(quiet_or_not, [("s", 0, [NewEvent("E", {})])])
        woken = list(listener.notifies(timeout=1.0, stop_after=1))

    assert len(woken) == (1 if notify else 0)
