"""pg-eventstore's performance targets (documented in docs/benchmarks.md,
"Targets"), checked against the cases of one run.

Each target compares ratios measured in the same run. A target whose cases
were not run (``--only``) is left out; one that cannot be judged (no peer, or a
``--quick`` run too small to stand for the claim) has ``passed=None`` or a note.
"""

from __future__ import annotations

from collections.abc import Sequence

from benchmarks import _bulk_import
from benchmarks._latency import targets as latency_targets
from benchmarks._notify import targets as notify_targets
from benchmarks._plan import Plan
from benchmarks._rebuild import targets as rebuild_targets
from benchmarks._results import CaseResult, Target
from benchmarks._sides import FLOOR_JSONB, LIBRARY, LIBRARY_NO_NOTIFY
from benchmarks._stats import per_round_ratios

RSS_LIMIT_MB = 100.0


def _check(
    operation: int,
    description: str,
    measured: float | None,
    comparison: str,
    limit: float,
    note: str = "",
) -> Target:
    if measured is None:
        passed = None
    elif comparison == "<=":
        passed = measured <= limit
    elif comparison == ">=":
        passed = measured >= limit
    else:
        passed = measured < limit
    return Target(operation, description, measured, comparison, limit, passed, note)  # type: ignore[arg-type]


def evaluate(cases: Sequence[CaseResult], plan: Plan) -> list[Target]:
    """The targets that the given cases can be checked against."""
    by_key = {case.key: case for case in cases}
    quick = "" if plan.is_claim else "quick run: not a claim"
    targets: list[Target] = []

    def floor_ratio(key: str) -> float | None:
        ratio = by_key[key].versus_floor.get(LIBRARY)
        return None if ratio is None else ratio.median

    def peer_ratio(key: str) -> float | None:
        ratio = by_key[key].versus_peer.get(LIBRARY)
        return None if ratio is None else ratio.median

    no_peer = "eventsourcing not installed"
    for key, label in (("1.new", "new stream"), ("1.existing", "existing stream")):
        if key in by_key:
            targets.append(
                _check(
                    1,
                    f"single append p50 ({label}) vs floor's checked insert",
                    floor_ratio(key),
                    "<=",
                    1.15,
                    quick,
                )
            )
            ratio = peer_ratio(key)
            targets.append(
                _check(
                    1,
                    f"single append p50 ({label}) vs eventsourcing",
                    ratio,
                    "<=",
                    1.10,
                    quick if ratio is not None else no_peer,
                )
            )
    for key, label, floor_limit in (
        ("2.batch100", "batch of 100 events/s", 0.85),
        ("3.load", "stream load events/s", 0.85),
    ):
        if key in by_key:
            targets.append(
                _check(int(key[0]), f"{label} vs floor", floor_ratio(key), ">=", floor_limit, quick)
            )
            ratio = peer_ratio(key)
            targets.append(
                _check(
                    int(key[0]),
                    f"{label} vs eventsourcing",
                    ratio,
                    ">=",
                    1.0,
                    quick if ratio is not None else no_peer,
                )
            )
    if "3.load" in by_key and FLOOR_JSONB in by_key["3.load"].sides:
        sides = by_key["3.load"].sides
        jsonb = per_round_ratios(sides[LIBRARY].per_round, sides[FLOOR_JSONB].per_round)
        targets.append(
            _check(
                3,
                "stream load events/s vs floor parsing JSONB metadata",
                jsonb.median,
                ">=",
                0.85,
                quick,
            )
        )
    if "4.iterate" in by_key:
        library = by_key["4.iterate"].sides[LIBRARY]
        note = quick or ""
        if plan.iterate_events < 1_000_000:
            note = f"only {plan.iterate_events:,} events: not the 1M of the target"
        targets.append(
            _check(
                4,
                "iter_events peak RSS growth (MB)",
                library.extra.get("rss_growth_mb"),
                "<",
                RSS_LIMIT_MB,
                note,
            )
        )
    if "6.threads8" in by_key:
        sides = by_key["6.threads8"].sides
        scaling = sides[LIBRARY].extra.get("scaling_vs_1_thread")
        targets.append(_check(6, "8 threads vs 1 thread, events/s", scaling, ">=", 3.0, quick))
        if LIBRARY_NO_NOTIFY in sides:
            scaling = sides[LIBRARY_NO_NOTIFY].extra.get("scaling_vs_1_thread")
            targets.append(
                _check(6, "8 threads vs 1 thread, notify=False", scaling, ">=", 3.0, quick)
            )
    levels = plan.growth_levels
    small, large = levels[0], (1_000_000 if 1_000_000 in levels else levels[-1])
    for kind in ("append", "load"):
        small_key, large_key = f"8.{kind}@{small}", f"8.{kind}@{large}"
        if small_key in by_key and large_key in by_key:
            a = by_key[large_key].sides[LIBRARY].p50_us
            b = by_key[small_key].sides[LIBRARY].p50_us
            measured = None if a is None or not b else a / b
            targets.append(
                _check(
                    8,
                    f"{kind} p50 at {large:,} rows vs {small:,} rows",
                    measured,
                    "<=",
                    1.25,
                    quick,
                )
            )
    targets.extend(rebuild_targets(by_key, plan))
    targets.extend(_bulk_import.targets(by_key, plan))
    targets.extend(notify_targets(by_key, plan))
    targets.extend(latency_targets(by_key, plan))
    return targets
