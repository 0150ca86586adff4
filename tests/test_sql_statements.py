"""The store's SQL against the Core tables: every statement of ``eventstore._sql``
is PREPAREd (or, where PostgreSQL cannot prepare it, run and rolled back) on a
database created by ``schema.metadata.create_all()``. With the drift test of
test_migrations.py (revisions == Core tables) this ties the revisions, the Core
tables and the SQL together: a column renamed in one place fails here."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import create_engine

from eventstore import _sql, schema
from eventstore.urls import normalize_url

_PSYCOPG_PARAMETER = re.compile(r"%\((\w+)\)[sb]")
_TEXT_PARAMETER = re.compile(r"(?<![:\w]):(\w+)")
_NOT_PREPARABLE = re.compile(r"^\s*(SET|LOCK|LISTEN)\b", re.IGNORECASE)


def _numbered(sql: str, parameter: re.Pattern[str]) -> str:
    """``sql`` with its named parameters as PostgreSQL's $1, $2, ... (one number a name)."""
    numbers: dict[str, int] = {}

    def number(match: re.Match[str]) -> str:
        return f"${numbers.setdefault(match.group(1), len(numbers) + 1)}"

    return parameter.sub(number, sql).replace("%%", "%")


def _all_statements() -> Iterator[tuple[str, str]]:
    for name, sql in _sql.PSYCOPG_STATEMENTS.items():
        yield name, _numbered(sql, _PSYCOPG_PARAMETER)
    for name, sql in _sql.TEXT_STATEMENTS.items():
        yield name, _numbered(sql, _TEXT_PARAMETER)


@pytest.fixture(scope="module")
def core_tables_database(eventstore_database_url: str) -> Iterator[psycopg.Connection]:
    """A connection to a new database holding just ``schema.metadata``'s tables."""
    server = normalize_url(eventstore_database_url).set(drivername="postgresql")
    name = f"es_core_tables_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.render_as_string(hide_password=False), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        engine = create_engine(normalize_url(eventstore_database_url).set(database=name))
        try:
            schema.metadata.create_all(engine)
        finally:
            engine.dispose()
        database = server.set(database=name).render_as_string(hide_password=False)
        with psycopg.connect(database) as connection:
            yield connection
    finally:
        with psycopg.connect(
            server.render_as_string(hide_password=False), autocommit=True
        ) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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
    wrong = _numbered(
        _sql.LOAD_STREAM.replace("version BETWEEN", "versio BETWEEN"), _PSYCOPG_PARAMETER
    )
    with pytest.raises(psycopg.errors.UndefinedColumn):
        _check(core_tables_database, wrong)


def test_every_statement_is_listed() -> None:
    """Every complete statement of the module is in one of its two lists."""
    listed = set(_sql.PSYCOPG_STATEMENTS.values()) | set(_sql.TEXT_STATEMENTS.values())
    fragments = {
        "EVENTS",
        "SNAPSHOTS",
        "CHECKPOINTS",
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
