"""Run pg-eventstore's Alembic revisions from code, without an ``alembic.ini``.

The revisions live in one place: the repository's ``alembic/`` folder, which the
wheel carries as ``eventstore/_alembic``. They record their state in a version
table of their own (:data:`VERSION_TABLE`), so an application's own
``alembic_version`` table is never touched. An application that prefers one
Alembic history can instead merge these revisions into its own through the
:data:`BRANCH_LABEL` branch label and run ``alembic upgrade eventstore@head``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import alembic.command as command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import URL

from eventstore import _catalog
from eventstore._engines import engine_for
from eventstore.errors import SchemaError, ValidationError
from eventstore.urls import normalize_url

__all__ = [
    "BRANCH_LABEL",
    "UPGRADE_ADVICE",
    "VERSION_TABLE",
    "SchemaState",
    "alembic_config",
    "current",
    "downgrade",
    "head_revision",
    "schema_state",
    "script_location",
    "upgrade",
]

VERSION_TABLE = "eventstore_alembic_version"
"""The table in which the library's revisions record the schema's revision."""

BRANCH_LABEL = "eventstore"
"""The branch label of the first revision, for merging into an application's history."""

UPGRADE_ADVICE = "run `eventstore migrate upgrade` (or `alembic upgrade head`)"
"""What to do about a database whose schema is missing or behind, in words for errors."""

# Serialises concurrent upgrade()/downgrade() calls on one database (for example
# several application instances migrating at start-up): without it, two of them
# can both see an empty database and race to create the same tables.
_MIGRATION_LOCK_KEY = 0x6576_7473_746F_7265  # "evtstore"

# Alembic runs env.py and the revisions through module-level proxies
# (alembic.context, alembic.op), so one process runs one migration at a time.
_PROCESS_LOCK = threading.Lock()

_PACKAGE_DIR = Path(__file__).resolve().parent


def script_location() -> Path:
    """Return the folder holding the revisions' ``env.py`` and ``versions/``.

    An installed wheel carries it as ``eventstore/_alembic``; a source checkout
    (editable install included) has it as ``alembic/`` next to the ``eventstore``
    package. Raises :class:`SchemaError` when neither is present.
    """
    candidates = (_PACKAGE_DIR / "_alembic", _PACKAGE_DIR.parent / "alembic")
    for candidate in candidates:
        # The env.py test keeps a site-packages/alembic (the Alembic library) from matching.
        if (candidate / "env.py").is_file() and (candidate / "versions").is_dir():
            return candidate
    raise SchemaError(
        "pg-eventstore's migrations are missing: looked for "
        + " and ".join(str(c) for c in candidates)
        + "; reinstall the package"
    )


def alembic_config(url: str | URL | None = None, *, connection: Connection | None = None) -> Config:
    """Build an Alembic :class:`~alembic.config.Config` for the library's revisions.

    No ini file is read. ``url`` (any form :func:`eventstore.urls.normalize_url`
    accepts) becomes ``sqlalchemy.url``; ``connection``, when given, is the
    connection ``env.py`` migrates on, inside whatever transaction it has. With
    neither, ``env.py`` falls back to ``DATABASE_URL``. Raises
    :class:`ValidationError` for a URL that is not PostgreSQL and
    :class:`SchemaError` when the revisions cannot be found.
    """
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    if url is not None:
        rendered = normalize_url(url).render_as_string(hide_password=False)
        # Config values go through configparser interpolation: '%' must be doubled.
        config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(url_or_engine: str | URL | Engine, revision: str = "head") -> None:
    """Upgrade the database to ``revision`` (default: the newest, ``"head"``).

    ``url_or_engine`` is a PostgreSQL URL (``postgres://``, ``postgresql://`` or
    ``postgresql+psycopg://``) or a SQLAlchemy Engine. All the steps run in one
    transaction: a failure leaves the schema as it was. Concurrent calls are
    serialised (a PostgreSQL advisory lock across processes, a lock within one), so
    several application instances may all call this at start-up.
    Already being at ``revision`` is not an error. Raises :class:`ValidationError`
    for a bad URL or an unknown revision.
    """
    _migrate(command.upgrade, url_or_engine, revision)


def downgrade(url_or_engine: str | URL | Engine, revision: str) -> None:
    """Downgrade the database to ``revision``; ``"base"`` drops the library's tables.

    ``revision`` is required, never defaulted, because downgrading destroys
    events. Runs in one transaction, serialised like :func:`upgrade`. Raises
    :class:`ValidationError` for a bad URL or an unknown revision.
    """
    _migrate(command.downgrade, url_or_engine, revision)


def current(url_or_engine: str | URL | Engine) -> str | None:
    """Return the database's revision id, or None when no revision is applied.

    Reads :data:`VERSION_TABLE` only; creates nothing. Raises
    :class:`ValidationError` for a bad URL.
    """
    with _connection(url_or_engine) as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


@dataclass(frozen=True)
class SchemaState:
    """A database's schema as the library's revisions see it (see :func:`schema_state`)."""

    revision: str | None
    """The revision recorded in :data:`VERSION_TABLE`; None when none is."""
    head: str
    """The newest revision this version of the library ships."""
    known: frozenset[str]
    """Every revision this version of the library ships."""
    has_tables: bool
    """Whether the tables of the newest schema are there (``snapshots`` and
    ``events.transaction_id``), whatever revision is recorded."""

    @property
    def at_head(self) -> bool:
        """The recorded revision is the newest one."""
        return self.revision == self.head

    @property
    def usable(self) -> bool:
        """At head, or no revision recorded here but the newest tables present: a
        database whose revisions were merged into the application's own Alembic
        history records them in the application's version table instead."""
        return self.at_head or (self.revision is None and self.has_tables)

    @property
    def unknown(self) -> bool:
        """A revision is recorded that this version of the library does not ship
        (the database was migrated by a newer version)."""
        return self.revision is not None and self.revision not in self.known


def head_revision() -> str:
    """The newest revision this version of the library ships."""
    head = _script().get_current_head()
    if head is None:  # pragma: no cover - the package always ships revisions
        raise SchemaError("pg-eventstore's migrations have no head revision")
    return head


def schema_state(connection: Connection) -> SchemaState:
    """Read the schema state of the database ``connection`` is on; creates nothing.

    Runs in whatever transaction ``connection`` has (read-only statements only).
    """
    script = _script()
    revision = None
    if _catalog.relation_exists(connection, VERSION_TABLE):
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        revision = context.get_current_revision()
    return SchemaState(
        revision=revision,
        head=head_revision(),
        known=frozenset(r.revision for r in script.walk_revisions()),
        has_tables=_catalog.relation_exists(connection, "snapshots")
        and _catalog.column_exists(connection, "events", "transaction_id"),
    )


def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def _check_revision(revision: object) -> None:
    if not isinstance(revision, str) or not revision.strip():
        raise ValidationError(
            f"a revision must be a non-empty str such as 'head' or 'base', not {revision!r}"
        )


def _migrate(
    operation: Callable[[Config, str], None], url_or_engine: str | URL | Engine, revision: str
) -> None:
    _check_revision(revision)
    # The process lock is taken before the database lock, always, so the two cannot deadlock.
    with _PROCESS_LOCK, _migration_connection(url_or_engine) as connection:
        try:
            operation(alembic_config(connection=connection), revision)
        except (CommandError, RevisionError) as exc:
            raise ValidationError(f"cannot migrate to revision {revision!r}: {exc}") from exc


@contextmanager
def _connection(url_or_engine: str | URL | Engine) -> Iterator[Connection]:
    with engine_for(url_or_engine, psycopg_driver=False) as engine, engine.connect() as connection:
        yield connection


@contextmanager
def _migration_connection(url_or_engine: str | URL | Engine) -> Iterator[Connection]:
    with _connection(url_or_engine) as connection:
        # An application's engine may be in autocommit; the migration needs one
        # real transaction (and the lock below lives as long as it does).
        connection.execution_options(isolation_level="READ COMMITTED")
        with connection.begin():
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
            )
            yield connection
