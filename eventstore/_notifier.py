"""The store's notifier: wake-ups for autocommit appends, sent off the commit path.

A transaction that sends NOTIFY holds PostgreSQL's notification queue lock from
its pre-commit through its WAL flush, so concurrent notifying transactions
commit one after another instead of sharing a flush. Appends in autocommit
therefore run the silent statements and, once committed, :meth:`Notifier.signal`
the store's notifier; a daemon thread, on one connection of its own outside the
pool, sends a single NOTIFY on :data:`eventstore._sql.NOTIFY_CHANNEL` per burst.

Coalescing: after each NOTIFY the thread waits :data:`COALESCE_INTERVAL` before
the next, so a process sends at most one NOTIFY per interval however many
appends it makes; the first append after a quiet spell is notified at once. A
signal raised after the thread cleared its flag is always followed by a NOTIFY,
and that NOTIFY is sent after the signalling append committed, so the last
commit of a burst is always followed by a wake-up.

Wake-ups are best effort; delivery is not: subscriptions poll every
``poll_interval`` whatever happens here. A lost connection is logged and
reopened after :data:`RECONNECT_DELAY` (the wake-up it could not send is sent
then); nothing here ever raises into an appender.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import Any

import psycopg
import sqlalchemy.exc
from sqlalchemy.engine import Engine

from eventstore._engines import close_quietly, connection_outside_pool
from eventstore._sql import NOTIFY

logger = logging.getLogger(__name__)

COALESCE_INTERVAL = 0.002
"""Seconds between two NOTIFYs of one store, at least. Chosen by measurement
(docs/benchmarks.md, operations 9 and 10): at 2 ms, eight writers with a live
subscriber append as fast as with ``notify=False`` while the subscriber's wake-up
comes about 1 ms after the commit on average (half the interval plus a round
trip), well within "milliseconds"."""

RECONNECT_DELAY = 0.5
"""Pause before reopening a lost notifier connection (and before each later attempt)."""

JOIN_TIMEOUT = 5.0
"""How long :meth:`Notifier.close` waits for the thread to end (it may be in the
middle of connecting); a daemon thread that outlives it still closes its
connection when it ends."""

_ERRORS = (psycopg.Error, sqlalchemy.exc.SQLAlchemyError)

_NOTIFY = NOTIFY.encode()
_TUPLES_OK = psycopg.pq.ExecStatus.TUPLES_OK


class Notifier:
    """One store's wake-ups for its autocommit appends.

    Thread-safe. Costs nothing until the first :meth:`signal`, which starts the
    thread; :meth:`close` stops it, joined, with its connection closed, and for
    good (later signals are ignored). In a process forked from one where the
    thread ran, the first signal starts a new thread with a new connection (the
    parent's connection is left untouched).
    """

    def __init__(self, engine: Engine, interval: float = COALESCE_INTERVAL) -> None:
        self._engine = engine
        self._interval = interval
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._stop: threading.Event | None = None  # set while a thread runs
        self._thread: threading.Thread | None = None
        self._closed = False
        self._owed_at_close = False
        _forget_parent_after_fork(self)

    @property
    def running(self) -> bool:
        """Whether the notifier's thread runs (in this process)."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def signal(self) -> None:
        """Ask for a NOTIFY: call after an append committed. Cheap (two attribute
        reads when the thread runs and a NOTIFY is already wanted); never blocks
        on the database and never raises."""
        if self._stop is None:
            self._start()
        wanted = self._wanted
        if not wanted.is_set():
            wanted.set()

    def close(self) -> None:
        """Stop the thread and close its connection; idempotent, safe from any
        thread and from a finalizer."""
        with self._lock:
            self._closed = True
            stop, thread = self._stop, self._thread
            self._stop = self._thread = None
            # A commit signalled but not yet notified is notified before the thread ends.
            self._owed_at_close = self._wanted.is_set()
        if stop is None or thread is None:
            return
        stop.set()
        self._wanted.set()
        if thread is not threading.current_thread():
            thread.join(JOIN_TIMEOUT)

    # -- the thread ------------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._closed or self._stop is not None:
                return
            stop = threading.Event()
            thread = threading.Thread(
                target=self._run, args=(stop, self._wanted), name="eventstore-notifier", daemon=True
            )
            self._stop, self._thread = stop, thread
        thread.start()

    def _run(self, stop: threading.Event, wanted: threading.Event) -> None:
        connection: psycopg.Connection[Any] | None = None
        failures = 0  # NOTIFYs failed in a row: only the first is a WARNING
        try:
            while True:
                wanted.wait()
                if stop.is_set():
                    if self._owed_at_close:
                        try:
                            connection = self._send(connection)
                        except _ERRORS as exc:
                            connection = None  # closed by _send
                            logger.warning("cannot send the last wake-up (%s)", exc)
                    return
                # Cleared before the NOTIFY: a commit signalled from now on is
                # followed by another one.
                wanted.clear()
                try:
                    connection = self._send(connection)
                except _ERRORS as exc:
                    failures += 1
                    logger.log(
                        logging.WARNING if failures == 1 else logging.DEBUG,
                        "cannot send the NOTIFY that wakes subscriptions (%s); they poll "
                        "meanwhile; retrying in %s s",
                        exc,
                        RECONNECT_DELAY,
                    )
                    connection = None  # closed by _send
                    wanted.set()  # the wake-up not sent is owed
                    stop.wait(RECONNECT_DELAY)
                    continue
                if failures:
                    logger.info("sending wake-ups again after %d failed attempts", failures)
                    failures = 0
                stop.wait(self._interval)
        except Exception:  # a bug: the next signal starts a new thread
            logger.exception("the notifier stopped; the next append starts it again")
        finally:
            if connection is not None:
                close_quietly(connection)
            with self._lock:
                if self._stop is stop:
                    self._stop = self._thread = None

    def _send(self, connection: psycopg.Connection[Any] | None) -> psycopg.Connection[Any]:
        """Send one NOTIFY, on ``connection`` or on a new one; return the connection."""
        if connection is None:
            connection = connection_outside_pool(self._engine)
        try:
            # libpq directly, without a cursor: the one statement, no parameters
            # and no result to adapt, with the GIL released while it waits, so
            # the appenders' threads lose as little as possible to this one.
            result = connection.pgconn.exec_(_NOTIFY)
            if result.status != _TUPLES_OK:
                raise psycopg.OperationalError(result.get_error_message() or "the NOTIFY failed")
        except BaseException:
            close_quietly(connection)
            raise
        return connection


def _forget_parent_after_fork(notifier: Notifier) -> None:
    """In a child forked while the thread ran, the thread does not exist and its
    connection is the parent's (a local of the parent's thread, never closed
    here): the child starts afresh at its first signal."""
    if not hasattr(os, "register_at_fork"):
        return
    ref = weakref.ref(notifier)

    def forget() -> None:
        kept = ref()
        if kept is not None:
            kept._lock = threading.Lock()
            kept._wanted = threading.Event()
            kept._stop = kept._thread = None

    os.register_at_fork(after_in_child=forget)
