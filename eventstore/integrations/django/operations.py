"""The Django migration operation that runs the library's Alembic revisions.

Each Django migration of the app upgrades the store's tables to one fixed
revision of the library (:class:`UpgradeEventStore`), on Django's connection
and inside the migration's transaction, and records it in the library's own
version table (:data:`eventstore.migrations.VERSION_TABLE`), as
``eventstore migrate upgrade`` does. Django records the migration in its own
``django_migrations``; if the migration fails, both roll back together.

A new library revision gets a new Django migration of the app, upgrading to
it, with the previous one as its dependency and ``previous``. Pinning each
migration to one revision, rather than one migration that upgrades to
whatever is the head, is what lets ``manage.py migrate`` apply a later
revision at all (Django runs each migration once) and makes
``manage.py migrate eventstore <name>`` land on a known schema.
``tests/test_django_integration.py`` fails when the last migration is not at
the library's head revision.
"""

from __future__ import annotations

from typing import Any

from alembic.script import ScriptDirectory
from django.db import router, transaction
from django.db.migrations.operations.base import Operation

from eventstore import migrations
from eventstore.integrations.django._borrowed import borrowed_engine
from eventstore.integrations.django._settings import store_settings

APP_LABEL = "eventstore"


class UpgradeEventStore(Operation):  # type: ignore[misc]
    """Upgrade the store's tables to ``revision``; reversed, downgrade them to ``previous``.

    Runs only on the store's database (``EVENTSTORE['DATABASE']``) and where the
    project's database routers allow the app's migrations; on any other alias it
    does nothing (a SQLite alias of the same project is left alone). Forwards, it
    leaves alone a database already at ``revision`` or past it, and one whose
    tables an application's own Alembic history made (tables there, no revision
    in the library's version table). Backwards, ``previous="base"`` drops the
    store's tables and every event in them: ``manage.py migrate eventstore zero``
    is ``eventstore migrate downgrade base``.
    """

    reduces_to_sql = False  # sqlmigrate prints that it cannot be written as SQL
    reversible = True

    def __init__(self, revision: str, previous: str) -> None:
        self.revision = revision
        self.previous = previous

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        return (
            f"{__name__}.{type(self).__name__}",
            [],
            {"revision": self.revision, "previous": self.previous},
        )

    def state_forwards(self, app_label: str, state: Any) -> None:
        """No Django models change."""

    def database_forwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        connection = schema_editor.connection
        if not _runs_on(connection, app_label):
            return
        with transaction.atomic(using=connection.alias), borrowed_engine(connection) as engine:
            if _reached(engine, self.revision):
                return
            migrations.upgrade(engine, self.revision)

    def database_backwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        connection = schema_editor.connection
        if not _runs_on(connection, app_label):
            return
        with transaction.atomic(using=connection.alias), borrowed_engine(connection) as engine:
            with engine.connect() as borrowed:
                recorded = migrations.schema_state(borrowed).revision
            if recorded is None:
                return
            migrations.downgrade(engine, self.previous)

    def describe(self) -> str:
        return f"Upgrade pg-eventstore's tables to revision {self.revision}"

    @property
    def migration_name_fragment(self) -> str:
        return self.revision


def _runs_on(connection: Any, app_label: str) -> bool:
    return bool(
        connection.alias == store_settings().alias
        and router.allow_migrate(connection.alias, app_label)
    )


def _reached(engine: Any, revision: str) -> bool:
    """Whether the database is at ``revision`` or past it, or its tables are managed
    by the application's own Alembic history (no revision recorded, tables there)."""
    with engine.connect() as borrowed:
        state = migrations.schema_state(borrowed)
    if state.revision is None:
        return state.has_tables
    if state.unknown:
        return True  # migrated by a newer version of the library
    script = ScriptDirectory.from_config(migrations.alembic_config())
    return any(
        step.revision == revision for step in script.iterate_revisions(state.revision, "base")
    )
