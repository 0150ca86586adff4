"""Least privilege: what an application's database role needs, and nothing more.

The tables' owner (the role that runs the migrations) grants an application
role exactly what the store does: read and append events, read, upsert and
delete snapshots, keep projection checkpoints and the events projections skip.
The application role can then neither rewrite nor delete events, nor change the
schema.
"""

from __future__ import annotations

from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

from eventstore import migrations
from eventstore._engines import engine_for
from eventstore._validation import check_identifier

STORE_PRIVILEGES: dict[str, str] = {
    "events": "SELECT, INSERT",
    "snapshots": "SELECT, INSERT, UPDATE, DELETE",
    "projection_checkpoints": "SELECT, INSERT, UPDATE, DELETE",
    "projection_skipped_events": "SELECT, INSERT, UPDATE, DELETE",
}
"""What the store does with each table."""

STORE_COLUMN_PRIVILEGES: dict[str, tuple[str, str]] = {"events": ("UPDATE", "version")}
"""Column privileges the store needs: appends inside a REPEATABLE READ or
SERIALIZABLE transaction lock the stream's head row (``FOR KEY SHARE``), which
PostgreSQL allows only with UPDATE on a column. It changes nothing else: the
append-only triggers refuse every UPDATE of ``events`` to all but the erasure
path of the tables' owner."""

OPERATIONS_PRIVILEGES: dict[str, str] = {migrations.VERSION_TABLE: "SELECT"}
"""What ``eventstore doctor``, ``stats`` and ``migrate current`` also read."""


def app_role_grants(role: str) -> list[str]:
    """The GRANT statements that give ``role`` what the store needs, in order."""
    quoted = _quote(check_identifier(role, "role"))
    return [
        *(f"GRANT {rights} ON {table} TO {quoted}" for table, rights in STORE_PRIVILEGES.items()),
        *(
            f"GRANT {right} ({column}) ON {table} TO {quoted}"
            for table, (right, column) in STORE_COLUMN_PRIVILEGES.items()
        ),
        *(
            f"GRANT {rights} ON {table} TO {quoted}"
            for table, rights in OPERATIONS_PRIVILEGES.items()
        ),
    ]


def grant_app_role(url_or_engine: str | URL | Engine, role: str) -> list[str]:
    """Run :func:`app_role_grants` for an existing ``role`` as the tables' owner, in
    one transaction; return the statements run."""
    statements = app_role_grants(role)
    with engine_for(url_or_engine) as engine, engine.begin() as connection:
        for statement in statements:
            connection.execute(text(statement))
    return statements


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'
