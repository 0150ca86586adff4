"""Least privilege: the role `eventstore grant` sets up can use the store and
nothing more. (The contract suite also runs as this role: tests/test_contract.py.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from conftest import APP_ROLE
from sqlalchemy import text

from eventstore import NewEvent, PostgresEventStore
from eventstore.roles import STORE_PRIVILEGES, app_role_grants
from eventstore.urls import normalize_url

EVENTSTORE_CLI = Path(sys.executable).with_name("eventstore")

FORBIDDEN = [
    "UPDATE events SET event_type = 'rewritten'",
    "DELETE FROM events",
    "TRUNCATE events",
    "DROP TABLE snapshots",
    "ALTER TABLE events ADD COLUMN extra int",
    "CREATE TABLE intruder (id int)",
]


def libpq(url: str) -> str:
    return normalize_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def test_the_app_role_store_really_connects_as_the_app_role(
    app_role_event_store: PostgresEventStore,
) -> None:
    with app_role_event_store.engine.connect() as connection:
        assert connection.execute(text("SELECT current_user")).scalar_one() == APP_ROLE


@pytest.mark.parametrize("statement", FORBIDDEN)
def test_the_app_role_cannot_rewrite_history_or_the_schema(
    app_role_event_store: PostgresEventStore, app_role_database_url: str, statement: str
) -> None:
    app_role_event_store.append_events("order-1", [NewEvent("Placed", {})], expected_version=0)
    app_role_event_store.save_snapshot("order-1", 1, {"state": 1})

    with (
        psycopg.connect(libpq(app_role_database_url), autocommit=True) as connection,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        connection.execute(statement)

    assert [e.event_type for e in app_role_event_store.load_events("order-1")] == ["Placed"]
    assert app_role_event_store.load_snapshot("order-1") is not None


def test_the_app_role_may_delete_a_snapshot_but_no_event(
    app_role_event_store: PostgresEventStore, app_role_database_url: str
) -> None:
    app_role_event_store.append_events("order-1", [NewEvent("Placed", {})], expected_version=0)
    app_role_event_store.save_snapshot("order-1", 1, {"state": 1})

    assert app_role_event_store.delete_snapshot("order-1") is True

    assert app_role_event_store.load_snapshot("order-1") is None
    with (
        psycopg.connect(libpq(app_role_database_url), autocommit=True) as connection,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        connection.execute("DELETE FROM events")
    assert [e.event_type for e in app_role_event_store.load_events("order-1")] == ["Placed"]


def test_grants_cover_exactly_the_store_tables_and_the_version_table() -> None:
    statements = app_role_grants("app")
    assert statements[: len(STORE_PRIVILEGES)] == [
        f'GRANT {rights} ON {table} TO "app"' for table, rights in STORE_PRIVILEGES.items()
    ]
    assert statements[-1] == 'GRANT SELECT ON eventstore_alembic_version TO "app"'
    assert app_role_grants('we"ird')[0].endswith('TO "we""ird"')


def test_grant_command_runs_the_grants(scratch_database_url: str) -> None:
    from eventstore import migrations

    migrations.upgrade(scratch_database_url)
    role = "eventstore_grant_cli_test"
    with psycopg.connect(libpq(scratch_database_url), autocommit=True) as admin:
        admin.execute(f"DROP ROLE IF EXISTS {role}")
        admin.execute(f"CREATE ROLE {role}")
        try:
            printed = subprocess.run(
                [str(EVENTSTORE_CLI), "grant", role, "--url", scratch_database_url],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert printed.returncode == 0, printed.stderr
            assert f'GRANT SELECT, INSERT ON events TO "{role}";' in printed.stdout
            granted = admin.execute(
                "SELECT has_table_privilege(%s, 'events', 'INSERT'), "
                "has_table_privilege(%s, 'events', 'UPDATE')",
                (role, role),
            ).fetchone()
            assert granted == (True, False)
        finally:
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")


def test_grant_print_only_needs_no_database() -> None:
    printed = subprocess.run(
        [str(EVENTSTORE_CLI), "grant", "app", "--print-only"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.splitlines()[0] == 'GRANT SELECT, INSERT ON events TO "app";'
