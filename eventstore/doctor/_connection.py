"""The connection checks: server reachable, authentication, database exists.

When the connection succeeded they all pass. When it failed, they find out from the
outside which step failed: a plain TCP connection (or unix socket) to the server, then
a login to a maintenance database, which also tells whether the database exists.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import psycopg
import sqlalchemy.exc
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from eventstore.doctor._check import Check

DEFAULT_CONNECT_TIMEOUT = 5
"""Seconds to wait for the server when the URL sets no ``connect_timeout``."""

_MAINTENANCE_DATABASES = ("postgres", "template1")

_SLOTS_ADVICE = (
    "no connection slot is left (the server's max_connections, or a CONNECTION LIMIT on the "
    "database or the role): see who holds them, as a superuser: SELECT usename, datname, "
    "state, count(*) FROM pg_stat_activity GROUP BY 1, 2, 3; close idle connections or shrink "
    "the pools, or raise the limit: ALTER SYSTEM SET max_connections = 200; then restart "
    "PostgreSQL (or ALTER ROLE / ALTER DATABASE ... CONNECTION LIMIT n)"
)


def engine(url: URL) -> Engine:
    """An engine for the checks: no pool, autocommit, and a connect timeout unless the
    URL sets one."""
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = DEFAULT_CONNECT_TIMEOUT
    return create_engine(
        url, poolclass=NullPool, isolation_level="AUTOCOMMIT", connect_args=connect_args
    )


@dataclass
class Attempt:
    """A connection to ``target``: the user and database when it succeeded, else
    ``error``, the first line of the driver's message."""

    target: URL
    error: str = ""
    user: str = ""
    database: str = ""

    @cached_property
    def probe(self) -> tuple[bool, str]:
        """(reachable, what was found): a TCP connection or a unix socket, no login."""
        timeout = float(_query_value(self.target, "connect_timeout") or DEFAULT_CONNECT_TIMEOUT)
        return _probe(self.target, timeout)

    @cached_property
    def database_listed(self) -> bool | None:
        """Whether the server lists the database, asked from a maintenance database;
        None when the user cannot log in to any of them."""
        for maintenance in _MAINTENANCE_DATABASES:
            if maintenance == self.wanted_database:
                continue
            maintenance_engine = engine(self.target.set(database=maintenance))
            try:
                with maintenance_engine.connect() as connection:
                    return bool(
                        connection.exec_driver_sql(
                            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = %(name)s)",
                            {"name": self.wanted_database},
                        ).scalar()
                    )
            except (sqlalchemy.exc.DBAPIError, psycopg.Error):
                continue
            finally:
                maintenance_engine.dispose()
        return None

    @property
    def wanted_database(self) -> str:
        """The database the URL names (libpq's default: the user's name)."""
        return self.target.database or self.target.username or ""


def server_reachable(attempt: Attempt) -> Check:
    """The host resolves and accepts connections on the port (or the unix socket
    answers).

    Nothing else can be checked without it. When it fails: check the host name (an
    unknown host), or start the server and check the host, port, ``listen_addresses``
    and firewall.
    """
    if not attempt.error:
        return Check("server reachable", "pass", f"{_where(attempt.target)} accepts connections")
    reachable, found = attempt.probe
    if reachable:
        return Check("server reachable", "pass", found)
    advice = (
        "check the host name in the URL (DNS, /etc/hosts, a typo)"
        if "is unknown" in found
        else "start the server (`sudo systemctl start postgresql`, "
        "`brew services start postgresql@16`, or the guide's `docker run` line); "
        "check the host and port in the URL, that the server listens there "
        "(listen_addresses and port in postgresql.conf) and that no firewall blocks it"
    )
    return Check("server reachable", "fail", found or attempt.error, advice)


def authentication(attempt: Attempt) -> Check:
    """The server accepts the user and password.

    When it does not: create the role, or fix the user and password, or let
    ``pg_hba.conf`` allow password authentication for this user, database and host. A
    login refused for lack of connection slots ("too many connections") is reported as
    a failed ``max_connections`` instead, with how to find who holds the slots.
    """
    if not attempt.error:
        return Check("authentication", "pass", f"logged in as {attempt.user}")
    if attempt.database_listed is None and _is_out_of_slots(attempt.error):
        return Check("max_connections", "fail", attempt.error, _SLOTS_ADVICE)
    if attempt.database_listed is None:
        return Check(
            "authentication", "fail", attempt.error, _login_advice(attempt.target, attempt.error)
        )
    username = attempt.target.username or "the user"
    return Check("authentication", "pass", f"the server accepts {username}")


def database_exists(attempt: Attempt) -> Check:
    """The database of the URL exists and lets the user in.

    When it does not exist: ``CREATE DATABASE``, then ``eventstore migrate upgrade``.
    When it exists but refuses the user: ``GRANT CONNECT`` and a ``pg_hba.conf`` line
    for this database.
    """
    if not attempt.error:
        return Check("database exists", "pass", f"connected to {attempt.database}")
    database = attempt.wanted_database
    if not attempt.database_listed:
        return Check(
            "database exists",
            "fail",
            f'database "{database}" does not exist',
            f"create it: psql -c 'CREATE DATABASE \"{database}\"' (connected as a user "
            "allowed to create databases), then `eventstore migrate upgrade`",
        )
    return Check(
        "database exists",
        "fail",
        f'database "{database}" exists but refused the connection: {attempt.error}',
        f'allow the user in: GRANT CONNECT ON DATABASE "{database}" TO '
        f'"{attempt.target.username}"; and a pg_hba.conf line for this database '
        "(find the file with SHOW hba_file;)",
    )


def _query_value(url: URL, key: str) -> str | None:
    value = url.query.get(key)
    if isinstance(value, tuple):
        return value[0] if value else None
    return value


def _hosts(url: URL) -> list[str]:
    hosts = url.host or _query_value(url, "host") or os.environ.get("PGHOST")
    if hosts:
        return [host for host in hosts.split(",") if host]
    return ["/var/run/postgresql", "/tmp"]


def _port(url: URL) -> int:
    port = url.port or _query_value(url, "port") or os.environ.get("PGPORT") or 5432
    try:
        return int(str(port).split(",")[0])
    except ValueError:
        return 5432


def _where(url: URL) -> str:
    port = _port(url)
    return ", ".join(
        f"socket {host}/.s.PGSQL.{port}" if host.startswith("/") else f"{host}:{port}"
        for host in _hosts(url)
    )


def _probe(url: URL, timeout: float) -> tuple[bool, str]:
    port = _port(url)
    problems: list[str] = []
    for host in _hosts(url):
        if host.startswith("/"):
            path = f"{host}/.s.PGSQL.{port}"
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                try:
                    sock.connect(path)
                except OSError as exc:
                    problems.append(f"socket {path}: {exc.strerror or exc}")
                    continue
            return True, f"socket {path} accepts connections"
        try:
            addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            problems.append(f"host {host!r} is unknown ({exc.strerror})")
            continue
        for family, kind, proto, _, address in addresses:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(timeout)
                try:
                    sock.connect(address)
                except OSError as exc:
                    reason = "timed out" if isinstance(exc, TimeoutError) else exc.strerror or exc
                    problems.append(f"{host}:{port}: {reason}")
                    continue
            return True, f"{host}:{port} accepts connections"
    return False, "; ".join(problems)


def _is_out_of_slots(message: str) -> bool:
    # libpq gives no SQLSTATE for a refused login, only the server's text.
    return "too many" in message or "connection slots are reserved" in message


def _login_advice(target: URL, message: str) -> str:
    if "role" in message and "does not exist" in message:
        return (
            f"create the user: CREATE ROLE \"{target.username}\" LOGIN PASSWORD '...'; "
            "or fix the user name in the URL"
        )
    return (
        "check the user and password in the URL; if they are right, the server's "
        "pg_hba.conf must allow password authentication for this user, database and host: "
        "find the file with SHOW hba_file; (for example /etc/postgresql/16/main/pg_hba.conf), "
        'change "peer" or "ident" to "scram-sha-256" (or "md5") on the matching line, '
        "then reload: SELECT pg_reload_conf();"
    )
