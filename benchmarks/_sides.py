"""The sides a measurement runs through (this library, the floor, the peer)
and the one interface they implement, so that each measurement is written once
and run against all of them.

A side's methods do the whole job a user's call would do: encode on the way in,
decode on the way out. The floor and the library send the same SQL text; the
peer sends eventsourcing's own.
"""

from __future__ import annotations

from typing import Any, Protocol

from eventstore.urls import normalize_url

LIBRARY = "library"
FLOOR = "floor"
FLOOR_BARE = "floor-bare"
PEER = "peer"
LIBRARY_NO_NOTIFY = "library/no-notify"
FLOOR_NO_NOTIFY = "floor/no-notify"
FLOOR_JSONB = "floor/jsonb"
"""The stream load's second floor: the metadata column fetched as JSONB, which
psycopg parses on every row (the plain fetch a raw psycopg user would write);
the library sends ``metadata::text`` and parses it only when ``.metadata`` is
read."""
FLOOR_PRE_FEED = "floor/pre-feed"
"""The single-event append as it was before the global feed (no stream-order
check, no NOTIFY), raw, on a database at the first revision (no feed columns,
no feed index): what the feed adds to an append is the floor's time over this."""


class ConflictError(Exception):
    """An append found the stream elsewhere; nothing was written.

    ``actual`` is the stream's version when the side's own call reported it
    (no extra round trip), else None: the caller reads it if it needs it.
    """

    def __init__(self, actual: int | None) -> None:
        super().__init__(f"conflict (stream at {actual})")
        self.actual = actual


class Side(Protocol):
    """What every side offers. Streams are plain text ids; versions count from 1."""

    name: str

    def append(self, stream_id: str, expected: int, count: int = 1) -> int:
        """Append ``count`` events if the stream is at ``expected``; return the new
        version. Raises :class:`ConflictError` otherwise."""
        ...

    def stream_version(self, stream_id: str) -> int:
        """The stream's last version (0 when empty)."""
        ...

    def load(self, stream_id: str) -> int:
        """Load and decode the whole stream; return the number of events."""
        ...

    def versions(self, stream_id: str) -> list[int]:
        """The versions the stream holds, in order."""
        ...

    def save_snapshot(self, stream_id: str, version: int) -> None:
        """Store the aggregate state as of ``version``."""
        ...

    def load_aggregate(self, stream_id: str) -> tuple[dict[str, Any], int]:
        """Rebuild the state: latest snapshot plus the events after it."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def libpq_url(url: str) -> str:
    """``url`` as psycopg.connect() takes it (no ``+psycopg`` driver suffix)."""
    parsed = normalize_url(url).set(drivername="postgresql")
    if parsed.password == "":
        parsed = parsed._replace(password=None)
    return parsed.render_as_string(hide_password=False)
