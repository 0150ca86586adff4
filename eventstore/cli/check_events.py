"""``eventstore check-events``: can the application's registry read every stored event?"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.markup import escape
from rich.table import Column, Table

from eventstore.cli._common import console, redact, reported_errors, resolve_url, url_option
from eventstore.cli._progress import progress_bars
from eventstore.registry import EventRegistry
from eventstore.verification import (
    CheckReport,
    EventTally,
    Failures,
    SnapshotTally,
    check_events,
)

_EXAMPLES = 5
"""Failing events shown per reason."""

T = TypeVar("T")


@click.command(name="check-events")
@click.option(
    "--registry",
    "reference",
    required=True,
    metavar="MODULE:ATTRIBUTE",
    help="The application's EventRegistry, or a function returning one, as "
    "package.module:attribute (imported with the working directory on sys.path).",
)
@url_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
def command(reference: str, url: str | None, as_json: bool) -> None:
    """Decode every stored event and snapshot with the application's registry.

    Each event is decoded as the store reads it (aliases, upcasters and renamed
    Enum values applied), and the report counts, per event type and stored
    version, how many decode and how many fail, with the first failing events
    of each reason; snapshots likewise, per snapshot version. Run it with the
    new code before deploying it: exit 0 when everything decodes, 1 when
    anything fails, 2 when the registry cannot be loaded. Read-only (one
    consistent snapshot, bounded memory): safe on production, as the
    application's role.

    \b
    Example:
      eventstore check-events --registry myapp.events:registry
      eventstore check-events --registry myapp.events:make_registry --json
    """
    database = resolve_url(url)
    assert database is not None
    registry = load_registry(reference)
    with reported_errors(), progress_bars(_PHASES) as advance:
        report = check_events(
            database,
            registry,
            examples=_EXAMPLES,
            progress=advance,
        )
    if as_json:
        document = {"url": redact(database), "registry": reference, **report.to_dict()}
        click.echo(json.dumps(document, indent=2))
    else:
        console.print(
            f"eventstore check-events: {escape(redact(database))} with registry {escape(reference)}"
        )
        render(report)
    if not report.ok:
        raise click.exceptions.Exit(1)


def load_registry(reference: str) -> EventRegistry:
    """The EventRegistry ``reference`` (``package.module:attribute``) names: the
    attribute itself, or what calling it returns. The working directory goes first
    on ``sys.path``, as for ``python -m``. Raises :class:`click.BadParameter`
    (exit 2) saying what is wrong."""

    def bad(message: str) -> click.BadParameter:
        return click.BadParameter(message, param_hint="'--registry'")

    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise bad(f"{reference!r} is not package.module:attribute (e.g. myapp.events:registry)")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise bad(f"cannot import {module_name}: {type(error).__name__}: {error}") from None
    value: Any = module
    path = module_name
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise bad(f"{path} has no attribute {part!r}")
        value, path = getattr(value, part), f"{path}.{part}"
    if isinstance(value, EventRegistry):
        return value
    if isinstance(value, type) or not callable(value):
        kind = "class" if isinstance(value, type) else type(value).__name__
        raise bad(f"{reference} is a {kind}, not an EventRegistry or a function returning one")
    try:
        made = value()
    except Exception as error:
        raise bad(f"calling {reference}() failed: {type(error).__name__}: {error}") from None
    if not isinstance(made, EventRegistry):
        raise bad(f"{reference}() returned a {type(made).__name__}, not an EventRegistry")
    return made


def render(report: CheckReport) -> None:
    """Print ``report``: a table of event types and one of snapshot versions, each
    reason of failure with the first failing events, and the verdict."""
    if report.events:
        console.print(_events_table(report.events))
    if report.snapshots:
        console.print(_snapshots_table(report.snapshots))
    for tally in report.events:
        _print_failures(
            f"{tally.event_type} stored at version {_version(tally.stored_version)}",
            "event",
            tally.failures,
            tally.unlisted_failures,
            lambda event: (
                f"stream {event.stream_id!r} version {event.version}, position {event.position}"
            ),
        )
    for snapshot_tally in report.snapshots:
        _print_failures(
            f"snapshots at snapshot version {_version(snapshot_tally.snapshot_version)}",
            "snapshot",
            snapshot_tally.failures,
            snapshot_tally.unlisted_failures,
            lambda snapshot: f"stream {snapshot.stream_id!r} at version {snapshot.version}",
        )
    console.print(_verdict(report))


def _verdict(report: CheckReport) -> str:
    """``OK: 3 events and 1 snapshot checked, all decode`` or ``FAIL: 1 of 3 events
    failed to decode`` (snapshots named when there are some)."""
    events = _count(report.events_checked, "event")
    snapshots = _count(report.snapshots_checked, "snapshot")
    if report.ok:
        checked = f"{events} and {snapshots}" if report.snapshots_checked else events
        return f"[green]OK[/green]: {checked} checked, all decode"
    failed = f"{report.events_failed:,} of {events}"
    if report.snapshots_checked:
        failed += f" and {report.snapshots_failed:,} of {snapshots}"
    return f"[bold red]FAIL[/bold red]: {failed} failed to decode"


def _events_table(tallies: tuple[EventTally, ...]) -> Table:
    table = _table("Events", "event type", _figures("stored version"), "loads as")
    for tally in tallies:
        table.add_row(
            escape(tally.event_type),
            _version(tally.stored_version),
            escape(_loads_as(tally)),
            f"{tally.decoded:,}",
            _failed(tally.failed),
        )
    return table


def _snapshots_table(tallies: tuple[SnapshotTally, ...]) -> Table:
    table = _table("Snapshots", _figures("snapshot version"))
    for tally in tallies:
        table.add_row(_version(tally.snapshot_version), f"{tally.decoded:,}", _failed(tally.failed))
    return table


def _table(title: str, *columns: str | Column) -> Table:
    """A table with its title above it on the left, ending in the decoded and failed counts."""
    return Table(
        *columns, _figures("decoded"), _figures("failed"), title=title, title_justify="left"
    )


def _figures(header: str) -> Column:
    return Column(header, justify="right")


def _print_failures(
    group: str,
    noun: str,
    failures: tuple[Failures[T], ...],
    unlisted: int,
    where: Callable[[T], str],
) -> None:
    """Each reason of a group's failures, how many, and where the first ones are."""
    for kind in failures:
        console.print(
            f"[bold red]{escape(group)}[/bold red], {_count(kind.count, noun)} failed: "
            f"{escape(kind.reason)}"
        )
        for example in kind.first:
            console.print(f"    {escape(where(example))}")
    if unlisted:
        console.print(
            f"[bold red]{escape(group)}[/bold red], {_count(unlisted, noun)} more failed "
            "for other reasons"
        )


def _loads_as(tally: EventTally) -> str:
    if tally.loads_as is None or tally.registered_version is None:
        return "plain data (not registered)"
    upcast = tally.stored_version is not None and tally.stored_version < tally.registered_version
    return f"{tally.loads_as} v{tally.registered_version}" + (" (upcast)" if upcast else "")


def _version(version: int | None) -> str:
    return "unreadable" if version is None else str(version)


def _failed(count: int) -> str:
    return f"[bold red]{count:,}[/bold red]" if count else "0"


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}" + ("" if number == 1 else "s")


_PHASES = {
    "events": ("checking events", "events"),
    "snapshots": ("checking snapshots", "snapshots"),
}
