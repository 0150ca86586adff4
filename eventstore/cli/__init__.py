"""The ``eventstore`` command: demo, migrations, monitoring, health checks, backups,
and the check that an application can read every stored event.

Every subcommand takes the database from ``--url``, else ``DATABASE_URL`` (the
environment, then a ``.env`` file in the working directory), and never prints a
password. ``main(argv)`` runs it and returns the exit code.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from eventstore.cli import check_events, demo, doctor, erase, grant, stats, transfer
from eventstore.cli._common import cli
from eventstore.cli.migrate import migrate

cli.add_command(demo.command)
cli.add_command(migrate)
cli.add_command(stats.command)
cli.add_command(doctor.command)
cli.add_command(grant.command)
cli.add_command(erase.command)
for transfer_command in transfer.commands:
    cli.add_command(transfer_command)
cli.add_command(check_events.command)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    try:
        result = cli.main(args=list(argv) if argv is not None else None, standalone_mode=False)
    except click.exceptions.Exit as exit_:
        return int(exit_.exit_code)
    except click.ClickException as error:
        error.show()
        return error.exit_code
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 1
    return int(result) if isinstance(result, int) else 0


__all__ = ["cli", "main"]
