"""The built wheel carries the migrations and runs them with no repository in sight.

Builds the wheel, installs it (dependencies from the package index) into a brand-new
virtual environment, and migrates scratch databases from a working directory that
holds nothing of the repository: once through ``eventstore.migrations``, once as a
host application that merges the ``eventstore`` branch into its own Alembic history.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

REPO = Path(__file__).resolve().parents[1]
REVISION_FILES = (
    "eventstore_0001_create_events_and_snapshots.py",
    "eventstore_0002_global_feed.py",
    "eventstore_0003_immutable_events.py",
    "eventstore_0004_projection_skipped_events.py",
)


@dataclass(frozen=True)
class InstalledWheel:
    wheel: Path
    python: Path
    alembic: Path


def run(command: list[str | Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``command`` with an environment that cannot see the repository."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "DATABASE_URL", "VIRTUAL_ENV", "PYTHONHOME"}
    }
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory: pytest.TempPathFactory) -> InstalledWheel:
    """The project's wheel, built now and installed into a fresh virtual environment."""
    dist = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--wheel", "--outdir", dist, REPO], cwd=dist)
    (wheel,) = dist.glob("pg_eventstore-*.whl")

    environment = tmp_path_factory.mktemp("venv")
    venv.create(environment, with_pip=True, clear=True)
    python = environment / "bin" / "python"
    run([python, "-m", "pip", "install", "--quiet", wheel], cwd=environment)
    return InstalledWheel(wheel=wheel, python=python, alembic=environment / "bin" / "alembic")


def public_tables(url: str) -> set[str]:
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        return set(sa.inspect(engine).get_table_names(schema="public"))
    finally:
        engine.dispose()


def test_wheel_carries_the_migrations_and_type_information(
    installed_wheel: InstalledWheel,
) -> None:
    names = set(zipfile.ZipFile(installed_wheel.wheel).namelist())

    assert {
        "eventstore/_alembic/env.py",
        "eventstore/_alembic/script.py.mako",
        "eventstore/migrations.py",
        "eventstore/py.typed",
        *(f"eventstore/_alembic/versions/{name}" for name in REVISION_FILES),
    } <= names
    # A top-level alembic/ in the wheel would shadow the Alembic library itself.
    assert not {name for name in names if name.startswith("alembic/")}
    assert "eventstore/_alembic/__init__.py" not in names
    assert not {name for name in names if "__pycache__" in name or name.endswith(".pyc")}


def test_installed_wheel_migrates_without_the_repository(
    installed_wheel: InstalledWheel, scratch_database_url: str, tmp_path: Path
) -> None:
    script = tmp_path / "migrate.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, sys
            import sqlalchemy as sa
            from sqlalchemy.pool import NullPool
            import eventstore.migrations as m

            url, inspect_url = sys.argv[1], sys.argv[2]
            engine = sa.create_engine(inspect_url, poolclass=NullPool)

            def tables():
                return sorted(sa.inspect(engine).get_table_names(schema="public"))

            report = {
                "module": m.__file__,
                "script_location": str(m.script_location()),
                "before": m.current(url),
            }
            m.upgrade(url)
            report["after_upgrade"] = m.current(url)
            report["tables_after_upgrade"] = tables()
            m.downgrade(url, "base")
            report["after_downgrade"] = m.current(url)
            report["tables_after_downgrade"] = tables()
            print(json.dumps(report))
            """
        ),
        encoding="utf-8",
    )
    pasted_form = make_url(scratch_database_url).set(drivername="postgres")
    pasted = pasted_form.update_query_dict({"sslmode": "disable", "application_name": "wheel"})

    result = run(
        [
            installed_wheel.python,
            script,
            pasted.render_as_string(hide_password=False),
            scratch_database_url,
        ],
        cwd=tmp_path,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])

    site_packages = installed_wheel.python.parents[1]
    assert Path(report["module"]).is_relative_to(site_packages)
    assert Path(report["script_location"]).is_relative_to(site_packages)
    assert Path(report["script_location"]).parts[-2:] == ("eventstore", "_alembic")
    assert report["before"] is None
    assert report["after_upgrade"] == "eventstore_0004"
    assert report["tables_after_upgrade"] == [
        "events",
        "eventstore_alembic_version",
        "projection_checkpoints",
        "projection_skipped_events",
        "snapshots",
    ]
    assert report["after_downgrade"] is None
    assert report["tables_after_downgrade"] == ["eventstore_alembic_version"]


HOST_ENV_PY = '''\
"""A host application's own env.py, straight from Alembic's generic template."""
from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config

connectable = engine_from_config(
    config.get_section(config.config_ini_section, {}),
    prefix="sqlalchemy.",
    poolclass=pool.NullPool,
)
with connectable.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
'''

HOST_REVISION = '''\
"""The host application's first revision."""
import sqlalchemy as sa
from alembic import op

revision = "host_0001"
down_revision = None
branch_labels = ("host",)
depends_on = None


def upgrade():
    op.create_table("orders", sa.Column("id", sa.BigInteger, primary_key=True))


def downgrade():
    op.drop_table("orders")
'''


def test_host_application_merges_the_eventstore_branch_into_its_history(
    installed_wheel: InstalledWheel, scratch_database_url: str, tmp_path: Path
) -> None:
    (tmp_path / "migrations" / "versions").mkdir(parents=True)
    (tmp_path / "migrations" / "env.py").write_text(HOST_ENV_PY, encoding="utf-8")
    (tmp_path / "migrations" / "versions" / "host_0001_orders.py").write_text(
        HOST_REVISION, encoding="utf-8"
    )
    (tmp_path / "alembic.ini").write_text(
        textwrap.dedent(
            f"""\
            [alembic]
            script_location = %(here)s/migrations
            path_separator = newline
            version_locations =
                %(here)s/migrations/versions
                eventstore:_alembic/versions
            sqlalchemy.url = {scratch_database_url.replace("%", "%%")}
            """
        ),
        encoding="utf-8",
    )

    run([installed_wheel.alembic, "upgrade", "eventstore@head"], cwd=tmp_path)
    only_eventstore = public_tables(scratch_database_url)
    run([installed_wheel.alembic, "upgrade", "heads"], cwd=tmp_path)
    everything = public_tables(scratch_database_url)
    engine = sa.create_engine(scratch_database_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            versions = set(
                connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalars()
            )
        run([installed_wheel.alembic, "downgrade", "eventstore@base"], cwd=tmp_path)
        with engine.connect() as connection:
            versions_after_downgrade = set(
                connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalars()
            )
    finally:
        engine.dispose()

    assert only_eventstore == {
        "alembic_version",
        "events",
        "snapshots",
        "projection_checkpoints",
        "projection_skipped_events",
    }
    assert everything == {
        "alembic_version",
        "events",
        "snapshots",
        "projection_checkpoints",
        "projection_skipped_events",
        "orders",
    }
    assert versions == {"eventstore_0004", "host_0001"}
    assert public_tables(scratch_database_url) == {"alembic_version", "orders"}
    assert versions_after_downgrade == {"host_0001"}
