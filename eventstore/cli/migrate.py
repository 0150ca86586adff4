"""``eventstore migrate``: the library's Alembic revisions against a database."""

from __future__ import annotations

import click
from alembic import command

from eventstore import migrations
from eventstore.cli._common import console, redact, reported_errors, resolve_url, url_option


@click.command()
@click.argument(
    "action",
    type=click.Choice(["upgrade", "downgrade", "current", "history"]),
    default="upgrade",
)
@click.argument("revision", required=False)
@url_option
def migrate(action: str, revision: str | None, url: str | None) -> None:
    """Run the store's schema migrations (recorded in eventstore_alembic_version).

    \b
    upgrade [REVISION]    to REVISION, default head
    downgrade REVISION    down to REVISION ("base" removes every table)
    current               the database's revision
    history               every revision, newest first

    \b
    Example:
      eventstore migrate upgrade --url postgresql://postgres@localhost/app
      eventstore migrate downgrade eventstore_0001
    """
    if action == "history":
        command.history(migrations.alembic_config(), verbose=False)
        return
    database = resolve_url(url)
    assert database is not None
    with reported_errors():
        if action == "upgrade":
            migrations.upgrade(database, revision or "head")
            console.print(f"{redact(database)}: at {migrations.current(database)}")
        elif action == "downgrade":
            if revision is None:
                raise click.UsageError(
                    "downgrade needs a REVISION: `eventstore migrate downgrade base` removes "
                    "every table of the event store (and its events)"
                )
            migrations.downgrade(database, revision)
            console.print(f"{redact(database)}: at {migrations.current(database) or 'base'}")
        else:
            console.print(migrations.current(database) or "base (not migrated)")
