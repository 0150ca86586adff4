"""``eventstore erase STREAM_ID``: remove one stream from the append-only log."""

from __future__ import annotations

import click

from eventstore.cli._common import console, redact, reported_errors, resolve_url, url_option
from eventstore.erasure import erase_stream


@click.command(name="erase")
@click.argument("stream_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@url_option
def command(stream_id: str, yes: bool, url: str | None) -> None:
    """Delete every event and the snapshot of STREAM_ID, for good.

    Events are otherwise never deleted: the table refuses UPDATE, DELETE and
    TRUNCATE. Use this for a legal erasure request, as the role that owns the
    tables (the one that runs the migrations); an application role is
    refused. Read models built from the stream are yours to purge.

    \b
    Example:
      eventstore erase customer-42 --url postgresql://owner@localhost/shop
    """
    with reported_errors():
        database = resolve_url(url)
        assert database is not None
        if not yes:
            click.confirm(
                f"Erase stream {stream_id!r} from {redact(database)}? This cannot be undone",
                abort=True,
            )
        erased = erase_stream(database, stream_id)
    console.print(
        f"{redact(database)}: erased stream {erased.stream_id!r} "
        f"({erased.events} events, {erased.snapshots} snapshots)"
    )
