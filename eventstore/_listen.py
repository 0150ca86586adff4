"""LISTEN/NOTIFY: the one listening connection per store that wakes its
subscriptions and projection runners.

A :class:`Listener` keeps a single connection, outside the store's pool, that
listens on the channel appends notify (:data:`eventstore._sql.NOTIFY_CHANNEL`).
A daemon thread blocks on it in short slices and counts notifications in a
generation number under a condition variable; each :class:`ListenWaiter`
remembers the generation it was armed at and wakes when it changes. The thread
starts with the first waiter and stops (closing the connection) when the last
one is closed or garbage-collected, or the store closes. No pooled connection is
ever put in autocommit or left listening.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import psycopg
import sqlalchemy.exc
from sqlalchemy.engine import Engine

from eventstore._engines import close_quietly, connection_outside_pool
from eventstore._sql import LISTEN

logger = logging.getLogger(__name__)

"""The channel every append notifies (in its own transaction) and subscribers listen on."""

RECONNECT_DELAY = 0.5
"""Pause before each attempt to re-establish a lost listening connection."""

_SLICE = 0.1
"""Longest single block, of the listening thread on its connection and of a waiter
on the condition, so that stop requests are seen promptly."""


class Listener:
    """A store's one listening connection, shared by every waiter of the store.

    Thread-safe. Costs nothing until the first :meth:`waiter`. The connection
    is opened with the engine's own connection settings (URL, ``connect_args``,
    connect events) but never taken from, nor returned to, the engine's pool, so
    subscriptions neither use up the pool nor leave a pooled connection in
    autocommit or listening. A lost connection is re-established after
    :data:`RECONNECT_DELAY` seconds, again and again; every waiter is woken when
    it is lost and again when it is back (notifications may have been missed),
    and until then subscriptions poll.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._changed = threading.Condition()
        self._generation = 0
        self._waiters = 0
        self._stop: threading.Event | None = None  # the running thread's stop request
        self._connected = False
        self._pid = os.getpid()

    @property
    def listening(self) -> bool:
        """Whether a thread currently holds a connection that listens."""
        with self._changed:
            return self._connected

    def waiter(self) -> ListenWaiter:
        """A new waiter; starts the listening thread if none runs. Needs no pooled
        connection and never blocks on the database."""
        with self._changed:
            self._forget_parent_after_fork()
            self._waiters += 1
            if self._stop is None:
                self._stop = threading.Event()
                threading.Thread(
                    target=self._listen, args=(self._stop,), name="eventstore-listener", daemon=True
                ).start()
        return ListenWaiter(self)

    def close(self) -> None:
        """Stop listening now and wake every waiter; a later :meth:`waiter` starts
        again. The thread closes its connection within a fraction of a second."""
        with self._changed:
            self._halt()

    # -- what waiters call ---------------------------------------------------------------

    def generation(self) -> int:
        with self._changed:
            return self._generation

    def wait_past(
        self, seen: int, timeout: float, stop: threading.Event, gone: threading.Event
    ) -> None:
        """Return once the generation is past ``seen``, after ``timeout`` seconds,
        or soon after ``stop`` or ``gone`` is set."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._generation == seen and not stop.is_set() and not gone.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._changed.wait(min(remaining, _SLICE))

    def release(self) -> None:
        """One waiter fewer; the last one stops the thread."""
        with self._changed:
            self._waiters -= 1
            if self._waiters <= 0:
                self._waiters = 0
                self._halt()

    # -- the listening thread ---------------------------------------------------------------

    def _halt(self) -> None:
        if self._stop is not None:
            self._stop.set()
            self._stop = None
        self._bump()

    def _bump(self) -> None:
        """Wake every waiter (the caller holds the condition)."""
        self._generation += 1
        self._changed.notify_all()

    def _woken(self, connected: bool | None = None) -> None:
        with self._changed:
            if connected is not None:
                self._connected = connected
            self._bump()

    def _listen(self, stop: threading.Event) -> None:
        connection: psycopg.Connection[Any] | None = None
        failures = 0  # connection attempts failed in a row: only the first is a WARNING
        try:
            while not stop.is_set():
                if connection is None:
                    try:
                        connection = self._connect()
                    except (psycopg.Error, sqlalchemy.exc.SQLAlchemyError) as exc:
                        failures += 1
                        logger.log(
                            logging.WARNING if failures == 1 else logging.DEBUG,
                            "cannot open the connection that listens for new events (%s); "
                            "subscriptions poll meanwhile; retrying every %s s",
                            exc,
                            RECONNECT_DELAY,
                        )
                        stop.wait(RECONNECT_DELAY)
                        continue
                    if failures:
                        logger.info("listening for new events again after %d attempts", failures)
                        failures = 0
                    # Notifications sent while nobody listened are lost: everyone reads again.
                    self._woken(connected=True)
                try:
                    for _ in connection.notifies(timeout=_SLICE):
                        self._woken()
                except psycopg.Error as exc:
                    logger.warning(
                        "the connection listening for new events was lost (%s); "
                        "subscriptions poll until it is back, in %s s",
                        exc,
                        RECONNECT_DELAY,
                    )
                    close_quietly(connection)
                    connection = None
                    self._woken(connected=False)
                    stop.wait(RECONNECT_DELAY)
        finally:
            if connection is not None:
                close_quietly(connection)
            with self._changed:
                if self._stop is stop:  # ended by an unexpected error: the next waiter restarts
                    self._stop = None
                if self._stop is None:
                    self._connected = False

    def _connect(self) -> psycopg.Connection[Any]:
        """A new connection that listens, outside the engine's pool."""
        return connection_outside_pool(self._engine, LISTEN)

    def _forget_parent_after_fork(self) -> None:
        """In a forked child the parent's listening thread does not exist (its
        connection, the parent's, stays untouched in the child): start afresh."""
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._stop = None
        self._waiters = 0
        self._connected = False


class ListenWaiter:
    """One subscription's (or projection runner's) view of its store's :class:`Listener`.

    Holds no connection. :meth:`arm` before each read; :meth:`wait` returns when
    a notification arrived after the arming, on timeout, or on stop.
    """

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self._seen = listener.generation()
        self._closed = threading.Event()
        self._release_once = threading.Lock()
        self._pid = os.getpid()  # a waiter inherited by a forked child counts for nothing there

    def arm(self) -> None:
        """Remember the current generation: a notification after this ends the next wait."""
        self._seen = self._listener.generation()

    def wait(self, timeout: float, stop: threading.Event) -> None:
        """Block until a notification since :meth:`arm`, ``timeout`` seconds, or ``stop``."""
        self._listener.wait_past(self._seen, timeout, stop, self._closed)

    def close(self) -> None:
        """Stop counting on the listener (the last waiter stops it). Idempotent,
        safe from any thread and from a finalizer."""
        with self._release_once:
            if self._closed.is_set():
                return
            self._closed.set()
        if self._pid == os.getpid():
            self._listener.release()
