"""The values the store takes and returns: plain frozen dataclasses, no I/O."""

from __future__ import annotations

import enum
import json
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

_MAX_BIGINT = 2**63 - 1
"""The largest value of a PostgreSQL BIGINT."""

ExpectedVersion = int | StreamState
"""What ``append_events(..., expected_version=...)`` accepts."""


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """A checkpoint in the global feed: where a reader has got to.

    Ordered, hashable and picklable; ``str(position)`` gives a text form that
    :meth:`parse` reads back, for storing checkpoints anywhere. Treat it as
    opaque: positions have gaps and are not event counts.

    Both fields are ints in ``0..2**63-1`` (a PostgreSQL BIGINT; an int subclass
    is kept as a plain int); anything else raises :class:`ValidationError` here,
    so every Position is one both stores can read after.
    """

    transaction_id: int
    sequence: int

    def __post_init__(self) -> None:
        for name in ("transaction_id", "sequence"):
            value = getattr(self, name)
            if type(value) is not int:
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValidationError(
                        f"a Position's {name} must be an int, not {type(value).__name__}"
                    )
                value = int(value)
                object.__setattr__(self, name, value)
            if not 0 <= value <= _MAX_BIGINT:
                bound = "must be >= 0" if value < 0 else "must fit in a BIGINT (at most 2**63-1)"
                raise ValidationError(f"a Position's {name} {bound}, got {value}")

    def __str__(self) -> str:
        return f"{self.transaction_id}-{self.sequence}"

    @classmethod
    def parse(cls, text: str) -> Position:
        """The position whose ``str()`` is ``text``; ValidationError otherwise
        (also for numbers past a BIGINT)."""
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


class _StoredRecordedEvent(RecordedEvent):
    """A :class:`RecordedEvent` read from storage, whose metadata is kept as the
    stored JSON text until ``.metadata`` is first read (then parsed once), and
    whose :class:`Position` is built when ``.position`` is first read.

    Loads and feed reads build these: most readers never look at metadata, and
    parsing it was a large share of a load; every object not built is also one
    less for the garbage collector to track. It behaves as a RecordedEvent in
    every way (equality, hashing, ``repr``, pickling, ``dataclasses.replace`` and
    ``asdict``); only ``type(event)`` tells it apart.
    """

    __slots__ = ("_metadata_json", "_sequence", "_transaction_id")
    _metadata_json: str | None
    _transaction_id: int | None
    _sequence: int | None

    @property
    def metadata(self) -> dict[str, Any] | None:
        value = _get_metadata(self)
        if value is _UNPARSED:
            text = self._metadata_json
            value = None if text is None else json.loads(text)
            _set_metadata(self, value)
        return value  # type: ignore[no-any-return]

    @metadata.setter
    def metadata(self, value: dict[str, Any] | None) -> None:
        # Only object.__setattr__ gets here (the dataclass __init__, unpickling):
        # the frozen class's own __setattr__ refuses assignment first.
        _set_metadata(self, value)

    @property
    def position(self) -> Position | None:
        value = _get_position(self)
        if value is _UNPARSED:
            if self._transaction_id is None:
                _set_position(self, None)
                return None
            value = _new(Position)
            _set_transaction_id(value, self._transaction_id)
            _set_sequence(value, self._sequence)
            _set_position(self, value)
        return value  # type: ignore[no-any-return]

    @position.setter
    def position(self, value: Position | None) -> None:
        _set_position(self, value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RecordedEvent):
            return _field_values(self) == _field_values(other)
        return NotImplemented

    __hash__ = RecordedEvent.__hash__

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in _FIELD_NAMES)
        return f"RecordedEvent({fields})"


_UNPARSED: Any = object()


def _field_values(event: RecordedEvent) -> tuple[Any, ...]:
    return tuple(getattr(event, name) for name in _FIELD_NAMES)


def recorded_event(
    stream_id: str,
    version: int,
    event_type: str,
    data: Any,
    metadata_json: str | None,
    created_at: datetime,
    transaction_id: int | None,
    sequence: int | None,
) -> RecordedEvent:
    """A RecordedEvent for a stored row, at ``Position(transaction_id, sequence)``
    (no position when ``transaction_id`` is None: an event not yet in the feed),
    whose ``metadata`` is ``metadata_json`` parsed on first access.

    Built for the load path at a fraction of the constructors' cost: the frozen
    dataclasses' generated ``__init__`` sets each field through
    ``object.__setattr__``; here the slots' own descriptors set them directly
    (the same effect: every field is given, there is no ``__post_init__``)."""
    event = _new(_StoredRecordedEvent)
    _set_stream_id(event, stream_id)
    _set_version(event, version)
    _set_event_type(event, event_type)
    _set_data(event, data)
    _set_metadata(event, _UNPARSED)
    _set_metadata_json(event, metadata_json)
    _set_created_at(event, created_at)
    _set_position(event, _UNPARSED)
    _set_transaction_id_of(event, transaction_id)
    _set_sequence_of(event, sequence)
    return event


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The saved state of a stream as of ``version`` (one snapshot per stream)."""

    stream_id: str
    version: int
    state: Any
    created_at: datetime


@dataclass(frozen=True, slots=True)
class VersionedState:
    """A snapshot state tagged with the snapshot version it was saved under.

    The codec stores it as CBOR tag 62007 ``[version, state]`` and decodes that
    tag back to one, so a reader can tell a state saved under another snapshot
    version from its own; a state saved at version 1 is stored as it is.
    :class:`~eventstore.Repository` saves its states this way when built with
    ``snapshot_version`` > 1, and ignores a snapshot of any other version.
    ``version`` is an int >= 1; anything else raises :class:`ValidationError`.
    """

    version: int
    state: Any

    def __post_init__(self) -> None:
        if type(self.version) is not int or self.version < 1:
            raise ValidationError(
                f"a VersionedState's version must be an int >= 1, not {self.version!r}"
            )


# The slot descriptors recorded_event() sets fields with; a field added to either
# class without a line here would fail the equality test in tests/test_records.py.
_new = object.__new__
_set_transaction_id = vars(Position)["transaction_id"].__set__
_set_sequence = vars(Position)["sequence"].__set__
_set_stream_id = vars(RecordedEvent)["stream_id"].__set__
_set_version = vars(RecordedEvent)["version"].__set__
_set_event_type = vars(RecordedEvent)["event_type"].__set__
_set_data = vars(RecordedEvent)["data"].__set__
_set_metadata = vars(RecordedEvent)["metadata"].__set__
_get_metadata = vars(RecordedEvent)["metadata"].__get__
_set_metadata_json = vars(_StoredRecordedEvent)["_metadata_json"].__set__
_get_position = vars(RecordedEvent)["position"].__get__
_set_transaction_id_of = vars(_StoredRecordedEvent)["_transaction_id"].__set__
_set_sequence_of = vars(_StoredRecordedEvent)["_sequence"].__set__
_FIELD_NAMES = tuple(RecordedEvent.__dataclass_fields__)
_set_created_at = vars(RecordedEvent)["created_at"].__set__
_set_position = vars(RecordedEvent)["position"].__set__
