"""The peer: eventsourcing 9.x's ``PostgresAggregateRecorder`` with text
originator ids, called as its own application layer calls it.

It has no metadata column, so the same metadata travels inside its payload
(CBOR of ``{"data": payload, "metadata": metadata}``). Its version check is its
primary key: a second writer at the same version gets ``IntegrityError``.
Snapshots live in a second recorder's table (``insert_events`` adds a row per
snapshot) and are read as eventsourcing's application reads them: the latest
one (``select_events(desc=True, limit=1)``), then the events after it.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import cbor2
import psycopg.conninfo

from benchmarks._sides import PEER, ConflictError, libpq_url
from benchmarks._workload import (
    EVENT_TYPE,
    METADATA,
    PAYLOAD,
    SNAPSHOT_TOPIC,
    STATE,
    fold,
)

EVENTS_TABLE = "peer_events"
SNAPSHOTS_TABLE = "peer_snapshots"


def peer_available() -> bool:
    """True when eventsourcing (with psycopg's pool) is installed."""
    return all(
        importlib.util.find_spec(name) is not None for name in ("eventsourcing", "psycopg_pool")
    )


def connection_arguments(url: str) -> dict[str, Any]:
    """The keyword arguments ``PostgresDatastore`` takes, from a database URL."""
    info = psycopg.conninfo.conninfo_to_dict(libpq_url(url))
    return {
        "dbname": str(info.get("dbname", "")),
        "host": str(info.get("host", "")),
        "port": str(info.get("port", "5432")),
        "user": str(info.get("user", "")),
        "password": str(info.get("password", "")),
    }


class PeerSide:
    """A ``PostgresDatastore`` (``originator_id_type="text"``, ``pool_size``
    connections, no overflow) with one recorder for events and one for snapshots."""

    name = PEER

    def __init__(self, url: str, pool_size: int = 1) -> None:
        from eventsourcing.persistence import IntegrityError, StoredEvent
        from eventsourcing.postgres import PostgresAggregateRecorder, PostgresDatastore

        self._stored_event = StoredEvent
        self._integrity_error = IntegrityError
        self.datastore = PostgresDatastore(
            **connection_arguments(url),
            pool_size=pool_size,
            max_overflow=0,
            originator_id_type="text",
        )
        self.events = PostgresAggregateRecorder(self.datastore, events_table_name=EVENTS_TABLE)
        self.snapshots = PostgresAggregateRecorder(
            self.datastore, events_table_name=SNAPSHOTS_TABLE
        )

    def create_tables(self) -> None:
        """The recorders' own ``create_table()`` (table, composite type, primary key)."""
        self.events.create_table()
        self.snapshots.create_table()

    def append(self, stream_id: str, expected: int, count: int = 1) -> int:
        dumps = cbor2.dumps
        stored = [
            self._stored_event(
                stream_id,
                expected + i,
                EVENT_TYPE,
                dumps({"data": PAYLOAD, "metadata": METADATA}),
            )
            for i in range(1, count + 1)
        ]
        try:
            self.events.insert_events(stored)
        except self._integrity_error:
            raise ConflictError(None) from None
        return expected + count

    def stream_version(self, stream_id: str) -> int:
        last = self.events.select_events(stream_id, desc=True, limit=1)
        return last[0].originator_version if last else 0

    def load(self, stream_id: str) -> int:
        loads = cbor2.loads
        decoded = [loads(event.state) for event in self.events.select_events(stream_id)]
        return len(decoded)

    def iterate(self, stream_id: str, page: int) -> int:
        """Page through the stream with ``select_events(gt=..., limit=page)``."""
        loads = cbor2.loads
        last = 0
        count = 0
        while True:
            events = self.events.select_events(stream_id, gt=last, limit=page)
            for event in events:
                loads(event.state)
            count += len(events)
            if len(events) < page:
                return count
            last = events[-1].originator_version

    def versions(self, stream_id: str) -> list[int]:
        return [event.originator_version for event in self.events.select_events(stream_id)]

    def save_snapshot(self, stream_id: str, version: int) -> None:
        snapshot = self._stored_event(stream_id, version, SNAPSHOT_TOPIC, cbor2.dumps(STATE))
        self.snapshots.insert_events([snapshot])

    def load_aggregate(self, stream_id: str) -> tuple[dict[str, Any], int]:
        loads = cbor2.loads
        latest = self.snapshots.select_events(stream_id, desc=True, limit=1)
        if not latest:
            raise AssertionError(f"no snapshot for {stream_id}")
        version = latest[0].originator_version
        state: dict[str, Any] = loads(latest[0].state)
        for event in self.events.select_events(stream_id, gt=version):
            state = fold(state, loads(event.state)["data"])
            version = event.originator_version
        return state, version

    def close(self) -> None:
        self.datastore.close()
