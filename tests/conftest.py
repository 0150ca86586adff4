"""Shared fixtures for the project's own tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

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
