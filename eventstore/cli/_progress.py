"""Progress bars for the commands that go through a whole table (export, import,
check-events): one bar per phase on standard error, with the rate in the phase's
unit, drawn only when standard error is a terminal."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from eventstore.transfer import ProgressCallback


class _RateColumn(ProgressColumn):
    """Items per second since the task started, e.g. ``52,310 events/s``."""

    def render(self, task: Task) -> Text:
        seconds = task.finished_time if task.finished_time is not None else task.elapsed
        if not seconds or not task.completed:
            return Text("")
        unit = task.fields.get("unit", "events")
        return Text(f"{task.completed / seconds:,.0f} {unit}/s", style="progress.data.speed")


@contextmanager
def progress_bars(phases: Mapping[str, tuple[str, str]]) -> Iterator[ProgressCallback]:
    """A progress callback ``advance(phase, done, total)`` drawing one rich bar per
    phase on standard error, when it is a terminal. ``phases`` maps a phase to its
    bar's description and the unit its rate is counted in."""
    err = stderr_console()
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=not err.is_terminal,
        transient=False,
    )
    tasks: dict[str, TaskID] = {}

    def advance(phase: str, done: int, total: int | None) -> None:
        if phase not in tasks:
            description, unit = phases.get(phase, (phase, "items"))
            tasks[phase] = bars.add_task(description, total=total, unit=unit)
        bars.update(tasks[phase], completed=done, total=total)

    with bars:
        yield advance


def stderr_console() -> Console:
    """A console on standard error, for progress and messages beside piped output."""
    return Console(stderr=True, highlight=False, soft_wrap=True)
