"""Alembic environment for pg-eventstore's schema (the generic template, adapted).

Where the database comes from, first match wins:

1. a SQLAlchemy Connection in ``config.attributes["connection"]`` (how
   ``eventstore.migrations`` and tests run the revisions on their own connection,
   inside their own transaction);
2. ``sqlalchemy.url`` in the Alembic config;
3. ``DATABASE_URL`` in the environment, else in a ``.env`` file in the working
   directory. ``postgres://``, ``postgresql://`` and ``postgresql+psycopg://`` URLs
   are accepted, query options included.

The revision is recorded in ``eventstore_alembic_version``, not in
``alembic_version``, so an application's own Alembic history is left alone.
"""

from __future__ import annotations

from logging.config import fileConfig

import alembic.context as context
from alembic.util import CommandError
from sqlalchemy import Connection, engine_from_config, pool

from eventstore.errors import ValidationError
from eventstore.migrations import VERSION_TABLE
from eventstore.schema import metadata, recognise_types
from eventstore.urls import database_url_from_environment, normalize_url

# The Alembic Config object: access to the values of the .ini file in use, if any.
config = context.config

# Set up loggers from the config file; programmatic runs bring their own logging.
if config.config_file_name is not None:
    fileConfig(config.config_file_name)

# The Core tables, for autogenerate (revisions themselves never import them).
target_metadata = metadata


def database_url() -> str:
    """The configured URL, normalised for psycopg 3; CommandError when there is none."""
    url = config.get_main_option("sqlalchemy.url") or database_url_from_environment()
    if not url:
        raise CommandError(
            "no database URL: set DATABASE_URL (in the environment or in a .env file in "
            "the working directory), e.g. DATABASE_URL=postgresql://user:password@localhost:5432/dbname"
        )
    try:
        normalized = normalize_url(url).render_as_string(hide_password=False)
    except ValidationError as exc:
        raise CommandError(str(exc)) from exc
    # Config values go through configparser interpolation: '%' must be doubled.
    config.set_main_option("sqlalchemy.url", normalized.replace("%", "%%"))
    return normalized


def run_migrations_offline() -> None:
    """Run migrations in 'offline' mode: emit the SQL instead of executing it."""
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        version_table=VERSION_TABLE,
    )

    with context.begin_transaction():
        context.run_migrations()


def run_on(connection: Connection) -> None:
    """Run the migrations on ``connection``."""
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
    )

    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run migrations in 'online' mode, on a handed-in connection or a new one."""
    connection = config.attributes.get("connection")
    if connection is not None:
        run_on(connection)
        return

    database_url()
    connectable = engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    # `alembic check` and `alembic revision --autogenerate` reflect the tables
    # through this engine: let it read xid8 (a handed-in connection is the
    # caller's, and an upgrade or downgrade reflects no column types).
    recognise_types(connectable.dialect)
    try:
        with connectable.connect() as connection:
            run_on(connection)
    finally:
        connectable.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
