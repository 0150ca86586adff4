"""Erasing a stream from the append-only log: the one supported way to remove events.

Revision ``eventstore_0003`` makes ``events`` refuse ``UPDATE``, ``DELETE`` and
``TRUNCATE``, unless the transaction has run :data:`ALLOW_REWRITE` and the
current role is a member of the role that owns the table (the one that runs
the migrations). :func:`erase_stream` does exactly that for one stream, for
example on a legal erasure request; an application role granted with
``eventstore grant`` cannot, whatever it sets.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import URL

from eventstore._engines import engine_for
from eventstore._sql import (
    ALLOW_REWRITE,
    BUSY_QUERY,
    DELETE_EVENTS,
    DELETE_SNAPSHOT,
    LOCK_AGAINST_WRITERS,
    SET_LOCK_TIMEOUT,
)
from eventstore._translate import translated_errors
from eventstore._validation import check_identifier
from eventstore.errors import (
    OperationTimeoutError,
    PermissionDeniedError,
    TransactionConflictError,
)

LOCK_TIMEOUT = "1s"
"""How long one attempt of :func:`erase_stream` waits for its table lock (a
PostgreSQL duration). Writers that arrive meanwhile wait behind it, so it is short."""

ATTEMPTS = 5
"""How many times :func:`erase_stream` tries to take its table lock."""

_PAUSE = 0.05
"""Seconds: the longest pause before the second attempt (grows with each attempt)."""


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

    Writers racing the erase: it first locks ``events`` and ``snapshots``
    against writers (``SHARE ROW EXCLUSIVE``; readers are not blocked). That
    waits for the transactions already writing, and holds new appends and
    snapshot saves until the erase commits; they then see the stream erased, so
    it starts again at version 1 and no snapshot of the erased events survives.
    (Appends and snapshot saves inside a transaction whose snapshot predates the
    erase get a :class:`~eventstore.errors.ConcurrencyError` instead.) An erase
    that waits longer than :data:`LOCK_TIMEOUT` for the lock, or that
    deadlocks with a transaction holding one table and wanting the other, gives
    the lock up at once (writers queued behind it go on) and tries again, up to
    :data:`ATTEMPTS` times in all.

    Raises :class:`~eventstore.errors.PermissionDeniedError` for a role that
    does not own the table, :class:`~eventstore.errors.OperationTimeoutError`
    when every attempt found the tables busy (nothing is deleted then),
    :class:`~eventstore.errors.ValidationError` for a bad argument.
    """
    check_identifier(stream_id, "stream_id")
    parameters = {"stream_id": stream_id}
    with engine_for(url_or_engine) as engine:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return _erase_once(engine, parameters)
            except PermissionDeniedError as error:
                raise PermissionDeniedError(
                    f"cannot erase stream {stream_id!r}, nothing was deleted: "
                    f"{str(error.args[0]).rstrip('.')}. "
                    "Erasing needs the role that owns the events table (the one that runs the "
                    "migrations): connect as that role"
                ) from error.__cause__
            except (OperationTimeoutError, TransactionConflictError) as error:
                if not _busy(error):
                    raise
                if attempt == ATTEMPTS:
                    raise OperationTimeoutError(
                        f"cannot erase stream {stream_id!r}, nothing was deleted: other "
                        f"transactions kept the events or snapshots table busy through "
                        f"{ATTEMPTS} attempts (waiting up to {LOCK_TIMEOUT} each). Find them "
                        f"with {BUSY_QUERY} end them or wait, and run the erase again",
                        timeout="lock_timeout",
                    ) from error
                time.sleep(random.uniform(0, _PAUSE * attempt))
    raise AssertionError("unreachable")  # pragma: no cover


def _erase_once(engine: Engine, parameters: dict[str, str]) -> Erased:
    """One attempt: lock, delete, commit."""
    with translated_errors(database=engine.url.database), engine.begin() as connection:
        connection.execute(text(SET_LOCK_TIMEOUT), {"lock_timeout": LOCK_TIMEOUT})
        connection.execute(text(LOCK_AGAINST_WRITERS))
        allow_rewrite(connection)
        events = connection.execute(text(DELETE_EVENTS), parameters).rowcount
        snapshots = connection.execute(text(DELETE_SNAPSHOT), parameters).rowcount
    return Erased(parameters["stream_id"], events, snapshots)


def _busy(error: OperationTimeoutError | TransactionConflictError) -> bool:
    """Whether ``error`` is the lock wait running out, or a deadlock: worth another try."""
    if isinstance(error, OperationTimeoutError):
        return error.timeout == "lock_timeout"
    return True
