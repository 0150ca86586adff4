"""How much each mode measures: the full run, ``--quick`` and ``--scale``."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Plan:
    """Counts and durations for one run. ``rounds`` are interleaved rounds,
    ``calls`` timed calls per side per round, ``seconds`` a thread run's length.
    ``feed_events`` is a multiple of ``page`` (the feed is read in whole pages)."""

    mode: str
    warmup: int
    single_rounds: int
    single_calls: int
    existing_streams: int
    batch_sizes: tuple[int, ...]
    batch_rounds: int
    batch_calls: int
    load_events: int
    load_rounds: int
    load_calls: int
    iterate_events: int
    iterate_rounds: int
    page: int
    feed_events: int
    feed_rounds: int
    feed_calls: int
    snapshot_rounds: int
    snapshot_calls: int
    snapshot_at: int
    replay_events: int
    thread_counts: tuple[int, ...]
    thread_rounds: int
    thread_seconds: float
    thread_warmup_seconds: float
    contention_threads: int
    contention_rounds: int
    contention_seconds: float
    growth_levels: tuple[int, ...]
    growth_rounds: int
    growth_calls: int
    growth_stream_events: int
    growth_layout: str = "interleaved"

    @property
    def is_claim(self) -> bool:
        """False for ``--quick``, whose numbers only prove the suite still runs."""
        return self.mode != "quick"


FULL = Plan(
    mode="full",
    warmup=50,
    single_rounds=10,
    single_calls=200,
    existing_streams=50,
    batch_sizes=(10, 100),
    batch_rounds=10,
    batch_calls=30,
    load_events=10_000,
    load_rounds=10,
    load_calls=3,
    iterate_events=1_000_000,
    iterate_rounds=2,
    page=1000,
    feed_events=100_000,
    feed_rounds=5,
    feed_calls=1,
    snapshot_rounds=10,
    snapshot_calls=100,
    snapshot_at=100,
    replay_events=50,
    thread_counts=(1, 4, 8, 16),
    thread_rounds=3,
    thread_seconds=1.5,
    thread_warmup_seconds=0.3,
    contention_threads=8,
    contention_rounds=3,
    contention_seconds=2.0,
    growth_levels=(10_000, 100_000, 1_000_000),
    growth_rounds=5,
    growth_calls=100,
    growth_stream_events=100,
)

SCALE = replace(FULL, mode="scale", growth_levels=(*FULL.growth_levels, 10_000_000))

QUICK = replace(
    FULL,
    mode="quick",
    warmup=5,
    single_rounds=2,
    single_calls=20,
    existing_streams=10,
    batch_rounds=2,
    batch_calls=3,
    load_rounds=2,
    load_calls=1,
    iterate_events=1_000,
    iterate_rounds=1,
    page=100,
    feed_events=1_000,
    feed_rounds=2,
    snapshot_rounds=2,
    snapshot_calls=10,
    thread_rounds=1,
    thread_seconds=0.2,
    thread_warmup_seconds=0.05,
    contention_rounds=1,
    contention_seconds=0.3,
    growth_levels=(1_000, 10_000),
    growth_rounds=1,
    growth_calls=20,
)


def plan_for(*, quick: bool, scale: bool, growth_layout: str | None = None) -> Plan:
    """The plan for the command-line flags (``quick`` and ``scale`` exclude each
    other); ``growth_layout`` overrides the row order of the table-growth measurement."""
    if quick and scale:
        raise ValueError("--quick and --scale exclude each other")
    plan = QUICK if quick else SCALE if scale else FULL
    return plan if growth_layout is None else replace(plan, growth_layout=growth_layout)
