"""Shared fixtures for the project's own tests."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from eventstore import EventRegistry, PostgresEventStore
from eventstore.embedded import embedded_available, embedded_server
from eventstore.migrations import upgrade
from eventstore.roles import grant_app_role
from eventstore.urls import normalize_url


def _libpq_url(url: str) -> str:
    """A URL psycopg.connect() accepts (no '+psycopg' driver suffix)."""
    return normalize_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def scratch_database_url(eventstore_database_url: str) -> Iterator[str]:
    """A brand-new, empty database on the test server, dropped afterwards.

    For tests that migrate up and down or need a database nobody else touches.
    """
    name = f"es_scratch_{uuid.uuid4().hex[:12]}"
    admin_url = _libpq_url(eventstore_database_url)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield (
            normalize_url(eventstore_database_url)
            .set(database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _app_role() -> str:
    """The least-privilege role's name, one per configured test database: roles are
    cluster-wide, so test sessions on other databases of the same server (each
    creating and dropping its role) keep theirs."""
    configured = os.environ.get("EVENTSTORE_TEST_DATABASE_URL")
    database = normalize_url(configured).database if configured else None
    if not database:
        return "eventstore_app_test"
    return "eventstore_app_test_" + re.sub(r"\W", "_", database)[:40]


APP_ROLE = _app_role()


@pytest.fixture(scope="session")
def app_role_database_url(eventstore_database_url: str) -> Iterator[str]:
    """The test database's URL for a role holding only what ``eventstore grant`` gives.

    The role is created for the session (with a random password, so it logs in on
    servers that require one) and dropped afterwards.
    """
    password = uuid.uuid4().hex
    admin_url = _libpq_url(eventstore_database_url)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        if _role_exists(admin):  # left by an interrupted session
            admin.execute(f"DROP OWNED BY {APP_ROLE}")
            admin.execute(f"DROP ROLE {APP_ROLE}")
        admin.execute(f"CREATE ROLE {APP_ROLE} LOGIN PASSWORD '{password}'")
    grant_app_role(eventstore_database_url, APP_ROLE)
    try:
        yield (
            normalize_url(eventstore_database_url)
            .set(username=APP_ROLE, password=password)
            .render_as_string(hide_password=False)
        )
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (APP_ROLE,),
            )
            admin.execute(f"DROP OWNED BY {APP_ROLE}")
            admin.execute(f"DROP ROLE {APP_ROLE}")


def _role_exists(admin: psycopg.Connection) -> bool:
    row = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,)).fetchone()
    return row is not None


@pytest.fixture
def app_role_event_store(
    event_store: PostgresEventStore,
    app_role_database_url: str,
    eventstore_registry: EventRegistry | None,
) -> Iterator[PostgresEventStore]:
    """A store on the emptied test database, connected as the least-privilege role."""
    store = PostgresEventStore.from_url(app_role_database_url, registry=eventstore_registry)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture(scope="module")
def own_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated database on an embedded PostgreSQL cluster of the test module's own.

    For tests that change cluster-wide things (pg_hba.conf, role connection limits)
    or read them (the oldest running transaction, the feed's horizon, connection
    counts), which another session on a shared server would disturb.
    """
    if not embedded_available():
        pytest.skip("needs the embedded PostgreSQL (pg-eventstore[embedded])")
    with embedded_server(tmp_path_factory.mktemp(request.module.__name__)) as url:
        upgrade(url)
        yield url
