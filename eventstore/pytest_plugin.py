"""pytest fixtures for pg-eventstore (placeholder: the database chain lands next)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def eventstore_database_url() -> Iterator[str]:
    url = os.environ.get("EVENTSTORE_TEST_DATABASE_URL")
    if not url:
        pytest.skip("set EVENTSTORE_TEST_DATABASE_URL")
    yield url
