"""What the SQL tests share: statements as PREPARE takes them, and a database
holding just the Core tables of eventstore.schema."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from sqlalchemy import create_engine

from eventstore import schema
from eventstore.urls import normalize_url

PSYCOPG_PARAMETER = re.compile(r"%\((\w+)\)[sb]|%s")
"""psycopg's parameters: ``%(name)s``, ``%(name)b`` and positional ``%s``."""

TEXT_PARAMETER = re.compile(r"(?<![:\w]):(\w+)")
"""SQLAlchemy text()'s ``:name`` parameters."""


def numbered(sql: str, parameter: re.Pattern[str] = PSYCOPG_PARAMETER) -> str:
    """``sql`` with its parameters as PREPARE's ``$1``, ``$2``, ... (one number a
    name; each positional one a number of its own)."""
    numbers: dict[str, int] = {}

    def number(match: re.Match[str]) -> str:
        name = match.group(1) or f"#{len(numbers)}"
        return f"${numbers.setdefault(name, len(numbers) + 1)}"

    return parameter.sub(number, sql).replace("%%", "%")


@contextmanager
def core_tables_connection(server_url: str) -> Iterator[psycopg.Connection]:
    """A connection to a new database on ``server_url``'s server holding just
    ``schema.metadata``'s tables (``create_all()``); the database is dropped after."""
    server = normalize_url(server_url).set(drivername="postgresql")
    admin_url = server.render_as_string(hide_password=False)
    name = f"es_core_tables_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        engine = create_engine(normalize_url(server_url).set(database=name))
        try:
            schema.metadata.create_all(engine)
        finally:
            engine.dispose()
        with psycopg.connect(server.set(database=name).render_as_string(hide_password=False)) as c:
            yield c
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
