"""Helpers shared by the store contract, race and bad-input tests."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import pytest
from sqlalchemy import select, text

from eventstore import PostgresEventStore
from eventstore.schema import events, snapshots

HORIZON_DEADLINE_SECONDS = 20.0
"""How long a test waits for older transactions on the server to end."""

STORE_KINDS = ["postgres", "memory"]
"""The parameters of a fixture that runs a test once per store."""

CONTRACT_STORE_KINDS = [*STORE_KINDS, "postgres_app_role"]
"""The contract also runs on PostgreSQL as the least-privilege role (`eventstore grant`)."""


def store_for(request: pytest.FixtureRequest, kind: str) -> Any:
    """The plugin's PostgreSQL store (on an emptied database) or its in-memory store."""
    if kind == "postgres":
        return request.getfixturevalue("event_store")
    if kind == "memory":
        return request.getfixturevalue("in_memory_event_store")
    if kind == "postgres_app_role":
        return request.getfixturevalue("app_role_event_store")
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


def wait_for_feed_horizon(store: Any) -> None:
    """Return once every transaction that began before this call has ended.

    After it, everything committed before the call is visible to the feed. A no-op
    for the in-memory store, whose appends are visible at once.
    """
    if not isinstance(store, PostgresEventStore):
        return
    autocommit = store.engine.execution_options(isolation_level="AUTOCOMMIT")
    with autocommit.connect() as conn:
        marker = conn.execute(text("SELECT pg_current_xact_id()::text")).scalar_one()
        deadline = time.monotonic() + HORIZON_DEADLINE_SECONDS
        query = text("SELECT pg_snapshot_xmin(pg_current_snapshot()) > CAST(:m AS xid8)")
        while not conn.execute(query, {"m": marker}).scalar_one():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"a transaction older than {marker} kept running for "
                    f"{HORIZON_DEADLINE_SECONDS}s on the test server"
                )
            time.sleep(0.01)
