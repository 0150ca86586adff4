"""Fixtures of the order service's tests.

The database is the one in ``DATABASE_URL``; pytest-django makes the test
database next to it (``test_<name>``) with ``manage.py migrate``, which creates
the store's tables too. Two styles of test:

* ``django_db`` (``django_event_store``): the test runs inside a transaction that
  is rolled back at the end, the store's appends with it. Fast; nothing commits.
* ``django_db(transaction=True)`` (``django_committed_event_store``): requests
  commit as in production, and the tests read the database on a connection of
  their own to see what was committed. Projections and subscriptions need this:
  they read the committed feed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from django.db import connection

pytest_plugins = ["eventstore.integrations.django.pytest_plugin"]


@pytest.fixture
def committed() -> Callable[..., list[Any]]:
    """``committed(sql, *params)``: rows of what is committed in the test database."""

    def read(sql: str, *params: Any) -> list[Any]:
        settings = connection.settings_dict
        with psycopg.connect(
            dbname=settings["NAME"],
            user=settings["USER"],
            password=settings["PASSWORD"],
            host=settings["HOST"],
            port=settings["PORT"],
            autocommit=True,
        ) as outside:
            return outside.execute(sql, params).fetchall()

    return read
