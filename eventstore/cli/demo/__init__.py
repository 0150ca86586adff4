"""``eventstore demo``: the order-processing story, on the embedded server or yours.

The story is :mod:`eventstore.cli.demo.story` (its events and order state in
:mod:`eventstore.cli.demo.orders`); :mod:`eventstore.cli.demo.data_dir` runs it on
the embedded server.
"""

from __future__ import annotations

from pathlib import Path

import click

from eventstore.cli._common import console, redact, reported_errors, resolve_url, url_option
from eventstore.cli.demo.data_dir import DEFAULT_DATA_DIR, run_embedded_demo
from eventstore.cli.demo.story import run_demo


@click.command(name="demo")
@url_option
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"Where the embedded server keeps its data between runs. Default: ./{DEFAULT_DATA_DIR}",
)
@click.option(
    "--reset",
    is_flag=True,
    help="Delete the embedded server's data directory first and start over.",
)
def command(url: str | None, data_dir: Path | None, reset: bool) -> None:
    """Watch the event store work: an order-processing story, end to end.

    Places and changes orders, catches an optimistic-concurrency conflict,
    crosses the snapshot threshold, rebuilds an order from its snapshot, reads
    the global feed, runs a projection and ends with the statistics.

    With no database given (no --url, no DATABASE_URL) it starts an embedded
    PostgreSQL whose data directory is kept between runs. With a database it
    migrates it to the newest schema and works in streams of its own
    (demo-<run>-...), next to whatever else is there.

    \b
    Example:
      eventstore demo                       # embedded, data in ./.eventstore
      eventstore demo --reset               # start over
      eventstore demo --url postgresql://postgres@localhost/app
    """
    database = resolve_url(url, required=False)
    if database is not None and (data_dir is not None or reset):
        raise click.UsageError(
            "--data-dir and --reset are for the embedded server; drop them, or drop --url "
            "(and unset DATABASE_URL) to use the embedded server"
        )
    with reported_errors():
        if database is None:
            run_embedded_demo(data_dir or DEFAULT_DATA_DIR, console, reset=reset)
        else:
            source = "--url" if url else "DATABASE_URL"
            console.print(f"Using the database from {source}.", markup=False, highlight=False)
            run_demo(database, console, describe=redact(database))
