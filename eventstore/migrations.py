"""Run pg-eventstore's Alembic revisions from code, without an ``alembic.ini``,
and keep an application's own Alembic history away from the store's schema.

The revisions live in one place: the repository's ``alembic/`` folder, which the
wheel carries as ``eventstore/_alembic``. They record their state in a version
table of their own (:data:`VERSION_TABLE`), so an application's own
``alembic_version`` table is never touched: an application runs them with
:func:`upgrade` (or ``eventstore migrate upgrade``) beside its own migrations.

An application whose own Alembic environment (``env.py``, Flask-Migrate's
included) autogenerates revisions passes :func:`exclude_event_store` to
``context.configure(...)`` (or to ``Migrate(app, db, ...)``): autogenerate then
never proposes to create, drop or alter the store's tables, and a revision bound
for the library's own folder is refused.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import alembic.command as command
from alembic.config import Config
from alembic.operations.ops import MigrationScript
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, Table, text
from sqlalchemy.engine import URL

from eventstore import _catalog, schema
from eventstore._engines import engine_for
from eventstore.errors import SchemaError, ValidationError
from eventstore.urls import normalize_url

__all__ = [
    "BRANCH_LABEL",
    "STORE_TABLES",
    "UPGRADE_ADVICE",
    "VERSION_TABLE",
    "AutogenerateOptions",
    "SchemaState",
    "alembic_config",
    "current",
    "downgrade",
    "exclude_event_store",
    "head_revision",
    "include_name",
    "include_object",
    "refuse_library_revisions",
    "schema_state",
    "script_location",
    "upgrade",
]

VERSION_TABLE = "eventstore_alembic_version"
"""The table in which the library's revisions record the schema's revision."""

BRANCH_LABEL = "eventstore"
"""The branch label of the first revision. Revisions the library ships carry it;
an application never adds revisions to it (see :func:`refuse_library_revisions`)."""

UPGRADE_ADVICE = (
    "run `eventstore migrate upgrade` (or, from code, eventstore.migrations.upgrade(url))"
)
"""What to do about a database whose schema is missing or behind, in words for errors."""

STORE_TABLES: frozenset[str] = frozenset(schema.metadata.tables) | {VERSION_TABLE}
"""Every table of the store: those of :data:`eventstore.schema.metadata` and
:data:`VERSION_TABLE`. Their columns, indexes and constraints are the store's too."""

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


# -- an application's own Alembic environment -------------------------------------------

_TABLE_PARTS = frozenset({"column", "index", "unique_constraint", "foreign_key_constraint"})
# Alembic itself never compares functions or triggers; extensions that do (such as
# alembic_utils) run them through the same hooks under these types.
_ROUTINES: Mapping[str, frozenset[str]] = {
    "function": schema.FUNCTIONS,
    "trigger": frozenset(schema.TRIGGERS),
}


def include_name(name: str | None, type_: str, parent_names: Mapping[Any, str | None]) -> bool:
    """Alembic's ``include_name`` hook: False for a name of the store's schema.

    Autogenerate calls it for each reflected name before reflecting the object.
    False for a table of :data:`STORE_TABLES` in the default schema (Alembic
    names it without a schema, ``schema_name`` None), for a column, index,
    unique constraint or foreign key of such a table, and for the store's
    functions and triggers (types ``"function"`` and ``"trigger"``, in any
    schema); True for everything else, so the application's objects, and tables
    of the same names in its other schemas, are compared as before.
    """
    if type_ in _ROUTINES:
        return _routine_name(name) not in _ROUTINES[type_]
    if parent_names.get("schema_name") is not None:
        return True
    if type_ == "table":
        return name not in STORE_TABLES
    if type_ in _TABLE_PARTS:
        return parent_names.get("table_name") not in STORE_TABLES
    return True


def include_object(
    object_: object, name: str | None, type_: str, reflected: bool, compare_to: object | None
) -> bool:
    """Alembic's ``include_object`` hook: False for an object of the store's schema.

    Autogenerate calls it for every table, column, index, unique constraint and
    foreign key it compares, reflected from the database or taken from
    ``target_metadata``. False for a table of :data:`STORE_TABLES` in the
    default schema (``Table.schema`` None) and for anything that belongs to such
    a table, and for the store's functions and triggers, so even a
    ``target_metadata`` that holds :data:`eventstore.schema.metadata` proposes
    nothing for them; True for everything else.
    """
    if type_ in _ROUTINES:
        return _routine_name(name) not in _ROUTINES[type_]
    if type_ == "table":
        table = object_
    elif type_ in _TABLE_PARTS:
        table = getattr(object_, "table", None)
    else:
        return True
    if not isinstance(table, Table):
        return True
    return table.schema is not None or table.name not in STORE_TABLES


def refuse_library_revisions(
    context: MigrationContext, revision: object, directives: list[MigrationScript]
) -> None:
    """Alembic's ``process_revision_directives`` hook: refuse to write a revision
    into the library's own revisions folder.

    Alembic writes a new revision next to the head it builds on, unless given
    ``--version-path``: in an application's history that also holds the
    library's revisions (its ``version_locations`` lists them), a revision on
    the library's head would be written into the installed package and become
    part of the store's schema. Raises :class:`SchemaError` saying so before any
    file is written; every other revision passes untouched. It runs when
    Alembic runs ``env.py`` for a revision (``--autogenerate``, ``flask db
    migrate``), not for a plain ``alembic revision -m``.
    """
    script = context.script
    if script is None:
        return
    library = script_location().resolve()
    for directive in directives:
        folder = _revision_folder(script, directive)
        if folder is not None and folder.resolve().is_relative_to(library):
            raise SchemaError(
                f"refusing to write revision {directive.rev_id!r} into pg-eventstore's own "
                f"revisions folder ({folder}): the application's revisions belong in its own "
                "folder. Remove the library's revisions from version_locations and run them "
                "with `eventstore migrate upgrade` (or eventstore.migrations.upgrade(url)) "
                "beside your own migrations; while they are listed, build on your own branch "
                "with --head <your-branch>@head, or give --version-path <your versions folder>"
            )


def _revision_folder(script: ScriptDirectory, directive: MigrationScript) -> Path | None:
    """The folder Alembic will write ``directive``'s revision into, as
    ``ScriptDirectory.generate_revision`` chooses it: ``--version-path``, else
    the folder of the head it builds on; None where Alembic uses the single
    version location (or reports an error of its own)."""
    if directive.version_path is not None:
        return Path(directive.version_path)
    try:
        heads = script.get_revisions(directive.head or "head")
    except (CommandError, RevisionError):
        return None  # several heads and no --head: Alembic refuses on its own
    for head in heads:
        if head is not None:
            return Path(head.path).parent
    return None


def _routine_name(name: str | None) -> str:
    """``"public.eventstore_refuse_rewrite()"`` -> ``"eventstore_refuse_rewrite"``."""
    return (name or "").split("(", 1)[0].rsplit(".", 1)[-1].strip('"')


_STORE_INCLUDE_NAME = include_name
_STORE_INCLUDE_OBJECT = include_object


class AutogenerateOptions(TypedDict):
    """Keyword arguments for Alembic's ``context.configure(...)`` (and for
    Flask-Migrate's ``Migrate(app, db, ...)``, which passes them on)."""

    include_name: Callable[..., bool]
    include_object: Callable[..., bool]
    process_revision_directives: Callable[[MigrationContext, Any, list[MigrationScript]], None]


def exclude_event_store(
    *,
    include_name: Callable[..., bool] | None = None,
    include_object: Callable[..., bool] | None = None,
    process_revision_directives: Callable[..., None] | None = None,
) -> AutogenerateOptions:
    """The options that keep an application's Alembic autogenerate off the store.

    In the application's ``env.py``: ``context.configure(connection=connection,
    target_metadata=target_metadata, **exclude_event_store())``; with
    Flask-Migrate: ``Migrate(app, db, **exclude_event_store())``. Autogenerate
    then never proposes to create, drop or alter the store's tables (those of
    :data:`STORE_TABLES`), their columns, indexes and constraints, or its
    functions and triggers (:func:`include_name`, :func:`include_object`), and a
    revision bound for the library's own folder is refused
    (:func:`refuse_library_revisions`).

    Hooks of the application's own, given here, still run: an object is
    compared when both filters include it, and the given
    ``process_revision_directives`` runs after the refusal check. Flask-Migrate
    adds its own hook (which drops an autogenerated revision with no changes)
    only when none is given, so with these options an autogenerate that finds
    nothing writes an empty revision, as plain Alembic does.
    """
    names = include_name
    objects = include_object
    directives_hook = process_revision_directives

    def name_filter(name: str | None, type_: str, parent_names: Mapping[Any, str | None]) -> bool:
        return _STORE_INCLUDE_NAME(name, type_, parent_names) and (
            names is None or bool(names(name, type_, parent_names))
        )

    def object_filter(
        object_: object, name: str | None, type_: str, reflected: bool, compare_to: object | None
    ) -> bool:
        return _STORE_INCLUDE_OBJECT(object_, name, type_, reflected, compare_to) and (
            objects is None or bool(objects(object_, name, type_, reflected, compare_to))
        )

    def directives_filter(
        context: MigrationContext, revision: Any, directives: list[MigrationScript]
    ) -> None:
        refuse_library_revisions(context, revision, directives)
        if directives_hook is not None:
            directives_hook(context, revision, directives)

    return AutogenerateOptions(
        include_name=name_filter,
        include_object=object_filter,
        process_revision_directives=directives_filter,
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
