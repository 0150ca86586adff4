"""Statements with one small row of result run on a cursor kept with the pooled
connection; everything else gets a cursor of its own, so a large result is not
held between calls, and a replaced connection gets a new kept cursor."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from eventstore import NewEvent, PostgresEventStore
from eventstore.postgres import _CURSOR_KEY


@pytest.fixture
def one_connection_store(
    event_store: PostgresEventStore, eventstore_database_url: str
) -> Iterator[PostgresEventStore]:
    """A store whose pool holds a single connection (on the emptied test database)."""
    store = PostgresEventStore.from_url(eventstore_database_url, pool_size=1, max_overflow=0)
    try:
        yield store
    finally:
        store.close()


def kept_cursor(store: PostgresEventStore) -> tuple[Any, Any]:
    """The pooled connection's kept cursor (None if it has none) and its driver connection."""
    pooled = store.engine.pool.connect()
    try:
        return pooled.info.get(_CURSOR_KEY), pooled.driver_connection
    finally:
        pooled.close()


def test_appends_share_one_kept_cursor_and_loads_leave_it_alone(
    one_connection_store: PostgresEventStore,
) -> None:
    store = one_connection_store
    store.append_events("kept", [NewEvent("E", {"n": n}) for n in range(50)], expected_version=0)
    first, _ = kept_cursor(store)
    assert first is not None
    store.append_events("kept", [NewEvent("E", {"n": 50})], expected_version=50)
    assert store.stream_version("kept") == 51
    again, _ = kept_cursor(store)
    assert again is first

    assert len(store.load_events("kept")) == 51
    after_load, _ = kept_cursor(store)
    assert after_load is first
    assert first.pgresult.ntuples == 1  # the load's 51 rows went to a cursor of its own


def test_a_replaced_connection_gets_a_new_kept_cursor(
    one_connection_store: PostgresEventStore,
) -> None:
    store = one_connection_store
    store.append_events("kept", [NewEvent("E", {})], expected_version=0)
    old, _ = kept_cursor(store)
    pooled = store.engine.pool.connect()
    pooled.invalidate()  # as after a lost connection: the pool opens a new one
    pooled.close()

    store.append_events("kept", [NewEvent("E", {})], expected_version=1)
    new, driver = kept_cursor(store)
    assert new is not None
    assert new is not old
    assert new.connection is driver
    assert store.stream_version("kept") == 2
