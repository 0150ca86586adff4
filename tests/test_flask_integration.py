"""The Flask extension, through a real Flask test client against the real database:
events and Flask-SQLAlchemy rows commit together or not at all."""

from __future__ import annotations

import subprocess
import sys
import types
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from flask import Flask, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from eventstore import (
    ANY,
    ConcurrencyError,
    NewEvent,
    PostgresEventStore,
    Repository,
    ValidationError,
    migrations,
)
from eventstore.integrations.flask import (
    EventStoreExtension,
    FlaskExtensionError,
    current_event_store,
)
from eventstore.urls import normalize_url


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Note(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "flask_integration_notes"
    stream_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    text: Mapped[str]


events = EventStoreExtension(db=db)


def noted(text: str = "hello") -> NewEvent:
    return NewEvent("Noted", {"text": text})


def make_app(url: str, extension: EventStoreExtension = events, **config: Any) -> Flask:
    """An app whose routes append an event and add a row in one request."""
    app = Flask(__name__)
    app.config.update(TESTING=True, SQLALCHEMY_DATABASE_URI=url, **config)
    db.init_app(app)
    extension.init_app(app)
    app.register_error_handler(ConcurrencyError, lambda e: ({"error": str(e)}, 409))

    @app.post("/notes/<stream_id>")
    def add_note(stream_id: str) -> dict[str, Any]:
        expected = int(request.args.get("expected", "0"))
        db.session.add(Note(stream_id=stream_id, text="hello"))
        db.session.flush()
        version = extension.store.append_events(stream_id, [noted()], expected_version=expected)
        if request.args.get("fail"):
            raise RuntimeError("failed after appending and writing the row")
        db.session.commit()
        return {"version": version}

    @app.post("/twice/<stream_id>")
    def twice(stream_id: str) -> dict[str, Any]:
        """Two commands on one aggregate in one request, the second loading the first."""
        notes = Repository(extension.store, 0, lambda count, event: count + 1)
        count, version = notes.load(stream_id)
        notes.append(stream_id, [noted("one")], state=count, expected_version=version)
        count, version = notes.load(stream_id)  # sees the uncommitted append
        seen = {"version": version, "stream_version": extension.store.stream_version(stream_id)}
        notes.append(stream_id, [noted("two")], state=count, expected_version=version)
        db.session.commit()
        return seen

    return app


@pytest.fixture
def url(eventstore_database_url: str) -> str:
    return eventstore_database_url


@pytest.fixture
def app(event_store: PostgresEventStore, url: str) -> Iterator[Flask]:
    """The test app on the emptied test database, with an empty notes table."""
    app = make_app(url)
    with app.app_context():
        db.create_all()
        db.session.execute(text(f"TRUNCATE {Note.__tablename__}"))
        db.session.commit()
    yield app
    close(app)


def close(app: Flask) -> None:
    with app.app_context():
        engine = db.engine
        events.unbound_store.close() if app.extensions["eventstore"].extension is events else None
    engine.dispose()


def notes_in(url: str) -> list[str]:
    """The notes committed, read on a connection of the test's own."""
    libpq = normalize_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq) as connection:
        rows = connection.execute(f"SELECT stream_id FROM {Note.__tablename__} ORDER BY 1")
        return [row[0] for row in rows]


def test_a_request_that_commits_keeps_the_event_and_the_row(
    app: Flask, event_store: PostgresEventStore, url: str
) -> None:
    response = app.test_client().post("/notes/note-1")

    assert response.json == {"version": 1}
    assert [e.event_type for e in event_store.load_events("note-1")] == ["Noted"]
    assert notes_in(url) == ["note-1"]


def test_a_request_that_raises_after_both_writes_keeps_neither(
    app: Flask, event_store: PostgresEventStore, url: str
) -> None:
    with pytest.raises(RuntimeError, match="after appending"):
        app.test_client().post("/notes/note-1?fail=1")

    assert event_store.load_events("note-1") == []
    assert notes_in(url) == []


def test_a_conflict_is_a_409_and_the_request_writes_nothing(
    app: Flask, event_store: PostgresEventStore, url: str
) -> None:
    event_store.append_events("note-1", [noted()], expected_version=0)

    # The row is added before the append: the 409 path must not commit it either.
    response = app.test_client().post("/notes/note-1?expected=0")

    assert response.status_code == 409
    assert "note-1" in response.json["error"]  # type: ignore[index]
    assert len(event_store.load_events("note-1")) == 1
    assert notes_in(url) == []


def test_reads_in_a_request_see_its_own_appends_before_the_commit(
    app: Flask, event_store: PostgresEventStore
) -> None:
    response = app.test_client().post("/twice/note-1")

    assert response.json == {"version": 1, "stream_version": 1}
    assert [e.data["text"] for e in event_store.load_events("note-1")] == ["one", "two"]


def test_an_uncommitted_append_is_not_seen_outside_the_session(
    app: Flask, event_store: PostgresEventStore
) -> None:
    with app.app_context():
        events.store.append_events("note-1", [noted()], expected_version=0)
        assert events.store.stream_version("note-1") == 1
        assert event_store.stream_version("note-1") == 0
        assert events.unbound_store.stream_version("note-1") == 0
        db.session.commit()
        assert event_store.stream_version("note-1") == 1


def test_without_joining_the_session_each_call_commits_on_its_own(
    event_store: PostgresEventStore, url: str
) -> None:
    app = make_app(url, EventStoreExtension(db=db), EVENTSTORE_JOIN_SESSION=False)
    try:
        with app.app_context():
            store = app.extensions["eventstore"].extension.store
            assert isinstance(store, PostgresEventStore)
            store.append_events("note-1", [noted()], expected_version=0)
            db.session.rollback()
        assert event_store.stream_version("note-1") == 1
    finally:
        close(app)


def test_one_extension_serves_two_apps_each_on_its_own_database(
    app: Flask, event_store: PostgresEventStore, scratch_database_url: str
) -> None:
    migrations.upgrade(scratch_database_url)
    other = make_app(scratch_database_url)
    try:
        with other.app_context():
            db.create_all()
        for each in (app, other):
            assert each.test_client().post("/notes/note-1").json == {"version": 1}
        with app.app_context():
            first = events.unbound_store
            assert current_event_store() is events.store
        with other.app_context():
            assert events.unbound_store is not first
            assert events.unbound_store.engine is db.engine
            assert events.store.stream_version("note-1") == 1
        assert event_store.stream_version("note-1") == 1
    finally:
        close(other)


def test_a_store_from_eventstore_database_url_is_owned_and_plain(
    event_store: PostgresEventStore, url: str
) -> None:
    own = EventStoreExtension()
    app = Flask(__name__)
    app.config["EVENTSTORE_DATABASE_URL"] = url
    own.init_app(app)
    with app.app_context():
        store = own.store
        assert store is own.unbound_store
        assert store.append_events("note-1", [noted()], expected_version=ANY) == 1
        store.close()
    assert event_store.stream_version("note-1") == 1


def test_the_store_needs_an_application_context(app: Flask) -> None:
    with pytest.raises(FlaskExtensionError, match="app_context"):
        events.store  # noqa: B018
    with pytest.raises(FlaskExtensionError, match="app_context"):
        current_event_store()
    with app.app_context():
        bound = events.store
    with pytest.raises(FlaskExtensionError, match=r"db\.session"):
        bound.stream_version("note-1")


def test_a_store_is_used_in_its_own_apps_context_only(app: Flask, url: str) -> None:
    other = Flask("other")
    other.config.update(SQLALCHEMY_DATABASE_URI=url)
    SQLAlchemy().init_app(other)
    with app.app_context():
        bound = events.store
    with other.app_context(), pytest.raises(FlaskExtensionError, match="another application"):
        bound.stream_version("note-1")


def test_an_app_without_init_app_says_so(url: str) -> None:
    app = Flask(__name__)
    with app.app_context(), pytest.raises(FlaskExtensionError, match="init_app"):
        events.store  # noqa: B018


def test_an_app_of_another_extension_object_says_so(app: Flask) -> None:
    with app.app_context(), pytest.raises(FlaskExtensionError, match="another EventStoreExtension"):
        EventStoreExtension(db=db).store  # noqa: B018


@pytest.mark.parametrize(
    ("extension", "config", "message"),
    [
        (lambda: EventStoreExtension(), {}, "no database"),
        (
            lambda: EventStoreExtension(db=db),
            {"EVENTSTORE_DATABASE_URL": "postgresql://x/y"},
            "both db= and EVENTSTORE_DATABASE_URL",
        ),
        (lambda: EventStoreExtension(db=SQLAlchemy()), {}, "db.init_app"),
    ],
)
def test_set_up_mistakes_are_refused(
    extension: Any, config: dict[str, Any], message: str, url: str
) -> None:
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI=url, **config)
    db.init_app(app)
    with pytest.raises(FlaskExtensionError, match=message):
        extension().init_app(app)
    assert "eventstore" not in app.extensions
    with app.app_context():
        db.engine.dispose()


def test_init_app_twice_is_refused(app: Flask) -> None:
    with pytest.raises(FlaskExtensionError, match="already has an event store"):
        events.init_app(app)


def test_a_postgresql_url_on_psycopg2_is_refused_with_the_url_to_write(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLAlchemy 2.0 reads postgresql:// as psycopg2 (2.1 as psycopg 3). The engine is
    # only built, never connected: a stand-in module will do where psycopg2 is missing.
    psycopg2 = types.ModuleType("psycopg2")
    psycopg2.__version__ = "2.9.9 (dt dec pq3 ext lo64)"  # type: ignore[attr-defined]
    psycopg2.paramstyle = "pyformat"  # type: ignore[attr-defined]
    psycopg2.extras = types.ModuleType("psycopg2.extras")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "psycopg2", psycopg2)
    monkeypatch.setitem(sys.modules, "psycopg2.extras", psycopg2.extras)  # type: ignore[attr-defined]
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = normalize_url(url).set(drivername="postgresql+psycopg2")
    db.init_app(app)

    with pytest.raises(ValidationError, match=r"postgresql\+psycopg://") as refused:
        EventStoreExtension(db=db).init_app(app)

    assert "psycopg2" in str(refused.value)
    assert "SQLALCHEMY_DATABASE_URI" in str(refused.value)


def test_an_engine_not_on_postgresql_is_refused() -> None:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite://"
    db.init_app(app)
    with pytest.raises(ValidationError, match="sqlite"):
        EventStoreExtension(db=db).init_app(app)


def test_importing_eventstore_or_running_its_command_imports_no_framework() -> None:
    check = (
        "import sys\n"
        "import eventstore, eventstore.pytest_plugin\n"
        "from eventstore.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('flask', 'django',"
        " 'flask_sqlalchemy'))\n"
        "print('LOADED', loaded)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True, timeout=60
    )
    assert "LOADED []" in result.stdout, result.stdout + result.stderr
