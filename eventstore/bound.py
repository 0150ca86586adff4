"""A store bound to the caller's unit of work: every call runs in it unless told otherwise.

``store.bind(connection)`` returns a :class:`BoundEventStore`. Web integrations
use it so that an application's code appends and reads in the request's own
transaction without passing ``connection=`` to every call
(``store.bind(lambda: db.session)`` with Flask-SQLAlchemy; Django's connection
with the Django integration); tests use it to run a whole test in one
transaction that is rolled back at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from eventstore._backend import DEFAULT_BATCH_SIZE
from eventstore.codec import CborCodec
from eventstore.errors import StoreClosedError, ValidationError
from eventstore.feed import DEFAULT_POLL_INTERVAL, Subscription
from eventstore.records import ExpectedVersion, Position, RecordedEvent, Snapshot
from eventstore.registry import EventRegistry
from eventstore.store import EventStore

__all__ = ["BoundEventStore", "unbound"]


class BoundEventStore(EventStore):
    """``store`` with ``connection=`` filled in: see :meth:`EventStore.bind`.

    ``connection`` is a unit of work as the store's ``connection=`` takes it, or a
    function of no arguments that returns one, called at every call (a
    ``scoped_session`` is both: called, it gives the current thread's Session).
    A call given its own ``connection=`` uses that one instead. The bound store
    never commits or rolls back: the unit of work's owner does.

    Thread-safe as far as the unit of work is: bind to a function such as
    ``lambda: db.session`` (one session per thread or request) when several
    threads share the bound store; a single ``Connection`` or ``Session`` is for
    one thread at a time.
    """

    def __init__(self, store: EventStore, connection: Any) -> None:
        if isinstance(store, BoundEventStore):
            store = store.store
        if not isinstance(store, EventStore):
            raise ValidationError(
                f"bind needs an event store of this library, not {type(store).__name__}"
            )
        if connection is None:
            raise ValidationError(
                "bind needs a unit of work (a Connection, Session, scoped_session, psycopg "
                "Connection, or what store.transaction() yields) or a function returning one"
            )
        self.store: EventStore = store
        """The store this one is bound over; its calls commit on their own."""
        self._connection = connection
        self._closed = False
        self.codec: CborCodec = store.codec

    def __repr__(self) -> str:
        return f"<BoundEventStore over {self.store!r}>"

    def __enter__(self) -> BoundEventStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def registry(self) -> EventRegistry:
        return self.store.registry

    @property
    def closed(self) -> bool:
        """True once this bound store or the store under it was closed."""
        return self._closed or self.store.closed

    def close(self) -> None:
        """End this bound store (later calls raise StoreClosedError); the store
        under it and the unit of work are left as they are. Idempotent."""
        self._closed = True

    def connection(self) -> Any:
        """The unit of work calls run in now (the bound function's answer, if a function)."""
        if self._closed:
            raise StoreClosedError("this bound event store has been closed")
        bound = self._connection
        if callable(bound):
            bound = bound()
            if bound is None:
                raise ValidationError(
                    "the function the store is bound to returned None: it must return "
                    "a unit of work (for example the request's Session)"
                )
        return bound

    def _through(self, connection: Any) -> Any:
        return self.connection() if connection is None else connection

    def bind(self, connection: Any) -> BoundEventStore:
        """The store under this one bound to ``connection`` instead."""
        return BoundEventStore(self.store, connection)

    # -- streams ---------------------------------------------------------------------

    def append_events(
        self,
        stream_id: str,
        events: Iterable[Any],
        *,
        expected_version: ExpectedVersion,
        connection: Any = None,
    ) -> int:
        return self.store.append_events(
            stream_id,
            events,
            expected_version=expected_version,
            connection=self._through(connection),
        )

    def load_events(
        self,
        stream_id: str,
        *,
        from_version: int = 1,
        to_version: int | None = None,
        limit: int | None = None,
        connection: Any = None,
    ) -> list[RecordedEvent]:
        return self.store.load_events(
            stream_id,
            from_version=from_version,
            to_version=to_version,
            limit=limit,
            connection=self._through(connection),
        )

    def iter_events(
        self,
        stream_id: str,
        *,
        from_version: int = 1,
        to_version: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        connection: Any = None,
    ) -> Iterator[RecordedEvent]:
        return self.store.iter_events(
            stream_id,
            from_version=from_version,
            to_version=to_version,
            batch_size=batch_size,
            connection=self._through(connection),
        )

    def stream_version(self, stream_id: str, *, connection: Any = None) -> int:
        return self.store.stream_version(stream_id, connection=self._through(connection))

    # -- snapshots -------------------------------------------------------------------

    def save_snapshot(
        self, stream_id: str, version: int, state: Any, connection: Any = None
    ) -> bool:
        return self.store.save_snapshot(
            stream_id, version, state, connection=self._through(connection)
        )

    def load_snapshot(self, stream_id: str, *, connection: Any = None) -> Snapshot | None:
        return self.store.load_snapshot(stream_id, connection=self._through(connection))

    def delete_snapshot(self, stream_id: str, connection: Any = None) -> bool:
        return self.store.delete_snapshot(stream_id, connection=self._through(connection))

    # -- units of work ---------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """A savepoint in the bound unit of work, yielding that unit of work: what
        is written in the block is kept when it ends (and committed when the
        unit of work's owner commits), undone when the block raises. On a
        psycopg connection in autocommit the block is a transaction of its own."""
        with _nested(self.store, self.connection()) as unit:
            yield unit

    # -- the global feed -------------------------------------------------------------

    def feed_head(self) -> Position | None:
        self._check_open()
        return self.store.feed_head()

    def read_all(
        self,
        *,
        after: Position | None = None,
        limit: int = DEFAULT_BATCH_SIZE,
        event_types: Iterable[str] | None = None,
        stream_prefix: str | None = None,
        connection: Any = None,
    ) -> list[RecordedEvent]:
        return self.store.read_all(
            after=after,
            limit=limit,
            event_types=event_types,
            stream_prefix=stream_prefix,
            connection=self._through(connection),
        )

    def iter_all(
        self,
        *,
        after: Position | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        event_types: Iterable[str] | None = None,
        stream_prefix: str | None = None,
        connection: Any = None,
    ) -> Iterator[RecordedEvent]:
        return self.store.iter_all(
            after=after,
            batch_size=batch_size,
            event_types=event_types,
            stream_prefix=stream_prefix,
            connection=self._through(connection),
        )

    def subscribe(
        self,
        *,
        after: Position | None = None,
        event_types: Iterable[str] | None = None,
        stream_prefix: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> Subscription:
        """The store's own subscription: it follows the committed feed, outside the
        bound unit of work."""
        self._check_open()
        return self.store.subscribe(
            after=after,
            event_types=event_types,
            stream_prefix=stream_prefix,
            batch_size=batch_size,
            poll_interval=poll_interval,
        )

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("this bound event store has been closed")


def unbound(store: EventStore) -> EventStore:
    """The store under ``store`` when it is bound, else ``store`` itself."""
    return store.store if isinstance(store, BoundEventStore) else store


def _nested(store: EventStore, connection: Any) -> AbstractContextManager[Any]:
    nested: Callable[[Any], AbstractContextManager[Any]] | None = getattr(store, "_nested", None)
    if nested is None:
        raise ValidationError(
            f"{type(store).__name__} has no savepoints: bind a store of this library"
        )
    return nested(connection)
