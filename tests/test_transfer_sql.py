"""Every statement export and import send, checked against a database built from
the Core tables of eventstore.schema: the queries and writes are PREPAREd, the
rest are run."""

from __future__ import annotations

from _sql_checks import core_tables_connection, numbered

from eventstore.transfer import _sql

RUN_NOT_PREPARED = {
    _sql.READ_ONLY_SNAPSHOT,
    _sql.STAGE_TABLES,
    _sql.COPY_EVENTS,
    _sql.COPY_SNAPSHOTS,
    _sql.INDEX_STAGE,
    _sql.DROP_STAGE,
}


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


def test_every_statement_prepares_or_runs_on_the_core_tables(eventstore_database_url: str) -> None:
    with core_tables_connection(eventstore_database_url) as connection:
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
                connection.execute(f"PREPARE transfer_{index} AS {numbered(statement)}")
                prepared += 1
        connection.execute(_sql.DROP_STAGE)
        connection.rollback()

    assert prepared == len(_sql.STATEMENTS) - len(RUN_NOT_PREPARED)
