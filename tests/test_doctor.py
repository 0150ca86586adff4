"""``eventstore doctor``: each failure of the guide's troubleshooting section,
staged for real, is reported with what to do; the exit code gates a deploy."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from _staging import closed_port as _closed_port
from _staging import execute as _execute
from _staging import libpq_url as _libpq
from _staging import require_password
from _store_helpers import wait_for_feed_horizon
from click.testing import CliRunner
from sqlalchemy.engine import URL

from eventstore import NO_STREAM, NewEvent, PostgresEventStore, Projection, ProjectionRunner
from eventstore.cli import cli
from eventstore.doctor import DEFAULT_POOL_CONNECTIONS, Check, overall, run_checks
from eventstore.erasure import ALLOW_REWRITE
from eventstore.migrations import upgrade
from eventstore.urls import normalize_url

EVENTSTORE_CLI = Path(sys.executable).with_name("eventstore")

ALL_CHECKS = [
    "server reachable",
    "authentication",
    "database exists",
    "migration",
    "tables",
    "indexes",
    "append-only log",
    "privileges",
    "max_connections",
    "shared_buffers",
    "work_mem",
    "wal_buffers",
    "checkpoint_completion_target",
    "max_wal_size",
    "oldest transaction",
    "feed transaction ids",
    "stream load plan",
    "skipped events",
]

APP_ROLE = "doctor_app"
APP_PASSWORD = "right-horse-battery"
WRONG_PASSWORD = "wrong-staple-42"


def _by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


def _run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EVENTSTORE_CLI), *args], capture_output=True, text=True, timeout=60, cwd=cwd
    )


@pytest.fixture
def migrated_url(scratch_database_url: str) -> str:
    upgrade(scratch_database_url)
    return scratch_database_url


@pytest.fixture(scope="module")
def password_role(own_server: str) -> URL:
    """The URL of a role that must log in with a password (scram-sha-256).

    The embedded server trusts local connections; pg_hba.conf is changed to require
    a password for this one role, and reloaded.
    """
    return require_password(own_server, APP_ROLE, APP_PASSWORD, wrong=WRONG_PASSWORD)


# -- connecting -------------------------------------------------------------------------


def test_closed_port_fails_server_reachable_and_stops() -> None:
    port = _closed_port()

    checks = run_checks(f"postgresql://postgres@127.0.0.1:{port}/app")

    assert [(c.name, c.status) for c in checks] == [("server reachable", "fail")]
    assert f"127.0.0.1:{port}" in checks[0].message
    assert "refused" in checks[0].message.lower()
    assert "start the server" in checks[0].advice


def test_unknown_host_fails_server_reachable() -> None:
    checks = run_checks("postgresql://postgres@no-such-host.invalid:5432/app")

    assert [(c.name, c.status) for c in checks] == [("server reachable", "fail")]
    assert "unknown" in checks[0].message
    assert "host name" in checks[0].advice


def test_wrong_password_fails_authentication_with_pg_hba_advice(password_role: URL) -> None:
    right = password_role
    wrong = right.set(password=WRONG_PASSWORD)

    checks = _by_name(run_checks(wrong))
    granted = _by_name(run_checks(right))

    assert checks["server reachable"].status == "pass"
    assert checks["authentication"].status == "fail"
    assert "password authentication failed" in checks["authentication"].message
    assert "pg_hba.conf" in checks["authentication"].advice
    assert "database exists" not in checks
    assert granted["authentication"].status == "pass"
    assert granted["database exists"].status == "pass"
    # The role may log in but was granted nothing on the tables.
    assert granted["privileges"].status == "fail"
    assert f'GRANT SELECT, INSERT ON events TO "{APP_ROLE}";' in granted["privileges"].advice

    result = CliRunner().invoke(
        cli, ["doctor", "--url", wrong.render_as_string(hide_password=False)]
    )
    assert result.exit_code == 2
    assert "FAIL  authentication" in result.output
    assert WRONG_PASSWORD not in result.output
    assert "***" in result.output


def test_no_connection_slot_left_fails_with_the_guides_advice(
    own_server: str, password_role: URL
) -> None:
    _execute(own_server, f"ALTER ROLE {APP_ROLE} CONNECTION LIMIT 1")
    try:
        with psycopg.connect(_libpq(password_role.render_as_string(hide_password=False))):
            checks = run_checks(password_role)
    finally:
        _execute(own_server, f"ALTER ROLE {APP_ROLE} CONNECTION LIMIT -1")

    assert [(c.name, c.status) for c in checks] == [
        ("server reachable", "pass"),
        ("max_connections", "fail"),
    ]
    assert "too many connections" in checks[1].message
    assert "ALTER SYSTEM SET max_connections" in checks[1].advice


def test_missing_database_fails_with_create_database_advice(eventstore_database_url: str) -> None:
    name = f"es_missing_{uuid.uuid4().hex[:8]}"
    url = normalize_url(eventstore_database_url).set(database=name)

    checks = run_checks(url)

    assert [(c.name, c.status) for c in checks] == [
        ("server reachable", "pass"),
        ("authentication", "pass"),
        ("database exists", "fail"),
    ]
    assert name in checks[2].message
    assert f'CREATE DATABASE "{name}"' in checks[2].advice


# -- schema -----------------------------------------------------------------------------


def test_unmigrated_database_fails_migration_and_tables(scratch_database_url: str) -> None:
    checks = _by_name(run_checks(scratch_database_url))

    assert checks["database exists"].status == "pass"
    assert checks["migration"].status == "fail"
    assert "not migrated" in checks["migration"].message
    assert "eventstore migrate upgrade" in checks["migration"].advice
    assert checks["tables"].status == "fail"
    assert "events" in checks["tables"].message
    assert "stream load plan" not in checks


def test_database_behind_head_fails_migration(scratch_database_url: str) -> None:
    upgrade(scratch_database_url, "eventstore_0001")

    checks = _by_name(run_checks(scratch_database_url))

    assert checks["migration"].status == "fail"
    assert "at eventstore_0001, behind head eventstore_0004" in checks["migration"].message
    assert "eventstore migrate upgrade" in checks["migration"].advice
    assert checks["tables"].message == "missing: projection_checkpoints, projection_skipped_events"
    assert "idx_events_feed" in checks["indexes"].message
    # The upgrade creates the index: creating it by hand would make the upgrade fail.
    assert "CREATE INDEX" not in checks["indexes"].advice
    assert "eventstore migrate upgrade" in checks["indexes"].advice
    assert "stream load plan" not in checks
    assert "feed transaction ids" not in checks
    assert "append-only log" not in checks
    assert "skipped events" not in checks


def test_dropped_index_fails_with_the_statement_that_recreates_it(migrated_url: str) -> None:
    _execute(migrated_url, "DROP INDEX idx_events_type")

    checks = _by_name(run_checks(migrated_url))

    assert checks["migration"].status == "pass"
    assert checks["indexes"].status == "fail"
    assert checks["indexes"].message == "missing: idx_events_type"
    statement = "CREATE INDEX idx_events_type ON events (event_type);"
    assert checks["indexes"].advice == f"recreate: {statement}"

    _execute(migrated_url, statement)
    assert _by_name(run_checks(migrated_url))["indexes"].status == "pass"


def test_a_disabled_append_only_trigger_fails_with_the_statement_that_enables_it(
    migrated_url: str,
) -> None:
    assert _by_name(run_checks(migrated_url))["append-only log"].status == "pass"
    _execute(migrated_url, "ALTER TABLE events DISABLE TRIGGER events_refuse_truncate")

    check = _by_name(run_checks(migrated_url))["append-only log"]

    assert check.status == "fail"
    assert check.message == "events can be rewritten, triggers disabled: events_refuse_truncate"
    assert check.advice == "ALTER TABLE events ENABLE TRIGGER events_refuse_truncate;"
    _execute(migrated_url, check.advice)
    assert _by_name(run_checks(migrated_url))["append-only log"].status == "pass"


def test_a_dropped_append_only_trigger_fails_with_how_to_recreate_it(migrated_url: str) -> None:
    _execute(migrated_url, "DROP TRIGGER events_refuse_update_delete ON events")

    check = _by_name(run_checks(migrated_url))["append-only log"]

    assert check.status == "fail"
    assert check.message == "events can be rewritten, triggers missing: events_refuse_update_delete"
    assert "eventstore migrate downgrade eventstore_0002" in check.advice


# -- server settings --------------------------------------------------------------------


def test_pool_larger_than_max_connections_warns(migrated_url: str) -> None:
    crowded = _by_name(run_checks(migrated_url, pool_size=10_000))
    small = _by_name(run_checks(migrated_url, pool_size=1))

    assert crowded["max_connections"].status == "warn"
    assert "a pool of 10000" in crowded["max_connections"].message
    assert "ALTER SYSTEM SET max_connections" in crowded["max_connections"].advice
    assert small["max_connections"].status == "pass"


def test_work_mem_below_the_default_warns_with_the_guides_value(
    migrated_url: str, scratch_database_url: str
) -> None:
    name = normalize_url(scratch_database_url).database
    _execute(migrated_url, f"ALTER DATABASE \"{name}\" SET work_mem = '1MB'")

    checks = _by_name(run_checks(migrated_url))

    assert checks["work_mem"].status == "warn"
    assert checks["work_mem"].message.startswith("1MB, below 4MB")
    assert "guide: 16MB" in checks["work_mem"].message
    assert "ALTER SYSTEM SET work_mem = '16MB'" in checks["work_mem"].advice
    for setting in ("shared_buffers", "wal_buffers", "max_wal_size"):
        assert "(guide: " in checks[setting].message


def test_long_running_transaction_on_another_connection_warns(own_server: str) -> None:
    with psycopg.connect(_libpq(own_server)) as holder:
        holder.execute("SELECT pg_current_xact_id()")
        pid = holder.info.backend_pid

        check = _by_name(run_checks(own_server, max_transaction_age=0))["oldest transaction"]
        relaxed = _by_name(run_checks(own_server, max_transaction_age=3600))["oldest transaction"]
        holder.rollback()

    assert check.status == "warn"
    assert f"pid {pid}" in check.message
    assert "idle in transaction" in check.message
    assert "readers of the feed" in check.message
    assert f"pg_terminate_backend({pid})" in check.advice
    assert relaxed.status == "pass"


# -- the feed and the query plan --------------------------------------------------------


def test_transaction_ids_in_the_future_fail_until_the_readme_fix_runs(migrated_url: str) -> None:
    with PostgresEventStore.from_url(migrated_url) as store:
        store.append_events("order-1", [NewEvent("OrderPlaced", {})], expected_version=NO_STREAM)
    # What a logical restore from a cluster that had counted further leaves behind.
    _execute(
        migrated_url,
        f"BEGIN; {ALLOW_REWRITE}; UPDATE events SET transaction_id = '999999999999'::xid8; COMMIT",
    )

    check = _by_name(run_checks(migrated_url))["feed transaction ids"]

    assert check.status == "fail"
    assert "999999999999" in check.message
    assert "UPDATE events SET transaction_id = pg_current_xact_id();" in check.advice
    fix = check.advice[check.advice.index("BEGIN;") :]
    with psycopg.connect(_libpq(migrated_url), autocommit=True) as connection:
        connection.execute(fix)
    assert _by_name(run_checks(migrated_url))["feed transaction ids"].status == "pass"


def test_stream_load_without_the_primary_key_fails_the_plan_check(migrated_url: str) -> None:
    _execute(migrated_url, "ALTER TABLE events DROP CONSTRAINT events_pkey")

    checks = _by_name(run_checks(migrated_url))

    assert checks["stream load plan"].status == "fail"
    assert "cannot use events_pkey" in checks["stream load plan"].message
    assert "PRIMARY KEY (stream_id, version)" in checks["stream load plan"].advice
    assert checks["indexes"].status == "fail"


def test_stream_load_on_an_analyzed_table_reads_the_primary_key(migrated_url: str) -> None:
    _execute(
        migrated_url,
        "INSERT INTO events (stream_id, version, event_type, event_data) "
        "SELECT 'order-' || (n / 20), n % 20 + 1, 'ItemAdded', '\\xa0'::bytea "
        "FROM generate_series(0, 19999) AS n",
        "ANALYZE events",
    )

    check = _by_name(run_checks(migrated_url))["stream load plan"]

    assert check.status == "pass"
    assert "events_pkey" in check.message
    assert "small" not in check.message


def test_a_projection_that_skipped_an_event_warns_naming_it(migrated_url: str) -> None:
    with PostgresEventStore.from_url(migrated_url) as store:
        store.append_events("order-1", [NewEvent("Placed", {})], expected_version=NO_STREAM)
        # Bytes that are not CBOR, written as the tables' owner: they never decode.
        _execute(
            migrated_url,
            "INSERT INTO events (stream_id, version, event_type, event_data) "
            "VALUES ('order-1', 2, 'Shipped', '\\xff')",
        )
        wait_for_feed_horizon(store)
        projection = Projection("shipping", lambda event, connection: None, on_undecodable="skip")
        with ProjectionRunner(store, projection) as runner:
            assert runner.run_once() == 1
            assert len(runner.skipped_events()) == 1

    check = _by_name(run_checks(migrated_url))["skipped events"]

    assert check.status == "warn"
    for text in ("'shipping' skipped 1", "event 2 of stream 'order-1'", "type 'Shipped'"):
        assert text in check.message
    assert "invalid CBOR" in check.message
    assert "projection_skipped_events" in check.advice
    assert "reset" in check.advice


# -- the command ------------------------------------------------------------------------


def test_healthy_database_passes_every_check(own_server: str) -> None:
    checks = run_checks(own_server)

    assert [check.name for check in checks] == ALL_CHECKS
    assert {check.name: check.status for check in checks} == dict.fromkeys(ALL_CHECKS, "pass")
    assert overall(checks) == "pass"
    assert f"a pool of {DEFAULT_POOL_CONNECTIONS}" in _by_name(checks)["max_connections"].message


def test_exit_codes_are_0_1_2_for_pass_warn_fail(
    own_server: str, migrated_url: str, tmp_path: Path
) -> None:
    passed = _run_cli("doctor", "--url", own_server, cwd=tmp_path)
    warned = _run_cli("doctor", "--url", migrated_url, "--pool-size", "10000", cwd=tmp_path)
    failed = _run_cli(
        "doctor", "--url", f"postgresql://postgres@127.0.0.1:{_closed_port()}/app", cwd=tmp_path
    )

    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "overall: pass" in passed.stdout
    assert warned.returncode == 1, warned.stdout + warned.stderr
    assert "WARN  max_connections" in warned.stdout
    assert failed.returncode == 2, failed.stdout + failed.stderr
    assert "FAIL  server reachable" in failed.stdout
    assert "overall: fail" in failed.stdout


def test_json_output_lists_every_check_and_the_overall_status(migrated_url: str) -> None:
    result = CliRunner().invoke(
        cli, ["doctor", "--url", migrated_url, "--pool-size", "1", "--json"]
    )

    document = json.loads(result.output)
    assert set(document) == {"url", "status", "checks"}
    assert [check["name"] for check in document["checks"]] == ALL_CHECKS
    assert all(
        set(check) == {"name", "status", "message", "advice"} for check in document["checks"]
    )
    assert result.exit_code == {"pass": 0, "warn": 1, "fail": 2}[document["status"]]
