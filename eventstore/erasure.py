"""Erasing a stream from the append-only log: the one supported way to remove events.

Revision ``eventstore_0003`` makes ``events`` refuse ``UPDATE``, ``DELETE`` and
``TRUNCATE``, unless the transaction has run :data:`ALLOW_REWRITE` and the
current role is a member of the role that owns the table (the one that runs
the migrations). :func:`erase_stream` does exactly that for one stream, for
example on a legal erasure request; an application role granted with
``eventstore grant`` cannot, whatever it sets.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import URL

from eventstore._engines import engine_for
from eventstore._translate import translated_errors
from eventstore._validation import check_identifier
from eventstore.errors import PermissionDeniedError

ALLOW_REWRITE = "SET LOCAL eventstore.allow_rewrite = on"
"""The statement that lets the tables' owner change ``events`` until the transaction ends."""

_DELETE_EVENTS = "DELETE FROM events WHERE stream_id = :stream_id"
_DELETE_SNAPSHOT = "DELETE FROM snapshots WHERE stream_id = :stream_id"


@dataclass(frozen=True, slots=True)
class Erased:
    """What :func:`erase_stream` removed."""

    stream_id: str
    events: int
    snapshots: int


def allow_rewrite(connection: Connection) -> None:
    """Let the rest of ``connection``'s current transaction change ``events``.

    Only takes effect for a role that owns the table; the permission ends with
    the transaction (commit or rollback)."""
    connection.execute(text(ALLOW_REWRITE))


def erase_stream(url_or_engine: str | URL | Engine, stream_id: str) -> Erased:
    """Delete every event and the snapshot of ``stream_id``, in one transaction.

    Run it as the role that owns ``events`` (the migrations' role). Positions
    are not reused, so feed readers simply never see the erased events again;
    read models that projections built from them are the caller's to purge.
    Returns the counts removed (zero for a stream that does not exist).

    Raises :class:`~eventstore.errors.PermissionDeniedError` for a role that
    does not own the table (nothing is deleted then),
    :class:`~eventstore.errors.ValidationError` for a bad ``stream_id``.
    """
    check_identifier(stream_id, "stream_id")
    parameters = {"stream_id": stream_id}
    with engine_for(url_or_engine) as engine:
        try:
            with translated_errors(database=engine.url.database), engine.begin() as connection:
                allow_rewrite(connection)
                events = connection.execute(text(_DELETE_EVENTS), parameters).rowcount
                snapshots = connection.execute(text(_DELETE_SNAPSHOT), parameters).rowcount
        except PermissionDeniedError as error:
            raise PermissionDeniedError(
                f"cannot erase stream {stream_id!r}, nothing was deleted: "
                f"{str(error.args[0]).rstrip('.')}. "
                "Erasing needs the role that owns the events table (the one that runs the "
                "migrations): connect as that role"
            ) from error.__cause__
    return Erased(stream_id, events, snapshots)
