"""The stores a Django process uses: one underlying store per database settings, bound
to Django's connection of the calling thread."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django.db import connections

from eventstore.bound import BoundEventStore
from eventstore.integrations.django._settings import StoreSettings, store_settings
from eventstore.postgres import PostgresEventStore

_lock = threading.Lock()
_stores: dict[tuple[object, ...], BoundEventStore] = {}


def get_event_store(alias: str | None = None) -> BoundEventStore:
    """The event store on Django's own connection for ``alias`` (default:
    ``EVENTSTORE['DATABASE']``, else ``"default"``).

    Every call on it without ``connection=`` runs on the calling thread's Django
    connection: inside ``transaction.atomic()`` it joins the atomic block (an
    append writes inside a savepoint, so a :class:`~eventstore.ConcurrencyError`
    leaves the block usable, and the block's rollback takes the events with it);
    outside one, each call is its own transaction. Reads see the block's writes.

    ``subscribe``, ``feed_head`` and projection runners read the committed feed
    through the underlying store (``.store``): a ``PostgresEventStore`` with its
    own connection pool, built from the alias's settings on first use, one per
    process and per settings (so a test run's switch to the test database gets a
    store on the test database). Call this where you use the store (it is cheap),
    not at import time.

    Raises :class:`~eventstore.errors.IntegrationError` for an alias missing from
    ``DATABASES``, a backend that is not PostgreSQL on psycopg 3, or a bad
    ``EVENTSTORE`` setting (``REGISTRY`` included).
    """
    config = store_settings(alias)
    key = config.key
    store = _stores.get(key)
    if store is not None and not store.closed:
        return store
    with _lock:
        store = _stores.get(key)
        if store is None or store.closed:
            store = _build(config)
            _stores[key] = store
        return store


def close_event_stores() -> None:
    """Close every store :func:`get_event_store` built in this process (their pools
    and listening connections end; Django's connections are left alone). The next
    :func:`get_event_store` builds a new one. For the end of a test session, before
    the test database is dropped, and for forked workers that want fresh pools."""
    with _lock:
        stores = list(_stores.values())
        _stores.clear()
    for store in stores:
        store.store.close()


def _build(config: StoreSettings) -> BoundEventStore:
    base = PostgresEventStore.from_url(config.url, config.registry(), notify=config.notify)
    return base.bind(_django_connection(config.alias))


def _django_connection(alias: str) -> Callable[[], Any]:
    def current() -> Any:
        connection = connections[alias]
        connection.ensure_connection()
        return connection.connection

    current.__qualname__ = f"django.db.connections[{alias!r}].connection"
    return current
