"""``eventstore stats``: the guide's monitoring queries as one report."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from eventstore.cli._common import console, reported_errors, resolve_url, size_text, url_option
from eventstore.monitoring import StatsReport, collect_stats


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}" + ("" if number == 1 else "s")


def _table(title: str, *columns: str | Column) -> Table:
    """A table with its title above it on the left."""
    return Table(*columns, title=title, title_justify="left")


def _figures(header: str) -> Column:
    """A column of figures: aligned right."""
    return Column(header, justify="right")


def render(report: StatsReport, out: Console | None = None) -> None:
    """Print ``report`` as rich tables on ``out`` (default: the command's console)."""
    out = out or console
    out.print(f"[bold]{escape(report.database)}[/bold] on PostgreSQL {report.server_version}")

    sizes = _table("Storage", "relation", _figures("total"), _figures("table"), _figures("indexes"))
    for table in report.tables:
        sizes.add_row(
            table.name,
            size_text(table.total_bytes),
            size_text(table.table_bytes),
            size_text(table.indexes_bytes),
        )
        for index, size in table.indexes.items():
            sizes.add_row(f"  {index}", "", "", size_text(size), style="dim")
    out.print(sizes)
    out.print(f"{_count(report.events, 'event')} in {_count(report.streams, 'stream')}")

    if report.busiest_streams:
        busiest = _table(
            f"Busiest streams (top {report.top})",
            "stream",
            _figures("events"),
            _figures("version"),
        )
        for stream in report.busiest_streams:
            busiest.add_row(escape(stream.stream_id), f"{stream.events:,}", f"{stream.version:,}")
        out.print(busiest)

    out.print(
        f"Snapshot coverage: {report.streams_with_snapshot:,} of "
        f"{_count(report.streams, 'stream')} with a snapshot; "
        f"{report.streams_past_threshold:,} more than {_count(report.threshold, 'event')} "
        "past it (or from the start, without one)"
    )
    if report.past_threshold:
        past = _table(
            "Furthest past their snapshot",
            "stream",
            _figures("version"),
            _figures("snapshot"),
            _figures("events since"),
        )
        for behind in report.past_threshold:
            past.add_row(
                escape(behind.stream_id),
                f"{behind.version:,}",
                "none" if behind.snapshot_version is None else f"{behind.snapshot_version:,}",
                f"{behind.events_since_snapshot:,}",
            )
        out.print(past)

    oldest = report.oldest_transaction
    if oldest is None:
        out.print("Oldest running transaction: none")
    else:
        holds = "holds the feed back" if oldest.holds_feed else "no transaction id yet"
        out.print(
            f"Oldest running transaction: {oldest.age_seconds:.1f} s, pid {oldest.pid}"
            f" on {escape(oldest.database or '-')}"
            f" ({escape(oldest.state or oldest.backend_type or '-')}; {holds})"
        )
    if report.held_back_events is not None:
        out.print(f"Committed events not yet in the feed: {report.held_back_events:,}")
    if report.projections:
        lag = _table(
            "Projections",
            "projection",
            _figures("lag (events)"),
            _figures("skipped"),
            "checkpoint",
            "updated",
        )
        for projection in report.projections:
            lag.add_row(
                escape(projection.name),
                f"{projection.lag_events:,}",
                f"{projection.skipped_events:,}",
                str(projection.checkpoint),
                f"{projection.seconds_since_update:.0f} s ago",
            )
        out.print(lag)
        skipped = sum(projection.skipped_events for projection in report.projections)
        if skipped:
            out.print(
                f"[bold]{_count(skipped, 'event')} skipped[/bold]: projections passed over "
                "events they cannot decode; `eventstore doctor` says which and what to do"
            )
    else:
        out.print("Projections: none has saved a checkpoint")


@click.command(name="stats")
@url_option
@click.option(
    "--threshold",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="List streams more than this many events past their snapshot.",
)
@click.option(
    "--top",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="How many streams the lists show.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
def command(url: str | None, threshold: int, top: int, as_json: bool) -> None:
    """Show the store's size, busiest streams, snapshot coverage and feed lag.

    Each projection's line counts the events it skipped because they cannot be
    decoded (on_undecodable="skip"). Reads all of the events table once
    (counting events per stream): on a very large store, run it when that read
    is acceptable. --json prints one object whose keys are listed under
    "eventstore stats" in docs/database-setup.md.

    \b
    Example:
      eventstore stats --url postgresql://postgres@localhost/app
      eventstore stats --threshold 50 --json
    """
    database = resolve_url(url)
    assert database is not None
    with reported_errors():
        report = collect_stats(database, threshold=threshold, top=top)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        render(report)
