"""Which server the suite runs on, and the scratch databases it makes there.

The server is ``--url`` if given, else the pytest fixtures' chain
(:mod:`eventstore._testdb`): a configured test URL, a Docker container, or the
embedded PostgreSQL. Every database the run creates is named ``es_bench_<hex>``
and dropped ``WITH (FORCE)`` when the run ends, however it ends.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg.errors
from psycopg import sql

from benchmarks._sides import libpq_url
from eventstore._testdb import (
    choose_database_source,
    container_available,
    render_url,
    start_database,
)
from eventstore.embedded import embedded_available
from eventstore.urls import normalize_url

SETTINGS = (
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_sync_method",
    "shared_buffers",
    "max_connections",
)
"""The server settings the report states (never changed by the suite)."""


class NoServerError(RuntimeError):
    """No server was given and the fixtures' chain found none."""


@contextmanager
def server(url: str | None) -> Iterator[tuple[str, str]]:
    """Yield ``(url, description)`` of the server to run on, stopping anything started.

    Raises :class:`NoServerError` when ``url`` is None and the chain finds nothing.
    """
    if url is not None:
        yield render_url(url), "--url"
        return
    source = choose_database_source(os.environ, container_available, embedded_available)
    if not source.provides_database:
        raise NoServerError(source.description)
    with start_database(source) as started:
        yield started, source.description


class ScratchDatabases:
    """Creates ``es_bench_<hex>`` databases on a server and drops them all at the end."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.names: list[str] = []

    def create(self) -> str:
        """Create an empty database and return its ``postgresql+psycopg://`` URL."""
        name = f"es_bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(libpq_url(self.server_url), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        self.names.append(name)
        return render_url(normalize_url(self.server_url).set(database=name))

    def drop_all(self) -> list[str]:
        """Drop every database created so far (``WITH (FORCE)``); return their names.

        Each drop is attempted even if an earlier one failed; the first failure is
        raised after all attempts.
        """
        failure: BaseException | None = None
        dropped = []
        with psycopg.connect(libpq_url(self.server_url), autocommit=True) as admin:
            while self.names:
                name = self.names.pop()
                try:
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    dropped.append(name)
                except psycopg.Error as exc:
                    failure = failure or exc
        if failure is not None:
            raise failure
        return dropped


def server_facts(url: str) -> dict[str, Any]:
    """The server's version and the settings in :data:`SETTINGS`."""
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        version = connection.execute("SELECT version()").fetchone()
        settings = {
            name: connection.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
            for name in SETTINGS
        }
    return {"version": version[0] if version else None, "settings": settings}


FILL_CHUNK = 1_000_000
"""Most rows one fill statement inserts (one transaction each)."""

_FILL_EVENTS = """
INSERT INTO events (stream_id, version, event_type, event_data, metadata)
SELECT %(prefix)s::text || s::text, v, %(type)s, %(data)s, %(metadata)s::jsonb
FROM generate_series(%(s0)s::bigint, %(s1)s::bigint) AS s,
     generate_series(%(v0)s::bigint, %(v1)s::bigint) AS v
ORDER BY {order}
"""

_FILL_PEER = """
INSERT INTO {table} (originator_id, originator_version, topic, state)
SELECT %(prefix)s::text || s::text, v, %(type)s, %(data)s
FROM generate_series(%(s0)s::bigint, %(s1)s::bigint) AS s,
     generate_series(%(v0)s::bigint, %(v1)s::bigint) AS v
ORDER BY {order}
"""

LAYOUTS = {"interleaved": "v, s", "clustered": "s, v"}
"""Row order of a fill. ``interleaved``: version 1 of every stream, then version 2...,
as when many streams are written at once, so a stream's events lie on as many
heap pages as it has events. ``clustered``: each stream's events together."""


def fill_chunks(
    first_stream: int, streams: int, per_stream: int, chunk: int = FILL_CHUNK
) -> Iterator[tuple[int, int, int, int]]:
    """Split ``streams`` streams of ``per_stream`` events into ``(s0, s1, v0, v1)``
    ranges of at most ``chunk`` rows (whole streams when a stream fits)."""
    if per_stream >= chunk:
        for stream in range(first_stream, first_stream + streams):
            for v0 in range(1, per_stream + 1, chunk):
                yield stream, stream, v0, min(v0 + chunk - 1, per_stream)
        return
    step = max(1, chunk // per_stream)
    last = first_stream + streams - 1
    for s0 in range(first_stream, last + 1, step):
        yield s0, min(s0 + step - 1, last), 1, per_stream


def fill(
    url: str,
    *,
    table: str,
    prefix: str,
    streams: int,
    per_stream: int,
    first_stream: int = 1,
    event_type: str,
    data: bytes,
    metadata: str | None = None,
    layout: str = "interleaved",
    progress: Callable[[int], None] | None = None,
) -> None:
    """Insert streams ``<prefix><n>`` (n from ``first_stream``), each of versions
    1..``per_stream``, with ``INSERT ... SELECT generate_series`` on the server.

    ``table`` is ``events`` (this library's schema; ``metadata`` is its JSON
    text) or a peer table (payload and metadata both inside ``data``). ``layout``
    is a key of :data:`LAYOUTS` (the physical order of the rows within a chunk).
    """
    order = LAYOUTS[layout]
    if table == "events":
        statement = _FILL_EVENTS.format(order=order)
    else:
        statement = _FILL_PEER.format(table=sql.Identifier(table).as_string(), order=order)
    done = 0
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        for s0, s1, v0, v1 in fill_chunks(first_stream, streams, per_stream):
            connection.execute(
                statement,
                {
                    "prefix": prefix,
                    "type": event_type,
                    "data": data,
                    "metadata": metadata,
                    "s0": s0,
                    "s1": s1,
                    "v0": v0,
                    "v1": v1,
                },
            )
            done += (s1 - s0 + 1) * (v1 - v0 + 1)
            if progress is not None:
                progress(done)


def vacuum_analyze(url: str, *tables: str) -> bool:
    """``VACUUM (ANALYZE)`` the tables, as autovacuum would after a bulk load, so
    no side pays for hint bits or stale statistics the others do not; then
    ``CHECKPOINT``, so the load's WAL is not flushed while latencies are timed.

    Returns False when the role may not ``CHECKPOINT`` (superuser or, from
    PostgreSQL 15, ``pg_checkpoint``); the vacuum is done either way.
    """
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        for table in tables:
            connection.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(table)))
        try:
            connection.execute("CHECKPOINT")
        except psycopg.errors.InsufficientPrivilege:
            return False
    return True


def count_rows(url: str, table: str) -> int:
    """The number of rows in ``table``."""
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        row = connection.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
        ).fetchone()
    return int(row[0]) if row else 0


FEED_HORIZON_SECONDS = 60.0
"""How long :func:`wait_for_feed_horizon` waits for older transactions to end."""


def wait_for_feed_horizon(url: str, timeout: float = FEED_HORIZON_SECONDS) -> None:
    """Return once every transaction that began before this call has ended, so
    everything committed before it is visible to the global feed (which reads
    below the oldest running transaction on the whole server).

    Raises RuntimeError when one is still running after ``timeout`` seconds.
    """
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        row = connection.execute("SELECT pg_current_xact_id()::text").fetchone()
        marker = row[0] if row else "0"
        deadline = time.monotonic() + timeout
        while True:
            passed = connection.execute(
                "SELECT pg_snapshot_xmin(pg_current_snapshot()) > %s::xid8", (marker,)
            ).fetchone()
            if passed and passed[0]:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"a transaction older than {marker} kept running for {timeout:.0f} s "
                    "on the server: the global feed cannot be read to its end"
                )
            time.sleep(0.01)
