"""Whether an application's registry reads every stored event and snapshot.

:func:`check_events` decodes every event and every snapshot of a database with an
:class:`~eventstore.registry.EventRegistry`, through the very codec methods the
store reads with (:meth:`~eventstore.codec.CborCodec.decode_event_data` for an
event, :meth:`~eventstore.codec.CborCodec.decode_state` for a snapshot: aliases,
upcasters and renamed Enum values applied), and reports, per event type and
stored payload version (:func:`~eventstore.codec.payload_version`), how many
decode and how many fail, with the first failing events of each reason; and the
same per snapshot version. It is what ``eventstore check-events`` runs before a
deploy: the new classes must read every old event.

Everything is read in one consistent snapshot of the database (a single
REPEATABLE READ, READ ONLY transaction), through server-side cursors a page at a
time: memory stays flat however many events there are. What is kept grows only
with the number of event types and stored versions: per each, a few counters
and at most :data:`MAX_REASONS` reasons with a few events each. It changes
nothing and needs only SELECT on ``events`` and ``snapshots`` (what ``eventstore
grant`` gives an application role), so it is safe to run against production.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

import psycopg
from sqlalchemy.engine import URL, Engine

from eventstore import migrations
from eventstore._engines import engine_for
from eventstore._sql import EVENTS, SNAPSHOTS
from eventstore._validation import check_int
from eventstore.codec import CborCodec, payload_version, state_version
from eventstore.errors import DeserializationError, SchemaError, ValidationError
from eventstore.records import Position, VersionedState
from eventstore.registry import EventRegistry
from eventstore.transfer import ProgressCallback

__all__ = [
    "MAX_REASONS",
    "CheckReport",
    "EventTally",
    "FailedEvent",
    "FailedSnapshot",
    "Failures",
    "SnapshotTally",
    "check_events",
]

MAX_REASONS = 20
"""Distinct failure reasons kept per event type and version (and per snapshot
version); failures of further reasons are only counted (``unlisted_failures``)."""

FETCH_ROWS = 1000
"""Rows per round trip of the server-side cursors, and per progress report."""

READ_ONLY_SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
"""The first statement of the check's transaction: everything it reads is one snapshot."""
COUNT_ROWS = f"SELECT (SELECT count(*) FROM {EVENTS}), (SELECT count(*) FROM {SNAPSHOTS})"
SELECT_EVENTS = f"""
SELECT stream_id, version, event_type, event_data, transaction_id::text::bigint, position
FROM {EVENTS} ORDER BY transaction_id, position
"""
"""Every event, in feed order (so the first failures listed are the oldest)."""
SELECT_SNAPSHOTS = f"SELECT stream_id, version, state_data FROM {SNAPSHOTS} ORDER BY stream_id"
STATEMENTS = (READ_ONLY_SNAPSHOT, COUNT_ROWS, SELECT_EVENTS, SELECT_SNAPSHOTS)
"""Every statement the check sends, in order."""


T = TypeVar("T")


@dataclass(frozen=True)
class FailedEvent:
    """A stored event the registry cannot decode: where it is and why."""

    stream_id: str
    version: int
    event_type: str
    position: Position
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id,
            "version": self.version,
            "event_type": self.event_type,
            "position": str(self.position),
            "reason": self.reason,
        }


@dataclass(frozen=True)
class FailedSnapshot:
    """A stored snapshot the registry cannot decode: its stream, the stream
    version it was taken at, and why."""

    stream_id: str
    version: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"stream_id": self.stream_id, "version": self.version, "reason": self.reason}


@dataclass(frozen=True)
class Failures(Generic[T]):
    """The failures of one reason: how many, and the first few (oldest first)."""

    reason: str
    count: int
    first: tuple[T, ...]


@dataclass(frozen=True)
class EventTally:
    """The events of one type stored at one payload version, and what decoding them gave.

    ``stored_version`` is :func:`~eventstore.codec.payload_version` of their bytes
    (None when that header itself is unreadable). ``loads_as`` is the name the
    registry knows the type by (``event_type`` itself, or the class's new name
    when ``event_type`` is an alias) and ``registered_version`` that class's
    version; both None when the type is not registered, so its events decode as
    plain data (no class is built). ``failures`` lists up to :data:`MAX_REASONS`
    reasons, most frequent first; ``unlisted_failures`` counts the failures of
    any further reasons.
    """

    event_type: str
    stored_version: int | None
    loads_as: str | None
    registered_version: int | None
    decoded: int
    failed: int
    failures: tuple[Failures[FailedEvent], ...]
    unlisted_failures: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_type": self.event_type,
            "stored_version": self.stored_version,
            "loads_as": self.loads_as,
            "registered_version": self.registered_version,
            "decoded": self.decoded,
            "failed": self.failed,
            "failures": _failures_dict(self.failures),
            "unlisted_failures": self.unlisted_failures,
        }


@dataclass(frozen=True)
class SnapshotTally:
    """The snapshots stored at one snapshot version, and what decoding them gave.

    ``snapshot_version`` is 1 for a state stored without a version (every
    snapshot saved at snapshot version 1), else the version of its
    :class:`~eventstore.records.VersionedState` tag; None when the tag itself is
    unreadable. ``failures`` and ``unlisted_failures`` as in :class:`EventTally`.
    """

    snapshot_version: int | None
    decoded: int
    failed: int
    failures: tuple[Failures[FailedSnapshot], ...]
    unlisted_failures: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "snapshot_version": self.snapshot_version,
            "decoded": self.decoded,
            "failed": self.failed,
            "failures": _failures_dict(self.failures),
            "unlisted_failures": self.unlisted_failures,
        }


@dataclass(frozen=True)
class CheckReport:
    """What :func:`check_events` found; :meth:`to_dict` gives its JSON form.

    ``events`` are ordered by event type, then stored version; ``snapshots`` by
    snapshot version (an unreadable version last).
    """

    events: tuple[EventTally, ...]
    snapshots: tuple[SnapshotTally, ...]

    @property
    def events_checked(self) -> int:
        return sum(tally.decoded + tally.failed for tally in self.events)

    @property
    def events_failed(self) -> int:
        return sum(tally.failed for tally in self.events)

    @property
    def snapshots_checked(self) -> int:
        return sum(tally.decoded + tally.failed for tally in self.snapshots)

    @property
    def snapshots_failed(self) -> int:
        return sum(tally.failed for tally in self.snapshots)

    @property
    def ok(self) -> bool:
        """True when every event and every snapshot decodes."""
        return self.events_failed == 0 and self.snapshots_failed == 0

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data. Keys, all always present::

            ok
            events: {checked, failed,
                     types: [{event_type, stored_version, loads_as, registered_version,
                              decoded, failed, unlisted_failures,
                              failures: [{reason, count,
                                          first: [{stream_id, version, event_type,
                                                   position, reason}]}]}]}
            snapshots: {checked, failed,
                        versions: [{snapshot_version, decoded, failed, unlisted_failures,
                                    failures: [{reason, count,
                                                first: [{stream_id, version, reason}]}]}]}

        ``position`` is the text form of the event's feed position
        (:meth:`Position.parse` reads it back).
        """
        return {
            "ok": self.ok,
            "events": {
                "checked": self.events_checked,
                "failed": self.events_failed,
                "types": [tally.to_dict() for tally in self.events],
            },
            "snapshots": {
                "checked": self.snapshots_checked,
                "failed": self.snapshots_failed,
                "versions": [tally.to_dict() for tally in self.snapshots],
            },
        }


def check_events(
    url_or_engine: str | URL | Engine,
    registry: EventRegistry,
    *,
    examples: int = 5,
    progress: ProgressCallback | None = None,
) -> CheckReport:
    """Decode every event and snapshot in ``url_or_engine`` with ``registry``; report
    how many decode and which fail, and why.

    ``url_or_engine`` is a PostgreSQL URL or a SQLAlchemy Engine (psycopg) of a
    database with the store's tables. Each event is decoded exactly as the store
    decodes it for ``load_events``, ``read_all`` and every other read, and each
    snapshot as ``load_snapshot`` does; a decode that raises anything (a
    :class:`DeserializationError`, or an error of the application's own class,
    such as a ``__post_init__`` check) counts as a failure, with its reason.
    ``examples`` failing events (or snapshots) are kept per reason, the oldest
    in feed order. ``progress(phase, done, total)`` is called after every page
    of rows, with the phase ``"events"``, then ``"snapshots"``.

    Reads one REPEATABLE READ, READ ONLY snapshot through server-side cursors,
    in bounded memory (see the module docstring); writes nothing. Raises
    :class:`ValidationError` for a bad argument, or when ``registry`` cannot
    decode at all (an upcaster chain with a missing link: see
    :meth:`EventRegistry.resolved`), before connecting; :class:`SchemaError`
    when the database lacks the store's tables.
    """
    if not isinstance(registry, EventRegistry):
        raise ValidationError(f"expected an EventRegistry, not {type(registry).__name__}")
    examples = check_int(examples, "examples", minimum=0)
    registry.resolved()
    codec = CborCodec(registry)
    with _snapshot_of(url_or_engine) as connection:
        (event_total, snapshot_total) = _one(connection, COUNT_ROWS)
        events = _check_events(
            codec,
            _rows(connection, "events", SELECT_EVENTS, event_total, progress),
            examples,
        )
        snapshots = _check_snapshots(
            codec,
            _rows(connection, "snapshots", SELECT_SNAPSHOTS, snapshot_total, progress),
            examples,
        )
    return CheckReport(events=events, snapshots=snapshots)


# -- tallying ---------------------------------------------------------------------------


@dataclass
class _Tally(Generic[T]):
    """Counts of one group, and the failures kept so far (at most MAX_REASONS reasons)."""

    decoded: int = 0
    failed: int = 0
    unlisted: int = 0
    reasons: dict[str, tuple[list[int], list[T]]] = field(default_factory=dict)

    def fail(self, reason: str, examples: int) -> list[T] | None:
        """Count a failure; the list to append it to when it is to be kept, else None."""
        self.failed += 1
        kept = self.reasons.get(reason)
        if kept is None:
            if len(self.reasons) >= MAX_REASONS:
                self.unlisted += 1
                return None
            kept = self.reasons[reason] = ([0], [])
        kept[0][0] += 1
        return kept[1] if len(kept[1]) < examples else None

    def failures(self) -> tuple[Failures[T], ...]:
        kinds = [
            Failures(reason, count[0], tuple(first))
            for reason, (count, first) in self.reasons.items()
        ]
        return tuple(sorted(kinds, key=lambda kind: -kind.count))


def _check_events(
    codec: CborCodec, rows: Iterable[tuple[Any, ...]], examples: int
) -> tuple[EventTally, ...]:
    decode = codec.decode_event_data
    tallies: dict[tuple[str, int | None], _Tally[FailedEvent]] = {}
    for stream_id, version, event_type, data, transaction_id, sequence in rows:
        try:
            stored: int | None = payload_version(data)
        except DeserializationError:
            stored = None
        tally = tallies.get((event_type, stored))
        if tally is None:
            tally = tallies[event_type, stored] = _Tally()
        try:
            decode(stream_id, version, event_type, data)
        except Exception as error:
            reason = _reason(error)
            kept = tally.fail(reason, examples)
            if kept is not None:
                position = Position(transaction_id, sequence)
                kept.append(FailedEvent(stream_id, version, event_type, position, reason))
        else:
            tally.decoded += 1
    registry = codec.registry
    return tuple(
        EventTally(
            event_type=event_type,
            stored_version=stored,
            loads_as=registry.canonical_name(event_type),
            registered_version=(
                None
                if registry.canonical_name(event_type) is None
                else registry.version_of(event_type)
            ),
            decoded=tally.decoded,
            failed=tally.failed,
            failures=tally.failures(),
            unlisted_failures=tally.unlisted,
        )
        for (event_type, stored), tally in sorted(tallies.items(), key=_group_order)
    )


def _check_snapshots(
    codec: CborCodec, rows: Iterable[tuple[Any, ...]], examples: int
) -> tuple[SnapshotTally, ...]:
    decode = codec.decode_state
    tallies: dict[int | None, _Tally[FailedSnapshot]] = {}
    for stream_id, version, data in rows:
        try:
            state = decode(stream_id, version, data)
        except Exception as error:
            tally = tallies.setdefault(_snapshot_version(data), _Tally())
            reason = _reason(error)
            kept = tally.fail(reason, examples)
            if kept is not None:
                kept.append(FailedSnapshot(stream_id, version, reason))
        else:
            stored = state.version if isinstance(state, VersionedState) else 1
            tallies.setdefault(stored, _Tally()).decoded += 1
    return tuple(
        SnapshotTally(
            snapshot_version=stored,
            decoded=tally.decoded,
            failed=tally.failed,
            failures=tally.failures(),
            unlisted_failures=tally.unlisted,
        )
        for stored, tally in sorted(tallies.items(), key=lambda item: _version_order(item[0]))
    )


def _group_order(item: tuple[tuple[str, int | None], object]) -> tuple[str, tuple[int, int]]:
    (event_type, stored), _ = item
    return event_type, _version_order(stored)


def _version_order(version: int | None) -> tuple[int, int]:
    """Versions in order, an unreadable one (None) last."""
    return (1, 0) if version is None else (0, version)


def _reason(error: Exception) -> str:
    """Why a decode failed, without the event's name (the report gives that apart).

    The codec's error for a stored event or snapshot wraps the reason (its cause)
    in a message naming the event; an error of the application's own code (a
    class's ``__post_init__``, say) is given with its type.
    """
    if isinstance(error, DeserializationError):
        cause = error.__cause__
        return str(cause) if isinstance(cause, DeserializationError) else str(error)
    return f"{type(error).__name__}: {error}"


def _snapshot_version(data: bytes) -> int | None:
    """The snapshot version in a state's first bytes (:func:`codec.state_version`),
    None when its header is unreadable."""
    try:
        return state_version(data)
    except DeserializationError:
        return None


# -- reading ----------------------------------------------------------------------------


@contextmanager
def _snapshot_of(url_or_engine: str | URL | Engine) -> Iterator[psycopg.Connection[Any]]:
    """A psycopg connection inside a REPEATABLE READ, READ ONLY transaction, on a
    database with the store's tables (SchemaError otherwise); rolled back on exit."""
    with engine_for(url_or_engine) as engine, engine.connect() as connection:
        with connection.begin():
            state = migrations.schema_state(connection)
        if not state.has_tables:
            raise SchemaError(
                "the database has no event store tables (or tables older than the global "
                "feed): run `eventstore migrate upgrade` on it first"
            )
        driver = cast(psycopg.Connection[Any], connection.connection.driver_connection)
        with driver.transaction(force_rollback=True):
            driver.execute(READ_ONLY_SNAPSHOT)
            yield driver


def _one(connection: psycopg.Connection[Any], query: str) -> tuple[Any, ...]:
    row = connection.execute(query).fetchone()
    assert row is not None
    return tuple(row)


def _rows(
    connection: psycopg.Connection[Any],
    phase: str,
    query: str,
    total: int,
    progress: ProgressCallback | None,
) -> Iterator[tuple[Any, ...]]:
    """The rows of ``query``, a page at a time through a server-side cursor (one
    page in memory), reporting ``progress`` after each page."""
    done = 0
    with connection.cursor(name=f"eventstore_check_{phase}", binary=True) as cursor:
        cursor.execute(query)
        while rows := cursor.fetchmany(FETCH_ROWS):
            yield from rows
            done += len(rows)
            del rows
            if progress is not None:
                progress(phase, done, total)


def _failures_dict(failures: tuple[Failures[Any], ...]) -> list[dict[str, Any]]:
    return [
        {
            "reason": kind.reason,
            "count": kind.count,
            "first": [example.to_dict() for example in kind.first],
        }
        for kind in failures
    ]
