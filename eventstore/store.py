"""The event store's public interface: what every store of this library does.

:class:`EventStore` is the one place the contract is written. Both stores
(:class:`~eventstore.PostgresEventStore` and :class:`~eventstore.InMemoryEventStore`)
implement it, and mypy checks them against it; :class:`~eventstore.Repository`,
:class:`~eventstore.ProjectionRunner` and applications type against it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar, runtime_checkable

from eventstore._backend import DEFAULT_BATCH_SIZE
from eventstore.codec import CborCodec
from eventstore.feed import DEFAULT_POLL_INTERVAL, Subscription
from eventstore.records import ExpectedVersion, Position, RecordedEvent, Snapshot
from eventstore.registry import EventRegistry

_Store = TypeVar("_Store", bound="EventStore")


@runtime_checkable
class EventStore(Protocol):
    """Append-only streams of events with optimistic concurrency, snapshots, and a
    global feed of every stream's events in commit order.

    Versions count from 1 within a stream; a stream with no events is at 0.
    Every argument is checked, and every payload encoded, before storage is
    touched: a call that raises :class:`~eventstore.errors.ValidationError` or
    :class:`~eventstore.errors.SerializationError` changes nothing.

    A store is open until :meth:`close` (or the end of its ``with`` block);
    after that every call raises :class:`~eventstore.errors.StoreClosedError`.

    Every method that reads or writes a stream or the feed takes
    ``connection=``, which joins the caller's unit of work: on PostgreSQL a
    SQLAlchemy ``Connection`` in a transaction (for example the one
    :meth:`transaction` yields), a SQLAlchemy ``Session`` or ``scoped_session``
    (Flask-SQLAlchemy's ``db.session``: its transaction, begun if needed), or a
    psycopg 3 ``Connection`` (Django's; in autocommit each call is then its own
    transaction); in memory what :meth:`transaction` yields. The store never
    commits or rolls back a caller's transaction: its writes commit or roll back
    with the caller's own. Reads through it see the unit of work's own writes,
    except feed reads (:meth:`read_all`, :meth:`iter_all`), which show committed
    events only: an event's place in the feed is final only once it commits.
    :meth:`bind` makes a store whose every call runs through one unit of work.
    """

    codec: CborCodec
    """Encodes payloads to CBOR and rebuilds them as the registry's classes."""

    @property
    def registry(self) -> EventRegistry:
        """The registry whose classes payloads are encoded and rebuilt with."""
        ...

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        ...

    def close(self) -> None:
        """Close the store: every later call raises StoreClosedError.

        Live subscriptions end (their iteration stops), running projection
        runners return from ``run()`` and give up their locks, and the backend
        lets go of what it holds (a PostgreSQL store built by ``from_url``
        disposes its engine; a shared engine is left open). Idempotent, and
        safe from any thread, also while other threads use the store.
        """
        ...

    def __enter__(self: _Store) -> _Store: ...

    def __exit__(self, *exc_info: object) -> None: ...

    # -- streams -------------------------------------------------------------------

    def append_events(
        self,
        stream_id: str,
        events: Iterable[Any],
        *,
        expected_version: ExpectedVersion,
        connection: Any = None,
    ) -> int:
        """Append ``events`` atomically if the stream is at ``expected_version``.

        ``events`` holds :class:`~eventstore.NewEvent` objects or instances of
        registered dataclasses. Returns the stream's new version. Raises
        :class:`~eventstore.errors.ConcurrencyError` when the stream is
        elsewhere or a racing writer got there first,
        :class:`~eventstore.errors.ValidationError` /
        :class:`~eventstore.errors.SerializationError` for bad input (checked
        before storage is touched); nothing is written then.
        """
        ...

    def load_events(
        self,
        stream_id: str,
        *,
        from_version: int = 1,
        to_version: int | None = None,
        limit: int | None = None,
        connection: Any = None,
    ) -> list[RecordedEvent]:
        """Events ``from_version`` to ``to_version`` (inclusive), oldest first, at
        most ``limit``; ``[]`` for a missing stream. Raises
        :class:`~eventstore.errors.DeserializationError` for a payload that
        cannot be decoded."""
        ...

    def iter_events(
        self,
        stream_id: str,
        *,
        from_version: int = 1,
        to_version: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        connection: Any = None,
    ) -> Iterator[RecordedEvent]:
        """Like :meth:`load_events`, fetched in pages of ``batch_size`` events so a
        stream of any length is read in bounded memory. Arguments (``connection``
        included) are checked when the call is made, not at the first ``next()``;
        with ``connection=``, every page is read through it, so its unit of work
        must stay open while the iterator is used."""
        ...

    def stream_version(self, stream_id: str, *, connection: Any = None) -> int:
        """The version of the stream's last event; 0 when it has none."""
        ...

    # -- snapshots -----------------------------------------------------------------

    def save_snapshot(
        self, stream_id: str, version: int, state: Any, connection: Any = None
    ) -> bool:
        """Store ``state`` as of ``version`` unless a snapshot as new or newer is kept.

        Returns True when written, False when the kept snapshot is at the same or
        a newer version (an older snapshot never replaces a newer one). Raises
        :class:`~eventstore.errors.ValidationError` when ``version`` is past the
        stream's last event, :class:`~eventstore.errors.SerializationError` when
        ``state`` cannot be encoded.
        """
        ...

    def load_snapshot(self, stream_id: str, *, connection: Any = None) -> Snapshot | None:
        """The stream's snapshot, or None. Raises
        :class:`~eventstore.errors.DeserializationError` when the stored state
        cannot be decoded. With ``connection=``, as that unit of work sees it (its
        own saves and deletes included)."""
        ...

    def delete_snapshot(self, stream_id: str, connection: Any = None) -> bool:
        """Delete the stream's snapshot; True when there was one, False otherwise.

        The events are not touched (the log stays append-only): a snapshot is a
        cache, and deleting it makes the next load replay the stream from its
        first event. The way to get rid of a snapshot that must not be used (one
        that no longer decodes, or one of an older shape), so that the next
        :meth:`save_snapshot` is written whatever its version. The stored state
        is not decoded. With ``connection=`` the snapshot is deleted when that
        unit of work commits, together with what else it wrote (a
        :meth:`save_snapshot` after it in the same unit of work is kept); until
        then :meth:`load_snapshot` without that ``connection=`` still returns it.
        """
        ...

    # -- units of work -------------------------------------------------------------

    def transaction(self) -> AbstractContextManager[Any]:
        """A unit of work over any number of streams, as a context manager.

        Pass what it yields as ``connection=`` to any call that takes it:
        what they write commits
        together when the ``with`` block ends, or not at all when it raises
        (a :class:`~eventstore.errors.ConcurrencyError` caught inside leaves it
        usable). Reads through it see its own writes; other readers see them
        once it commits, in the feed one after the other in the order they were
        appended. Another writer of a stream it appended to waits until it
        ends, then gets the usual answer. Using it after its block, or with
        another store, raises :class:`~eventstore.errors.ValidationError`.
        """
        ...

    def bind(self, connection: Any) -> EventStore:
        """This store, with every call that is given no ``connection=`` run through
        ``connection``: a unit of work as ``connection=`` takes it, or a function of
        no arguments returning one, called at each call (``lambda: db.session``, so
        each request or thread gets its own).

        The bound store's :meth:`transaction` is a savepoint in that unit of work
        (kept when its block ends, undone when it raises); :meth:`subscribe`,
        :meth:`feed_head` and projection runners use this store directly (they
        follow the committed feed). Closing the bound store ends it, not this one.
        See :class:`~eventstore.bound.BoundEventStore`.
        """
        ...

    # -- the global feed -----------------------------------------------------------

    def feed_head(self) -> Position | None:
        """The position of the last event of the global feed visible now (the
        same visibility as :meth:`read_all`), or None when none is: subscribe or
        read with ``after=store.feed_head()`` to start from now without reading
        the feed. Cheap: one probe of the end of the feed's index."""
        ...

    def read_all(
        self,
        *,
        after: Position | None = None,
        limit: int = DEFAULT_BATCH_SIZE,
        event_types: Iterable[str] | None = None,
        stream_prefix: str | None = None,
        connection: Any = None,
    ) -> list[RecordedEvent]:
        """Events of every stream in feed order, strictly after ``after``.

        At most ``limit`` events, only those of ``event_types`` (None: all; a
        registered class's aliases match too, see ``EventRegistry.names_for``) in
        streams whose id starts with ``stream_prefix`` (a plain prefix). Fewer
        than ``limit`` events means the reader has reached the visible end. On
        PostgreSQL an event becomes visible once every transaction older than
        its own has ended, so a late commit never lands behind a checkpoint.
        With ``connection=``, the feed as that unit of work sees it, without its
        own uncommitted appends (see the class docstring).
        """
        ...

    def iter_all(
        self,
        *,
        after: Position | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        event_types: Iterable[str] | None = None,
        stream_prefix: str | None = None,
        connection: Any = None,
    ) -> Iterator[RecordedEvent]:
        """Like :meth:`read_all` up to the visible end, in pages of ``batch_size``
        (arguments checked when the call is made)."""
        ...

    def subscribe(
        self,
        *,
        after: Position | None = None,
        event_types: Iterable[str] | None = None,
        stream_prefix: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> Subscription:
        """An iterator that catches up from ``after``, then follows new events.

        Woken by the backend when events are appended, and polling every
        ``poll_interval`` seconds in case a wake-up is lost. Call ``stop()`` or
        ``close()`` (from any thread) or leave its ``with`` block to end it.
        Needs no database connection to be created: on PostgreSQL each read
        borrows a pooled connection, and all the store's subscriptions share
        one listening connection outside the pool. See
        :class:`~eventstore.feed.Subscription` for the errors it retries and
        the ones that end it.
        """
        ...
