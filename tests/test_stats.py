"""``eventstore stats``: the monitoring report on databases whose content is known."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import psycopg
import pytest
from click.testing import CliRunner

from eventstore import (
    ANY,
    NO_STREAM,
    DeserializationError,
    NewEvent,
    Position,
    PostgresEventStore,
    Projection,
    ProjectionRunner,
)
from eventstore.cli import cli
from eventstore.migrations import upgrade
from eventstore.monitoring import collect_stats
from eventstore.urls import normalize_url

EVENTSTORE_CLI = Path(sys.executable).with_name("eventstore")
DEADLINE_SECONDS = 15.0

T = TypeVar("T")

TOP_LEVEL_KEYS = {
    "database",
    "server_version",
    "collected_at",
    "tables",
    "events",
    "streams",
    "busiest_streams",
    "snapshot_coverage",
    "feed",
    "projections",
}


def _libpq(url: str) -> str:
    return normalize_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _poll(read: Callable[[], T], done: Callable[[T], bool]) -> T:
    """``read()`` again until ``done`` holds for its value or the deadline passes."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    value = read()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.05)
        value = read()
    return value


def _events(count: int, event_type: str = "ItemAdded") -> list[NewEvent]:
    return [NewEvent(event_type, {"n": n}) for n in range(count)]


@pytest.fixture
def migrated_url(scratch_database_url: str) -> str:
    upgrade(scratch_database_url)
    return scratch_database_url


@pytest.fixture
def store(migrated_url: str) -> Iterator[PostgresEventStore]:
    store = PostgresEventStore.from_url(migrated_url)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def known_store(store: PostgresEventStore) -> PostgresEventStore:
    """order-a: 5 events, snapshot at 4; order-b: 3; order-c: 1, snapshot at 1;
    order-d: 5. 14 events in 4 streams."""
    for stream_id, count in (("order-a", 5), ("order-b", 3), ("order-c", 1), ("order-d", 5)):
        store.append_events(stream_id, _events(count), expected_version=NO_STREAM)
    store.save_snapshot("order-a", 4, {"total": 4})
    store.save_snapshot("order-c", 1, {"total": 1})
    return store


def test_empty_migrated_database_reports_zeros_and_every_table(migrated_url: str) -> None:
    report = collect_stats(migrated_url)

    assert (report.events, report.streams) == (0, 0)
    assert report.busiest_streams == []
    assert (report.streams_with_snapshot, report.streams_past_threshold) == (0, 0)
    assert report.past_threshold == []
    assert report.projections == []
    assert [table.name for table in report.tables] == [
        "events",
        "snapshots",
        "projection_checkpoints",
        "projection_skipped_events",
    ]
    events = report.tables[0]
    assert set(events.indexes) == {
        "events_pkey",
        "idx_events_created",
        "idx_events_type",
        "idx_events_feed",
    }
    assert events.total_bytes >= events.table_bytes + events.indexes_bytes
    assert events.indexes_bytes == sum(events.indexes.values())
    assert set(report.tables[1].indexes) == {"snapshots_pkey"}


def test_counts_busiest_streams_and_snapshot_coverage_are_exact(
    known_store: PostgresEventStore, migrated_url: str
) -> None:
    report = collect_stats(migrated_url, threshold=2, top=3)

    assert (report.events, report.streams) == (14, 4)
    # Ties in event count are ordered by stream id.
    assert [(s.stream_id, s.events, s.version) for s in report.busiest_streams] == [
        ("order-a", 5, 5),
        ("order-d", 5, 5),
        ("order-b", 3, 3),
    ]
    assert report.streams_with_snapshot == 2
    # order-a is 1 past its snapshot and order-c 0: under the threshold of 2.
    assert report.streams_past_threshold == 2
    assert [
        (s.stream_id, s.version, s.snapshot_version, s.events_since_snapshot)
        for s in report.past_threshold
    ] == [("order-d", 5, None, 5), ("order-b", 3, None, 3)]


def test_threshold_counts_events_past_the_snapshot_version_not_all_events(
    known_store: PostgresEventStore, migrated_url: str
) -> None:
    # The guide's query subtracts the snapshot version from COUNT(*); a stream
    # with a snapshot must be measured from it: order-a is 1 past, not 5.
    report = collect_stats(migrated_url, threshold=0, top=10)

    since = {s.stream_id: s.events_since_snapshot for s in report.past_threshold}
    assert since == {"order-a": 1, "order-b": 3, "order-d": 5}
    assert report.streams_past_threshold == 3
    assert collect_stats(migrated_url, threshold=5).streams_past_threshold == 0


def test_projection_lag_counts_the_events_after_its_checkpoint(
    known_store: PostgresEventStore, migrated_url: str
) -> None:
    projection = Projection("order-totals", lambda event, connection: None)
    last = known_store.load_events("order-d")[-1].position
    with ProjectionRunner(known_store, projection, batch_size=100) as runner:

        def handle_visible() -> Position | None:
            runner.run_once()
            return runner.checkpoint()

        # Other sessions on a shared server can hold the feed back for a moment.
        assert _poll(handle_visible, lambda checkpoint: checkpoint == last) == last
        caught_up = collect_stats(migrated_url).projections
        assert [(p.name, p.lag_events, p.checkpoint) for p in caught_up] == [
            ("order-totals", 0, last)
        ]

        known_store.append_events("order-b", _events(2), expected_version=3)
        known_store.append_events("order-e", _events(1), expected_version=NO_STREAM)

        report = _poll(
            lambda: collect_stats(migrated_url), lambda r: r.projections[0].lag_events == 3
        )
        assert report.projections[0].lag_events == 3
        assert report.projections[0].checkpoint == last
        assert report.projections[0].updated_at <= report.collected_at


def test_events_a_projection_skipped_are_counted_per_projection(
    known_store: PostgresEventStore, migrated_url: str
) -> None:
    with psycopg.connect(_libpq(migrated_url), autocommit=True) as owner:
        # Bytes that are not CBOR, written as the tables' owner: they never decode.
        for version in (6, 7):
            owner.execute(
                "INSERT INTO events (stream_id, version, event_type, event_data) "
                "VALUES ('order-a', %s, 'ItemAdded', '\\xff')",
                (version,),
            )
    known_store.append_events("order-e", _events(1), expected_version=NO_STREAM)
    skipping = Projection("skipping", lambda event, connection: None, on_undecodable="skip")
    last = known_store.load_events("order-e")[-1].position
    with ProjectionRunner(known_store, skipping) as runner:

        def handle_visible() -> Position | None:
            runner.run_once()
            return runner.checkpoint()

        assert _poll(handle_visible, lambda checkpoint: checkpoint == last) == last
    stopping = ProjectionRunner(known_store, Projection("other", lambda e, c: None))
    with stopping, pytest.raises(DeserializationError):
        stopping.run_once()  # stops at the first bad event: nothing skipped

    report = collect_stats(migrated_url)
    result = CliRunner().invoke(cli, ["stats", "--url", migrated_url])
    as_json = CliRunner().invoke(cli, ["stats", "--url", migrated_url, "--json"])
    document = json.loads(as_json.output)

    assert [(p.name, p.skipped_events) for p in report.projections] == [
        ("other", 0),
        ("skipping", 2),
    ]
    assert [p["skipped_events"] for p in document["projections"]] == [0, 2]
    assert result.exit_code == 0, result.output
    assert "skipped" in result.output
    assert "2 events skipped" in result.output


def test_open_transaction_is_reported_and_holds_events_out_of_the_feed(own_server: str) -> None:
    with psycopg.connect(_libpq(own_server)) as holder:
        holder.execute("SELECT pg_current_xact_id()")  # takes a transaction id
        holder_pid = holder.info.backend_pid
        with PostgresEventStore.from_url(own_server) as store:
            store.append_events("cart-held", _events(2), expected_version=ANY)

            report = collect_stats(own_server)

        oldest = report.oldest_transaction
        assert oldest is not None
        assert (oldest.pid, oldest.holds_feed, oldest.state) == (
            holder_pid,
            True,
            "idle in transaction",
        )
        assert oldest.database == normalize_url(own_server).database
        assert oldest.age_seconds >= 0
        assert report.held_back_events == 2
        holder.rollback()

    after = collect_stats(own_server)
    assert after.held_back_events == 0
    assert after.oldest_transaction is None or after.oldest_transaction.pid != holder_pid


def test_json_output_has_the_documented_keys(
    known_store: PostgresEventStore, migrated_url: str
) -> None:
    result = CliRunner().invoke(
        cli, ["stats", "--url", migrated_url, "--json", "--threshold", "2", "--top", "1"]
    )

    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert set(document) == TOP_LEVEL_KEYS
    assert document["events"] == 14
    assert document["streams"] == 4
    assert set(document["tables"]) == {
        "events",
        "snapshots",
        "projection_checkpoints",
        "projection_skipped_events",
    }
    assert set(document["tables"]["events"]) == {
        "total_bytes",
        "table_bytes",
        "indexes_bytes",
        "indexes",
    }
    assert document["busiest_streams"] == {
        "top": 1,
        "streams": [{"stream_id": "order-a", "events": 5, "version": 5}],
    }
    assert document["snapshot_coverage"] == {
        "threshold": 2,
        "streams_with_snapshot": 2,
        "streams_past_threshold": 2,
        "streams": [
            {
                "stream_id": "order-d",
                "version": 5,
                "snapshot_version": None,
                "events_since_snapshot": 5,
            }
        ],
    }
    assert set(document["feed"]) == {"horizon", "held_back_events", "oldest_transaction"}
    assert document["projections"] == []


def test_tables_show_the_streams_and_sizes(
    known_store: PostgresEventStore, migrated_url: str
) -> None:
    result = CliRunner().invoke(cli, ["stats", "--url", migrated_url, "--threshold", "2"])

    assert result.exit_code == 0, result.output
    for text in ("events_pkey", "idx_events_feed", "14 events in 4 streams", "order-d"):
        assert text in result.output
    assert "2 of 4 streams with a snapshot; 2 more than 2 events past it" in result.output


def test_command_reports_json_in_a_subprocess_and_fails_on_an_unmigrated_database(
    known_store: PostgresEventStore, migrated_url: str, tmp_path: Path
) -> None:
    ok = subprocess.run(
        [str(EVENTSTORE_CLI), "stats", "--json", "--url", migrated_url],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["events"] == 14

    with psycopg.connect(_libpq(migrated_url), autocommit=True) as connection:
        connection.execute("DROP TABLE events, snapshots, projection_checkpoints")
    failed = subprocess.run(
        [str(EVENTSTORE_CLI), "stats", "--url", migrated_url],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert failed.returncode == 1
    assert "not migrated" in failed.stderr
    assert "eventstore migrate upgrade" in failed.stderr


def test_negative_threshold_is_a_usage_error(migrated_url: str) -> None:
    result = CliRunner().invoke(cli, ["stats", "--url", migrated_url, "--threshold", "-1"])

    assert result.exit_code == 2
    assert "--threshold" in result.output
