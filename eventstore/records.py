"""The values the store takes and returns: plain frozen dataclasses, no I/O."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from eventstore.errors import ValidationError


class StreamState(enum.Enum):
    """Expected-version conditions other than an exact version number."""

    ANY = "any"
    """No check: append after whatever the stream holds."""
    NO_STREAM = "no_stream"
    """The stream must have no events yet (the same as ``expected_version=0``)."""
    STREAM_EXISTS = "stream_exists"
    """The stream must hold at least one event."""

    def __repr__(self) -> str:
        return self.name

    __str__ = __repr__


ANY: Final = StreamState.ANY
NO_STREAM: Final = StreamState.NO_STREAM
STREAM_EXISTS: Final = StreamState.STREAM_EXISTS

ExpectedVersion = int | StreamState
"""What ``append_events(..., expected_version=...)`` accepts."""


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """A checkpoint in the global feed: where a reader has got to.

    Ordered, hashable and picklable; ``str(position)`` gives a text form that
    :meth:`parse` reads back, for storing checkpoints anywhere. Treat it as
    opaque: positions have gaps and are not event counts.
    """

    transaction_id: int
    sequence: int

    def __str__(self) -> str:
        return f"{self.transaction_id}-{self.sequence}"

    @classmethod
    def parse(cls, text: str) -> Position:
        """The position whose ``str()`` is ``text``; ValidationError otherwise."""
        parts = text.split("-") if isinstance(text, str) else []
        if len(parts) != 2 or not all(part.isdigit() and part.isascii() for part in parts):
            raise ValidationError(f"not a feed position: {text!r} (expected '<digits>-<digits>')")
        return cls(int(parts[0]), int(parts[1]))


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append: its type name, its payload (CBOR-encodable) and
    optional JSON metadata (correlation and causation ids and the like)."""

    event_type: str
    data: Any
    metadata: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as stored: ``version`` counts from 1 within its stream.

    ``data`` is the decoded payload: an instance of the registered class when
    ``event_type`` is registered, plain decoded CBOR otherwise. ``position`` is
    the event's place in the global feed.
    """

    stream_id: str
    version: int
    event_type: str
    data: Any
    metadata: dict[str, Any] | None
    created_at: datetime
    position: Position | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The saved state of a stream as of ``version`` (one snapshot per stream)."""

    stream_id: str
    version: int
    state: Any
    created_at: datetime
