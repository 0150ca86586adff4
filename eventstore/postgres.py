"""The PostgreSQL event store: SQLAlchemy's engine and pool, psycopg 3 underneath.

Without ``connection=``, each call is one prepared statement in autocommit on a
pooled connection: an append checks the expected version and inserts the whole
batch in a single round trip. With ``connection=``, statements run inside the
caller's transaction (an append or a snapshot save inside a savepoint, so a
conflict leaves that transaction usable) and the store neither begins nor commits.

A pooled connection that turns out dead (a server restart, a terminated backend,
a session the server ended for ``idle_session_timeout``) is dropped from the
pool with every connection older than it. Without ``connection=``, a read (and
a snapshot save, an idempotent UPSERT that may then report False for the
snapshot its first run stored) is run once more on a new connection; an append
never is: its outcome is unknown (AppendOutcomeUnknownError). A caller's
connection is never replaced.

Version parameters are always sent as ``Int8``: psycopg otherwise picks int2,
int4 or int8 by value, and each combination of types is prepared separately.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from datetime import datetime
from typing import Any

import psycopg
import psycopg.errors
import sqlalchemy.exc
from psycopg.types.numeric import Int8
from sqlalchemy import create_engine
from sqlalchemy.engine import URL, Connection, Engine

from eventstore._backend import ProjectionSession, SkippedEvent
from eventstore._base import BaseEventStore
from eventstore._engines import check_engine, invalidate_generation
from eventstore._listen import Listener, ListenWaiter
from eventstore._notifier import Notifier
from eventstore._pg_caller import (
    Joined,
    execute,
    in_autocommit,
    join,
    nested,
    reads_from_a_snapshot,
)
from eventstore._pg_projections import PostgresProjectionSession
from eventstore._sql import (
    APPEND,
    APPEND_ONE,
    APPEND_ONE_SILENT,
    APPEND_SILENT,
    DISCARD_SNAPSHOT,
    FEED_HEAD,
    HEAD_IN_TRANSACTION,
    IN_TRANSACTION,
    LOAD_CHECKPOINT,
    LOAD_SKIPPED,
    LOAD_SNAPSHOT,
    LOAD_STREAM,
    READ_ALL,
    READ_ALL_TO_END,
    SAVE_SNAPSHOT,
    SAVE_SNAPSHOT_IN_TRANSACTION,
    STREAM_VERSION,
)
from eventstore._translate import is_connection_lost, translate, translated_errors
from eventstore._validation import EncodedBatch, check_seconds
from eventstore.errors import (
    DEADLOCK_DETAIL,
    STALE_SNAPSHOT_DETAIL,
    ConcurrencyError,
    TransactionConflictError,
    ValidationError,
)
from eventstore.records import ExpectedVersion, Position, StreamState
from eventstore.registry import EventRegistry
from eventstore.urls import normalize_url

_SNAPSHOT_ISOLATION = frozenset({"repeatable read", "serializable"})

POOL_DEFAULTS: dict[str, Any] = {
    "pool_size": 5,
    "max_overflow": 15,
    "pool_timeout": 30,
    "pool_recycle": 1800,
}
"""The engine options :meth:`PostgresEventStore.from_url` uses unless told otherwise
(the operations guide's pool settings)."""

_DATABASE_ERRORS = (psycopg.Error, sqlalchemy.exc.DBAPIError, sqlalchemy.exc.TimeoutError)
"""What the driver and the pool raise; :func:`translate` picks the operational ones."""

_TUPLES_OK = psycopg.pq.ExecStatus.TUPLES_OK
_IDLE = psycopg.pq.TransactionStatus.IDLE

_ONE_ROW_STATEMENTS = frozenset(
    {
        APPEND,
        APPEND_ONE,
        APPEND_SILENT,
        APPEND_ONE_SILENT,
        STREAM_VERSION,
        SAVE_SNAPSHOT,
        DISCARD_SNAPSHOT,
        LOAD_CHECKPOINT,
        FEED_HEAD,
    }
)
"""Statements whose result is one small row. Without a caller's connection they run
on a cursor kept with the pooled connection (building a psycopg cursor costs
about as much Python as the rest of an append); the others get a new cursor each
time, so a large result is not held between calls."""

_RERUNNABLE = frozenset(
    {
        LOAD_STREAM,
        READ_ALL,
        READ_ALL_TO_END,
        STREAM_VERSION,
        LOAD_SNAPSHOT,
        LOAD_CHECKPOINT,
        LOAD_SKIPPED,
        SAVE_SNAPSHOT,
        DISCARD_SNAPSHOT,
    }
)
"""Statements run once more on a new connection when their pooled connection was
lost: the reads, the snapshot UPSERT (running it twice keeps the same snapshot;
the second run may report False, "a snapshot as new is kept", for the snapshot
the first run stored) and the snapshot DELETE (the second run may report False,
"there was none", for the snapshot the first run deleted). Never an append."""

_CURSOR_KEY = "eventstore.cursor"
"""Where a pooled connection's kept cursor lives in its ``info`` (which SQLAlchemy
clears when it replaces the driver connection)."""

_ANY_RETRIES = 100
"""How often an ``ANY`` append is retried after losing a race (nothing was written)."""

Row = Sequence[Any]


class PostgresEventStore(BaseEventStore):
    """An event store in PostgreSQL's ``events`` and ``snapshots`` tables.

    Build it with :meth:`from_url` (the store owns its engine; :meth:`close`
    disposes it) or hand it the application's :class:`~sqlalchemy.engine.Engine`
    (shared; closing the store leaves it alone). Thread-safe: share one store.

    ``notify`` (default True): subscriptions in any process wake within
    milliseconds of a commit. An append without ``connection=`` commits without
    a NOTIFY and then signals the store's notifier, a background thread with one
    connection of its own (outside the pool, opened at the first append,
    closed by :meth:`close`) that sends one NOTIFY per burst, at most one every
    few milliseconds however many appends: concurrent appenders never hold
    PostgreSQL's notification lock, so their commits share WAL flushes. An
    append with ``connection=`` sends its NOTIFY inside the caller's
    transaction, so it wakes subscribers when that transaction commits (and
    never if it rolls back). ``notify=False``: no wake-ups at all (no notifier,
    no NOTIFY); subscriptions then see new events within their
    ``poll_interval``. Either way a subscription polls, so a lost wake-up delays
    an event but never loses it.
    """

    def __init__(
        self, engine: Engine, registry: EventRegistry | None = None, *, notify: bool = True
    ) -> None:
        super().__init__(registry)
        self.engine = check_engine(engine)
        self._owns_engine = False
        self._listener = Listener(self.engine)
        _reset_pool_in_forked_children(self)
        self.notify = _check_notify(notify)
        # Inside a caller's transaction the NOTIFY goes with the commit; in
        # autocommit the notifier sends it after the commit (None: no wake-ups).
        self._notifier: Notifier | None = None
        if notify:
            notifier = self._notifier = Notifier(self.engine)
            weakref.finalize(self, notifier.close)
        self._caller_append_one, self._caller_append_many = (
            (APPEND_ONE, APPEND) if notify else (APPEND_ONE_SILENT, APPEND_SILENT)
        )

    @classmethod
    def from_url(
        cls,
        url: str | URL,
        registry: EventRegistry | None = None,
        *,
        statement_timeout: float | None = None,
        lock_timeout: float | None = None,
        notify: bool = True,
        **pool_options: Any,
    ) -> PostgresEventStore:
        """A store with its own engine for ``url`` (``postgres://``, ``postgresql://``
        or ``postgresql+psycopg://``, query options passed to libpq).

        ``statement_timeout`` and ``lock_timeout`` (seconds; None keeps the
        server's setting, 0 turns the limit off) are set on every connection of
        the store, through libpq's ``options`` (added to any ``options`` in the
        URL or in ``connect_args``). A statement that runs, or waits for a lock,
        longer than that is cancelled, writes nothing and raises
        :class:`~eventstore.errors.OperationTimeoutError`.

        ``notify``: see the class docstring.

        ``pool_options`` go to :func:`sqlalchemy.create_engine` and override the
        defaults, which follow the operations guide: ``pool_size=5``,
        ``max_overflow=15`` (20 connections at most), ``pool_timeout=30``,
        ``pool_recycle=1800``. Pass ``pool_pre_ping=True`` to test each pooled
        connection before use (one extra round trip per call).

        Raises :class:`~eventstore.errors.ValidationError` for a bad URL or timeout.
        """
        parsed = normalize_url(url)
        _check_notify(notify)
        settings = {
            name: _milliseconds(value, name)
            for name, value in (
                ("statement_timeout", statement_timeout),
                ("lock_timeout", lock_timeout),
            )
            if value is not None
        }
        options = {**POOL_DEFAULTS, **pool_options}
        if settings:
            options["connect_args"] = _with_settings(parsed, options.get("connect_args"), settings)
        store = cls(create_engine(parsed, **options), registry, notify=notify)
        store._owns_engine = True
        return store

    def _release(self) -> None:
        """Stop the listener and the notifier; dispose the engine if this store
        built it (a shared engine is left open)."""
        self._listener.close()
        if self._notifier is not None:
            self._notifier.close()
        if self._owns_engine:
            self.engine.dispose()

    def __repr__(self) -> str:
        return f"PostgresEventStore({self.engine.url.render_as_string(hide_password=True)!r})"

    # -- storage primitives ---------------------------------------------------------

    def _caller(self, connection: object) -> Joined | None:
        return _join(connection)

    def _nested(self, connection: object) -> AbstractContextManager[Any]:
        with translated_errors(connecting=True):
            return nested(connection)

    def _append(
        self,
        stream_id: str,
        batch: EncodedBatch,
        expected_version: ExpectedVersion,
        lowest: int,
        highest: int,
        connection: object,
    ) -> int:
        """See :meth:`BaseEventStore._append`. Inside the caller's transaction a
        conflict leaves that transaction usable (the append's savepoint is rolled
        back); a deadlock, or a snapshot older than the stream's head (REPEATABLE
        READ, SERIALIZABLE), is a ConcurrencyError whose ``detail`` says to roll
        back and retry the whole transaction, and whose ``actual`` is the
        stream's committed version."""
        caller = _join(connection)
        params: dict[str, Any] = {
            "stream_id": stream_id,
            "lowest": Int8(lowest),
            "highest": Int8(highest),
        }
        if len(batch) == 1:
            statement = APPEND_ONE_SILENT if caller is None else self._caller_append_one
            params.update(type=batch.event_types[0], data=batch.data[0], metadata=batch.metadata[0])
        else:
            statement = APPEND_SILENT if caller is None else self._caller_append_many
            params.update(types=batch.event_types, data=batch.data, metadata=batch.metadata)
        if caller is not None and reads_from_a_snapshot(caller):
            statement = IN_TRANSACTION[statement]
        for _ in range(_ANY_RETRIES):
            try:
                new_version, head, in_order, _ = self._execute(
                    statement, params, caller, savepoint=True
                )[0]
            except psycopg.errors.UniqueViolation:
                # A racing writer committed the same versions first; our statement
                # wrote nothing. With ANY, try again on top of the new head (unless
                # the transaction's snapshot cannot see it: then that cannot help).
                conflict = self._conflict(stream_id, expected_version, caller)
                if expected_version is StreamState.ANY and conflict.detail is None:
                    continue
                raise conflict from None
            except TransactionConflictError as failure:
                # A serialization failure or a deadlock wrote nothing. In autocommit
                # the statement is its own transaction: simply run it again.
                if caller is None:
                    continue
                raise self._conflict(
                    stream_id, expected_version, caller, detail=_rollback_detail(failure)
                ) from failure.__cause__
            if new_version is not None:
                if caller is None and self._notifier is not None:
                    self._notifier.signal()  # committed: wake subscribers, off the commit path
                return int(new_version)
            if in_order or not lowest <= head <= highest:
                if caller is None:
                    raise ConcurrencyError(stream_id, expected_version, head)
                raise self._conflict(stream_id, expected_version, caller)
            if caller is None:
                continue  # a new autocommit transaction draws a newer id
            raise TransactionConflictError.for_stream(
                stream_id,
                expected_version,
                head,
                "a transaction newer than yours appended to this stream after yours "
                "began writing; roll back and retry the whole transaction",
            )
        raise self._conflict(stream_id, expected_version, caller)

    def _conflict(
        self,
        stream_id: str,
        expected: Any,
        connection: object,
        *,
        detail: str | None = None,
    ) -> ConcurrencyError:
        """The ConcurrencyError for a conflict just met, with the stream's version.

        Inside the caller's transaction at REPEATABLE READ or SERIALIZABLE, the
        version the transaction sees may be older than the stream's: then
        ``actual`` is the committed version (read outside the transaction) and
        ``detail`` says the snapshot is stale, unless a ``detail`` is given.
        """
        caller = _join(connection)
        if caller is None:
            actual = self._stream_version(stream_id, None)
        else:
            seen, isolation = self._execute(HEAD_IN_TRANSACTION, {"stream_id": stream_id}, caller)[
                0
            ]
            actual = int(seen)
            if isolation in _SNAPSHOT_ISOLATION:
                committed = self._stream_version(stream_id, None)
                if detail is None and committed > actual:
                    detail = STALE_SNAPSHOT_DETAIL
                actual = max(committed, actual)
        if detail is None:
            return ConcurrencyError(stream_id, expected, actual)
        return TransactionConflictError.for_stream(stream_id, expected, actual, detail)

    def _load_rows(
        self, stream_id: str, low: int, high: int, limit: int | None, connection: object
    ) -> list[Row]:
        caller = _join(connection)
        params = {
            "stream_id": stream_id,
            "low": Int8(low),
            "high": Int8(high),
            "limit": None if limit is None else Int8(limit),
        }
        return self._execute(LOAD_STREAM, params, caller)

    def _stream_version(self, stream_id: str, connection: object) -> int:
        caller = _join(connection)
        return int(self._execute(STREAM_VERSION, {"stream_id": stream_id}, caller)[0][0])

    def _save_snapshot(
        self, stream_id: str, version: int, state: bytes, connection: object
    ) -> tuple[bool, int]:
        """See :meth:`BaseEventStore._save_snapshot`. Inside the caller's
        transaction: in a savepoint (a failure leaves the transaction usable),
        the head row locked, and a serialization failure or deadlock raised as
        the ConcurrencyError an append would raise (``expected`` is ``version``)."""
        caller = _join(connection)
        params = {"stream_id": stream_id, "version": Int8(version), "state": state}
        # Inside the caller's transaction, in a savepoint: a failed save (a snapshot
        # is a cache) leaves that transaction usable. (Without one, no savepoint:
        # ``_execute`` would take the statement for an append.)
        if caller is None:
            written, head = self._execute(SAVE_SNAPSHOT, params, None)[0]
            return bool(written), int(head)
        statement = SAVE_SNAPSHOT_IN_TRANSACTION if reads_from_a_snapshot(caller) else SAVE_SNAPSHOT
        try:
            written, head = self._execute(statement, params, caller, savepoint=True)[0]
        except TransactionConflictError as failure:
            raise self._conflict(
                stream_id, version, caller, detail=_rollback_detail(failure)
            ) from failure.__cause__
        return bool(written), int(head)

    def _load_snapshot(
        self, stream_id: str, connection: object
    ) -> tuple[int, bytes, datetime] | None:
        rows = self._execute(LOAD_SNAPSHOT, {"stream_id": stream_id}, _join(connection))
        return None if not rows else (rows[0][0], rows[0][1], rows[0][2])

    def _delete_snapshot(self, stream_id: str, connection: object) -> bool:
        """See :meth:`BaseEventStore._delete_snapshot`. Inside the caller's
        transaction, in a savepoint: a failure leaves that transaction usable."""
        caller = _join(connection)
        params = {"stream_id": stream_id}
        # (Without a caller, no savepoint: ``_execute`` would take it for an append.)
        return bool(self._execute(DISCARD_SNAPSHOT, params, caller, savepoint=caller is not None))

    def _feed_rows(
        self,
        after: Position | None,
        limit: int,
        event_types: list[str] | None,
        stream_prefix: str | None,
        connection: object,
    ) -> tuple[list[Row], Position | None]:
        caller = _join(connection)
        params = {
            "after_xid": "0" if after is None else str(after.transaction_id),
            "after_position": Int8(0 if after is None else after.sequence),
            "types": event_types,
            "prefix": stream_prefix,
            "limit": Int8(limit),
        }
        if event_types is None and stream_prefix is None:
            return self._execute(READ_ALL, params, caller), None
        rows = self._execute(READ_ALL_TO_END, params, caller)
        page = [row[:-2] for row in rows if row[0] is not None]
        if not rows or len(page) == limit:
            return page, None
        return page, Position(rows[0][-2], rows[0][-1])

    def _feed_head(self) -> Position | None:
        rows = self._execute(FEED_HEAD, {}, None)
        return Position(rows[0][0], rows[0][1]) if rows else None

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A connection in a transaction of its own (``engine.begin()``): it
        commits when the block ends and rolls back when it raises; see
        :meth:`BaseEventStore.transaction`. Your own statements may run on it
        too, so events commit together with your rows. Failures to connect,
        begin or commit raise the library's errors; what the block raises (your
        own statements' errors among them) propagates as it was raised."""
        self.lifecycle.check_open()
        database = self.engine.url.database
        with translated_errors(connecting=True, database=database):
            connection = self.engine.connect()
        with connection:
            with translated_errors(database=database):
                transaction = connection.begin()
            try:
                yield connection
            except BaseException:
                if transaction.is_active:
                    with suppress(sqlalchemy.exc.SQLAlchemyError):
                        transaction.rollback()  # a dead connection is rolled back already
                raise
            with translated_errors(database=database):
                transaction.commit()

    def _waiter(self) -> ListenWaiter:
        """A waiter on the store's one listening connection (outside the pool),
        started with the first waiter and stopped when the last is closed."""
        return self._listener.waiter()

    def _projection_session(self, name: str) -> ProjectionSession:
        self.lifecycle.check_open()
        with translated_errors(connecting=True, database=self.engine.url.database):
            return PostgresProjectionSession(
                self.engine,
                self._execute,
                lambda connection, after, limit, types: self._feed_page(
                    after, limit, types, None, connection
                ),
                name,
            )

    def _projection_checkpoint(self, name: str) -> Position | None:
        rows = self._execute(LOAD_CHECKPOINT, {"name": name}, None)
        return Position(rows[0][0], rows[0][1]) if rows else None

    def _skipped_events(self, name: str) -> list[SkippedEvent]:
        return [
            SkippedEvent(name, Position(xid, sequence), stream_id, version, type_, error, at)
            for xid, sequence, stream_id, version, type_, error, at in self._execute(
                LOAD_SKIPPED, {"name": name}, None
            )
        ]

    # -- plumbing ---------------------------------------------------------------------

    def _execute(
        self,
        sql: str,
        params: dict[str, Any],
        connection: Joined | None,
        *,
        savepoint: bool = False,
    ) -> list[Row]:
        """Run one statement and return its rows.

        Without ``connection``: prepared, in autocommit, on a pooled driver
        connection (one round trip). With it (already :func:`join`-ed): inside the
        caller's transaction, in a savepoint when asked (appends do). Operational
        failures come out as the library's errors (see ``_translate``); others as
        psycopg raised them.
        Raises :class:`StoreClosedError` once the store is closed.
        """
        self.lifecycle.check_open()
        if connection is None:
            return self._fetch_autocommit(
                sql, params, params.get("stream_id") if savepoint else None
            )
        with translated_errors(database=self.engine.url.database):
            if savepoint and isinstance(connection, Connection) and in_autocommit(connection):
                raise ValidationError(
                    "connection is in AUTOCOMMIT (isolation_level='AUTOCOMMIT'): a write "
                    "through it could not be all or nothing with your other statements; pass "
                    "a connection in a transaction (store.transaction() yields one), or leave "
                    "out connection= to let the store commit it on its own; nothing was written"
                )
            return execute(connection, sql, params, savepoint=savepoint)

    def _fetch_autocommit(
        self, sql: str, params: dict[str, Any], append_to: str | None, *, retry: bool = True
    ) -> list[Row]:
        """The hot path: ``sql`` prepared, in autocommit, on a pooled driver connection.

        Written out flat (no context managers) because it runs on every call
        without a caller's connection; ``append_to`` names the stream when the
        statement is an append (a lost connection then leaves its outcome unknown).

        A lost connection is dropped from the pool, with every connection opened
        before it (a server restart ended them all). A statement that may run
        twice (:data:`_RERUNNABLE`: reads and the snapshot UPSERT) is then run
        once more on a new connection, so the dead pooled connection a restart or
        ``idle_session_timeout`` left behind costs the caller nothing; an append
        never is (its outcome is unknown: AppendOutcomeUnknownError).
        """
        pool = self.engine.pool
        database = self.engine.url.database
        try:
            pooled = pool.connect()
        except _DATABASE_ERRORS as exc:
            error = translate(exc, connecting=True, database=database)
            if error is None:
                raise
            raise error from exc
        driver: psycopg.Connection[Any] = pooled.driver_connection  # type: ignore[assignment]
        was_autocommit = driver.autocommit
        try:
            if not was_autocommit:
                if driver.info.transaction_status != _IDLE:
                    driver.rollback()  # left in a transaction by its last user
                driver.autocommit = True
            if sql in _ONE_ROW_STATEMENTS:
                cursor = pooled.info.get(_CURSOR_KEY)
                if cursor is None:
                    cursor = pooled.info[_CURSOR_KEY] = driver.cursor()
                cursor.execute(sql, params, prepare=True)
            else:
                cursor = driver.execute(sql, params, prepare=True)
            result = cursor.pgresult
            if result is None or result.status != _TUPLES_OK:
                return []
            return cursor.fetchall()
        except _DATABASE_ERRORS as exc:
            lost = driver.closed or driver.broken or is_connection_lost(exc)
            if lost:
                invalidate_generation(pool, pooled, exc)
            if not (lost and retry and append_to is None and sql in _RERUNNABLE):
                error = translate(exc, append_to=append_to, database=database)
                if error is None:
                    raise
                raise error from exc
        finally:
            if not was_autocommit and not driver.closed:
                driver.autocommit = False
            if self._owns_engine and self.lifecycle.closed:
                # Closed while this call ran: the engine's pool was disposed, so the
                # connection is closed here rather than kept by a pool nobody uses.
                pooled.invalidate()
            pooled.close()
        return self._fetch_autocommit(sql, params, append_to, retry=False)


def _join(connection: object) -> Joined | None:
    """The caller's ``connection=`` as the connection its statements run on (None: none);
    a Session that cannot begin its transaction raises the library's error."""
    if connection is None:
        return None
    with translated_errors(connecting=True):
        return join(connection)


def _rollback_detail(failure: TransactionConflictError) -> str:
    """What to tell the caller whose transaction PostgreSQL failed with ``failure``
    (its ``__cause__`` is psycopg's error)."""
    if isinstance(failure.__cause__, psycopg.errors.DeadlockDetected):
        return DEADLOCK_DETAIL
    return STALE_SNAPSHOT_DETAIL


def _milliseconds(seconds: object, name: str) -> int:
    """``seconds`` as whole milliseconds for a PostgreSQL setting (at least 1 unless 0)."""
    checked = check_seconds(seconds, name, zero_allowed=True)
    return 0 if checked == 0 else max(1, round(checked * 1000))


def _reset_pool_in_forked_children(store: PostgresEventStore) -> None:
    """In a child forked after ``store`` was built (a pre-forking web server, a
    multiprocessing pool), the pool starts empty: the parent's pooled connections
    are the parent's (two processes on one connection get each other's answers or
    hang). As SQLAlchemy advises, the child forgets them without closing them."""
    if not hasattr(os, "register_at_fork"):
        return
    store_ref = weakref.ref(store)

    def forget_parents_connections() -> None:
        kept = store_ref()
        if kept is not None:
            kept.engine.dispose(close=False)

    os.register_at_fork(after_in_child=forget_parents_connections)


def _check_notify(notify: object) -> bool:
    if not isinstance(notify, bool):
        raise ValidationError(f"notify must be True or False, not {notify!r}")
    return notify


def _with_settings(url: URL, connect_args: object, settings: dict[str, int]) -> dict[str, Any]:
    """``connect_args`` with ``-c name=value`` added to libpq's ``options``.

    ``connect_args`` replace the URL's query options, so existing ``options``
    come from ``connect_args`` if given there, else from the URL.
    """
    if connect_args is None:
        connect_args = {}
    if not isinstance(connect_args, dict):
        raise ValidationError(f"connect_args must be a dict, not {type(connect_args).__name__}")
    existing = connect_args.get("options", url.query.get("options", ""))
    if isinstance(existing, tuple):
        existing = " ".join(existing)
    added = " ".join(f"-c {name}={value}ms" for name, value in settings.items())
    return {**connect_args, "options": f"{existing} {added}".strip()}
