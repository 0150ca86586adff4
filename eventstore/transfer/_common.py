"""What export and import share: their arguments (a path or a file, a progress
callback) and their connection to a database at head."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, BinaryIO, Union, cast

import psycopg
import sqlalchemy.exc
from sqlalchemy.engine import URL, Engine

from eventstore import migrations
from eventstore._engines import engine_for
from eventstore.errors import SchemaError, ValidationError

ProgressCallback = Callable[[str, int, "int | None"], None]
"""``progress(phase, done, total)``: called as work advances (``total`` None when unknown).

Export reports the phases ``"events"`` and ``"snapshots"``; import reports
``"reading"`` (events read from the file) and ``"writing"`` (events inserted).
"""

PathOrFile = Union[str, "os.PathLike[str]", BinaryIO, IO[bytes]]


def as_path(target: PathOrFile) -> Path | None:
    """``target`` as a Path, or None when it is a file object."""
    if isinstance(target, (str, os.PathLike)):
        return Path(target)
    if hasattr(target, "read") or hasattr(target, "write"):
        return None
    raise ValidationError(f"expected a path or a binary file, not {type(target).__name__}")


@contextmanager
def connection_at_head(
    url_or_engine: str | URL | Engine, role: str
) -> Iterator[tuple[psycopg.Connection[Any], str | None]]:
    """A psycopg connection from the engine's pool (or from a URL, closed afterwards)
    and the database's schema revision; SchemaError, naming the database as the
    ``role`` one, when its schema is not the newest (see
    :attr:`eventstore.migrations.SchemaState.usable`).

    The check runs in a transaction of its own, before the caller's. The
    connection goes back to the pool on exit, rolled back.
    """
    with engine_for(url_or_engine) as engine:
        with _driver_errors():
            connection = engine.connect()
        with connection:
            with _driver_errors(), connection.begin():
                state = migrations.schema_state(connection)
            if not state.usable:
                if state.revision is None:
                    problem = "has no event store tables"
                else:
                    problem = f"is at schema revision {state.revision}, not {state.head}"
                raise SchemaError(
                    f"the {role} database {problem}: run `eventstore migrate upgrade` on it first"
                )
            driver = cast(psycopg.Connection[Any], connection.connection.driver_connection)
            yield driver, state.revision


@contextmanager
def _driver_errors() -> Iterator[None]:
    """psycopg's errors as psycopg raised them, not wrapped by SQLAlchemy: a transfer
    runs its statements on the psycopg connection, so every database error it
    raises is psycopg's."""
    try:
        yield
    except sqlalchemy.exc.DBAPIError as error:
        if isinstance(error.orig, psycopg.Error):
            raise error.orig from None
        raise


def one(
    connection: psycopg.Connection[Any],
    query: str,
    params: dict[str, Any] | tuple[Any, ...] | None = None,
) -> tuple[Any, ...]:
    """The row ``query`` returns."""
    row = connection.execute(query, params).fetchone()
    assert row is not None
    return tuple(row)


def run(connection: psycopg.Connection[Any], query: str, params: dict[str, Any]) -> int:
    """Run ``query``; return the number of rows it changed."""
    return connection.execute(query, params).rowcount
