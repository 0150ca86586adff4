"""Questions about the database's catalog that several tools ask: does a table exist,
does a column. Each runs one read-only statement on the SQLAlchemy connection it is
given, in whatever transaction that connection has."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection

RELATION_EXISTS = "SELECT to_regclass(%(name)s) IS NOT NULL"
"""Whether the relation ``name`` exists on the search path (psycopg parameters)."""

COLUMN_EXISTS = (
    "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%(table)s) "
    "AND attname = %(column)s AND NOT attisdropped)"
)
"""Whether ``table`` exists and has the column ``column`` (psycopg parameters)."""

PRESENT_RELATIONS = (
    "SELECT name FROM unnest(%(names)s::text[]) AS name WHERE to_regclass(name) IS NOT NULL"
)
"""Which of ``names`` exist on the search path (psycopg parameters)."""


def relation_exists(connection: Connection, name: str) -> bool:
    """Whether the table (or other relation) ``name`` exists on the search path."""
    return bool(connection.exec_driver_sql(RELATION_EXISTS, {"name": name}).scalar())


def column_exists(connection: Connection, table: str, column: str) -> bool:
    """Whether ``table`` exists and has a column ``column`` that is not dropped."""
    return bool(
        connection.exec_driver_sql(COLUMN_EXISTS, {"table": table, "column": column}).scalar()
    )


def present_relations(connection: Connection, names: Iterable[str]) -> set[str]:
    """The ones of ``names`` that exist on the search path."""
    return set(connection.exec_driver_sql(PRESENT_RELATIONS, {"names": list(names)}).scalars())
