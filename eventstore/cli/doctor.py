"""``eventstore doctor``: check the database, one line per check; the exit code gates a deploy."""

from __future__ import annotations

import json

import click
from rich.markup import escape

from eventstore.cli._common import console, redact, resolve_url, url_option
from eventstore.doctor import (
    DEFAULT_MAX_TRANSACTION_AGE,
    DEFAULT_POOL_CONNECTIONS,
    EXIT_CODES,
    overall,
    run_checks,
)
from eventstore.errors import EventStoreError

_STYLES = {"pass": "green", "warn": "yellow", "fail": "bold red"}


class _CannotCheck(click.ClickException):
    """The checks could not run at all: exit like a failed check, not like a warning."""

    exit_code = EXIT_CODES["fail"]


@click.command(name="doctor")
@url_option
@click.option(
    "--pool-size",
    type=click.IntRange(min=1),
    default=DEFAULT_POOL_CONNECTIONS,
    show_default=True,
    help="The most connections the application opens (pool_size + max_overflow, "
    "summed over its instances).",
)
@click.option(
    "--max-transaction-age",
    type=click.FloatRange(min=0),
    default=DEFAULT_MAX_TRANSACTION_AGE,
    show_default=True,
    metavar="SECONDS",
    help="Warn about a transaction running longer than this.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the checks as one JSON object.")
def command(url: str | None, pool_size: int, max_transaction_age: float, as_json: bool) -> None:
    """Check the database: connection, schema, settings, feed, query plan.

    Each check prints PASS, WARN or FAIL with what to do. Exit code: 0 when
    everything passes, 1 when something warns, 2 when something fails (or the
    checks cannot run). The password in the URL is never printed.

    \b
    Example:
      eventstore doctor --url postgresql://app@db.internal/app
      eventstore doctor --pool-size 60 || echo "not ready to deploy"
    """
    database = resolve_url(url)
    assert database is not None
    try:
        checks = run_checks(database, pool_size=pool_size, max_transaction_age=max_transaction_age)
    except EventStoreError as error:
        raise _CannotCheck(str(error)) from None
    status = overall(checks)
    if as_json:
        document = {
            "url": redact(database),
            "status": status,
            "checks": [check.to_dict() for check in checks],
        }
        click.echo(json.dumps(document, indent=2))
    else:
        console.print(f"eventstore doctor: {escape(redact(database))}")
        width = max(len(check.name) for check in checks)
        for check in checks:
            style = _STYLES[check.status]
            console.print(
                f"[{style}]{check.status.upper():4}[/{style}]  {check.name:<{width}}  "
                f"{escape(check.message)}"
            )
            if check.advice:
                console.print(f"      {'':<{width}}  [dim]->[/dim] {escape(check.advice)}")
        console.print(f"overall: [{_STYLES[status]}]{status}[/{_STYLES[status]}]")
    click.get_current_context().exit(EXIT_CODES[status])
