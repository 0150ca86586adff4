"""The store's SQL against the Core tables: every statement of ``eventstore._sql``
is PREPAREd (or, where PostgreSQL cannot prepare it, run and rolled back) on a
database created by ``schema.metadata.create_all()``. With the drift test of
test_migrations.py (revisions == Core tables) this ties the revisions, the Core
tables and the SQL together: a column renamed in one place fails here."""

from __future__ import annotations

import re
from collections.abc import Iterator

import psycopg
import pytest
from _sql_checks import TEXT_PARAMETER, core_tables_connection, numbered

from eventstore import _sql

_NOT_PREPARABLE = re.compile(r"^\s*(SET|LOCK|LISTEN)\b", re.IGNORECASE)


def _all_statements() -> Iterator[tuple[str, str]]:
    for name, sql in _sql.PSYCOPG_STATEMENTS.items():
        yield name, numbered(sql)
    for name, sql in _sql.TEXT_STATEMENTS.items():
        yield name, numbered(sql, TEXT_PARAMETER)


@pytest.fixture(scope="module")
def core_tables_database(eventstore_database_url: str) -> Iterator[psycopg.Connection]:
    with core_tables_connection(eventstore_database_url) as connection:
        yield connection


def _check(connection: psycopg.Connection, sql: str) -> None:
    """PREPARE ``sql`` (or run it, for statements PostgreSQL cannot prepare) in a
    transaction that is rolled back."""
    try:
        if _NOT_PREPARABLE.match(sql):
            connection.execute(sql.replace("$1", "'1s'"))
        else:
            connection.execute(f"PREPARE checked AS {sql}")
    finally:
        connection.rollback()
        connection.execute("DEALLOCATE ALL")
        connection.commit()


@pytest.mark.parametrize(("name", "sql"), list(_all_statements()), ids=lambda v: v[:40])
def test_the_statement_prepares_against_the_core_tables(
    core_tables_database: psycopg.Connection, name: str, sql: str
) -> None:
    _check(core_tables_database, sql)


def test_a_statement_that_does_not_match_the_tables_fails_here(
    core_tables_database: psycopg.Connection,
) -> None:
    """The check can fail: a column the Core tables do not have is refused."""
    misspelt = _sql.LOAD_STREAM.replace("version BETWEEN", "versio BETWEEN")
    with pytest.raises(psycopg.errors.UndefinedColumn):
        _check(core_tables_database, numbered(misspelt))


def test_every_statement_is_listed() -> None:
    """Every complete statement of the module is in one of its two lists."""
    listed = set(_sql.PSYCOPG_STATEMENTS.values()) | set(_sql.TEXT_STATEMENTS.values())
    fragments = {
        "EVENTS",
        "SNAPSHOTS",
        "CHECKPOINTS",
        "SKIPPED_EVENTS",
        "NOTIFY_CHANNEL",
        "EVENT_COLUMNS",
        "NOTIFY_IF_INSERTED",
        "HEAD",
        "HEAD_LOCKED",
        "HEAD_TEMPLATE",
        "SAVE_SNAPSHOT_TEMPLATE",
    }
    unlisted = [
        name
        for name, value in vars(_sql).items()
        if name.isupper()
        and isinstance(value, str)
        and name not in fragments
        and value not in listed
    ]
    assert not unlisted
