"""What every subcommand shares: the group, the database URL, errors, output."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click
from rich.console import Console

from eventstore.errors import EventStoreError
from eventstore.urls import database_url_from_environment, normalize_url

F = TypeVar("F", bound=Callable[..., Any])

console = Console(highlight=False, soft_wrap=True)
"""Where subcommands print (rich: tables, progress bars; plain text when piped)."""


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pg-eventstore", prog_name="eventstore")
def cli() -> None:
    """pg-eventstore: an event store on the PostgreSQL you already run.

    The database comes from --url, else DATABASE_URL (environment, then .env).

    \b
    Example:
      eventstore demo
      DATABASE_URL=postgresql://app@db/app eventstore migrate upgrade
    """


def url_option(func: F) -> F:
    """The ``--url`` option every database subcommand takes."""
    return click.option(
        "--url",
        metavar="URL",
        help="Database URL (postgres://, postgresql:// or postgresql+psycopg://). "
        "Default: DATABASE_URL from the environment or .env.",
    )(func)


def resolve_url(url: str | None, *, required: bool = True) -> str | None:
    """``url``, else DATABASE_URL; a :class:`click.UsageError` when required and missing."""
    chosen = url or database_url_from_environment()
    if chosen is None:
        if required:
            raise click.UsageError(
                "no database: pass --url postgresql://user@host/dbname "
                "or set DATABASE_URL (in the environment or a .env file)"
            )
        return None
    try:
        normalize_url(chosen)
    except EventStoreError as error:
        raise click.UsageError(str(error)) from None
    return chosen


def redact(url: str) -> str:
    """``url`` with its password hidden, for printing."""
    try:
        return normalize_url(url).render_as_string(hide_password=True)
    except EventStoreError:
        return "<not a PostgreSQL URL>"


@contextmanager
def reported_errors() -> Iterator[None]:
    """Turn the library's errors and database failures into one-line CLI errors,
    with the advice the library gives (see :mod:`eventstore._translate`)."""
    import psycopg
    import sqlalchemy.exc

    from eventstore._translate import first_line, translate

    try:
        yield
    except EventStoreError as error:
        raise click.ClickException(str(error)) from None
    except (psycopg.Error, sqlalchemy.exc.DBAPIError) as error:
        translated = translate(error)
        if translated is not None:
            raise click.ClickException(str(translated)) from None
        raise click.ClickException(
            f"the database refused: {first_line(error)} (`eventstore doctor` checks the set-up)"
        ) from None


def size_text(size: int) -> str:
    """Bytes as ``pg_size_pretty`` shows them: ``8192 bytes``, ``16 kB``, ``1234 MB``."""
    value, unit = float(size), "bytes"
    for larger in ("kB", "MB", "GB", "TB"):
        if value < 10 * 1024:
            break
        value, unit = value / 1024, larger
    return f"{round(value)} {unit}"
