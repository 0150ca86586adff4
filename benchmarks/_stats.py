"""The statistics the report uses: percentiles, per-round ratios and their summary.

Pure functions over lists of floats; nothing here touches a database.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, interpolating linearly
    between the two nearest ranks (numpy's default method).

    Raises ValueError for an empty sequence or a ``q`` outside 0-100.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be between 0 and 100, got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    below = math.floor(rank)
    above = math.ceil(rank)
    if below == above:
        return ordered[below]
    weight = rank - below
    return ordered[below] * (1 - weight) + ordered[above] * weight


def median(values: Sequence[float]) -> float:
    """The median of ``values``; ValueError when empty."""
    if not values:
        raise ValueError("median of no values")
    return statistics.median(values)


def rate(units: float, seconds: float) -> float:
    """``units`` per second; ``inf`` for a zero duration (never raises)."""
    return math.inf if seconds <= 0 else units / seconds


@dataclass(frozen=True)
class RatioSummary:
    """Ratios computed round by round, summarised by their median.

    ``low`` and ``high`` are the smallest and largest per-round ratio, so a
    reader can see how much the rounds agreed.
    """

    median: float
    low: float
    high: float
    per_round: list[float] = field(default_factory=list)


def per_round_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> RatioSummary:
    """``numerators[i] / denominators[i]`` for each round ``i``, summarised.

    Both sequences hold one figure per round (a median latency or a rate),
    measured in the same round so that machine noise hits both alike. Raises
    ValueError when the lengths differ, there are no rounds, or a denominator
    is not positive.
    """
    if len(numerators) != len(denominators):
        raise ValueError(f"{len(numerators)} numerators for {len(denominators)} denominators")
    if not numerators:
        raise ValueError("no rounds to compare")
    if any(d <= 0 for d in denominators):
        raise ValueError("a denominator is not positive")
    ratios = [n / d for n, d in zip(numerators, denominators, strict=True)]
    return RatioSummary(median(ratios), min(ratios), max(ratios), ratios)


@dataclass(frozen=True)
class LatencySummary:
    """Per-call latencies in microseconds, over all rounds and round by round."""

    p50_us: float
    p99_us: float
    per_round_p50_us: list[float]


def summarise_latencies(rounds: Sequence[Sequence[float]]) -> LatencySummary:
    """Summarise per-call durations in seconds, grouped by round.

    Raises ValueError when there are no samples or a round is empty.
    """
    if not rounds or any(not samples for samples in rounds):
        raise ValueError("every round needs at least one sample")
    everything = [value for samples in rounds for value in samples]
    return LatencySummary(
        p50_us=median(everything) * 1e6,
        p99_us=percentile(everything, 99) * 1e6,
        per_round_p50_us=[median(samples) * 1e6 for samples in rounds],
    )
