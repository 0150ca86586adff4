"""``eventstore grant ROLE``: give an application role exactly what the store needs."""

from __future__ import annotations

import click

from eventstore.cli._common import console, redact, reported_errors, resolve_url, url_option
from eventstore.roles import app_role_grants, grant_app_role


@click.command(name="grant")
@click.argument("role")
@click.option("--print-only", is_flag=True, help="Print the GRANT statements; run nothing.")
@url_option
def command(role: str, print_only: bool, url: str | None) -> None:
    """Grant an existing ROLE what the store needs, and nothing more.

    Run it as the tables' owner (the role that ran the migrations). The
    application role may then read and append events, read and upsert
    snapshots and keep projection checkpoints, but never update or delete
    events nor change the schema.

    \b
    Example:
      psql -c "CREATE ROLE app LOGIN PASSWORD '...'"
      eventstore grant app --url postgresql://owner@localhost/shop
    """
    with reported_errors():
        statements = app_role_grants(role)
        if print_only:
            for statement in statements:
                console.print(statement + ";")
            return
        database = resolve_url(url)
        assert database is not None
        grant_app_role(database, role)
    for statement in statements:
        console.print(statement + ";")
    console.print(f"{redact(database)}: granted to {role}")
