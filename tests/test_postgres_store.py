"""Behaviour only the PostgreSQL store has: caller transactions, engines and URLs,
schema and corruption errors, the stored columns, and the wire protocol of an append."""

from __future__ import annotations

import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from psycopg import pq
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import QueuePool

from eventstore import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    ConcurrencyError,
    DeserializationError,
    NewEvent,
    PostgresEventStore,
    SchemaError,
    ValidationError,
)
from eventstore.codec import CborCodec
from eventstore.urls import normalize_url


def _events(count: int, prefix: str = "Tick") -> list[NewEvent]:
    return [NewEvent(prefix, {"n": n}) for n in range(count)]


def _url(url: str, drivername: str, **query: str) -> str:
    parsed = normalize_url(url).set(drivername=drivername)
    if query:
        parsed = parsed.update_query_dict(query)
    return parsed.render_as_string(hide_password=False)


# -- connection=: the caller's transaction --------------------------------------------------------


def test_events_appended_in_a_caller_transaction_are_invisible_until_commit(
    event_store: PostgresEventStore,
) -> None:
    with event_store.engine.connect() as conn, conn.begin():
        version = event_store.append_events(
            "order-1", _events(2), expected_version=NO_STREAM, connection=conn
        )
        assert version == 2
        assert conn.in_transaction()
        assert event_store.stream_version("order-1") == 0
        assert event_store.load_events("order-1") == []
        assert list(event_store.iter_events("order-1")) == []
    assert event_store.stream_version("order-1") == 2
    assert [e.data for e in event_store.load_events("order-1")] == [{"n": 0}, {"n": 1}]


def test_rolling_back_the_caller_transaction_removes_the_events(
    event_store: PostgresEventStore,
) -> None:
    with event_store.engine.connect() as conn:
        transaction = conn.begin()
        event_store.append_events("order-2", _events(3), expected_version=0, connection=conn)
        transaction.rollback()
    assert event_store.stream_version("order-2") == 0
    assert event_store.load_events("order-2") == []
    assert event_store.append_events("order-2", _events(1), expected_version=NO_STREAM) == 1


def test_two_streams_appended_in_one_caller_transaction_commit_or_vanish_together(
    event_store: PostgresEventStore,
) -> None:
    def failing_unit_of_work() -> None:
        with event_store.engine.connect() as conn, conn.begin():
            event_store.append_events("account-a", _events(1), expected_version=0, connection=conn)
            event_store.append_events("account-b", _events(2), expected_version=0, connection=conn)
            raise RuntimeError("unit of work failed")

    with pytest.raises(RuntimeError, match="unit of work failed"):
        failing_unit_of_work()
    assert (event_store.stream_version("account-a"), event_store.stream_version("account-b")) == (
        0,
        0,
    )

    with event_store.engine.connect() as conn, conn.begin():
        event_store.append_events("account-a", _events(1), expected_version=0, connection=conn)
        event_store.append_events("account-b", _events(2), expected_version=0, connection=conn)
    assert (event_store.stream_version("account-a"), event_store.stream_version("account-b")) == (
        1,
        2,
    )


@pytest.mark.parametrize(
    ("stream", "expected"),
    [("existing", 0), ("existing", NO_STREAM), ("existing", 5), ("missing", STREAM_EXISTS)],
    ids=["exact_0", "no_stream", "exact_5", "stream_exists"],
)
def test_a_conflict_in_a_caller_transaction_leaves_the_transaction_usable(
    event_store: PostgresEventStore, stream: str, expected: Any
) -> None:
    event_store.append_events("existing", [NewEvent("Original", {})], expected_version=0)
    with event_store.engine.connect() as conn, conn.begin():
        event_store.append_events("before", _events(1), expected_version=0, connection=conn)
        with pytest.raises(ConcurrencyError) as raised:
            event_store.append_events(
                stream, [NewEvent("Intruder", {})], expected_version=expected, connection=conn
            )
        assert raised.value.expected == expected
        assert raised.value.actual == (1 if stream == "existing" else 0)
        assert conn.execute(text("SELECT 41 + 1")).scalar_one() == 42
        event_store.append_events("after", _events(2), expected_version=0, connection=conn)
    assert event_store.stream_version("before") == 1
    assert event_store.stream_version("after") == 2
    assert [e.event_type for e in event_store.load_events("existing")] == ["Original"]
    assert event_store.stream_version("missing") == 0


def _backend_pid(conn: Connection) -> int:
    return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.01)


def test_losing_a_race_inside_a_caller_transaction_raises_concurrency_error_and_keeps_it_usable(
    event_store: PostgresEventStore,
) -> None:
    """The second writer blocks on the first one's uncommitted row, then hits the
    unique key: a ConcurrencyError, and its transaction is still usable."""
    outcome: dict[str, Any] = {}
    with (
        event_store.engine.connect() as first,
        event_store.engine.connect() as second,
        event_store.engine.connect() as observer,
    ):
        first_transaction = first.begin()
        event_store.append_events("race", _events(1, "First"), expected_version=0, connection=first)
        second_transaction = second.begin()
        second_pid = _backend_pid(second)

        def second_writer() -> None:
            try:
                event_store.append_events(
                    "race", _events(1, "Second"), expected_version=0, connection=second
                )
                outcome["result"] = "appended"
            except BaseException as exc:  # reported to the main thread
                outcome["result"] = exc

        thread = threading.Thread(target=second_writer)
        thread.start()
        try:

            def second_is_waiting_for_a_lock() -> bool:
                observer.rollback()
                wait = observer.execute(
                    text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"),
                    {"pid": second_pid},
                ).scalar()
                return bool(wait == "Lock") or "result" in outcome

            _wait_until(second_is_waiting_for_a_lock, "the second writer waits for the first")
        finally:
            first_transaction.commit()
            thread.join(30)
        assert not thread.is_alive()
        result = outcome["result"]
        assert isinstance(result, ConcurrencyError), repr(result)
        assert (result.stream_id, result.expected, result.actual) == ("race", 0, 1)
        assert second.execute(text("SELECT 1")).scalar_one() == 1
        event_store.append_events("other", _events(1), expected_version=0, connection=second)
        second_transaction.commit()
    assert [e.event_type for e in event_store.load_events("race")] == ["First"]
    assert event_store.stream_version("other") == 1


def test_load_events_with_connection_sees_uncommitted_events_of_that_transaction(
    event_store: PostgresEventStore,
) -> None:
    with event_store.engine.connect() as conn, conn.begin():
        event_store.append_events("order-3", _events(4), expected_version=0, connection=conn)
        loaded = event_store.load_events("order-3", from_version=2, to_version=3, connection=conn)
        assert [(e.version, e.data) for e in loaded] == [(2, {"n": 1}), (3, {"n": 2})]
        assert len(event_store.load_events("order-3", connection=conn)) == 4
        assert event_store.load_events("order-3") == []
        conn.rollback()


def test_save_snapshot_with_connection_sees_uncommitted_events_and_commits_with_them(
    event_store: PostgresEventStore,
) -> None:
    with event_store.engine.connect() as conn:
        with conn.begin():
            event_store.append_events("order-4", _events(3), expected_version=0, connection=conn)
            assert event_store.save_snapshot("order-4", 3, {"count": 3}, connection=conn) is True
            assert event_store.load_snapshot("order-4") is None
        snapshot = event_store.load_snapshot("order-4")
        assert snapshot is not None
        assert (snapshot.version, snapshot.state) == (3, {"count": 3})

        with conn.begin() as transaction:
            event_store.append_events("order-5", _events(2), expected_version=0, connection=conn)
            assert event_store.save_snapshot("order-5", 2, {"count": 2}, connection=conn) is True
            transaction.rollback()
    assert event_store.load_snapshot("order-5") is None
    assert event_store.stream_version("order-5") == 0


def test_save_snapshot_without_connection_cannot_see_uncommitted_events(
    event_store: PostgresEventStore,
) -> None:
    with event_store.engine.connect() as conn, conn.begin():
        event_store.append_events("order-6", _events(2), expected_version=0, connection=conn)
        with pytest.raises(ValidationError):
            event_store.save_snapshot("order-6", 2, {"count": 2})
        conn.rollback()


# -- engines and URLs --------------------------------------------------------------------------


def _queue_pool(engine: Engine) -> QueuePool:
    pool = engine.pool
    assert isinstance(pool, QueuePool)
    return pool


def test_a_store_on_a_shared_engine_uses_it_and_close_leaves_it_open(
    eventstore_database_url: str,
) -> None:
    engine = create_engine(normalize_url(eventstore_database_url), pool_size=2)
    try:
        stream = f"shared-{uuid.uuid4()}"
        with PostgresEventStore(engine) as store:
            assert store.engine is engine
            assert store.append_events(stream, _events(2), expected_version=0) == 2
            pool = _queue_pool(engine)
            assert pool.checkedin() >= 1
            store.close()
        assert engine.pool is pool
        assert pool.checkedin() >= 1
        with engine.connect() as conn:
            count = conn.execute(
                text("SELECT count(*) FROM events WHERE stream_id = :s"), {"s": stream}
            ).scalar_one()
        assert count == 2
        assert PostgresEventStore(engine).stream_version(stream) == 2
    finally:
        engine.dispose()


def test_a_store_built_from_a_url_disposes_its_engine_on_close(
    eventstore_database_url: str,
) -> None:
    store = PostgresEventStore.from_url(eventstore_database_url)
    store.stream_version("anything")
    pool = _queue_pool(store.engine)
    assert pool.checkedin() == 1
    store.close()
    assert store.engine.pool is not pool or pool.checkedin() == 0

    with PostgresEventStore.from_url(eventstore_database_url) as store:
        store.stream_version("anything")
        pool = _queue_pool(store.engine)
        assert pool.checkedin() == 1
    assert store.engine.pool is not pool or pool.checkedin() == 0


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+psycopg"])
def test_from_url_accepts_the_url_forms_people_paste_and_pool_options(
    eventstore_database_url: str, scheme: str
) -> None:
    application_name = f"es-url-{uuid.uuid4().hex[:8]}"
    url = _url(
        eventstore_database_url,
        scheme,
        application_name=application_name,
        connect_timeout="10",
    )
    assert url.startswith(f"{scheme}://")
    with PostgresEventStore.from_url(
        url, pool_size=2, max_overflow=0, pool_pre_ping=True, pool_timeout=10
    ) as store:
        assert store.engine.dialect.driver == "psycopg"
        assert _queue_pool(store.engine).size() == 2
        stream = f"url-{uuid.uuid4()}"
        assert store.append_events(stream, _events(3), expected_version=0) == 3
        assert [e.version for e in store.load_events(stream)] == [1, 2, 3]
        with store.engine.connect() as conn:
            assert conn.execute(text("SHOW application_name")).scalar_one() == application_name


@pytest.mark.parametrize("url", ["mysql://user@localhost/db", "sqlite:///x.db", "", "nonsense"])
def test_from_url_refuses_urls_that_are_not_postgresql(url: str) -> None:
    with pytest.raises(ValidationError):
        PostgresEventStore.from_url(url)


# -- missing schema ------------------------------------------------------------------------------

SCHEMA_OPERATIONS: dict[str, Callable[[PostgresEventStore], Any]] = {
    "append_events": lambda s: s.append_events("s", _events(1), expected_version=ANY),
    "append_events_exact": lambda s: s.append_events("s", _events(1), expected_version=0),
    "load_events": lambda s: s.load_events("s"),
    "iter_events": lambda s: list(s.iter_events("s")),
    "stream_version": lambda s: s.stream_version("s"),
    "save_snapshot": lambda s: s.save_snapshot("s", 1, {"state": 1}),
    "load_snapshot": lambda s: s.load_snapshot("s"),
}


@pytest.mark.parametrize("operation", list(SCHEMA_OPERATIONS.values()), ids=list(SCHEMA_OPERATIONS))
def test_missing_tables_raise_schema_error_saying_to_run_alembic_upgrade_head(
    scratch_database_url: str, operation: Callable[[PostgresEventStore], Any]
) -> None:
    with (
        PostgresEventStore.from_url(scratch_database_url) as store,
        pytest.raises(SchemaError, match="eventstore migrate upgrade"),
    ):
        operation(store)


def test_missing_tables_raise_schema_error_inside_a_caller_transaction(
    scratch_database_url: str,
) -> None:
    with PostgresEventStore.from_url(scratch_database_url) as store:
        with (
            store.engine.connect() as conn,
            conn.begin(),
            pytest.raises(SchemaError, match="eventstore migrate upgrade"),
        ):
            store.append_events("s", _events(1), expected_version=0, connection=conn)
        with (
            store.engine.connect() as conn,
            conn.begin(),
            pytest.raises(SchemaError, match="eventstore migrate upgrade"),
        ):
            store.load_events("s", connection=conn)


# -- corrupt rows written behind the library's back ----------------------------------------------


def _insert_raw_event(
    store: PostgresEventStore, stream_id: str, version: int, event_type: str, data: bytes
) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO events (stream_id, version, event_type, event_data) "
                "VALUES (:s, :v, :t, :d)"
            ),
            {"s": stream_id, "v": version, "t": event_type, "d": data},
        )


@pytest.mark.parametrize(
    "garbage",
    [b"\xff", b"\x9f", b"\x82\x01", b""],
    ids=["break", "open_array", "truncated", "empty"],
)
def test_a_row_that_is_not_cbor_raises_deserialization_error_naming_the_event(
    event_store: PostgresEventStore, garbage: bytes
) -> None:
    event_store.append_events("corrupt-7", [NewEvent("Fine", {"ok": True})], expected_version=0)
    _insert_raw_event(event_store, "corrupt-7", 2, "BrokenThing", garbage)

    def assert_names_the_event(error: DeserializationError) -> None:
        message = str(error)
        assert "corrupt-7" in message
        assert re.search(r"\b2\b", message), message
        assert "BrokenThing" in message

    with pytest.raises(DeserializationError) as raised:
        event_store.load_events("corrupt-7")
    assert_names_the_event(raised.value)

    seen: list[int] = []

    def consume() -> None:
        for event in event_store.iter_events("corrupt-7", batch_size=1):
            seen.append(event.version)

    with pytest.raises(DeserializationError) as raised:
        consume()
    assert_names_the_event(raised.value)
    assert seen == [1]

    assert [e.data for e in event_store.load_events("corrupt-7", to_version=1)] == [{"ok": True}]


def test_a_corrupt_snapshot_row_raises_deserialization_error(
    event_store: PostgresEventStore,
) -> None:
    event_store.append_events("corrupt-snap", _events(1), expected_version=0)
    with event_store.engine.begin() as conn:
        conn.execute(
            text("INSERT INTO snapshots (stream_id, version, state_data) VALUES (:s, 1, :d)"),
            {"s": "corrupt-snap", "d": b"\x9f\x01"},
        )
    with pytest.raises(DeserializationError, match="corrupt-snap"):
        event_store.load_snapshot("corrupt-snap")


# -- what is stored ------------------------------------------------------------------------------


def _raw_rows(store: PostgresEventStore, stream_id: str) -> list[Any]:
    with store.engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT version, event_type, event_data, metadata, metadata IS NULL, "
                    "jsonb_typeof(metadata), created_at FROM events "
                    "WHERE stream_id = :s ORDER BY version"
                ),
                {"s": stream_id},
            )
        )


def test_stored_columns_hold_the_cbor_bytes_and_the_jsonb_metadata(
    event_store: PostgresEventStore,
) -> None:
    payload = {"sku": "A-1", "qty": 2, "tags": ["x", "y"], "raw": b"\x00\x01", "big": 2**70}
    metadata = {
        "correlation_id": "c-1",
        "causation_id": None,
        "nested": {"list": [1, 2.5, True, None, "é"], "empty": {}},
    }
    event_store.append_events(
        "stored-1",
        [NewEvent("Placed", payload, metadata), NewEvent("Bare", [1, 2])],
        expected_version=0,
    )
    first, second = _raw_rows(event_store, "stored-1")
    assert first.version == 1
    assert first.event_type == "Placed"
    assert bytes(first.event_data) == CborCodec().encode(payload)
    assert first.metadata == metadata
    assert first.jsonb_typeof == "object"
    assert second.event_type == "Bare"
    assert bytes(second.event_data) == CborCodec().encode([1, 2])
    assert second[4] is True  # metadata IS NULL: SQL NULL, not JSON null


def test_empty_metadata_is_stored_as_an_empty_object(event_store: PostgresEventStore) -> None:
    event_store.append_events("stored-2", [NewEvent("E", {}, {})], expected_version=0)
    (row,) = _raw_rows(event_store, "stored-2")
    assert (row.metadata, row.jsonb_typeof) == ({}, "object")
    assert event_store.load_events("stored-2")[0].metadata == {}


def test_created_at_is_the_server_transaction_time_shared_by_a_batch(
    event_store: PostgresEventStore,
) -> None:
    with event_store.engine.connect() as conn, conn.begin():
        transaction_time = conn.execute(text("SELECT now()")).scalar_one()
        event_store.append_events("stored-3", _events(3), expected_version=0, connection=conn)
    rows = _raw_rows(event_store, "stored-3")
    assert [row.created_at for row in rows] == [transaction_time] * 3
    assert [e.created_at for e in event_store.load_events("stored-3")] == [transaction_time] * 3


def test_created_at_of_an_autocommit_batch_is_one_server_timestamp(
    event_store: PostgresEventStore,
) -> None:
    with event_store.engine.connect() as conn:
        before = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
        conn.rollback()
        event_store.append_events("stored-4", _events(5), expected_version=0)
        after = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
        conn.rollback()
    stamps = {row.created_at for row in _raw_rows(event_store, "stored-4")}
    assert len(stamps) == 1
    (stamp,) = stamps
    assert stamp.tzinfo is not None
    assert before <= stamp <= after


# -- the wire: one round trip per append and per load -------------------------------------------


class WireTrace:
    """libpq's protocol trace of one connection, as (direction, message, rest) triples."""

    def __init__(self, lines: list[str]) -> None:
        self.messages = []
        for line in lines:
            parts = line.split("\t")
            # a message starts with its direction; SQL with newlines spills onto more lines
            if parts[0] in ("F", "B") and len(parts) >= 3:
                self.messages.append((parts[0], parts[2], "\t".join(parts[3:]).strip()))

    def _select(self, direction: str, name: str) -> list[str]:
        return [rest for d, message, rest in self.messages if (d, message) == (direction, name)]

    def sent(self, name: str) -> list[str]:
        """What the client sent in each ``name`` message (Parse, Bind, Query ...)."""
        return self._select("F", name)

    def received(self, name: str) -> list[str]:
        """What the server sent in each ``name`` message (ReadyForQuery ...)."""
        return self._select("B", name)


@contextmanager
def traced(engine: Engine) -> Iterator[list[WireTrace]]:
    """Trace the protocol of the single pooled connection of ``engine``."""
    result: list[WireTrace] = []
    with engine.connect() as conn:
        pgconn = conn.connection.driver_connection.pgconn  # type: ignore[union-attr]
    with tempfile.TemporaryFile() as sink:
        pgconn.trace(sink.fileno())
        pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            yield result
        finally:
            pgconn.untrace()
            sink.seek(0)
            result.append(WireTrace(sink.read().decode("utf-8", "replace").splitlines()))


@pytest.fixture
def single_connection_store(eventstore_database_url: str) -> Iterator[PostgresEventStore]:
    engine = create_engine(
        normalize_url(eventstore_database_url), pool_size=1, max_overflow=0, pool_timeout=10
    )
    try:
        yield PostgresEventStore(engine)
    finally:
        engine.dispose()


def test_an_append_without_connection_is_one_round_trip_in_autocommit(
    single_connection_store: PostgresEventStore,
) -> None:
    store = single_connection_store
    stream = f"wire-{uuid.uuid4()}"
    version = 0
    for _ in range(10):  # let the statement be prepared first
        version = store.append_events(stream, _events(3), expected_version=version)

    with traced(store.engine) as trace:
        assert store.append_events(stream, _events(3), expected_version=version) == version + 3
    (wire,) = trace
    assert wire.received("ReadyForQuery") == ["I"], wire.messages
    assert wire.sent("Query") == [], "no BEGIN/COMMIT or other simple queries"
    statements = wire.sent("Parse") + wire.sent("Bind")
    assert statements, wire.messages
    assert not any(re.search(r"\b(BEGIN|COMMIT|SAVEPOINT)\b", s, re.I) for s in statements)
    assert len(wire.received("CommandComplete")) == 1


def test_a_repeated_append_reuses_a_prepared_statement(
    single_connection_store: PostgresEventStore,
) -> None:
    store = single_connection_store
    stream = f"wire-{uuid.uuid4()}"
    version = 0
    for _ in range(10):
        version = store.append_events(stream, _events(2), expected_version=version)
    with traced(store.engine) as trace:
        store.append_events(stream, _events(7), expected_version=version)  # another batch size
    (wire,) = trace
    assert wire.sent("Parse") == [], "the statement was parsed again"
    (bind,) = wire.sent("Bind")
    assert not bind.startswith('"" ""'), f"bound to the unnamed statement: {bind[:80]}"


def test_a_load_without_connection_is_one_round_trip(
    single_connection_store: PostgresEventStore,
) -> None:
    store = single_connection_store
    stream = f"wire-{uuid.uuid4()}"
    store.append_events(stream, _events(5), expected_version=0)
    for _ in range(10):
        store.load_events(stream, from_version=2, to_version=4)
    with traced(store.engine) as trace:
        assert len(store.load_events(stream, from_version=2, to_version=4)) == 3
    (wire,) = trace
    assert wire.received("ReadyForQuery") == ["I"], wire.messages
    assert wire.sent("Query") == []


def test_statements_are_prepared_once_whatever_the_version_numbers(
    single_connection_store: PostgresEventStore,
) -> None:
    """Version numbers of any size reuse the statements prepared for small ones
    (psycopg picks int2/int4/int8/numeric by value, and its prepared-statement
    cache is keyed by parameter types)."""
    store = single_connection_store
    stream = f"wire-{uuid.uuid4()}"
    store.append_events(stream, _events(1), expected_version=0)
    for _ in range(10):  # warm up: small numbers, open range, exact expected version
        store.load_events(stream)
        store.load_events(stream, from_version=1, to_version=1, limit=5)
        store.stream_version(stream)
    with traced(store.engine) as trace:
        store.load_events(stream, from_version=40_000)
        store.load_events(stream, from_version=3_000_000_000, to_version=2**62, limit=70_000)
        store.load_events(stream, from_version=2, to_version=40_000)
    (wire,) = trace
    assert wire.sent("Parse") == []


# -- long streams ---------------------------------------------------------------------------------


def test_iter_events_pages_through_a_long_stream_in_order(
    event_store: PostgresEventStore,
) -> None:
    version = 0
    for _ in range(10):
        events = [NewEvent("Tick", {"n": version + i + 1}) for i in range(500)]
        version = event_store.append_events("long", events, expected_version=version)
    assert version == 5000

    iterator = event_store.iter_events("long", batch_size=100)
    assert iter(iterator) is iterator
    seen = [(e.version, e.data["n"]) for e in iterator]
    assert seen == [(v, v) for v in range(1, 5001)]

    odd_pages = [e.version for e in event_store.iter_events("long", batch_size=333)]
    assert odd_pages == list(range(1, 5001))

    window = event_store.iter_events("long", from_version=4901, to_version=4950, batch_size=7)
    assert [e.version for e in window] == list(range(4901, 4951))

    beyond = event_store.iter_events("long", from_version=4990, batch_size=6000)
    assert [e.version for e in beyond] == list(range(4990, 5001))
