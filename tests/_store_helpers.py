"""Helpers shared by the store contract, race and bad-input tests."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from sqlalchemy import select

from eventstore import PostgresEventStore
from eventstore.schema import events, snapshots

STORE_KINDS = ["postgres", "memory"]
"""The parameters of a fixture that runs a test once per store."""


def store_for(request: pytest.FixtureRequest, kind: str) -> Any:
    """The plugin's PostgreSQL store (on an emptied database) or its in-memory store."""
    if kind == "postgres":
        return request.getfixturevalue("event_store")
    if kind == "memory":
        return request.getfixturevalue("in_memory_event_store")
    raise AssertionError(f"unknown store kind {kind!r}")


def store_contents(store: Any, stream_ids: Iterable[str]) -> Any:
    """Everything the store holds that a call could have changed.

    PostgreSQL: every row of ``events`` and ``snapshots``, every column, read with
    SQL through the store's engine (so a write to any stream shows). In memory:
    the version, the events and the snapshot of each stream in ``stream_ids``.
    """
    if isinstance(store, PostgresEventStore):
        with store.engine.connect() as conn:
            event_rows = conn.execute(
                select(events).order_by(events.c.stream_id, events.c.version)
            ).all()
            snapshot_rows = conn.execute(select(snapshots).order_by(snapshots.c.stream_id)).all()
        return [tuple(row) for row in event_rows], [tuple(row) for row in snapshot_rows]
    return {
        stream_id: (
            store.stream_version(stream_id),
            store.load_events(stream_id),
            store.load_snapshot(stream_id),
        )
        for stream_id in stream_ids
    }
