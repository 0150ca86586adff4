"""A SQLAlchemy Engine on Django's own psycopg connection, for Alembic.

Alembic runs on a SQLAlchemy ``Connection``; a Django migration runs inside
Django's transaction on Django's connection. :func:`borrowed_engine` joins the
two: its engine's one connection is Django's psycopg connection, and its
dialect never commits, rolls back, closes or changes the isolation level of
that connection. Whatever runs through it stays in Django's transaction, which
Django alone ends. This is the only place the integration does so.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.pool import NullPool

_DIALECT = "eventstore_django_borrowed"


class BorrowedPsycopgDialect(PGDialect_psycopg):
    """The psycopg dialect, minus everything that ends or reconfigures a connection."""

    use_native_hstore = False  # no type lookups, no adapters added to Django's connection
    supports_statement_cache = True

    def do_commit(self, dbapi_connection: Any) -> None:
        """Django commits."""

    def do_rollback(self, dbapi_connection: Any) -> None:
        """Django rolls back (SQLAlchemy's reset-on-return and a failed block included)."""

    def do_close(self, dbapi_connection: Any) -> None:
        """Django closes its connection."""

    def do_terminate(self, dbapi_connection: Any) -> None:
        """Django closes its connection, even one SQLAlchemy would invalidate."""

    def set_isolation_level(self, dbapi_connection: Any, level: Any) -> None:
        """The isolation level (and autocommit) is Django's."""

    def reset_isolation_level(self, dbapi_connection: Any) -> None:
        """The isolation level (and autocommit) is Django's."""

    def get_default_isolation_level(self, dbapi_conn: Any) -> Any:
        # psycopg's dialect rolls back an idle connection after asking; don't ask.
        return "READ COMMITTED"

    def on_connect(self) -> None:
        """Add no notice handler to Django's connection (one per borrowing would pile up)."""
        return None


registry.register(f"postgresql.{_DIALECT}", __name__, BorrowedPsycopgDialect.__name__)


@contextmanager
def borrowed_engine(django_connection: Any) -> Iterator[Engine]:
    """An Engine whose every connection is ``django_connection``'s psycopg connection.

    ``django_connection`` is ``django.db.connections[alias]``; it is connected
    first. Use it inside ``transaction.atomic(using=alias)``: statements then
    run in Django's transaction (outside one, Django's autocommit makes each its
    own). Leaving the engine (disposed on exit) leaves Django's connection open
    and its transaction as it was.
    """
    django_connection.ensure_connection()
    driver_connection = django_connection.connection
    engine = create_engine(
        f"postgresql+{_DIALECT}://",
        creator=lambda: driver_connection,
        poolclass=NullPool,
        pool_reset_on_return=None,
    )
    try:
        yield engine
    finally:
        engine.dispose()
