"""What every measurement gets: the plan, the scratch databases (created and
migrated on first use), the sides to measure, and a progress log on stderr."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from benchmarks._floor import FloorSide
from benchmarks._library import LibrarySide
from benchmarks._peer import PeerSide
from benchmarks._plan import Plan
from benchmarks._server import ScratchDatabases
from benchmarks._sides import FLOOR, LIBRARY, PEER, Side
from eventstore import migrations


class Bench:
    """The run's shared state. ``peer`` is False when eventsourcing is not installed."""

    def __init__(self, scratch: ScratchDatabases, plan: Plan, *, peer: bool) -> None:
        self.scratch = scratch
        self.plan = plan
        self.peer = peer
        self.run_id = uuid.uuid4().hex[:6]
        self._databases: dict[str, str] = {}
        self._started = time.perf_counter()

    def log(self, message: str) -> None:
        """A progress line on stderr (stdout carries the report)."""
        elapsed = time.perf_counter() - self._started
        print(f"[{elapsed:7.1f}s] {message}", file=sys.stderr, flush=True)

    def database(self, purpose: str, revision: str = "head") -> str:
        """The URL of the scratch database for ``purpose``: created on first use,
        migrated with ``eventstore.migrations.upgrade`` to ``revision``, with (at
        head) the peer's tables made by its recorders' ``create_table()``."""
        if purpose not in self._databases:
            url = self.scratch.create()
            migrations.upgrade(url, revision)
            if self.peer and revision == "head":
                peer = PeerSide(url)
                try:
                    peer.create_tables()
                finally:
                    peer.close()
            self._databases[purpose] = url
            self.log(f"scratch database for {purpose}: {url.rsplit('/', 1)[-1].split('?')[0]}")
        return self._databases[purpose]

    @contextmanager
    def sides(self, url: str, *, pool_size: int = 1) -> Iterator[dict[str, Side]]:
        """The library, the floor and (when installed) the peer on ``url``, each on
        ``pool_size`` connections (the floor on one), closed on exit."""
        opened: dict[str, Side] = {}
        try:
            opened[LIBRARY] = LibrarySide(url, pool_size=pool_size)
            opened[FLOOR] = FloorSide(url)
            if self.peer:
                opened[PEER] = PeerSide(url, pool_size=pool_size)
            yield opened
        finally:
            for side in opened.values():
                side.close()
