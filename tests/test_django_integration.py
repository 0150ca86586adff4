"""The Django integration, in a small Django project run by pytest-django in a subprocess.

The project (written to a temporary directory: settings reading the database from
the environment, a ``notes`` app with a model and a projection, and its own tests)
runs against a scratch database of the test server; pytest-django makes its test
database with ``migrate``, so the app's migration is exercised there too. This
process never configures Django: the rest of the suite is not disturbed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest

from eventstore.urls import normalize_url

SETTINGS = """
import os
from urllib.parse import parse_qs, urlsplit

_url = urlsplit(os.environ["DJANGO_DATABASE_URL"])
SECRET_KEY = "not a secret"
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "eventstore.integrations.django",
    "notes",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _url.path.lstrip("/"),
        "USER": _url.username or "",
        "PASSWORD": _url.password or "",
        "HOST": _url.hostname or parse_qs(_url.query).get("host", [""])[0],
        "PORT": _url.port or parse_qs(_url.query).get("port", [""])[0],
    },
    "lite": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
}
EVENTSTORE = {"DATABASE": "default", "REGISTRY": "notes.events:registry"}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
"""

MODELS = """
from django.db import models


class Note(models.Model):
    title = models.CharField(max_length=100)


class Tally(models.Model):
    event_type = models.CharField(max_length=100, primary_key=True)
    count = models.IntegerField()
"""

MIGRATION = """
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [
        migrations.CreateModel(
            name="Note",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("title", models.CharField(max_length=100)),
            ],
        ),
        migrations.CreateModel(
            name="Tally",
            fields=[
                ("event_type", models.CharField(max_length=100, primary_key=True, serialize=False)),
                ("count", models.IntegerField()),
            ],
        ),
    ]
"""

EVENTS = '''
from dataclasses import dataclass

from eventstore import EventRegistry, Projection

registry = EventRegistry()


@registry.register
@dataclass(frozen=True)
class NoteWritten:
    title: str


def count(event, connection):
    """Exactly once: written through the runner's connection, with its checkpoint."""
    connection.exec_driver_sql(
        "INSERT INTO notes_tally (event_type, count) VALUES (%(type)s, 1) "
        "ON CONFLICT (event_type) DO UPDATE SET count = notes_tally.count + 1",
        {"type": event.event_type},
    )


def clear(connection):
    connection.exec_driver_sql("DELETE FROM notes_tally")


tally = Projection("notes_tally", count, reset=clear)
'''

CONFTEST = '''
import psycopg
import pytest
from django.db import connection

pytest_plugins = ["eventstore.integrations.django.pytest_plugin"]


@pytest.fixture
def committed():
    """Read what is committed in the test database, on a connection of its own."""

    def read(sql, *params):
        settings = connection.settings_dict
        with psycopg.connect(
            dbname=settings["NAME"], user=settings["USER"], password=settings["PASSWORD"],
            host=settings["HOST"], port=settings["PORT"], autocommit=True,
        ) as outside:
            return outside.execute(sql, params).fetchall()

    return read
'''

INNER_TESTS = '''
import contextlib
import datetime
import threading

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.db.migrations.loader import MigrationLoader
from django.test import override_settings
from sqlalchemy import text

from eventstore import (
    NO_STREAM,
    ConcurrencyError,
    NewEvent,
    Repository,
    IntegrationError,
    migrations,
)
from eventstore.integrations.django import get_event_store
from eventstore.integrations.django._borrowed import borrowed_engine
from notes.events import NoteWritten
from notes.models import Note

EVENT_COUNT = "SELECT count(*) FROM events WHERE stream_id = %s"
NOTE_COUNT = "SELECT count(*) FROM notes_note"


def notes_repository(store):
    return Repository(store, list, lambda titles, event: [*titles, event.title])


# -- the schema: made by the app's migration when pytest-django builds the database --


@pytest.mark.django_db
def test_the_test_database_has_the_store_at_head():
    with connection.cursor() as cursor:
        cursor.execute("SELECT version_num FROM eventstore_alembic_version")
        assert cursor.fetchall() == [(migrations.head_revision(),)]


def test_the_last_migration_of_the_app_is_the_library_head():
    loader = MigrationLoader(None, ignore_no_migrations=True)
    (leaf,) = loader.graph.leaf_nodes("eventstore")
    operation = loader.graph.nodes[leaf].operations[-1]
    assert operation.revision == migrations.head_revision(), (
        "a new library revision needs a new Django migration of the app upgrading to it"
    )


@pytest.mark.django_db(databases=["default", "lite"])
def test_the_apps_migration_leaves_other_databases_alone():
    """pytest-django migrated the SQLite alias too: the app's migration did nothing there."""
    from django.db import connections

    tables = connections["lite"].introspection.table_names()
    assert "django_migrations" in tables
    assert "events" not in tables


# -- django_db: the test's transaction, rolled back with the events in it --------------


@pytest.mark.django_db
def test_a_django_db_test_appends_in_its_transaction(django_event_store, committed):
    django_event_store.append_events(
        "rolled-1", [NoteWritten("kept for this test")], expected_version=NO_STREAM
    )
    assert django_event_store.stream_version("rolled-1") == 1
    assert committed(EVENT_COUNT, "rolled-1") == [(0,)]  # not committed: the test's own


@pytest.mark.django_db
def test_the_previous_tests_events_were_rolled_back(django_event_store, committed):
    assert django_event_store.stream_version("rolled-1") == 0
    assert committed(EVENT_COUNT, "rolled-1") == [(0,)]


@pytest.mark.django_db
def test_a_read_in_the_atomic_block_sees_its_append(django_event_store):
    repository = notes_repository(django_event_store)
    with transaction.atomic():
        state, version = repository.load("read-1")
        repository.append("read-1", [NoteWritten("first")], state=state, expected_version=version)
        state, version = repository.load("read-1")  # the second command of the request
        assert (state, version) == (["first"], 1)
        repository.append("read-1", [NoteWritten("second")], state=state, expected_version=version)
        assert repository.load("read-1") == (["first", "second"], 2)


# -- committed writes: transactional_db, read back on a connection of their own --------


@pytest.mark.django_db(transaction=True)
def test_an_atomic_block_commits_the_event_and_the_row_together(
    django_committed_event_store, committed
):
    with transaction.atomic():
        django_committed_event_store.append_events(
            "both-1", [NoteWritten("a")], expected_version=NO_STREAM
        )
        Note.objects.create(title="a")
        assert committed(EVENT_COUNT, "both-1") == [(0,)]
    assert committed(EVENT_COUNT, "both-1") == [(1,)]
    assert committed(NOTE_COUNT) == [(1,)]


@pytest.mark.django_db(transaction=True)
def test_an_exception_after_both_leaves_neither(django_committed_event_store, committed):
    with pytest.raises(RuntimeError), transaction.atomic():
        django_committed_event_store.append_events(
            "neither-1", [NoteWritten("a")], expected_version=NO_STREAM
        )
        Note.objects.create(title="a")
        raise RuntimeError("the request fails after both writes")
    assert committed(EVENT_COUNT, "neither-1") == [(0,)]
    assert committed(NOTE_COUNT) == [(0,)]


@pytest.mark.django_db(transaction=True)
def test_a_conflict_inside_atomic_leaves_the_block_usable(
    django_committed_event_store, committed
):
    store = django_committed_event_store
    store.append_events("conflict-1", [NoteWritten("first")], expected_version=NO_STREAM)
    with transaction.atomic():
        Note.objects.create(title="before")
        with pytest.raises(ConcurrencyError):
            store.append_events("conflict-1", [NoteWritten("again")], expected_version=NO_STREAM)
        Note.objects.create(title="after")
        store.append_events("conflict-1", [NoteWritten("second")], expected_version=1)
    assert committed(EVENT_COUNT, "conflict-1") == [(2,)]
    assert committed("SELECT title FROM notes_note ORDER BY id") == [("before",), ("after",)]


@pytest.mark.django_db(transaction=True)
def test_losing_a_race_inside_atomic_leaves_the_block_usable(
    django_committed_event_store, committed
):
    """The append waits for a racing writer's uncommitted event, then fails on the
    unique key: only the append's savepoint is rolled back, not Django's block."""
    store = django_committed_event_store
    appended, release = threading.Event(), threading.Event()

    def racer():
        with store.store.transaction() as racing:
            store.store.append_events(
                "race-1", [NoteWritten("racer")], expected_version=NO_STREAM, connection=racing
            )
            appended.set()
            release.wait(10)

    thread = threading.Thread(target=racer)
    thread.start()
    assert appended.wait(10)
    threading.Timer(0.5, release.set).start()
    try:
        with transaction.atomic():
            Note.objects.create(title="before")
            with pytest.raises(ConcurrencyError):
                store.append_events("race-1", [NoteWritten("mine")], expected_version=NO_STREAM)
            Note.objects.create(title="after")
            store.append_events("race-1", [NoteWritten("mine")], expected_version=1)
    finally:
        release.set()
        thread.join()
    assert committed(EVENT_COUNT, "race-1") == [(2,)]
    assert committed("SELECT title FROM notes_note ORDER BY id") == [("before",), ("after",)]


@pytest.mark.django_db(transaction=True)
def test_outside_atomic_each_call_commits_on_its_own(django_committed_event_store, committed):
    django_committed_event_store.append_events(
        "auto-1", [NoteWritten("a")], expected_version=NO_STREAM
    )
    assert committed(EVENT_COUNT, "auto-1") == [(1,)]
    assert connection.get_autocommit()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("in_atomic", [False, True], ids=["autocommit", "atomic"])
def test_metadata_and_created_at_round_trip_through_djangos_connection(
    django_committed_event_store, in_atomic
):
    """Django loads jsonb as text and timestamptz with its own loader on its connection."""
    store = django_committed_event_store
    metadata = {"user": "u-1", "attempt": 3, "nested": {"ok": True, "tags": ["a", "b"]}}
    before = datetime.datetime.now(datetime.timezone.utc)
    with transaction.atomic() if in_atomic else contextlib.nullcontext():
        store.append_events(
            "meta-1",
            [NewEvent("NoteWritten", {"title": "m"}, metadata=metadata)],
            expected_version=NO_STREAM,
        )
        (event,) = store.load_events("meta-1")
        (iterated,) = store.iter_events("meta-1")
    for read in (event, iterated):
        assert read.metadata == metadata
        assert isinstance(read.metadata, dict)
        assert read.created_at.tzinfo is not None
        assert abs(read.created_at - before) < datetime.timedelta(minutes=1)
        assert read.data == NoteWritten("m")


@pytest.mark.django_db(transaction=True)
def test_created_at_is_aware_when_django_does_not_use_time_zones(django_committed_event_store):
    """Django's timestamptz loader on its connection drops the time zone when USE_TZ
    is False (local wall time, naive); the store reads created_at as psycopg does."""
    store = django_committed_event_store
    before = datetime.datetime.now(datetime.timezone.utc)
    with override_settings(USE_TZ=False, TIME_ZONE="America/Chicago"):
        connection.close()  # the next connection gets Django's loaders for USE_TZ=False
        store.append_events("naive-1", [NoteWritten("n")], expected_version=NO_STREAM)
        (event,) = store.load_events("naive-1")
        connection.close()
    assert event.created_at.tzinfo is not None
    assert abs(event.created_at - before) < datetime.timedelta(minutes=1)


# -- projections and subscriptions: the committed feed ---------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_projection_command_handles_committed_events_once(
    django_committed_event_store, committed, capsys
):
    store = django_committed_event_store
    with transaction.atomic():
        store.append_events("proj-1", [NoteWritten("a"), NoteWritten("b")], expected_version=0)
    with store.subscribe(poll_interval=0.1) as subscription:  # the feed shows them now
        assert [event.version for _, event in zip(range(2), subscription)] == [1, 2]
    call_command("eventstore_project", "notes.events:tally", "--once")
    call_command("eventstore_project", "notes.events:tally", "--once")
    assert committed("SELECT event_type, count FROM notes_tally") == [("NoteWritten", 2)]
    output = capsys.readouterr().out
    assert "notes_tally: handled 2 events" in output
    assert "notes_tally: handled 0 events" in output
    call_command("eventstore_project", "notes.events:tally", "--reset", "--once")  # a rebuild
    assert "notes_tally: handled 2 events" in capsys.readouterr().out
    assert committed("SELECT event_type, count FROM notes_tally") == [("NoteWritten", 2)]


@pytest.mark.django_db(transaction=True)
def test_a_subscription_follows_what_django_committed(django_committed_event_store):
    store = django_committed_event_store
    with transaction.atomic():
        store.append_events("sub-1", [NoteWritten("a")], expected_version=NO_STREAM)
    with store.subscribe(poll_interval=0.1) as subscription:
        event = next(iter(subscription))
    assert (event.stream_id, event.data) == ("sub-1", NoteWritten("a"))


# -- the borrowed connection Alembic runs on -------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_borrowed_engine_never_ends_djangos_transaction(committed):
    with pytest.raises(RuntimeError), transaction.atomic():
        Note.objects.create(title="django's")
        with borrowed_engine(connection) as engine:
            with engine.connect() as borrowed:
                borrowed.execute(text("INSERT INTO notes_note (title) VALUES ('borrowed')"))
                borrowed.commit()
            with pytest.raises(ZeroDivisionError), engine.begin():
                1 / 0  # SQLAlchemy rolls back its own transaction here
        assert connection.connection.info.transaction_status.name == "INTRANS"
        assert sorted(Note.objects.values_list("title", flat=True)) == ["borrowed", "django's"]
        assert committed(NOTE_COUNT) == [(0,)]
        raise RuntimeError("Django rolls back")
    assert committed(NOTE_COUNT) == [(0,)]
    assert not connection.connection.closed


@pytest.mark.django_db(transaction=True)
def test_alembic_runs_inside_djangos_transaction(committed):
    with pytest.raises(RuntimeError), transaction.atomic():
        with borrowed_engine(connection) as engine:
            migrations.downgrade(engine, "base")
        assert committed("SELECT to_regclass('events') IS NOT NULL") == [(True,)]
        raise RuntimeError("Django rolls back the downgrade")
    assert committed("SELECT version_num FROM eventstore_alembic_version") == [
        (migrations.head_revision(),)
    ]


# -- the command line on the Django database -------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_manage_py_eventstore_doctor_passes(capsys):
    call_command("eventstore", "doctor")  # exits non-zero (SystemExit) on a warning
    assert "overall: pass" in capsys.readouterr().out


@pytest.mark.django_db(transaction=True)
def test_manage_py_eventstore_passes_the_exit_code(capsys):
    with pytest.raises(SystemExit) as exited:
        call_command("eventstore", "migrate", "downgrade")  # refused: needs a revision
    assert exited.value.code == 2


# -- settings mistakes: IntegrationError, saying what to write -------------------------


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"DATABASE": "missing"}, "no database 'missing' in settings.DATABASES"),
        ({"DATABASE": "lite"}, "needs 'django.db.backends.postgresql'"),
        ({"REGISTRY": "notes.nowhere:registry"}, "cannot import 'notes.nowhere'"),
        ({"REGISTRY": "notes.events:missing"}, "has no 'missing'"),
        ({"REGISTRY": "notes.events"}, "must be 'package.module:name'"),
        ({"REGISTRY": "notes.events:tally"}, "not an EventRegistry"),
        ({"NOTIFY": "yes"}, "NOTIFY"),
        ({"DATABSE": "default"}, "unknown keys ['DATABSE']"),
    ],
)
def test_a_bad_setting_is_a_validation_error(setting, message):
    with override_settings(EVENTSTORE=setting), pytest.raises(IntegrationError) as raised:
        get_event_store()
    assert message in str(raised.value)


def test_manage_py_check_reports_a_bad_setting():
    from eventstore.integrations.django.apps import check_settings

    with override_settings(EVENTSTORE={"DATABASE": "lite"}):
        (error,) = check_settings()
    assert error.id == "eventstore.E001"
    assert check_settings() == []
'''

INNER_TEST_COUNT = 29

MANAGE = """
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
from django.core.management import execute_from_command_line

execute_from_command_line(sys.argv)
"""


def write_project(root: Path) -> None:
    """The Django project under ``root``."""
    files = {
        "proj/__init__.py": "",
        "proj/settings.py": SETTINGS,
        "notes/__init__.py": "",
        "notes/models.py": MODELS,
        "notes/events.py": EVENTS,
        "notes/migrations/__init__.py": "",
        "notes/migrations/0001_initial.py": MIGRATION,
        "manage.py": MANAGE,
        "conftest.py": CONFTEST,
        "test_inner.py": INNER_TESTS,
        "pytest.ini": "[pytest]\nDJANGO_SETTINGS_MODULE = proj.settings\n"
        "addopts = -p no:randomly -p no:cacheprovider\n",
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")


def _libpq_url(url: str) -> str:
    return normalize_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _run(args: list[str], cwd: Path, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DJANGO_DATABASE_URL": _libpq_url(database_url)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_django_project_tests_pass(scratch_database_url: str, tmp_path: Path) -> None:
    """pytest-django builds the test database with `migrate` and runs the project's tests."""
    write_project(tmp_path)
    result = _run(["-m", "pytest", "-q", "-p", "no:randomly"], tmp_path, scratch_database_url)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # No warning either: one says when the test database could not be dropped.
    assert f"{INNER_TEST_COUNT} passed in" in output, output


def test_manage_py_migrate_makes_the_store_and_doctor_passes(
    scratch_database_url: str, tmp_path: Path
) -> None:
    write_project(tmp_path)
    migrated = _run(["manage.py", "migrate"], tmp_path, scratch_database_url)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert "Applying eventstore.0001_eventstore_0004... OK" in migrated.stdout
    doctor = _run(["manage.py", "eventstore", "doctor"], tmp_path, scratch_database_url)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "overall: pass" in doctor.stdout
    with psycopg.connect(_libpq_url(scratch_database_url)) as database:
        assert database.execute("SELECT version_num FROM eventstore_alembic_version").fetchall()

    again = _run(["manage.py", "migrate"], tmp_path, scratch_database_url)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "No migrations to apply" in again.stdout

    zero = _run(["manage.py", "migrate", "eventstore", "zero"], tmp_path, scratch_database_url)
    assert zero.returncode == 0, zero.stdout + zero.stderr
    with psycopg.connect(_libpq_url(scratch_database_url)) as database:
        tables = database.execute("SELECT to_regclass('events')").fetchone()
        assert tables == (None,)


@pytest.mark.parametrize("recorded", [True, False], ids=["eventstore-migrate", "app-alembic"])
def test_migrate_leaves_a_store_made_before_the_app_was_installed(
    scratch_database_url: str, tmp_path: Path, recorded: bool
) -> None:
    """Tables made by `eventstore migrate upgrade`, or by the application's own Alembic
    history (the revision then recorded in the application's version table, not the
    library's): Django records its migration and changes nothing."""
    from eventstore import migrations

    migrations.upgrade(scratch_database_url)
    if not recorded:
        with psycopg.connect(_libpq_url(scratch_database_url)) as database:
            database.execute(f"DELETE FROM {migrations.VERSION_TABLE}")
    write_project(tmp_path)
    migrated = _run(["manage.py", "migrate", "eventstore"], tmp_path, scratch_database_url)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert "Applying eventstore.0001_eventstore_0004... OK" in migrated.stdout
    expected = migrations.head_revision() if recorded else None
    assert migrations.current(scratch_database_url) == expected


def test_importing_eventstore_imports_no_web_framework() -> None:
    code = (
        "import sys, eventstore, eventstore.cli\n"
        "from eventstore.cli import main\n"
        "assert main(['--help']) == 0\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'flask'))\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("framework", ["django", "flask"])
def test_the_framework_check_can_fail(framework: str) -> None:
    """The check above sees a framework that is imported."""
    code = (
        f"import sys, {framework}\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'flask'))\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode != 0
