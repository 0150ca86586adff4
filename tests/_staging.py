"""Helpers that stage operational failures for real: a closed port, a role that
must log in with a password on a server whose pg_hba.conf the test may change."""

from __future__ import annotations

import socket
import time

import psycopg
from sqlalchemy.engine import URL

from eventstore.urls import normalize_url

RELOAD_DEADLINE_SECONDS = 10.0
"""How long to wait for the postmaster to apply a reloaded pg_hba.conf."""


def libpq_url(url: str | URL) -> str:
    """``url`` as psycopg.connect() takes it (no ``+psycopg``), password included."""
    return normalize_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def execute(url: str | URL, *statements: str) -> None:
    """Run ``statements`` in autocommit on a connection of their own."""
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        for statement in statements:
            connection.execute(statement)


def closed_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_password(admin_url: str, role: str, password: str, *, wrong: str) -> URL:
    """Create ``role`` with ``password`` and make the server require it (scram-sha-256).

    Only for a server of the test's own (an embedded one): its pg_hba.conf gets a
    line for ``role`` in front of the others and is reloaded. Returns the role's
    URL; returns once a login with the ``wrong`` password is refused.
    """
    execute(admin_url, f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    with psycopg.connect(libpq_url(admin_url), autocommit=True) as admin:
        row = admin.execute("SHOW hba_file").fetchone()
        assert row is not None
        with open(row[0], "r+", encoding="utf-8") as hba:
            rules = hba.read()
            hba.seek(0)
            hba.write(f"local all {role} scram-sha-256\nhost all {role} all scram-sha-256\n")
            hba.write(rules)
        assert admin.execute("SELECT pg_reload_conf()").fetchone() == (True,)
    right = normalize_url(admin_url).set(username=role, password=password)
    # The postmaster reloads when it handles the signal: wait until a wrong password is refused.
    refused = libpq_url(right.set(password=wrong))
    deadline = time.monotonic() + RELOAD_DEADLINE_SECONDS
    while True:
        try:
            psycopg.connect(refused).close()
        except psycopg.OperationalError:
            return right
        assert time.monotonic() < deadline, "pg_hba.conf was not reloaded"
        time.sleep(0.05)
