"""Every statement export and import send, checked against a database built from
the Core tables of eventstore.schema: the queries and writes are PREPAREd, the
rest are run."""

from __future__ import annotations

import re

import psycopg
from sqlalchemy import create_engine

from eventstore import schema
from eventstore.transfer import _sql
from eventstore.urls import normalize_url

RUN_NOT_PREPARED = {
    _sql.READ_ONLY_SNAPSHOT,
    _sql.STAGE_TABLES,
    _sql.COPY_EVENTS,
    _sql.COPY_SNAPSHOTS,
    _sql.INDEX_STAGE,
    _sql.DROP_STAGE,
}


def _numbered(statement: str) -> str:
    """``statement`` with psycopg's parameters as PREPARE's ``$1``, ``$2``..."""
    names: dict[str, int] = {}

    def number(match: re.Match[str]) -> str:
        name = match.group(1) or f"#{len(names)}"
        return f"${names.setdefault(name, len(names) + 1)}"

    return re.sub(r"%\((\w+)\)s|%s", number, statement)


def test_statements_lists_every_statement_of_the_module() -> None:
    constants = {
        value
        for name, value in vars(_sql).items()
        if name.isupper()
        and not name.startswith("_")
        and isinstance(value, str)
        and name not in {"EVENTS", "SNAPSHOTS"}  # table names, from eventstore._sql
    }

    assert set(_sql.STATEMENTS) == constants
    assert len(_sql.STATEMENTS) == len(constants)
    assert set(_sql.STAGING) <= RUN_NOT_PREPARED <= constants


def test_every_statement_prepares_or_runs_on_the_core_tables(scratch_database_url: str) -> None:
    engine = create_engine(normalize_url(scratch_database_url))
    try:
        schema.metadata.create_all(engine)
    finally:
        engine.dispose()
    libpq = normalize_url(scratch_database_url).set(drivername="postgresql")

    with psycopg.connect(libpq.render_as_string(hide_password=False)) as connection:
        connection.execute(_sql.READ_ONLY_SNAPSHOT)
        connection.rollback()
        connection.execute(_sql.STAGE_TABLES)
        cursor = connection.cursor()
        for copy_statement, types in (
            (_sql.COPY_EVENTS, _sql.EVENT_TYPES),
            (_sql.COPY_SNAPSHOTS, _sql.SNAPSHOT_TYPES),
        ):
            with cursor.copy(copy_statement) as copy:
                copy.set_types(types)
        connection.execute(_sql.INDEX_STAGE)
        prepared = 0
        for index, statement in enumerate(_sql.STATEMENTS):
            if statement not in RUN_NOT_PREPARED:
                connection.execute(f"PREPARE transfer_{index} AS {_numbered(statement)}")
                prepared += 1
        connection.execute(_sql.DROP_STAGE)
        connection.rollback()

    assert prepared == len(_sql.STATEMENTS) - len(RUN_NOT_PREPARED)
