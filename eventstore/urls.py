"""Database URLs: the forms people paste, normalised for SQLAlchemy + psycopg 3.

Accepted: ``postgres://``, ``postgresql://``, ``postgresql+psycopg://`` (and
``postgresql+psycopg2://``, rewritten to psycopg 3). Query options such as
``sslmode``, ``connect_timeout`` and ``application_name`` pass through to libpq.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from eventstore.errors import ValidationError

DATABASE_URL_VARIABLE = "DATABASE_URL"

_POSTGRES_SCHEMES = frozenset(
    {"postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2", "postgres+psycopg"}
)


def normalize_url(url: str | URL) -> URL:
    """Return ``url`` as a SQLAlchemy URL that uses the psycopg 3 driver.

    Raises :class:`ValidationError` for anything that is not a PostgreSQL URL,
    and for a port (in the host part or a ``port`` query option) that is not a
    number from 1 to 65535, naming it.
    """
    if isinstance(url, str):
        if not url.strip():
            raise ValidationError("the database URL is empty: pass postgresql://user@host/dbname")
        try:
            parsed = make_url(url.strip())
        except (ArgumentError, ValueError) as exc:
            _check_port(_port_text(url.strip()))
            raise ValidationError(
                f"cannot parse the database URL {_redact(url)!r}: "
                "expected postgresql://user:password@host:5432/dbname"
            ) from exc
    elif isinstance(url, URL):
        parsed = url
    else:
        raise ValidationError(
            f"a database URL must be a str or sqlalchemy URL, not {type(url).__name__}"
        )
    if parsed.drivername not in _POSTGRES_SCHEMES:
        raise ValidationError(
            f"unsupported database URL scheme {parsed.drivername!r}: pg-eventstore needs "
            "PostgreSQL (postgres://, postgresql:// or postgresql+psycopg://)"
        )
    if parsed.port is not None:
        _check_port(str(parsed.port))
    query_port = parsed.query.get("port")
    for port in (query_port,) if isinstance(query_port, str) else query_port or ():
        for part in port.split(","):
            _check_port(part.strip())
    return parsed.set(drivername="postgresql+psycopg")


def _check_port(port: str | None) -> None:
    """ValidationError naming ``port`` unless it is a TCP port number (1 to 65535).

    libpq refuses a port above 65535 only when connecting (as if the server
    were down), and takes 0 for its default port.
    """
    if port is None or port == "":
        return
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValidationError(
            f"the database URL has port {port!r}: a port is a number from 1 to 65535 "
            "(PostgreSQL listens on 5432 unless configured otherwise)"
        )


def _port_text(url: str) -> str | None:
    """The port as written in ``url`` (``host:port`` after any ``user@``), if any."""
    netloc = urlsplit(url).netloc.rpartition("@")[2]
    if netloc.endswith("]") or ":" not in netloc:
        return None
    return netloc.rpartition(":")[2]


def database_url_from_environment(
    variable: str = DATABASE_URL_VARIABLE, *, env_file: str | Path | None = ".env"
) -> str | None:
    """Return the URL in ``variable`` from the environment, else from ``env_file``.

    The environment wins over the file, as with python-dotenv's defaults. Returns
    None when neither has it.
    """
    value = os.environ.get(variable)
    if value:
        return value
    if env_file is not None and Path(env_file).is_file():
        from dotenv import dotenv_values

        from_file = dotenv_values(env_file).get(variable)
        if from_file:
            return from_file
    return None


def _redact(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<unparseable URL>"
