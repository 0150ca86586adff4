"""An application's own Alembic history, set up as the README says, never touches the store.

Real host applications in temporary folders: one made by ``alembic init`` and one
with Flask, Flask-SQLAlchemy and Flask-Migrate (``flask db init``), each with a
model table of its own, on a fresh database whose store schema is at head. Their
real ``alembic revision --autogenerate`` / ``flask db migrate`` runs in a
subprocess, and the revision it writes is read back.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, Text, create_engine, text

from eventstore import migrations, schema
from eventstore.urls import normalize_url

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BIN = Path(sys.executable).parent
TIMEOUT = 300

# Every name of the store's schema, derived from the library's own definitions.
STORE_NAMES = sorted(
    migrations.STORE_TABLES
    | {index.name for table in schema.metadata.tables.values() for index in table.indexes}
    | {c.name for t in schema.metadata.tables.values() for c in t.constraints if c.name}
    | schema.FUNCTIONS
    | set(schema.TRIGGERS)
)

MODELS = '''\
"""The host application's own tables."""

from sqlalchemy import Column, Integer, MetaData, Table, Text

metadata = MetaData()
orders = Table(
    "orders",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("customer", Text, nullable=False),
)
'''

FLASK_APP = '''\
"""A Flask application with Flask-SQLAlchemy and Flask-Migrate, as the README sets it up."""

import os

from flask import Flask
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

from eventstore.migrations import exclude_event_store
from eventstore.urls import normalize_url

app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = normalize_url(os.environ["DATABASE_URL"])
db = SQLAlchemy(app)
migrate = Migrate(app, db, **exclude_event_store())


class Order(db.Model):
    __tablename__ = "orders"
    id = db.Column(db.Integer, primary_key=True)
    customer = db.Column(db.Text, nullable=False)
'''

# What the README tells an application to write (checked to be in it, below).
ENV_IMPORT = "from eventstore.migrations import exclude_event_store"
ENV_OPTIONS = "**exclude_event_store(),"
FLASK_MIGRATE = "Migrate(app, db, **exclude_event_store())"


# -- helpers ------------------------------------------------------------------------------


def run(
    args: list[str], cwd: Path, url: str, *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(cwd)}
    env.pop("FLASK_APP", None)
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    if check:
        assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


def library_revisions() -> set[Path]:
    return set((migrations.script_location() / "versions").glob("*.py"))


@pytest.fixture
def empty_database(scratch_database_url: str) -> Iterator[str]:
    """A fresh, empty database; and a check that the test wrote no revision into
    the library's own folder (removing any, so the package stays as shipped)."""
    before = library_revisions()
    yield scratch_database_url
    stray = library_revisions() - before
    for path in stray:
        path.unlink()
    assert not stray, f"a revision was written into the library's folder: {stray}"


@pytest.fixture
def host_database(empty_database: str) -> str:
    """A fresh database with the store's schema at head, as the README's way
    (``eventstore.migrations.upgrade``) leaves it."""
    migrations.upgrade(empty_database)
    return empty_database


def create_orders_table(url: str) -> None:
    engine = create_engine(normalize_url(url))
    try:
        metadata = MetaData()
        Table(
            "orders",
            metadata,
            Column("id", Integer, primary_key=True),
            Column("customer", Text, nullable=False),
        )
        metadata.create_all(engine)
    finally:
        engine.dispose()


def alembic_host(folder: Path, url: str, *, protected: bool) -> Path:
    """``alembic init`` in ``folder``, its env.py given the application's metadata
    and, when ``protected``, the README's two lines."""
    folder.mkdir()
    (folder / "models.py").write_text(MODELS)
    run([str(BIN / "alembic"), "init", "migrations"], folder, url)
    ini = folder / "alembic.ini"
    rendered = normalize_url(url).render_as_string(hide_password=False).replace("%", "%%")
    ini.write_text(
        re.sub(r"(?m)^sqlalchemy\.url = .*$", f"sqlalchemy.url = {rendered}", ini.read_text())
    )
    env_py = folder / "migrations" / "env.py"
    source = env_py.read_text()
    assert "target_metadata = None" in source
    assert source.count("context.configure(") == 2
    source = source.replace(
        "target_metadata = None", "from models import metadata as target_metadata"
    )
    if protected:
        source = source.replace(
            "from alembic import context", "from alembic import context\n" + ENV_IMPORT
        )
        source = source.replace("context.configure(", "context.configure(\n        " + ENV_OPTIONS)
    env_py.write_text(source)
    return folder


def autogenerate(folder: Path, url: str) -> str:
    run([str(BIN / "alembic"), "revision", "--autogenerate", "-m", "orders"], folder, url)
    (written,) = (folder / "migrations" / "versions").glob("*.py")
    return written.read_text()


def flask_host(folder: Path, url: str) -> Path:
    folder.mkdir()
    (folder / "app.py").write_text(FLASK_APP)
    run([str(BIN / "flask"), "--app", "app", "db", "init"], folder, url)
    return folder


def flask(
    folder: Path, url: str, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return run([str(BIN / "flask"), "--app", "app", "db", *args], folder, url, check=check)


def operations(revision: str) -> list[str]:
    return re.findall(r"\bop\.\w+\([^)]*", revision)


def assert_no_store_name(revision: str) -> None:
    for name in STORE_NAMES:
        assert not re.search(rf"\b{name}\b", revision), f"{name} in the revision:\n{revision}"


# -- the README says it -------------------------------------------------------------------


def test_readme_gives_the_lines_these_tests_use() -> None:
    readme = README.read_text(encoding="utf-8")
    for line in (ENV_IMPORT, ENV_OPTIONS, FLASK_MIGRATE, "normalize_url(os.environ"):
        assert line in readme, line


def test_the_store_names_come_from_the_librarys_schema() -> None:
    assert {
        "events",
        "snapshots",
        "projection_checkpoints",
        "projection_skipped_events",
        "eventstore_alembic_version",
    } <= migrations.STORE_TABLES
    assert {"idx_events_feed", "eventstore_refuse_rewrite", "events_refuse_truncate"} <= set(
        STORE_NAMES
    )


def test_the_functions_and_triggers_named_in_the_schema_are_the_migrated_ones(
    host_database: str,
) -> None:
    engine = create_engine(normalize_url(host_database))
    try:
        with engine.connect() as connection:
            functions = set(
                connection.scalars(
                    text(
                        "SELECT proname FROM pg_proc WHERE pronamespace = "
                        "current_schema()::regnamespace"
                    )
                )
            )
            triggers = {
                name: table
                for name, table in connection.execute(
                    text(
                        "SELECT tgname, tgrelid::regclass::text FROM pg_trigger "
                        "WHERE NOT tgisinternal"
                    )
                )
            }
    finally:
        engine.dispose()
    assert functions == schema.FUNCTIONS
    assert triggers == dict(schema.TRIGGERS)


# -- plain Alembic --------------------------------------------------------------------------


@pytest.mark.parametrize("orders_exist", [False, True], ids=["new-table", "table-exists"])
def test_host_autogenerate_proposes_only_the_applications_changes(
    host_database: str, tmp_path: Path, orders_exist: bool
) -> None:
    if orders_exist:
        create_orders_table(host_database)
    host = alembic_host(tmp_path / "host", host_database, protected=True)

    revision = autogenerate(host, host_database)

    assert_no_store_name(revision)
    if orders_exist:
        assert operations(revision) == []
    else:
        assert [op.split("(")[0] for op in operations(revision)] == [
            "op.create_table",
            "op.drop_table",
        ]
        assert "op.create_table('orders'" in revision
        assert "op.drop_table('orders')" in revision


def test_without_the_filter_autogenerate_drops_the_store(
    host_database: str, tmp_path: Path
) -> None:
    """What the filter prevents: Alembic, knowing only the application's tables,
    proposes to drop every table of the store (and its version table)."""
    host = alembic_host(tmp_path / "host", host_database, protected=False)

    revision = autogenerate(host, host_database)

    upgrade = revision.split("def downgrade")[0]
    for table in migrations.STORE_TABLES:
        assert f"op.drop_table('{table}')" in upgrade, upgrade


def test_the_filter_also_hides_the_store_when_the_metadata_holds_its_tables(
    host_database: str, tmp_path: Path
) -> None:
    """An application that adds eventstore.schema.metadata's tables to its own
    target_metadata gets no proposal for them either (nor for a changed one)."""
    host = alembic_host(tmp_path / "host", host_database, protected=True)
    models = host / "models.py"
    models.write_text(
        models.read_text()
        + "\nfrom eventstore.schema import metadata as store\n\n"
        + "for table in store.tables.values():\n"
        + "    table.to_metadata(metadata)\n"
        + "metadata.tables['events'].append_column(Column('extra', Text))\n"
    )
    create_orders_table(host_database)

    revision = autogenerate(host, host_database)

    assert_no_store_name(revision)
    assert operations(revision) == []


# -- Flask-Migrate ----------------------------------------------------------------------------


def test_flask_db_migrate_writes_the_apps_revision_in_its_own_folder(
    host_database: str, tmp_path: Path
) -> None:
    host = flask_host(tmp_path / "shop", host_database)

    flask(host, host_database, "migrate", "-m", "orders")

    (written,) = (host / "migrations" / "versions").glob("*.py")
    revision = written.read_text()
    assert_no_store_name(revision)
    assert "op.create_table('orders'" in revision
    assert "down_revision = None" in revision
    # The application's history runs on its own; the store's stays where it was.
    flask(host, host_database, "upgrade")
    assert migrations.current(host_database) == migrations.head_revision()
    flask(host, host_database, "migrate", "-m", "nothing")
    (latest,) = set((host / "migrations" / "versions").glob("*.py")) - {written}
    assert_no_store_name(latest.read_text())
    assert operations(latest.read_text()) == []


def test_flask_db_migrate_refuses_to_write_into_the_librarys_folder(
    empty_database: str, tmp_path: Path
) -> None:
    """The setup an earlier README described: the library's revisions listed in
    the application's version_locations. The revision Flask-Migrate would build
    on the library's head is refused; on a branch of the application's own it
    is written in the application's folder, and touches no store table."""
    host = flask_host(tmp_path / "shop", empty_database)
    versions = host / "migrations" / "versions"
    ini = host / "migrations" / "alembic.ini"
    ini.write_text(
        ini.read_text().replace(
            "[alembic]\n",
            "[alembic]\npath_separator = newline\nversion_locations =\n"
            f"    {versions}\n    {migrations.script_location() / 'versions'}\n",
        )
    )
    flask(host, empty_database, "upgrade")  # the library's revisions, in alembic_version

    refused = flask(host, empty_database, "migrate", "-m", "orders", check=False)

    assert refused.returncode != 0
    assert "refusing to write revision" in refused.stderr
    assert "pg-eventstore's own revisions folder" in refused.stderr
    assert list(versions.glob("*.py")) == []

    flask(
        host, empty_database, "migrate", "-m", "orders",
        "--head", "base", "--branch-label", "myapp", "--version-path", "migrations/versions",
    )  # fmt: skip
    (written,) = versions.glob("*.py")
    revision = written.read_text()
    assert_no_store_name(revision)
    assert "op.create_table('orders'" in revision
    flask(host, empty_database, "upgrade", "heads")
    flask(host, empty_database, "migrate", "-m", "more", "--head", "myapp@head")
    assert len(list(versions.glob("*.py"))) == 2


# -- the filters, call by call --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "type_", "parents", "included"),
    [
        ("events", "table", {"schema_name": None}, False),
        ("eventstore_alembic_version", "table", {"schema_name": None}, False),
        ("orders", "table", {"schema_name": None}, True),
        ("events", "table", {"schema_name": "audit"}, True),  # an application's other schema
        ("idx_events_feed", "index", {"schema_name": None, "table_name": "events"}, False),
        ("idx_orders", "index", {"schema_name": None, "table_name": "orders"}, True),
        ("position", "column", {"schema_name": None, "table_name": "events"}, False),
        # alembic_utils names functions and triggers "schema.signature"
        ("public.eventstore_refuse_rewrite()", "function", {"schema_name": "public"}, False),
        ("public.events_refuse_truncate", "trigger", {"schema_name": "public"}, False),
        ("public.orders_total()", "function", {"schema_name": "public"}, True),
        ("public", "schema", {}, True),
    ],
)
def test_include_name(
    name: str, type_: str, parents: dict[str, str | None], included: bool
) -> None:
    assert migrations.include_name(name, type_, parents) is included
    options = migrations.exclude_event_store()
    assert options["include_name"](name, type_, parents) is included


def test_include_object() -> None:
    metadata = MetaData()
    events = Table("events", metadata, Column("stream_id", Text))
    orders = Table("orders", metadata, Column("id", Integer))
    audit_events = Table("events", metadata, Column("id", Integer), schema="audit")
    include = migrations.include_object
    assert include(events, "events", "table", True, None) is False
    assert include(events.c.stream_id, "stream_id", "column", True, None) is False
    assert include(orders, "orders", "table", False, None) is True
    assert include(orders.c.id, "id", "column", False, None) is True
    assert include(audit_events, "events", "table", True, None) is True


def test_exclude_event_store_keeps_the_applications_own_filters() -> None:
    options = migrations.exclude_event_store(
        include_name=lambda name, type_, parents: name != "legacy",
        include_object=lambda obj, name, type_, reflected, compare_to: name != "legacy",
    )
    assert options["include_name"]("legacy", "table", {"schema_name": None}) is False
    assert options["include_name"]("orders", "table", {"schema_name": None}) is True
    assert options["include_name"]("events", "table", {"schema_name": None}) is False
    legacy = Table("legacy", MetaData())
    assert options["include_object"](legacy, "legacy", "table", True, None) is False
