"""What a run produces: one :class:`CaseResult` per measured case (an operation
at one size or setting), each with the figures of every side and its ratios to
the floor and to the peer, and one :class:`Target` per performance target the
run could check (see :mod:`benchmarks._targets`).

Ratios are computed per round, from figures measured in the same round, and
summarised by their median. Each side is compared with the floor doing the same
work (``library/no-notify`` with ``floor/no-notify``, every other side with
``floor``). ``basis`` says which figure a ratio compares: ``"time"`` (median
latency; below 1 is faster than the reference) or ``"rate"`` (throughput; above
1 is faster).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from benchmarks._sides import FLOOR, FLOOR_NO_NOTIFY, LIBRARY, LIBRARY_NO_NOTIFY, PEER
from benchmarks._stats import RatioSummary, median, per_round_ratios, rate, summarise_latencies

Basis = Literal["time", "rate"]


@dataclass
class SideFigures:
    """One side's figures for one case.

    ``p50_us`` / ``p99_us`` are per-call latencies over all rounds (None for
    thread runs); ``rate`` is units per second (``rate_unit`` of the case),
    from the median call for timed calls or from the wall time for thread
    runs; ``per_round`` holds the figure of each round that ratios use (p50 in
    microseconds for a ``time`` basis, the rate for a ``rate`` basis);
    ``samples_us`` every timed call.
    """

    side: str
    p50_us: float | None = None
    p99_us: float | None = None
    rate: float | None = None
    per_round: list[float] = field(default_factory=list)
    samples_us: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class CaseResult:
    """One case of one operation, every side measured in the same rounds."""

    key: str
    operation: int
    title: str
    basis: Basis
    rate_unit: str
    sides: dict[str, SideFigures]
    versus_floor: dict[str, RatioSummary] = field(default_factory=dict)
    versus_peer: dict[str, RatioSummary] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Target:
    """One of pg-eventstore's performance targets, checked against this run.

    ``passed`` is None when the run could not check it (a side missing, or a
    mode too small); ``note`` says why, or qualifies the figure.
    """

    operation: int
    description: str
    measured: float | None
    comparison: Literal["<=", ">=", "<"]
    limit: float
    passed: bool | None
    note: str = ""


FLOOR_OF = {LIBRARY_NO_NOTIFY: FLOOR_NO_NOTIFY}
"""A side compared with a floor other than ``floor``: the one doing the same work."""


def _compare(case: CaseResult) -> None:
    reference_peer = case.sides.get(PEER)
    for name, figures in case.sides.items():
        reference_floor = case.sides.get(FLOOR_OF.get(name, FLOOR))
        if name != FLOOR and reference_floor is not None:
            case.versus_floor[name] = per_round_ratios(figures.per_round, reference_floor.per_round)
        if name in (LIBRARY, LIBRARY_NO_NOTIFY) and reference_peer is not None:
            case.versus_peer[name] = per_round_ratios(figures.per_round, reference_peer.per_round)


def case_from_latencies(
    *,
    key: str,
    operation: int,
    title: str,
    basis: Basis,
    units_per_call: float,
    rate_unit: str,
    samples: Mapping[str, Sequence[Sequence[float]]],
    extra: dict[str, Any] | None = None,
) -> CaseResult:
    """Build a case from per-call durations in seconds (per side, per round).

    The rate is ``units_per_call`` over the median call; with a ``rate`` basis the
    per-round figure is the rate at that round's median call, with a ``time``
    basis that round's median latency.
    """
    sides = {}
    for name, rounds in samples.items():
        summary = summarise_latencies(rounds)
        all_samples = [value for samples_ in rounds for value in samples_]
        per_round = (
            summary.per_round_p50_us
            if basis == "time"
            else [rate(units_per_call, p50 / 1e6) for p50 in summary.per_round_p50_us]
        )
        sides[name] = SideFigures(
            side=name,
            p50_us=summary.p50_us,
            p99_us=summary.p99_us,
            rate=rate(units_per_call, median(all_samples)),
            per_round=per_round,
            samples_us=[round(value * 1e6, 1) for value in all_samples],
        )
    case = CaseResult(key, operation, title, basis, rate_unit, sides, extra=extra or {})
    _compare(case)
    return case


def case_from_rates(
    *,
    key: str,
    operation: int,
    title: str,
    rate_unit: str,
    rates: Mapping[str, Sequence[float]],
    extras: Mapping[str, dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> CaseResult:
    """Build a ``rate``-basis case from one measured rate per side per round."""
    sides = {
        name: SideFigures(
            side=name,
            rate=median(values),
            per_round=list(values),
            extra=dict((extras or {}).get(name, {})),
        )
        for name, values in rates.items()
    }
    case = CaseResult(key, operation, title, "rate", rate_unit, sides, extra=extra or {})
    _compare(case)
    return case
