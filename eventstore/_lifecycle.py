"""A store's lifecycle: open until ``close()``, then closed for good.

The lifecycle also knows, weakly, what follows the store in the background (its
subscriptions, projection runners and projection sessions), so that closing the
store ends them.
"""

from __future__ import annotations

import threading
import weakref
from typing import Protocol

from eventstore.errors import StoreClosedError


class Follower(Protocol):
    """Something that runs on a store until stopped; ``stop()`` is safe from any thread."""

    def stop(self) -> None: ...


class Lifecycle:
    """Whether a store is open, and the followers that ``close()`` stops.

    Followers are held weakly: one the application drops is forgotten.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closed = False
        self._followers: weakref.WeakSet[Follower] = weakref.WeakSet()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def check_open(self) -> None:
        """Raise :class:`StoreClosedError` if the store was closed."""
        if self._closed:
            raise StoreClosedError()

    def track(self, follower: Follower) -> None:
        """Stop ``follower`` when the store closes; StoreClosedError if it already has."""
        with self._lock:
            self.check_open()
            self._followers.add(follower)

    def close(self) -> bool:
        """Mark the store closed and stop every follower; True only for the first call.

        Safe from any thread and at the same time as calls on the store: a call
        that begins after this raises :class:`StoreClosedError`.
        """
        with self._lock:
            if self._closed:
                return False
            self._closed = True
            followers = list(self._followers)
            self._followers.clear()
        for follower in followers:
            follower.stop()
        return True
