"""The append-only log (revision eventstore_0003): UPDATE, DELETE and TRUNCATE on
``events`` are refused for everyone, and the one way out, erasing as the tables'
owner, works and is refused to anyone else."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from _staging import libpq_url
from _store_helpers import wait_for_feed_horizon
from conftest import APP_ROLE

from eventstore import (
    NO_STREAM,
    NewEvent,
    PermissionDeniedError,
    PostgresEventStore,
    ValidationError,
    migrations,
)
from eventstore.erasure import ALLOW_REWRITE, erase_stream
from eventstore.urls import normalize_url

EVENTSTORE_CLI = Path(sys.executable).with_name("eventstore")

REWRITES = [
    "UPDATE events SET event_type = 'rewritten'",
    "UPDATE events SET metadata = '{}' WHERE stream_id = 'no-such-stream'",
    "DELETE FROM events",
    "DELETE FROM events WHERE stream_id = 'order-1'",
    "TRUNCATE events",
    "TRUNCATE events, snapshots",
]


def rows(url: str) -> list[tuple[object, ...]]:
    """Every event row, all columns, in a stable order."""
    with psycopg.connect(libpq_url(url)) as connection:
        return connection.execute("SELECT * FROM events ORDER BY stream_id, version").fetchall()


def fill(store: PostgresEventStore) -> None:
    for stream in ("order-1", "order-2"):
        store.append_events(
            stream, [NewEvent("Placed", {"n": 1}), NewEvent("Paid", {})], expected_version=0
        )
        store.save_snapshot(stream, 2, {"state": stream})


@pytest.fixture
def filled(event_store: PostgresEventStore, eventstore_database_url: str) -> str:
    fill(event_store)
    return eventstore_database_url


@pytest.mark.parametrize("statement", REWRITES)
def test_the_owner_cannot_rewrite_events_by_accident(filled: str, statement: str) -> None:
    before = rows(filled)

    with (
        psycopg.connect(libpq_url(filled), autocommit=True) as connection,
        pytest.raises(psycopg.errors.InsufficientPrivilege) as refused,
    ):
        connection.execute(statement)

    diag = refused.value.diag
    assert diag.message_primary is not None
    assert "refused: the event log is append-only" in diag.message_primary
    assert diag.message_hint is not None
    assert "eventstore erase STREAM_ID" in diag.message_hint
    assert "SET LOCAL eventstore.allow_rewrite = on" in diag.message_hint
    assert rows(filled) == before


def test_the_permission_lasts_one_transaction(filled: str) -> None:
    with psycopg.connect(libpq_url(filled)) as connection:
        connection.execute(ALLOW_REWRITE)
        connection.execute("DELETE FROM events WHERE stream_id = 'order-1'")
        connection.commit()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            connection.execute("DELETE FROM events WHERE stream_id = 'order-2'")
        connection.rollback()

    assert {row[0] for row in rows(filled)} == {"order-2"}


def test_a_rolled_back_rewrite_leaves_the_log_as_it_was(filled: str) -> None:
    before = rows(filled)
    with psycopg.connect(libpq_url(filled)) as connection:
        connection.execute(ALLOW_REWRITE)
        connection.execute("TRUNCATE events")
        connection.rollback()

    assert rows(filled) == before


@pytest.fixture
def rewriter_url(filled: str) -> Iterator[str]:
    """A role that holds every privilege on ``events`` but does not own it."""
    role = f"eventstore_rewriter_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    with psycopg.connect(libpq_url(filled), autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        admin.execute(f"GRANT ALL ON events, snapshots TO {role}")
    try:
        yield libpq_url(normalize_url(filled).set(username=role, password=password))
    finally:
        with psycopg.connect(libpq_url(filled), autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")


@pytest.mark.parametrize("statement", REWRITES)
def test_a_role_with_every_privilege_but_not_the_owner_stays_refused(
    filled: str, rewriter_url: str, statement: str
) -> None:
    before = rows(filled)

    with psycopg.connect(rewriter_url) as connection:
        user = connection.execute("SELECT current_user").fetchone()
        assert user is not None
        assert user[0].startswith("eventstore_rewriter_")
        connection.execute(ALLOW_REWRITE)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            connection.execute(statement)

    assert rows(filled) == before


def test_erase_stream_removes_one_stream_and_its_snapshot(
    filled: str, event_store: PostgresEventStore
) -> None:
    erased = erase_stream(filled, "order-1")

    assert (erased.stream_id, erased.events, erased.snapshots) == ("order-1", 2, 1)
    assert event_store.load_events("order-1") == []
    assert event_store.load_snapshot("order-1") is None
    assert [e.version for e in event_store.load_events("order-2")] == [1, 2]
    assert event_store.load_snapshot("order-2") is not None
    wait_for_feed_horizon(event_store)
    assert [e.stream_id for e in event_store.read_all()] == ["order-2", "order-2"]
    # The stream id is free again; the log stays append-only afterwards.
    assert event_store.append_events("order-1", [NewEvent("Placed", {})], expected_version=0)
    with (
        psycopg.connect(libpq_url(filled), autocommit=True) as connection,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        connection.execute("DELETE FROM events")


def test_erasing_a_missing_stream_removes_nothing(filled: str) -> None:
    before = rows(filled)

    erased = erase_stream(filled, "no-such-stream")

    assert (erased.events, erased.snapshots) == (0, 0)
    assert rows(filled) == before


def test_erase_stream_checks_its_stream_id(filled: str) -> None:
    with pytest.raises(ValidationError):
        erase_stream(filled, "")
    with pytest.raises(ValidationError):
        erase_stream(filled, 42)  # type: ignore[arg-type]


@pytest.mark.parametrize("who", ["app role", "rewriter"])
def test_erase_stream_is_refused_to_anyone_but_the_owner(
    filled: str, app_role_database_url: str, rewriter_url: str, who: str
) -> None:
    url = app_role_database_url if who == "app role" else rewriter_url
    before = rows(filled)

    with pytest.raises(PermissionDeniedError) as refused:
        erase_stream(url, "order-1")

    message = str(refused.value)
    assert "cannot erase stream 'order-1', nothing was deleted" in message
    assert "the role that owns the events table" in message
    cause = refused.value.__cause__
    assert isinstance(getattr(cause, "orig", None), psycopg.errors.InsufficientPrivilege)
    assert rows(filled) == before


def test_a_role_without_grants_is_told_to_run_eventstore_grant(
    filled: str, rewriter_url: str
) -> None:
    with psycopg.connect(libpq_url(filled), autocommit=True) as admin:
        role = normalize_url(rewriter_url).username
        admin.execute(f"REVOKE ALL ON events, snapshots FROM {role}")

    with (
        PostgresEventStore.from_url(rewriter_url) as store,
        pytest.raises(PermissionDeniedError) as refused,
    ):
        store.load_events("order-1")

    assert "permission denied for table events" in str(refused.value)
    assert "eventstore grant ROLE" in str(refused.value)


def run_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EVENTSTORE_CLI), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_erase_command_asks_first_and_erases_on_yes(filled: str) -> None:
    declined = run_cli("erase", "order-1", "--url", filled, stdin="n\n")
    assert declined.returncode == 1
    assert {row[0] for row in rows(filled)} == {"order-1", "order-2"}

    confirmed = run_cli("erase", "order-1", "--url", filled, stdin="y\n")
    assert confirmed.returncode == 0, confirmed.stderr
    assert "erased stream 'order-1' (2 events, 1 snapshots)" in confirmed.stdout
    assert {row[0] for row in rows(filled)} == {"order-2"}

    forced = run_cli("erase", "order-2", "--yes", "--url", filled)
    assert forced.returncode == 0, forced.stderr
    assert rows(filled) == []


def test_the_erase_command_refuses_the_app_role_without_a_traceback(
    filled: str, app_role_database_url: str
) -> None:
    result = run_cli("erase", "order-1", "--yes", "--url", app_role_database_url)

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "cannot erase stream 'order-1', nothing was deleted" in result.stderr
    assert APP_ROLE not in result.stdout
    assert {row[0] for row in rows(filled)} == {"order-1", "order-2"}


def test_downgrading_past_the_revision_makes_events_rewritable_again(
    scratch_database_url: str,
) -> None:
    migrations.upgrade(scratch_database_url)
    with PostgresEventStore.from_url(scratch_database_url) as store:
        store.append_events("order-1", [NewEvent("Placed", {})], expected_version=NO_STREAM)
    with (
        psycopg.connect(libpq_url(scratch_database_url), autocommit=True) as connection,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        connection.execute("DELETE FROM events")

    migrations.downgrade(scratch_database_url, "eventstore_0002")
    with psycopg.connect(libpq_url(scratch_database_url), autocommit=True) as connection:
        connection.execute("DELETE FROM events")
        functions = connection.execute(
            "SELECT count(*) FROM pg_proc WHERE proname = 'eventstore_refuse_rewrite'"
        ).fetchone()
    assert functions == (0,)
    assert rows(scratch_database_url) == []

    migrations.upgrade(scratch_database_url)
    assert migrations.current(scratch_database_url) == "eventstore_0004"
