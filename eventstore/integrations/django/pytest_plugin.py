"""pytest-django fixtures for a project using the Django integration.

Enable them in the project's ``conftest.py``::

    pytest_plugins = ["eventstore.integrations.django.pytest_plugin"]

``django_event_store`` (function; needs the ``db`` fixture, so ``django_db`` tests)
    :func:`~eventstore.integrations.django.get_event_store`: every append and read
    joins the test's transaction, which pytest-django rolls back at the end, events
    included. Nothing commits, so the committed feed (``subscribe``, projection
    runners) sees nothing of the test's events: use the next fixture there.

``django_committed_event_store`` (function; ``transactional_db``)
    The same store in a test whose writes commit (``transaction=True``), with the
    store's tables (events, snapshots, projection checkpoints and skipped events)
    emptied before the test: Django's flush after such a test empties only the
    models' tables.

Both close the stores :func:`get_event_store` built before pytest-django drops the
test database (a pooled connection would keep it from being dropped).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from eventstore.bound import BoundEventStore
from eventstore.integrations.django._stores import close_event_stores, get_event_store
from eventstore.postgres import PostgresEventStore
from eventstore.pytest_plugin import empty_store_tables


@pytest.fixture(scope="session")
def _eventstore_django_stores(django_db_setup: Any) -> Iterator[None]:
    """Set up after the test databases, so torn down (closing the stores) before they go."""
    yield
    close_event_stores()


@pytest.fixture
def django_event_store(db: Any, _eventstore_django_stores: None) -> BoundEventStore:
    """The Django store inside the test's rolled-back transaction."""
    return get_event_store()


@pytest.fixture
def django_committed_event_store(
    transactional_db: Any, _eventstore_django_stores: None
) -> BoundEventStore:
    """The Django store for a test whose writes commit; its tables emptied first."""
    store = get_event_store()
    assert isinstance(store.store, PostgresEventStore)
    empty_store_tables(store.store.engine)
    return store
