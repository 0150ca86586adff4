"""The Alembic-owned schema: what the revisions create, the programmatic API, the CLI."""

from __future__ import annotations

import ast
import multiprocessing
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import NullPool

from eventstore import migrations, schema
from eventstore.errors import SchemaError, ValidationError

REPO = Path(__file__).resolve().parents[1]
ALEMBIC_INI = REPO / "alembic.ini"
ALEMBIC_CLI = Path(sys.executable).with_name("alembic")
FIRST = "eventstore_0001"
HEAD = "eventstore_0004"
TABLES_AT_HEAD = {
    "events",
    "snapshots",
    "projection_checkpoints",
    "projection_skipped_events",
    "eventstore_alembic_version",
}

# (column, data type, nullable, default) in table order, as in the guide: what the
# first revision creates.
EVENTS_COLUMNS_OF_THE_GUIDE = [
    ("stream_id", "text", "NO", None),
    ("version", "bigint", "NO", None),
    ("event_type", "text", "NO", None),
    ("event_data", "bytea", "NO", None),
    ("metadata", "jsonb", "YES", None),
    ("created_at", "timestamp with time zone", "NO", "now()"),
]
EVENTS_FEED_COLUMNS = [
    ("position", "bigint", "NO", None),
    ("transaction_id", "xid8", "NO", "pg_current_xact_id()"),
]
EVENTS_COLUMNS_AT_HEAD = EVENTS_COLUMNS_OF_THE_GUIDE + EVENTS_FEED_COLUMNS
SNAPSHOTS_COLUMNS = [
    ("stream_id", "text", "NO", None),
    ("version", "bigint", "NO", None),
    ("state_data", "bytea", "NO", None),
    ("created_at", "timestamp with time zone", "NO", "now()"),
]


@pytest.fixture
def engine(scratch_database_url: str) -> Iterator[Engine]:
    """An engine on the scratch database, for inspecting it."""
    engine = sa.create_engine(scratch_database_url, poolclass=NullPool)
    try:
        yield engine
    finally:
        engine.dispose()


def public_tables(engine: Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names(schema="public"))


def columns(engine: Engine, table: str) -> list[tuple[str, str, str, str | None]]:
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT column_name, data_type, is_nullable, column_default"
                " FROM information_schema.columns"
                " WHERE table_schema = 'public' AND table_name = :table"
                " ORDER BY ordinal_position"
            ),
            {"table": table},
        )
        return [(r[0], r[1], r[2], r[3]) for r in rows]


def constraints(engine: Engine, table: str) -> dict[str, str]:
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
                " WHERE conrelid = CAST(:table AS regclass)"
                # PostgreSQL 18 also lists NOT NULL as constraints; columns() checks those.
                " AND contype <> 'n'"
            ),
            {"table": f"public.{table}"},
        )
        return {r[0]: r[1] for r in rows}


def indexes(engine: Engine, table: str) -> dict[str, str]:
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT indexname, indexdef FROM pg_indexes"
                " WHERE schemaname = 'public' AND tablename = :table"
            ),
            {"table": table},
        )
        return {r[0]: r[1] for r in rows}


def schema_drift(engine: Engine, metadata: sa.MetaData = schema.metadata) -> list[Any]:
    """Autogenerate's diff between ``metadata`` (the Core tables) and the database."""

    def include_object(
        obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        return not (type_ == "table" and name == migrations.VERSION_TABLE)

    with engine.connect() as connection:
        schema.recognise_types(connection.dialect)
        context = MigrationContext.configure(
            connection,
            opts={
                "include_object": include_object,
                "compare_type": True,
                "compare_server_default": True,
            },
        )
        return list(compare_metadata(context, metadata))


# --- what the first revision creates -------------------------------------------------


def test_upgrade_creates_the_events_table_of_the_guide(
    scratch_database_url: str, engine: Engine
) -> None:
    migrations.upgrade(scratch_database_url, FIRST)

    assert columns(engine, "events") == EVENTS_COLUMNS_OF_THE_GUIDE
    assert constraints(engine, "events") == {"events_pkey": "PRIMARY KEY (stream_id, version)"}
    assert indexes(engine, "events") == {
        "events_pkey": (
            "CREATE UNIQUE INDEX events_pkey ON public.events USING btree (stream_id, version)"
        ),
        "idx_events_created": (
            "CREATE INDEX idx_events_created ON public.events USING btree (created_at)"
        ),
        "idx_events_type": "CREATE INDEX idx_events_type ON public.events USING btree (event_type)",
    }


def test_upgrade_creates_the_snapshots_table_of_the_guide(
    scratch_database_url: str, engine: Engine
) -> None:
    migrations.upgrade(scratch_database_url, FIRST)

    assert columns(engine, "snapshots") == SNAPSHOTS_COLUMNS
    assert constraints(engine, "snapshots") == {"snapshots_pkey": "PRIMARY KEY (stream_id)"}
    assert indexes(engine, "snapshots") == {
        "snapshots_pkey": (
            "CREATE UNIQUE INDEX snapshots_pkey ON public.snapshots USING btree (stream_id)"
        ),
    }


def test_feed_revision_adds_position_transaction_id_index_and_checkpoints(
    scratch_database_url: str, engine: Engine
) -> None:
    migrations.upgrade(scratch_database_url)

    assert columns(engine, "events") == EVENTS_COLUMNS_AT_HEAD
    assert indexes(engine, "events")["idx_events_feed"] == (
        'CREATE INDEX idx_events_feed ON public.events USING btree (transaction_id, "position")'
    )
    assert public_tables(engine) == TABLES_AT_HEAD
    assert constraints(engine, "projection_checkpoints") == {
        "projection_checkpoints_pkey": "PRIMARY KEY (name)"
    }


def test_feed_revision_numbers_existing_events_in_a_stable_order_and_goes_down(
    scratch_database_url: str, engine: Engine
) -> None:
    migrations.upgrade(scratch_database_url, FIRST)
    with engine.begin() as connection:
        for stream_id, version in [("b", 1), ("a", 1), ("a", 2), ("c", 1)]:
            connection.execute(
                sa.text(
                    "INSERT INTO events (stream_id, version, event_type, event_data) "
                    "VALUES (:s, :v, 'E', '\\x00')"
                ),
                {"s": stream_id, "v": version},
            )

    migrations.upgrade(scratch_database_url)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO events (stream_id, version, event_type, event_data) "
                "VALUES ('d', 1, 'E', '\\x00')"
            )
        )
        rows = connection.execute(
            sa.text(
                "SELECT stream_id, version, position, transaction_id::text::bigint "
                "FROM events ORDER BY transaction_id, position"
            )
        ).all()

    # Old rows: numbered by (created_at, stream_id, version), one shared transaction id
    # that orders them before anything written later.
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("a", 1, 1),
        ("a", 2, 2),
        ("b", 1, 3),
        ("c", 1, 4),
        ("d", 1, 5),
    ]
    assert len({r[3] for r in rows[:4]}) == 1
    assert rows[4][3] > rows[0][3]

    migrations.downgrade(scratch_database_url, FIRST)
    assert [c[0] for c in columns(engine, "events")] == [c[0] for c in EVENTS_COLUMNS_OF_THE_GUIDE]
    assert "projection_checkpoints" not in public_tables(engine)
    assert migrations.current(scratch_database_url) == FIRST


def test_skipped_events_revision_adds_its_table_and_goes_down(
    scratch_database_url: str, engine: Engine
) -> None:
    migrations.upgrade(scratch_database_url)

    assert columns(engine, "projection_skipped_events") == [
        ("projection", "text", "NO", None),
        ("transaction_id", "bigint", "NO", None),
        ("position", "bigint", "NO", None),
        ("stream_id", "text", "NO", None),
        ("version", "bigint", "NO", None),
        ("event_type", "text", "NO", None),
        ("error", "text", "NO", None),
        ("skipped_at", "timestamp with time zone", "NO", "now()"),
    ]
    assert constraints(engine, "projection_skipped_events") == {
        "projection_skipped_events_pkey": 'PRIMARY KEY (projection, transaction_id, "position")'
    }

    migrations.downgrade(scratch_database_url, "eventstore_0003")
    assert public_tables(engine) == TABLES_AT_HEAD - {"projection_skipped_events"}
    assert migrations.current(scratch_database_url) == "eventstore_0003"
    migrations.upgrade(scratch_database_url)
    assert schema_drift(engine) == []


def test_upgrade_creates_only_the_two_tables_and_the_librarys_version_table(
    scratch_database_url: str, engine: Engine
) -> None:
    migrations.upgrade(scratch_database_url, FIRST)

    assert public_tables(engine) == {"events", "snapshots", "eventstore_alembic_version"}
    assert migrations.VERSION_TABLE == "eventstore_alembic_version"


def test_core_tables_and_migrated_database_do_not_drift(
    scratch_database_url: str, engine: Engine
) -> None:
    migrations.upgrade(scratch_database_url)

    assert schema_drift(engine) == []


def test_drift_check_notices_a_changed_database(scratch_database_url: str, engine: Engine) -> None:
    migrations.upgrade(scratch_database_url)
    with engine.begin() as connection:
        connection.execute(sa.text("ALTER TABLE events ADD COLUMN extra integer"))
        connection.execute(sa.text("DROP INDEX idx_events_type"))
        connection.execute(sa.text("ALTER TABLE snapshots ALTER COLUMN created_at DROP DEFAULT"))

    kinds = {
        change[0] if isinstance(change, tuple) else change[0][0] for change in schema_drift(engine)
    }

    assert kinds == {"remove_column", "add_index", "modify_default"}


def test_drift_check_compares_the_transaction_id_type(
    scratch_database_url: str, engine: Engine
) -> None:
    migrations.upgrade(scratch_database_url)
    wrong = sa.MetaData()
    for table in schema.metadata.sorted_tables:
        table.to_metadata(wrong)
    wrong.tables["events"].c.transaction_id.type = sa.BigInteger()

    (changes,) = schema_drift(engine, wrong)

    assert [change[0] for change in changes] == ["modify_type"]
    assert isinstance(changes[0][5], schema.XID8)


def test_importing_the_tables_leaves_sqlalchemys_type_names_alone() -> None:
    from sqlalchemy.dialects.postgresql.base import PGDialect, ischema_names

    assert "xid8" not in ischema_names
    assert PGDialect.ischema_names is ischema_names


def test_revisions_never_import_the_librarys_tables() -> None:
    for path in (REPO / "alembic" / "versions").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {
            node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
        } | {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        assert not {name for name in imported if name.split(".")[0] == "eventstore"}, path.name


def test_first_revision_carries_the_eventstore_branch_label() -> None:
    scripts = ScriptDirectory.from_config(migrations.alembic_config())

    labelled = scripts.get_revision(migrations.BRANCH_LABEL)
    head = scripts.get_revision(f"{migrations.BRANCH_LABEL}@head")

    assert scripts.get_bases() == [FIRST]
    assert labelled is not None
    assert labelled.revision == FIRST
    assert labelled.branch_labels == {"eventstore"}
    assert head is not None
    assert head.revision == HEAD
    assert scripts.get_heads() == [HEAD]


# --- upgrade, downgrade, current -----------------------------------------------------


def test_current_is_none_before_upgrade_and_head_after(scratch_database_url: str) -> None:
    assert migrations.current(scratch_database_url) is None

    migrations.upgrade(scratch_database_url)

    assert migrations.current(scratch_database_url) == HEAD


def test_current_creates_nothing(scratch_database_url: str, engine: Engine) -> None:
    migrations.current(scratch_database_url)

    assert public_tables(engine) == set()


def test_downgrade_to_base_drops_both_tables_and_keeps_the_apps_alembic_version(
    scratch_database_url: str, engine: Engine
) -> None:
    with engine.begin() as connection:
        connection.execute(
            sa.text("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
        )
        connection.execute(sa.text("INSERT INTO alembic_version VALUES ('app_rev_7')"))

    migrations.upgrade(scratch_database_url)
    with engine.connect() as connection:
        during = connection.execute(sa.text("SELECT version_num FROM alembic_version")).all()
    migrations.downgrade(scratch_database_url, "base")

    assert during == [("app_rev_7",)]
    assert public_tables(engine) == {"alembic_version", "eventstore_alembic_version"}
    with engine.connect() as connection:
        after = connection.execute(sa.text("SELECT version_num FROM alembic_version")).all()
    assert after == [("app_rev_7",)]
    assert migrations.current(scratch_database_url) is None


def test_upgrade_downgrade_upgrade_round_trips(scratch_database_url: str, engine: Engine) -> None:
    migrations.upgrade(scratch_database_url)
    migrations.downgrade(scratch_database_url, "base")
    migrations.upgrade(scratch_database_url)

    assert migrations.current(scratch_database_url) == HEAD
    assert columns(engine, "events") == EVENTS_COLUMNS_AT_HEAD
    assert schema_drift(engine) == []


def test_upgrade_at_head_changes_nothing(scratch_database_url: str, engine: Engine) -> None:
    migrations.upgrade(scratch_database_url)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO events (stream_id, version, event_type, event_data)"
                " VALUES ('order-1', 1, 'Placed', '\\x00')"
            )
        )

    migrations.upgrade(scratch_database_url)

    assert migrations.current(scratch_database_url) == HEAD
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM events")).scalar_one() == 1


def test_downgrade_requires_an_explicit_revision(scratch_database_url: str) -> None:
    with pytest.raises(TypeError):
        migrations.downgrade(scratch_database_url)  # type: ignore[call-arg]


@pytest.mark.parametrize("form", ["postgres", "postgresql", "postgresql+psycopg", "url-object"])
def test_upgrade_accepts_every_url_form(scratch_database_url: str, form: str) -> None:
    parsed = make_url(scratch_database_url)
    target: str | sa.URL = (
        parsed
        if form == "url-object"
        else parsed.set(drivername=form).render_as_string(hide_password=False)
    )

    migrations.upgrade(target)

    assert migrations.current(target) == HEAD


def test_upgrade_accepts_an_engine(scratch_database_url: str, engine: Engine) -> None:
    migrations.upgrade(engine)

    assert migrations.current(engine) == HEAD
    assert public_tables(engine) == TABLES_AT_HEAD


def test_upgrade_accepts_an_autocommit_engine(scratch_database_url: str) -> None:
    autocommit = sa.create_engine(
        scratch_database_url, poolclass=NullPool, isolation_level="AUTOCOMMIT"
    )
    try:
        migrations.upgrade(autocommit)
        migrations.downgrade(autocommit, "base")
        migrations.upgrade(autocommit)

        assert migrations.current(autocommit) == HEAD
    finally:
        autocommit.dispose()


@pytest.mark.parametrize("isolation_level", ["READ COMMITTED", "AUTOCOMMIT"])
def test_a_failed_downgrade_leaves_the_schema_as_it_was(
    scratch_database_url: str, engine: Engine, isolation_level: str
) -> None:
    migrations.upgrade(scratch_database_url)
    # A view on events makes DROP TABLE events fail after snapshots is already dropped.
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE VIEW event_types AS SELECT event_type FROM events"))
    app_engine = sa.create_engine(
        scratch_database_url, poolclass=NullPool, isolation_level=isolation_level
    )

    try:
        with pytest.raises(sa.exc.DBAPIError, match="event_types"):
            migrations.downgrade(app_engine, "base")
    finally:
        app_engine.dispose()

    assert migrations.current(scratch_database_url) == HEAD
    assert public_tables(engine) == TABLES_AT_HEAD
    assert schema_drift(engine) == []


@pytest.fixture
def three_scratch_database_urls(scratch_database_url: str) -> Iterator[list[str]]:
    """The scratch database and two more, created next to it and dropped afterwards."""
    base = make_url(scratch_database_url)
    names = [f"{base.database}_{n}" for n in (2, 3)]
    admin_url = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        for name in names:
            admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield [scratch_database_url] + [
            base.set(database=name).render_as_string(hide_password=False) for name in names
        ]
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            for name in names:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_concurrent_upgrades_in_threads_all_succeed(
    three_scratch_database_urls: list[str],
) -> None:
    # Two threads per database: same-database calls and different-database calls at once.
    urls = three_scratch_database_urls * 2
    barrier = threading.Barrier(len(urls))
    errors: list[BaseException] = []

    def run(url: str) -> None:
        try:
            barrier.wait(timeout=30)
            migrations.upgrade(url)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(url,)) for url in urls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert [migrations.current(url) for url in three_scratch_database_urls] == [HEAD] * 3


def upgrade_after_barrier(url: str, barrier: Any) -> None:
    """Runs in a child process: wait for the others, then upgrade."""
    barrier.wait(timeout=60)
    migrations.upgrade(url)


def test_concurrent_upgrades_in_processes_all_succeed(
    scratch_database_url: str, engine: Engine
) -> None:
    spawn = multiprocessing.get_context("spawn")
    workers = 4
    barrier = spawn.Barrier(workers)
    processes = [
        spawn.Process(target=upgrade_after_barrier, args=(scratch_database_url, barrier))
        for _ in range(workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)

    assert [process.exitcode for process in processes] == [0] * workers
    assert migrations.current(scratch_database_url) == HEAD
    assert schema_drift(engine) == []


# --- bad input -----------------------------------------------------------------------


def test_unknown_revision_is_a_validation_error_and_changes_nothing(
    scratch_database_url: str, engine: Engine
) -> None:
    with pytest.raises(ValidationError, match="no_such_revision"):
        migrations.upgrade(scratch_database_url, "no_such_revision")

    assert migrations.current(scratch_database_url) is None
    assert "events" not in public_tables(engine)


@pytest.mark.parametrize("revision", ["", "   ", None, 1])
def test_empty_or_non_str_revision_is_a_validation_error(revision: object) -> None:
    with pytest.raises(ValidationError, match="revision"):
        migrations.upgrade("postgresql://nobody@127.0.0.1:1/none", revision)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="revision"):
        migrations.downgrade("postgresql://nobody@127.0.0.1:1/none", revision)  # type: ignore[arg-type]


@pytest.mark.parametrize("url", ["mysql://user@localhost/db", "", "sqlite://"])
def test_non_postgresql_url_is_a_validation_error(url: str) -> None:
    with pytest.raises(ValidationError):
        migrations.upgrade(url)
    with pytest.raises(ValidationError):
        migrations.current(url)


def test_non_postgresql_engine_is_a_validation_error() -> None:
    sqlite = sa.create_engine("sqlite://")
    try:
        with pytest.raises(ValidationError, match="sqlite"):
            migrations.upgrade(sqlite)
    finally:
        sqlite.dispose()


# --- finding the revisions -----------------------------------------------------------


def test_script_location_is_the_repository_folder_in_a_checkout() -> None:
    assert migrations.script_location() == REPO / "alembic"


def test_script_location_prefers_the_copy_packaged_in_the_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "site-packages" / "eventstore"
    (package / "_alembic" / "versions").mkdir(parents=True)
    (package / "_alembic" / "env.py").touch()
    monkeypatch.setattr(migrations, "_PACKAGE_DIR", package)

    assert migrations.script_location() == package / "_alembic"


def test_script_location_ignores_the_alembic_library_next_to_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site_packages = tmp_path / "site-packages"
    (site_packages / "eventstore").mkdir(parents=True)
    (site_packages / "alembic" / "script").mkdir(parents=True)
    (site_packages / "alembic" / "__init__.py").touch()
    monkeypatch.setattr(migrations, "_PACKAGE_DIR", site_packages / "eventstore")

    with pytest.raises(SchemaError, match="migrations are missing"):
        migrations.script_location()


def test_alembic_config_needs_no_ini_file_and_keeps_percent_signs() -> None:
    config = migrations.alembic_config(
        "postgres://app:p%40ss%25@db.example:5432/prod?sslmode=require"
    )

    assert isinstance(config, Config)
    assert config.config_file_name is None
    assert config.get_main_option("script_location") == str(REPO / "alembic")
    assert config.get_main_option("sqlalchemy.url") == (
        "postgresql+psycopg://app:p%40ss%25@db.example:5432/prod?sslmode=require"
    )
    assert make_url(config.get_main_option("sqlalchemy.url") or "").password == "p@ss%"


def test_repository_alembic_folder_does_not_shadow_the_alembic_library() -> None:
    import alembic

    assert not (REPO / "alembic" / "__init__.py").exists()
    assert Path(alembic.__file__).parent != REPO / "alembic"


# --- the alembic command line --------------------------------------------------------


def run_alembic(
    *args: str, cwd: Path, database_url: str | None = None, config: Path | None = ALEMBIC_INI
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "PYTHONPATH"}}
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    command = [str(ALEMBIC_CLI), *(["-c", str(config)] if config else []), *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def url_form(url: str, drivername: str, **query: str) -> str:
    return (
        make_url(url)
        .set(drivername=drivername)
        .update_query_dict(query)
        .render_as_string(hide_password=False)
    )


LIBPQ_OPTIONS = {"sslmode": "disable", "connect_timeout": "5", "application_name": "es-migrate"}


@pytest.mark.parametrize("drivername", ["postgres", "postgresql", "postgresql+psycopg"])
def test_cli_upgrades_and_downgrades_with_each_url_form(
    scratch_database_url: str, engine: Engine, tmp_path: Path, drivername: str
) -> None:
    url = url_form(scratch_database_url, drivername, **LIBPQ_OPTIONS)

    up = run_alembic("upgrade", "head", cwd=tmp_path, database_url=url)
    assert up.returncode == 0, up.stderr
    assert public_tables(engine) == TABLES_AT_HEAD

    now = run_alembic("current", cwd=tmp_path, database_url=url)
    assert now.returncode == 0, now.stderr
    assert f"{HEAD} (head)" in now.stdout

    down = run_alembic("downgrade", "base", cwd=tmp_path, database_url=url)
    assert down.returncode == 0, down.stderr
    assert public_tables(engine) == {"eventstore_alembic_version"}


def test_cli_passes_query_options_through_to_the_server(
    scratch_database_url: str, engine: Engine, tmp_path: Path
) -> None:
    if engine.url.host is None or str(engine.url.query.get("host", "")).startswith("/"):
        pytest.skip("libpq ignores sslmode on a unix socket, so it cannot be told apart")
    with engine.connect() as connection:
        if connection.execute(sa.text("SHOW ssl")).scalar_one() == "on":
            pytest.skip("the test server accepts SSL, so sslmode=require cannot be told apart")
    url = url_form(scratch_database_url, "postgres", sslmode="require")

    result = run_alembic("upgrade", "head", cwd=tmp_path, database_url=url)

    assert result.returncode != 0
    assert "SSL" in result.stderr
    assert public_tables(engine) == set()


def test_cli_runs_from_the_repository_root_with_the_default_config(
    scratch_database_url: str, engine: Engine
) -> None:
    result = run_alembic(
        "upgrade",
        "head",
        cwd=REPO,
        database_url=url_form(scratch_database_url, "postgres"),
        config=None,
    )

    assert result.returncode == 0, result.stderr
    assert migrations.current(scratch_database_url) == HEAD


def test_cli_reads_database_url_from_a_dotenv_file_in_the_working_directory(
    scratch_database_url: str, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(
        f"DATABASE_URL={url_form(scratch_database_url, 'postgres', **LIBPQ_OPTIONS)}\n",
        encoding="utf-8",
    )

    result = run_alembic("upgrade", "head", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert migrations.current(scratch_database_url) == HEAD


def test_cli_prefers_the_environment_over_the_dotenv_file(
    scratch_database_url: str, tmp_path: Path
) -> None:
    missing = make_url(scratch_database_url).set(database="es_no_such_database")
    (tmp_path / ".env").write_text(
        f"DATABASE_URL={missing.render_as_string(hide_password=False)}\n", encoding="utf-8"
    )

    result = run_alembic("upgrade", "head", cwd=tmp_path, database_url=scratch_database_url)

    assert result.returncode == 0, result.stderr
    assert migrations.current(scratch_database_url) == HEAD


def test_cli_keeps_percent_encoded_passwords(scratch_database_url: str, tmp_path: Path) -> None:
    # The test server trusts local connections, so any password gets in; what matters
    # is that '%' survives the Alembic config's interpolation.
    url = make_url(scratch_database_url).set(password="p@ss%word")

    result = run_alembic(
        "upgrade", "head", cwd=tmp_path, database_url=url.render_as_string(hide_password=False)
    )

    assert result.returncode == 0, result.stderr
    assert migrations.current(scratch_database_url) == HEAD


def test_cli_without_database_url_says_to_set_it(tmp_path: Path) -> None:
    result = run_alembic("upgrade", "head", cwd=tmp_path)

    assert result.returncode != 0
    assert "set DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_rejects_a_non_postgresql_url_clearly(tmp_path: Path) -> None:
    result = run_alembic("upgrade", "head", cwd=tmp_path, database_url="mysql://user@localhost/db")

    assert result.returncode != 0
    assert "PostgreSQL" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_offline_mode_emits_the_schema_sql(tmp_path: Path) -> None:
    result = run_alembic(
        "upgrade", "head", "--sql", cwd=tmp_path, database_url="postgres://app@db.example/prod"
    )

    assert result.returncode == 0, result.stderr
    assert "CREATE TABLE events (" in result.stdout
    assert "CREATE TABLE snapshots (" in result.stdout
    assert "CREATE INDEX idx_events_type ON events (event_type)" in result.stdout
    assert "INSERT INTO eventstore_alembic_version" in result.stdout
    assert "alembic_version (" not in result.stdout.replace("eventstore_alembic_version", "")
