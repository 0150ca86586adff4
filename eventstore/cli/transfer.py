"""``eventstore export`` and ``eventstore import``: a logical backup in one portable file."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from eventstore.cli._common import (
    console,
    redact,
    reported_errors,
    resolve_url,
    size_text,
    url_option,
)
from eventstore.cli._progress import progress_bars, stderr_console
from eventstore.transfer import (
    ImportSummary,
    TransferError,
    export_events,
    import_events,
)

_SHOWN_REFUSALS = 20
"""Refused streams listed one by one; the rest are counted."""


@click.command(name="export")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.option(
    "--stream",
    "stream_prefix",
    metavar="PREFIX",
    help="Only the streams whose id starts with PREFIX (literally: % and _ are plain characters).",
)
@click.option(
    "--gzip/--no-gzip",
    "compress",
    default=None,
    help="Compress the file with gzip. Default: when FILE ends in .gz.",
)
@url_option
def export_command(
    file: Path, stream_prefix: str | None, compress: bool | None, url: str | None
) -> None:
    """Write events and snapshots to FILE, a portable backup.

    FILE is a CBOR sequence holding every event (in feed order, with its raw
    bytes, metadata and timestamp exactly as stored) and every snapshot, with a
    checksum. It is read from one consistent snapshot of the database while
    the application keeps writing. FILE - writes to standard output.

    \b
    Example:
      eventstore export backup.cbor.gz
      eventstore export orders.cbor --stream order- --url postgresql://app@db/app
    """
    database = resolve_url(url)
    assert database is not None
    to_stdout = str(file) == "-"
    destination = sys.stdout.buffer if to_stdout else file
    with reported_errors(), progress_bars(_PHASES) as progress:
        try:
            summary = export_events(
                database,
                destination,
                stream_prefix=stream_prefix,
                compress=compress,
                progress=progress,
            )
        except OSError as error:
            raise click.ClickException(f"cannot write {file}: {error.strerror or error}") from None
    rate = summary.events / summary.seconds if summary.seconds > 0 else 0.0
    out = stderr_console() if to_stdout else console
    out.print(
        f"exported {summary.events:,} events of {summary.streams:,} streams and "
        f"{summary.snapshots:,} snapshots from {redact(database)} to "
        f"{'standard output' if to_stdout else file} ({size_text(summary.bytes_written)}) "
        f"in {summary.seconds:.1f} s ({rate:,.0f} events/s)"
    )


@click.command(name="import")
@click.argument(
    "file", type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path)
)
@url_option
def import_command(file: Path, url: str | None) -> None:
    """Load a file written by `eventstore export` into a database.

    The database must be migrated to head. The whole file is verified first
    (format, counts, checksum): a damaged file imports nothing. A stream whose
    versions the database already has is refused and left untouched; the
    other streams are imported, each whole with its snapshot or not at all,
    in the file's feed order. Exits 1 when a stream was refused or the file
    fails verification. FILE - reads standard input; gzip is recognised.

    \b
    Example:
      eventstore import backup.cbor.gz --url postgresql://postgres@localhost/restored
    """
    database = resolve_url(url)
    assert database is not None
    source = sys.stdin.buffer if str(file) == "-" else file
    with reported_errors(), progress_bars(_PHASES) as progress:
        try:
            summary = import_events(database, source, progress=progress)
        except TransferError as error:
            raise click.ClickException(_failure(error)) from None
        except OSError as error:
            raise click.ClickException(f"cannot read {file}: {error.strerror or error}") from None
    rate = summary.events / summary.seconds if summary.seconds > 0 else 0.0
    console.print(
        f"imported {summary.events:,} events of {summary.streams:,} streams and "
        f"{summary.snapshots:,} snapshots from {file} into {redact(database)} "
        f"in {summary.seconds:.1f} s ({rate:,.0f} events/s)"
    )
    if not summary.ok:
        _report_refusals(summary)
        raise click.exceptions.Exit(1)


commands = [export_command, import_command]


def _report_refusals(summary: ImportSummary) -> None:
    err = stderr_console()
    err.print(
        f"Error: refused {summary.refused_streams:,} streams ({summary.refused_events:,} "
        "events) and left them untouched, because the target already has versions of them:"
    )
    for refused in summary.refused[:_SHOWN_REFUSALS]:
        err.print(f"  {refused.stream_id!r}: {refused.reason}")
    if summary.refused_streams > _SHOWN_REFUSALS:
        err.print(f"  ... and {summary.refused_streams - _SHOWN_REFUSALS:,} more")


def _failure(error: TransferError) -> str:
    imported = error.imported
    if imported is None or imported.events == 0:
        return str(error)
    return (
        f"{error}; already imported and kept: {imported.events:,} events of "
        f"{imported.streams:,} streams and {imported.snapshots:,} snapshots"
    )


_PHASES = {
    "events": ("exporting events", "events"),
    "snapshots": ("exporting snapshots", "snapshots"),
    "reading": ("verifying", "events"),
    "writing": ("importing", "events"),
}
