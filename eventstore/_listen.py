"""LISTEN/NOTIFY: the channel appends notify on, and the waiter that wakes subscriptions."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import sqlalchemy.exc
from sqlalchemy.engine import Engine
from sqlalchemy.pool import PoolProxiedConnection

NOTIFY_CHANNEL = "eventstore_events"
"""The channel every append notifies (in its own transaction) and subscribers listen on."""

_RECONNECT_DELAY = 0.5
"""Pause between attempts to re-establish a lost LISTEN connection."""


class ListenWaiter:
    """Wakes a subscription on NOTIFY, from a pooled connection held with LISTEN.

    A lost connection is replaced on the next wait (and that wait returns at
    once, since notifications may have been missed meanwhile); until then the
    subscription polls.
    """

    _SLICE = 0.1
    """Longest single block, so that a stop request is seen promptly."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._pooled: PoolProxiedConnection | None = None
        self._listen()

    def arm(self) -> None:
        """LISTEN queues notifications, so nothing is missed between waits."""

    def wait(self, timeout: float, stop: threading.Event) -> None:
        """Block until a notification, ``timeout`` seconds, or ``stop``."""
        deadline = time.monotonic() + timeout
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self._pooled is None:
                if self._listen():
                    return
                stop.wait(min(remaining, _RECONNECT_DELAY))
                continue
            driver = self._driver()
            try:
                for _ in driver.notifies(timeout=min(remaining, self._SLICE), stop_after=1):
                    return
            except psycopg.OperationalError:
                self._drop()

    def close(self) -> None:
        """UNLISTEN and return the connection to the pool."""
        pooled, self._pooled = self._pooled, None
        if pooled is None:
            return
        driver = pooled.driver_connection
        try:
            driver.execute("UNLISTEN *")  # type: ignore[union-attr]
            driver.autocommit = False  # type: ignore[union-attr]
        except psycopg.Error:
            pooled.invalidate()
        pooled.close()

    def _listen(self) -> bool:
        try:
            pooled = self._engine.raw_connection()
        except (psycopg.OperationalError, sqlalchemy.exc.OperationalError):
            return False
        driver: psycopg.Connection[Any] = pooled.driver_connection  # type: ignore[assignment]
        try:
            driver.autocommit = True
            driver.execute(f"LISTEN {NOTIFY_CHANNEL}")
        except psycopg.Error:
            pooled.invalidate()
            pooled.close()
            return False
        self._pooled = pooled
        return True

    def _driver(self) -> psycopg.Connection[Any]:
        assert self._pooled is not None
        return self._pooled.driver_connection  # type: ignore[return-value]

    def _drop(self) -> None:
        pooled, self._pooled = self._pooled, None
        if pooled is not None:
            pooled.invalidate()
            pooled.close()
