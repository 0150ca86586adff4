"""The caller's unit of work as applications hold it: a SQLAlchemy Session or
scoped_session (Flask-SQLAlchemy's ``db.session``), a raw psycopg connection
(Django's), and a store bound to one (``store.bind``).

Each test is what an application does in a request: append, read its own
writes, fail or conflict, and commit or roll back; the database is then read
from outside to check that everything committed together or not at all.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from _store_helpers import STORE_KINDS, store_for, wait_for_feed_horizon
from psycopg.types.string import TextLoader
from sqlalchemy import Integer, String, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, scoped_session
from sqlalchemy.orm import sessionmaker as make_sessions

from eventstore import (
    ANY,
    BoundEventStore,
    ConcurrencyError,
    DatabaseUnavailableError,
    EventStoreError,
    InMemoryEventStore,
    NewEvent,
    OperationTimeoutError,
    PostgresEventStore,
    Projection,
    ProjectionRunner,
    Repository,
    StoreClosedError,
    ValidationError,
)

SESSION_KINDS = ["session", "scoped_session"]


class Base(DeclarativeBase):
    pass


class OrderRow(Base):
    """A read-model row of the application, written in the same transaction."""

    __tablename__ = "session_test_orders"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(20))


@pytest.fixture
def orders_table(event_store: PostgresEventStore) -> Iterator[None]:
    Base.metadata.drop_all(event_store.engine)
    Base.metadata.create_all(event_store.engine)
    yield
    Base.metadata.drop_all(event_store.engine)


def noted(n: int) -> NewEvent:
    return NewEvent("Noted", {"n": n}, {"request": f"r{n}"})


@pytest.fixture(params=SESSION_KINDS)
def session(request: pytest.FixtureRequest, event_store: PostgresEventStore) -> Iterator[Any]:
    """What the application holds: a Session, or a scoped_session (db.session)."""
    factory = make_sessions(bind=event_store.engine)
    if request.param == "session":
        plain = factory()
        yield plain
        plain.close()
    else:
        scoped = scoped_session(factory)
        yield scoped
        scoped.remove()


def committed_rows(store: PostgresEventStore) -> tuple[int, int]:
    """(events, order rows) as another connection sees them."""
    with store.engine.connect() as outside:
        events = outside.execute(text("SELECT count(*) FROM events")).scalar_one()
        orders = outside.execute(text("SELECT count(*) FROM session_test_orders")).scalar_one()
    return events, orders


# -- a Session or scoped_session as connection= ---------------------------------------


def test_a_session_is_joined_and_committed_only_by_its_owner(
    event_store: PostgresEventStore, session: Any, orders_table: None
) -> None:
    event_store.append_events("order-1", [noted(1)], expected_version=0, connection=session)
    session.add(OrderRow(id=1, status="placed"))
    session.flush()
    assert committed_rows(event_store) == (0, 0)  # nothing committed by the store
    session.commit()
    assert committed_rows(event_store) == (1, 1)


@pytest.mark.parametrize("failure", ["exception", "conflict"])
def test_a_failed_request_leaves_neither_events_nor_rows(
    event_store: PostgresEventStore, session: Any, orders_table: None, failure: str
) -> None:
    event_store.append_events("order-0", [noted(0)], expected_version=0)  # committed before
    session.add(OrderRow(id=1, status="placed"))
    session.flush()
    event_store.append_events("order-1", [noted(1)], expected_version=0, connection=session)
    if failure == "conflict":
        with pytest.raises(ConcurrencyError):
            event_store.append_events("order-0", [noted(2)], expected_version=0, connection=session)
    # the request ends with an error: its session is rolled back
    session.rollback()
    assert committed_rows(event_store) == (1, 0)
    assert event_store.stream_version("order-1") == 0


def test_a_conflict_leaves_the_session_usable(
    event_store: PostgresEventStore, session: Any, orders_table: None
) -> None:
    event_store.append_events("order-1", [noted(1)], expected_version=0, connection=session)
    with pytest.raises(ConcurrencyError):
        event_store.append_events("order-1", [noted(2)], expected_version=0, connection=session)
    session.add(OrderRow(id=1, status="placed"))
    session.commit()
    assert committed_rows(event_store) == (1, 1)


def test_the_session_transaction_is_begun_when_it_has_none(
    event_store: PostgresEventStore, session: Any
) -> None:
    current = session() if isinstance(session, scoped_session) else session
    assert not current.in_transaction()
    event_store.append_events("order-1", [noted(1)], expected_version=0, connection=session)
    assert current.in_transaction()


def test_every_read_through_a_session_sees_its_own_writes(
    event_store: PostgresEventStore, session: Any
) -> None:
    store = event_store
    store.append_events("s", [noted(1), noted(2)], expected_version=0, connection=session)
    assert store.save_snapshot("s", 2, {"total": 3}, connection=session)

    assert [e.version for e in store.load_events("s", connection=session)] == [1, 2]
    assert [e.version for e in store.iter_events("s", connection=session)] == [1, 2]
    assert store.stream_version("s", connection=session) == 2
    snapshot = store.load_snapshot("s", connection=session)
    assert snapshot is not None
    assert snapshot.state == {"total": 3}
    # Outside the session nothing is there yet.
    assert store.stream_version("s") == 0
    assert store.load_snapshot("s") is None
    assert store.load_events("s") == []


def test_a_delete_through_a_session_shows_in_its_own_snapshot_reads(
    event_store: PostgresEventStore, session: Any
) -> None:
    event_store.append_events("s", [noted(1)], expected_version=0)
    event_store.save_snapshot("s", 1, {"kept": True})
    assert event_store.delete_snapshot("s", connection=session)
    assert event_store.load_snapshot("s", connection=session) is None
    assert event_store.load_snapshot("s") is not None  # not committed yet


def test_repository_load_in_the_same_request_sees_the_first_command(
    event_store: PostgresEventStore, session: Any
) -> None:
    """The bug users met: a second command on one aggregate in one request loaded
    version 0 and failed with a ConcurrencyError no reload could fix."""
    repo: Repository[list[int]] = Repository(event_store, list, lambda s, e: [*s, e.data["n"]])
    state, version = repo.load("cart-1", connection=session)
    state, version = repo.append(
        "cart-1", [noted(1)], state=state, expected_version=version, connection=session
    )
    state, version = repo.load("cart-1", connection=session)
    assert (state, version) == ([1], 1)
    repo.append("cart-1", [noted(2)], state=state, expected_version=version, connection=session)
    session.commit()
    assert repo.load("cart-1") == ([1, 2], 2)


def test_an_iterator_outliving_its_session_transaction_says_so(
    event_store: PostgresEventStore, session: Any
) -> None:
    event_store.append_events("s", [noted(n) for n in range(1, 4)], expected_version=0)
    pages = event_store.iter_events("s", batch_size=1, connection=session)
    assert next(pages).version == 1
    session.commit()  # the transaction the iterator reads through has ended
    with pytest.raises(ValidationError, match="has ended"):
        next(pages)


def test_a_session_whose_connection_the_server_ended_gets_the_library_error(
    event_store: PostgresEventStore, session: Any
) -> None:
    event_store.append_events("s", [noted(1)], expected_version=0, connection=session)
    pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
    with event_store.engine.connect() as admin:
        admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        admin.commit()
    with pytest.raises(DatabaseUnavailableError):
        event_store.append_events("s", [noted(2)], expected_version=1, connection=session)
    session.rollback()
    assert event_store.stream_version("s") == 0
    event_store.append_events("s", [noted(1)], expected_version=0, connection=session)
    session.commit()  # the session goes on with a new connection
    assert event_store.stream_version("s") == 1


def test_repository_any_inside_a_unit_of_work_needs_no_second_connection(
    eventstore_database_url: str, event_store: PostgresEventStore
) -> None:
    """``append(ANY)`` inside a transaction loads the snapshot through it too (it
    used to take a second pooled connection: on a pool of one, a timeout)."""
    event_store.append_events("s", [noted(1)], expected_version=0)
    event_store.save_snapshot("s", 1, [1])
    with PostgresEventStore.from_url(
        eventstore_database_url, pool_size=1, max_overflow=0, pool_timeout=1
    ) as small:
        repo: Repository[list[int]] = Repository(small, list, lambda s, e: [*s, e.data["n"]])
        with small.transaction() as unit:
            assert repo.append("s", [noted(2)], state=[], expected_version=ANY, connection=unit)
            assert repo.load("s", connection=unit) == ([1, 2], 2)
    assert event_store.stream_version("s") == 2


@pytest.mark.parametrize("isolation", ["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"])
def test_a_session_at_every_isolation_level(
    event_store: PostgresEventStore, isolation: str
) -> None:
    engine = event_store.engine.execution_options(isolation_level=isolation)
    with Session(engine) as session:
        event_store.append_events("s", [noted(1)], expected_version=0, connection=session)
        assert event_store.stream_version("s", connection=session) == 1
        with pytest.raises(ConcurrencyError):
            event_store.append_events("s", [noted(2)], expected_version=0, connection=session)
        session.commit()
    assert event_store.stream_version("s") == 1


def test_a_session_whose_flush_failed_is_refused_with_advice(
    event_store: PostgresEventStore, orders_table: None
) -> None:
    with Session(event_store.engine) as session:
        session.add(OrderRow(id=1, status="placed"))
        session.commit()
        session.add(OrderRow(id=1, status="again"))  # duplicate key
        with pytest.raises(Exception, match="duplicate key"):
            session.flush()
        with pytest.raises(ValidationError, match="rollback"):
            event_store.append_events("s", [noted(1)], expected_version=0, connection=session)
        session.rollback()
        event_store.append_events("s", [noted(1)], expected_version=0, connection=session)
        session.commit()
    assert event_store.stream_version("s") == 1


def test_a_session_whose_statement_failed_gets_the_library_error(
    event_store: PostgresEventStore,
) -> None:
    with Session(event_store.engine) as session:
        with pytest.raises(Exception, match="division by zero"):
            session.execute(text("SELECT 1/0"))
        with pytest.raises(EventStoreError, match="roll"):
            event_store.append_events("s", [noted(1)], expected_version=0, connection=session)
        session.rollback()
    assert event_store.stream_version("s") == 0


def test_a_session_bound_to_no_engine_is_refused(event_store: PostgresEventStore) -> None:
    with (
        Session() as session,
        pytest.raises(ValidationError, match="bound to no engine"),
    ):
        event_store.append_events("s", [noted(1)], expected_version=0, connection=session)


@pytest.mark.parametrize("store_kind", STORE_KINDS)
def test_what_cannot_be_joined_is_refused_with_what_to_pass(
    request: pytest.FixtureRequest, store_kind: str
) -> None:
    store = store_for(request, store_kind)
    expected = "Session" if store_kind == "postgres" else "PostgresEventStore"
    calls: list[Callable[[], object]] = [
        lambda: store.append_events("s", [noted(1)], expected_version=0, connection=object()),
        lambda: store.load_events("s", connection=object()),
        lambda: store.iter_events("s", connection=object()),  # at the call, not at next()
        lambda: store.stream_version("s", connection=object()),
        lambda: store.load_snapshot("s", connection=object()),
        lambda: store.read_all(connection=object()),
        lambda: store.iter_all(connection=object()),
        lambda: store.save_snapshot("s", 1, {}, connection=object()),
        lambda: store.delete_snapshot("s", connection=object()),
    ]
    for call in calls:
        with pytest.raises(ValidationError, match=expected):
            call()


# -- the feed through a unit of work ---------------------------------------------------


@pytest.mark.parametrize("store_kind", STORE_KINDS)
def test_feed_reads_through_a_unit_of_work_show_committed_events_only(
    request: pytest.FixtureRequest, store_kind: str
) -> None:
    """An event's place in the feed is final only once it commits: a checkpoint
    taken past an uncommitted event could skip an older transaction's events."""
    store = store_for(request, store_kind)
    store.append_events("committed", [noted(1)], expected_version=0)
    wait_for_feed_horizon(store)  # other sessions' transactions must not hide it
    with store.transaction() as unit:
        store.append_events("pending", [noted(2)], expected_version=0, connection=unit)
        assert [e.stream_id for e in store.read_all(connection=unit)] == ["committed"]
        assert [e.stream_id for e in store.iter_all(connection=unit)] == ["committed"]


# -- a raw psycopg connection (Django's) ----------------------------------------------


@pytest.fixture
def driver(eventstore_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A psycopg connection with a framework's own loaders for jsonb and timestamptz
    (Django loads jsonb as text, and timestamptz naive when USE_TZ is False)."""
    url = eventstore_database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as connection:
        connection.adapters.register_loader("jsonb", TextLoader)
        connection.adapters.register_loader("timestamptz", TextLoader)
        yield connection


def test_a_psycopg_connection_in_a_transaction_is_joined(
    event_store: PostgresEventStore, driver: psycopg.Connection[Any]
) -> None:
    event_store.append_events("s", [noted(1)], expected_version=0, connection=driver)
    with pytest.raises(ConcurrencyError):
        event_store.append_events("s", [noted(2)], expected_version=0, connection=driver)
    (event,) = event_store.load_events("s", connection=driver)
    assert event.metadata == {"request": "r1"}  # the store's loaders, not the framework's
    assert event.created_at.tzinfo is not None
    assert event_store.stream_version("s") == 0
    driver.execute("SELECT 1")  # still usable after the conflict
    driver.rollback()
    assert event_store.stream_version("s") == 0
    event_store.append_events("s", [noted(1)], expected_version=0, connection=driver)
    driver.commit()
    assert event_store.stream_version("s") == 1


def test_a_failed_statement_leaves_the_psycopg_transaction_usable(
    event_store: PostgresEventStore, driver: psycopg.Connection[Any]
) -> None:
    """A write runs in a savepoint: when it fails (here it waits for another
    writer's lock past lock_timeout), the caller's transaction goes on."""
    driver.execute("SELECT 1")  # the caller's transaction is open
    with event_store.transaction() as other:
        event_store.append_events("s", [noted(1)], expected_version=0, connection=other)
        driver.execute("SET LOCAL lock_timeout = '100ms'")
        with pytest.raises(OperationTimeoutError):
            event_store.append_events("s", [noted(2)], expected_version=0, connection=driver)
        event_store.append_events("t", [noted(3)], expected_version=0, connection=driver)
    driver.commit()
    assert event_store.stream_version("t") == 1


def test_a_psycopg_connection_in_autocommit_commits_each_call(
    event_store: PostgresEventStore, driver: psycopg.Connection[Any]
) -> None:
    driver.autocommit = True
    event_store.append_events("s", [noted(1)], expected_version=0, connection=driver)
    assert event_store.stream_version("s") == 1
    with pytest.raises(ConcurrencyError):
        event_store.append_events("s", [noted(2)], expected_version=0, connection=driver)


def test_a_closed_psycopg_connection_is_refused(
    event_store: PostgresEventStore, driver: psycopg.Connection[Any]
) -> None:
    driver.close()
    with pytest.raises(ValidationError, match="closed"):
        event_store.stream_version("s", connection=driver)


def test_a_psycopg_connection_ended_by_the_server_gives_the_library_error(
    event_store: PostgresEventStore, driver: psycopg.Connection[Any]
) -> None:
    pid = driver.info.backend_pid
    with event_store.engine.connect() as admin:
        admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        admin.commit()
    with pytest.raises(DatabaseUnavailableError):
        event_store.append_events("s", [noted(1)], expected_version=0, connection=driver)


# -- a bound store ---------------------------------------------------------------------


@pytest.mark.parametrize("store_kind", STORE_KINDS)
def test_a_bound_store_runs_every_call_in_the_unit_of_work(
    request: pytest.FixtureRequest, store_kind: str
) -> None:
    store = store_for(request, store_kind)
    with store.transaction() as unit:
        bound = store.bind(unit)
        assert isinstance(bound, BoundEventStore)
        bound.append_events("s", [noted(1)], expected_version=0)
        bound.save_snapshot("s", 1, [1])
        assert bound.stream_version("s") == 1
        assert store.stream_version("s") == 0
        assert bound.load_snapshot("s") is not None
        repo: Repository[list[int]] = Repository(bound, list, lambda s, e: [*s, e.data["n"]])
        assert repo.load("s") == ([1], 1)
    assert store.stream_version("s") == 1


@pytest.mark.parametrize("store_kind", STORE_KINDS)
def test_a_bound_transaction_is_a_savepoint(
    request: pytest.FixtureRequest, store_kind: str
) -> None:
    store = store_for(request, store_kind)
    with store.transaction() as unit:
        bound = store.bind(unit)
        bound.append_events("kept", [noted(1)], expected_version=0)

        def failing_block() -> None:
            with bound.transaction():
                bound.append_events("undone", [noted(2)], expected_version=0)
                bound.save_snapshot("kept", 1, {"n": 1})
                raise RuntimeError("the block failed")

        with pytest.raises(RuntimeError):
            failing_block()
        assert bound.stream_version("undone") == 0
        assert bound.load_snapshot("kept") is None
        with bound.transaction():
            bound.append_events("also-kept", [noted(3)], expected_version=0)
    assert store.stream_version("kept") == 1
    assert store.stream_version("also-kept") == 1
    assert store.stream_version("undone") == 0
    # the stream the undone block reserved is free again
    store.append_events("undone", [noted(4)], expected_version=0)


@pytest.mark.parametrize("store_kind", STORE_KINDS)
def test_closing_a_bound_store_leaves_the_store_open(
    request: pytest.FixtureRequest, store_kind: str
) -> None:
    store = store_for(request, store_kind)
    with store.transaction() as unit:
        bound = store.bind(unit)
        bound.close()
        with pytest.raises(StoreClosedError):
            bound.stream_version("s")
        assert not store.closed
        store.append_events("s", [noted(1)], expected_version=0, connection=unit)


def test_a_bound_store_follows_each_threads_session(event_store: PostgresEventStore) -> None:
    sessions = scoped_session(make_sessions(bind=event_store.engine))
    bound = event_store.bind(sessions)  # called at each call: the thread's own Session
    errors: list[BaseException] = []

    def request(n: int, commit: bool) -> None:
        try:
            bound.append_events(f"order-{n}", [noted(n)], expected_version=0)
            assert bound.stream_version(f"order-{n}") == 1
            sessions.commit() if commit else sessions.rollback()
        except BaseException as error:  # reported below
            errors.append(error)
        finally:
            sessions.remove()

    threads = [threading.Thread(target=request, args=(n, n % 2 == 0)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert [event_store.stream_version(f"order-{n}") for n in range(8)] == [1, 0] * 4


def test_a_bound_function_returning_none_is_refused(event_store: PostgresEventStore) -> None:
    with pytest.raises(ValidationError, match="returned None"):
        event_store.bind(lambda: None).stream_version("s")


@pytest.mark.parametrize("store_kind", STORE_KINDS)
def test_subscriptions_and_runners_of_a_bound_store_follow_the_committed_feed(
    request: pytest.FixtureRequest, store_kind: str
) -> None:
    store = store_for(request, store_kind)
    seen: list[str] = []
    store.append_events("committed", [noted(1)], expected_version=0)
    wait_for_feed_horizon(store)
    with store.transaction() as unit:
        bound = store.bind(unit)
        bound.append_events("pending", [noted(2)], expected_version=0)
        runner = ProjectionRunner(
            bound, Projection("seen", lambda event, _: seen.append(event.stream_id))
        )
        runner.run_once()
        runner.close()
        assert bound.feed_head() is not None
    assert seen == ["committed"]
    assert isinstance(store, (PostgresEventStore, InMemoryEventStore))


def test_the_rolled_back_fixture_leaves_nothing_behind(
    pytester: pytest.Pytester, eventstore_database_url: str
) -> None:
    """``rolled_back_event_store``: what a test writes is gone after it."""
    pytester.makepyfile(
        """
        from sqlalchemy import text
        from eventstore import NewEvent

        def test_writes(rolled_back_event_store, eventstore_connection):
            rolled_back_event_store.append_events(
                "fixture-stream", [NewEvent("A", {})], expected_version=0
            )
            assert rolled_back_event_store.stream_version("fixture-stream") == 1
            rows = eventstore_connection.execute(
                text("SELECT count(*) FROM events WHERE stream_id = 'fixture-stream'")
            ).scalar_one()
            assert rows == 1

        def test_then_nothing_is_left(rolled_back_event_store):
            assert rolled_back_event_store.stream_version("fixture-stream") == 0
            assert rolled_back_event_store.store.stream_version("fixture-stream") == 0
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:randomly", f"--eventstore-database-url={eventstore_database_url}"
    )
    result.assert_outcomes(passed=2)
