"""Fixtures of the order service's tests.

The database is the one in ``DATABASE_URL`` (its tables are emptied: point it at
a test database). Two styles of test:

* ``client``: requests commit for real, as in production, and the tests read the
  database directly to check what was committed; every table is emptied before
  each test.
* ``rolled_back_client``: everything the test does runs inside the plugin's
  ``eventstore_connection`` transaction, rolled back at the end: nothing to empty,
  and fast. Flask-SQLAlchemy's session is joined to that connection with
  ``join_transaction_mode="create_savepoint"``, so the app's ``commit()`` and
  rollbacks end savepoints inside it. Projections cannot be tested this way: a
  runner reads the committed feed on connections of its own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from orders import create_app, create_schema
from orders.extensions import db, events
from sqlalchemy import Connection

from eventstore import PostgresEventStore
from eventstore.urls import normalize_url


@pytest.fixture(scope="session")
def eventstore_database_url() -> str:
    """The app's database, with its tables and the store's (this overrides the
    pytest plugin's fixture, so ``event_store``, ``eventstore_connection`` and
    ``rolled_back_event_store`` use the same database as the app)."""
    if not os.environ.get("DATABASE_URL"):
        pytest.skip("set DATABASE_URL to a PostgreSQL test database (its tables are emptied)")
    url = normalize_url(os.environ["DATABASE_URL"]).render_as_string(hide_password=False)
    app = create_app({"SQLALCHEMY_DATABASE_URI": url})
    with app.app_context():
        create_schema()
        db.engine.dispose()
    return url


def _test_app(url: str) -> Flask:
    return create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": url})


def _dispose(app: Flask) -> None:
    with app.app_context():
        events.unbound_store.close()
        events.unbound_store.engine.dispose()  # db's engine for the app: the store shares it


@pytest.fixture
def app(event_store: PostgresEventStore, eventstore_database_url: str) -> Iterator[Flask]:
    """The app, on a database whose tables are empty (the plugin's ``event_store``
    empties the store's; the app's own are emptied here)."""
    app = _test_app(eventstore_database_url)
    with app.app_context():
        db.session.execute(db.text("TRUNCATE orders, customer_summaries"))
        db.session.commit()
    yield app
    _dispose(app)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def database(eventstore_database_url: str) -> Iterator[psycopg.Connection]:
    """A connection of the test's own, in autocommit: it sees what was committed."""
    url = normalize_url(eventstore_database_url).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as connection:
        yield connection


@pytest.fixture
def rolled_back_app(
    eventstore_connection: Connection, eventstore_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Flask]:
    """The app, with ``db.session`` (and so the event store's calls) running on
    ``eventstore_connection``, whose transaction is rolled back after the test."""
    app = _test_app(eventstore_database_url)
    with app.app_context():
        # Flask-SQLAlchemy 3 looks its engines up per app: the session binds to the
        # test's connection instead, and joins its transaction with savepoints.
        monkeypatch.setitem(db.engines, None, eventstore_connection)  # type: ignore[arg-type]
    monkeypatch.setitem(db.session.session_factory.kw, "join_transaction_mode", "create_savepoint")
    yield app
    _dispose(app)


@pytest.fixture
def rolled_back_client(rolled_back_app: Flask) -> FlaskClient:
    return rolled_back_app.test_client()
