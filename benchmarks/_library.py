"""This library's side: the public API, as an application would call it."""

from __future__ import annotations

import inspect
import itertools
from typing import Any

from benchmarks._sides import LIBRARY, LIBRARY_NO_NOTIFY, ConflictError
from benchmarks._workload import EVENT_TYPE, METADATA, PAYLOAD, STATE, fold, initial_state
from eventstore import ConcurrencyError, NewEvent, PostgresEventStore, Repository


def _evolve(state: dict[str, Any], event: Any) -> dict[str, Any]:
    return fold(state, event.data)


class LibrarySide:
    """``PostgresEventStore.from_url(url, pool_size=pool_size, max_overflow=0)`` and a
    :class:`~eventstore.Repository` over it."""

    def __init__(self, url: str, pool_size: int = 1, *, sharing: LibrarySide | None = None) -> None:
        if sharing is None:
            self.name = LIBRARY
            self.store = PostgresEventStore.from_url(url, pool_size=pool_size, max_overflow=0)
        else:
            self.name = LIBRARY_NO_NOTIFY
            self.store = PostgresEventStore(sharing.store.engine, notify=False)
        self._owns_store = sharing is None
        self.repository: Repository[dict[str, Any]] = Repository(self.store, initial_state, _evolve)

    def without_notify(self) -> LibrarySide | None:
        """A side on the same engine (and pool) whose store appends with
        ``notify=False``; None when this version of the library has no such option."""
        if "notify" not in inspect.signature(PostgresEventStore).parameters:
            return None
        return LibrarySide("", sharing=self)

    def append(self, stream_id: str, expected: int, count: int = 1) -> int:
        events = [NewEvent(EVENT_TYPE, PAYLOAD, METADATA) for _ in range(count)]
        try:
            return self.store.append_events(stream_id, events, expected_version=expected)
        except ConcurrencyError as exc:
            raise ConflictError(exc.actual) from None

    def stream_version(self, stream_id: str) -> int:
        return self.store.stream_version(stream_id)

    def load(self, stream_id: str) -> int:
        return len(self.store.load_events(stream_id))

    def versions(self, stream_id: str) -> list[int]:
        return [event.version for event in self.store.load_events(stream_id)]

    def save_snapshot(self, stream_id: str, version: int) -> None:
        if not self.store.save_snapshot(stream_id, version, STATE):
            raise AssertionError(f"snapshot of {stream_id} at {version} was not written")

    def load_aggregate(self, stream_id: str) -> tuple[dict[str, Any], int]:
        return self.repository.load(stream_id)

    def iterate(self, stream_id: str, page: int) -> int:
        """Stream the whole stream with ``iter_events``; return the event count."""
        count = 0
        for _ in self.store.iter_events(stream_id, batch_size=page):
            count += 1
        return count

    def read_feed(self, events: int, page: int) -> int:
        """Read the first ``events`` events of the global feed with
        ``iter_all(batch_size=page)``; return the event count."""
        count = 0
        for _ in itertools.islice(self.store.iter_all(batch_size=page), events):
            count += 1
        return count

    def close(self) -> None:
        if self._owns_store:
            self.store.close()
