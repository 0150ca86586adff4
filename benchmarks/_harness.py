"""Timing: sides interleaved call by call, and threads run against a deadline.

Nothing here knows what is being measured; the measurements hand in callables.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


def rotation(names: Sequence[str], shift: int) -> list[str]:
    """``names`` rotated left by ``shift``, so each way takes each place in turn."""
    if not names:
        return []
    k = shift % len(names)
    return [*names[k:], *names[:k]]


def interleave(
    calls: Mapping[str, Callable[[], object]],
    *,
    rounds: int,
    per_round: int,
    warmup: int,
) -> dict[str, list[list[float]]]:
    """Time each callable ``per_round`` times in each of ``rounds`` rounds,
    A/B/C/B/C/A/... call by call (the order rotates every call), after
    ``warmup`` untimed calls of each and a full garbage collection. The cyclic
    garbage collector stays on: its cost is part of every side's cost.

    Returns, per name, one list of durations in seconds per round. An exception
    from a callable propagates.
    """
    names = list(calls)
    for _ in range(warmup):
        for name in names:
            calls[name]()
    gc.collect()  # every case starts from the same heap, not the last case's garbage
    clock = time.perf_counter
    result: dict[str, list[list[float]]] = {name: [] for name in names}
    for round_number in range(rounds):
        samples: dict[str, list[float]] = {name: [] for name in names}
        for index in range(per_round):
            for name in rotation(names, index + round_number):
                call = calls[name]
                start = clock()
                call()
                samples[name].append(clock() - start)
        for name in names:
            result[name].append(samples[name])
    return result


@dataclass(frozen=True)
class ThreadRun:
    """What :func:`run_threads` measured: each thread's result and the wall time
    from the common start to the last thread's finish."""

    results: list[Any]
    seconds: float


def run_threads(tasks: Sequence[Callable[[float], T]], duration: float) -> ThreadRun:
    """Start one thread per task, release them together, and let each run until
    ``deadline`` (a ``time.perf_counter()`` value passed to the task, ``duration``
    seconds after the release). Each task returns its result when the deadline
    has passed; work in flight at the deadline is finished and counted.

    The first exception raised by a task is re-raised here after all threads end.
    """
    count = len(tasks)
    starts: list[float] = []
    finishes = [0.0] * count
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def release() -> None:
        starts.append(time.perf_counter())

    barrier = threading.Barrier(count, action=release)

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = tasks[index](starts[0] + duration)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()
        finally:
            finishes[index] = time.perf_counter()

    threads = [
        threading.Thread(target=run, args=(i,), name=f"bench-{i}", daemon=True)
        for i in range(count)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return ThreadRun(results, max(finishes) - starts[0])
