"""The projection checks: events projections skipped because they cannot be decoded."""

from __future__ import annotations

from eventstore import monitoring
from eventstore.doctor._check import Check, Session

_ERROR_CHARACTERS = 200
"""How much of the latest skipped event's error a finding quotes."""


def skipped_events(session: Session) -> Check:
    """No projection has skipped an event (checked at the newest revision only).

    A projection built with ``on_undecodable="skip"`` passes over an event it cannot
    decode and records it in ``projection_skipped_events``: its read model lacks that
    event. Warns with each such projection, its count and its latest skipped event;
    the advice is to make those events decodable (an upcaster, an alias, a field
    default) and then reset the projection, which rebuilds it and clears its records.
    """
    found = monitoring.skipped_events(session.connection)
    if not found:
        return Check("skipped events", "pass", "no projection has skipped an event")
    described = []
    for skips in found:
        latest = skips.latest
        error = latest.error.splitlines()[0] if latest.error else ""
        if len(error) > _ERROR_CHARACTERS:
            error = error[: _ERROR_CHARACTERS - 3] + "..."
        described.append(
            f"{skips.projection!r} skipped {skips.count} (the latest: event {latest.version} "
            f"of stream {latest.stream_id!r}, type {latest.event_type!r}, at "
            f"{latest.position}: {error})"
        )
    return Check(
        "skipped events",
        "warn",
        "projections passed over events they cannot decode, so their read models lack "
        "them: " + "; ".join(described),
        "list them with SELECT * FROM projection_skipped_events ORDER BY projection, "
        "transaction_id, position; make them decodable with the application's registry "
        "(an upcaster, an alias, a default for a new field), then reset each projection "
        "(ProjectionRunner.reset()) so it rebuilds with them and forgets these records",
    )
