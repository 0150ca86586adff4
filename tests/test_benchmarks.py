"""The benchmark suite's own checks: its statistics, its report, its timing
harness, and one quick run of the whole suite against the test server."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from benchmarks._cli import OPERATIONS, parse_arguments
from benchmarks._harness import interleave, rotation, run_threads
from benchmarks._plan import FULL, QUICK, SCALE, plan_for
from benchmarks._rebuild import FLOOR_BATCH, LIBRARY_BATCH, LIBRARY_DBAPI
from benchmarks._rebuild import KEY as REBUILD_KEY
from benchmarks._report import TARGETS_TITLE, build_report, write_json
from benchmarks._results import CaseResult, SideFigures, case_from_latencies, case_from_rates
from benchmarks._server import fill_chunks
from benchmarks._sides import (
    FLOOR,
    FLOOR_BARE,
    FLOOR_NO_NOTIFY,
    LIBRARY,
    LIBRARY_NO_NOTIFY,
    PEER,
    libpq_url,
)
from benchmarks._stats import per_round_ratios, percentile, rate, summarise_latencies
from benchmarks._targets import evaluate
from benchmarks._workload import encode_payload, encode_peer_state
from eventstore.urls import normalize_url

ROOT = Path(__file__).resolve().parent.parent

# -- statistics ---------------------------------------------------------------------


def test_percentile_interpolates_between_ranks() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile(values, 0) == 1
    assert percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7


def test_percentile_refuses_nothing_and_out_of_range() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile([1.0], 101)


def test_ratio_is_the_median_of_per_round_ratios_not_the_ratio_of_medians() -> None:
    # Round 2 is slow for both sides: per-round ratios stay near 1.1, while the
    # ratio of overall medians would mix rounds and read otherwise.
    library = [110.0, 330.0, 111.0]
    floor = [100.0, 300.0, 100.0]
    summary = per_round_ratios(library, floor)
    assert summary.per_round == pytest.approx([1.1, 1.1, 1.11])
    assert summary.median == pytest.approx(1.1)
    assert summary.low == pytest.approx(1.1)
    assert summary.high == pytest.approx(1.11)


def test_ratios_refuse_mismatched_rounds_and_zero_denominators() -> None:
    with pytest.raises(ValueError, match="numerators"):
        per_round_ratios([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="no rounds"):
        per_round_ratios([], [])
    with pytest.raises(ValueError, match="not positive"):
        per_round_ratios([1.0], [0.0])


def test_latency_summary_is_in_microseconds_per_round() -> None:
    summary = summarise_latencies([[0.001, 0.002, 0.003], [0.004, 0.005, 0.006]])
    assert summary.p50_us == pytest.approx(3500)
    assert summary.per_round_p50_us == pytest.approx([2000, 5000])
    assert summary.p99_us == pytest.approx(5950)
    with pytest.raises(ValueError, match="every round"):
        summarise_latencies([[0.001], []])


def test_rate_of_a_zero_duration_is_infinite() -> None:
    assert rate(10, 0.5) == 20
    assert math.isinf(rate(10, 0))


# -- cases and targets -------------------------------------------------------------


def _latencies(p50_us: float, rounds: int = 3) -> list[list[float]]:
    return [[p50_us / 1e6] * 5 for _ in range(rounds)]


def test_time_case_compares_each_side_to_the_floor_and_the_library_to_the_peer() -> None:
    case = case_from_latencies(
        key="1.new",
        operation=1,
        title="single append, new stream",
        basis="time",
        units_per_call=1,
        rate_unit="events/s",
        samples={
            LIBRARY: _latencies(440),
            FLOOR: _latencies(400),
            PEER: _latencies(500),
            FLOOR_BARE: _latencies(320),
        },
    )
    assert case.versus_floor[LIBRARY].median == pytest.approx(1.1)
    assert case.versus_floor[FLOOR_BARE].median == pytest.approx(0.8)
    assert case.versus_peer[LIBRARY].median == pytest.approx(0.88)
    assert set(case.versus_peer) == {LIBRARY}
    assert FLOOR not in case.versus_floor
    assert case.sides[FLOOR].rate == pytest.approx(2500)
    assert case.sides[LIBRARY].samples_us == [440.0] * 15


def test_rate_case_ratios_are_rates_so_higher_is_faster() -> None:
    case = case_from_latencies(
        key="2.batch100",
        operation=2,
        title="batch append of 100",
        basis="rate",
        units_per_call=100,
        rate_unit="events/s",
        samples={LIBRARY: _latencies(2000), FLOOR: _latencies(1600)},
    )
    assert case.sides[LIBRARY].rate == pytest.approx(50_000)
    assert case.versus_floor[LIBRARY].median == pytest.approx(0.8)
    assert case.versus_peer == {}


def test_a_side_without_notify_is_compared_with_the_floor_without_notify() -> None:
    case = case_from_rates(
        key="6.threads8",
        operation=6,
        title="8 threads",
        rate_unit="events/s",
        rates={
            LIBRARY: [90.0],
            FLOOR: [100.0],
            LIBRARY_NO_NOTIFY: [180.0],
            FLOOR_NO_NOTIFY: [200.0],
            PEER: [150.0],
        },
    )
    assert case.versus_floor[LIBRARY_NO_NOTIFY].median == pytest.approx(0.9)
    assert case.versus_floor[FLOOR_NO_NOTIFY].median == pytest.approx(2.0)
    assert case.versus_peer[LIBRARY_NO_NOTIFY].median == pytest.approx(1.2)


def _case(key: str, library: float, floor: float, peer: float | None = None) -> CaseResult:
    rates = {LIBRARY: [library], FLOOR: [floor]}
    if peer is not None:
        rates[PEER] = [peer]
    return case_from_rates(
        key=key, operation=int(key[0]), title=key, rate_unit="events/s", rates=rates
    )


def test_targets_pass_and_fail_by_their_limits() -> None:
    batch = _case("2.batch100", library=86, floor=100, peer=90)  # 0.86 floor, 0.96 peer
    threads = _case("6.threads8", library=3000, floor=4000)
    threads.sides[LIBRARY].extra["scaling_vs_1_thread"] = 3.2
    iterate = _case("4.iterate", library=1, floor=1)
    iterate.sides[LIBRARY].extra["rss_growth_mb"] = 120.0
    targets = {t.description: t for t in evaluate([batch, threads, iterate], FULL)}
    assert targets["batch of 100 events/s vs floor"].passed is True
    assert targets["batch of 100 events/s vs eventsourcing"].passed is False
    assert targets["8 threads vs 1 thread, events/s"].passed is True
    assert targets["iter_events peak RSS growth (MB)"].passed is False
    assert all(t.note == "" for t in targets.values())


def test_rebuild_targets_compare_per_event_with_the_floor_and_batch_with_per_event() -> None:
    rates = {LIBRARY: [800.0, 700.0], LIBRARY_BATCH: [1300.0, 1100.0], FLOOR: [1000.0, 1000.0]}
    case = case_from_rates(
        key=REBUILD_KEY, operation=11, title="rebuild", rate_unit="events/s", rates=rates
    )
    targets = {t.description: t for t in evaluate([case], FULL)}
    per_event = targets["rebuild events/s, per-event handler vs floor"]
    batch = targets["rebuild events/s, batch handler vs per-event handler"]
    assert per_event.measured == pytest.approx(0.75)
    assert per_event.passed is False
    assert batch.measured == pytest.approx((1300 / 800 + 1100 / 700) / 2)
    assert batch.passed is True
    assert evaluate([case], QUICK)[0].note == "quick run: not a claim"


def test_targets_without_a_peer_cannot_be_judged_and_quick_runs_are_no_claim() -> None:
    targets = evaluate([_case("3.load", library=90, floor=100)], QUICK)
    by_text = {t.description: t for t in targets}
    assert by_text["stream load events/s vs eventsourcing"].passed is None
    assert by_text["stream load events/s vs eventsourcing"].note == "eventsourcing not installed"
    assert by_text["stream load events/s vs floor"].passed is True
    assert by_text["stream load events/s vs floor"].note == "quick run: not a claim"


def test_growth_target_compares_one_million_rows_to_the_smallest_level() -> None:
    def growth(key: str, p50_us: float) -> CaseResult:
        return case_from_latencies(
            key=key,
            operation=8,
            title=key,
            basis="time",
            units_per_call=1,
            rate_unit="ops/s",
            samples={LIBRARY: _latencies(p50_us), FLOOR: _latencies(p50_us)},
        )

    cases = [
        growth("8.append@10000", 400),
        growth("8.append@1000000", 480),
        growth("8.append@10000000", 900),
    ]
    (target,) = evaluate(cases, SCALE)
    assert target.measured == pytest.approx(1.2)
    assert target.passed is True


def test_report_json_has_the_documented_shape_and_is_strict_json(tmp_path: Path) -> None:
    case = case_from_latencies(
        key="1.new",
        operation=1,
        title="single append, new stream",
        basis="time",
        units_per_call=1,
        rate_unit="events/s",
        samples={LIBRARY: _latencies(440), FLOOR: _latencies(400)},
    )
    case.sides["odd"] = SideFigures(side="odd", rate=math.inf)
    report = build_report(
        plan=QUICK,
        started_at="2025-01-01T00:00:00+00:00",
        wall_seconds=1.234,
        server={"version": "PostgreSQL 15", "settings": {"fsync": "on"}, "description": "x"},
        machine={"cpu_count": 2, "python": "3.11", "packages": {"psycopg": "3.3"}},
        cases=[case],
        targets=evaluate([case], QUICK),
        notes=["a note"],
    )
    path = tmp_path / "deep" / "latest.json"
    write_json(report, path)
    loaded = json.loads(path.read_text())
    assert set(loaded) == {
        "schema",
        "mode",
        "started_at",
        "wall_seconds",
        "server",
        "machine",
        "source",
        "plan",
        "notes",
        "cases",
        "targets",
    }
    assert loaded["mode"] == "quick"
    assert loaded["plan"]["iterate_events"] == QUICK.iterate_events
    (stored,) = loaded["cases"]
    assert stored["sides"]["odd"]["rate"] is None  # infinity is not JSON
    assert stored["sides"][LIBRARY]["p50_us"] == pytest.approx(440)
    assert set(stored["versus_floor"][LIBRARY]) == {"median", "low", "high", "per_round"}
    assert {t["description"] for t in loaded["targets"]} >= {
        "single append p50 (new stream) vs floor's checked insert"
    }


# -- harness -----------------------------------------------------------------------


def test_rotation_gives_every_name_every_place() -> None:
    names = ["a", "b", "c"]
    firsts = {rotation(names, shift)[0] for shift in range(3)}
    assert firsts == set(names)
    assert rotation(names, 4) == ["b", "c", "a"]
    assert rotation([], 1) == []


def test_interleave_alternates_calls_and_groups_samples_by_round() -> None:
    order: list[str] = []
    calls = {name: (lambda name=name: order.append(name)) for name in "abc"}
    samples = interleave(calls, rounds=2, per_round=3, warmup=1)
    assert order[:3] == ["a", "b", "c"]  # warm-up
    timed = order[3:]
    assert len(timed) == 18
    # No side ever runs twice in a row within a round's block of three calls.
    for block in range(0, 18, 3):
        assert sorted(timed[block : block + 3]) == ["a", "b", "c"]
    assert timed[0:3] == ["a", "b", "c"]
    assert timed[3:6] == ["b", "c", "a"]
    assert {name: [len(r) for r in rounds] for name, rounds in samples.items()} == {
        "a": [3, 3],
        "b": [3, 3],
        "c": [3, 3],
    }


def test_threads_start_together_and_stop_at_the_deadline() -> None:
    started: list[float] = []
    lock = threading.Lock()

    def task(deadline: float) -> int:
        with lock:
            started.append(time.perf_counter())
        count = 0
        while time.perf_counter() < deadline:
            count += 1
            time.sleep(0.001)
        return count

    run = run_threads([task] * 4, 0.1)
    assert len(run.results) == 4
    assert all(count > 0 for count in run.results)
    assert 0.1 <= run.seconds < 1.0
    assert max(started) - min(started) < 0.05


def test_a_failing_thread_fails_the_run() -> None:
    def fail(deadline: float) -> int:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_threads([fail, fail], 0.05)


@pytest.mark.parametrize(
    ("streams", "per_stream", "chunk"), [(1, 2500, 1000), (250, 100, 1000), (7, 3, 10)]
)
def test_fill_chunks_cover_every_row_once(streams: int, per_stream: int, chunk: int) -> None:
    rows: set[tuple[int, int]] = set()
    for s0, s1, v0, v1 in fill_chunks(5, streams, per_stream, chunk):
        assert (s1 - s0 + 1) * (v1 - v0 + 1) <= chunk
        rows.update((s, v) for s in range(s0, s1 + 1) for v in range(v0, v1 + 1))
    assert rows == {(s, v) for s in range(5, 5 + streams) for v in range(1, per_stream + 1)}


# -- workload and options ----------------------------------------------------------


def test_payload_is_about_200_bytes_of_cbor() -> None:
    assert 180 <= len(encode_payload()) <= 220
    assert len(encode_peer_state()) > len(encode_payload())  # metadata rides inside


def test_options_select_the_plan_and_operations() -> None:
    args = parse_arguments(["--quick", "--only", "1", "7"])
    assert plan_for(quick=args.quick, scale=args.scale) is QUICK
    assert args.only == [1, 7]
    assert set(OPERATIONS) == set(range(1, 13))
    assert SCALE.growth_levels[-1] == 10_000_000
    assert 10_000_000 not in FULL.growth_levels
    assert FULL.growth_layout == "interleaved"
    layout = parse_arguments(["--growth-layout", "clustered"]).growth_layout
    assert plan_for(quick=False, scale=False, growth_layout=layout).growth_layout == "clustered"
    with pytest.raises(SystemExit):
        parse_arguments(["--quick", "--scale"])
    with pytest.raises(SystemExit):
        parse_arguments(["--only", "0"])


# -- the whole suite, quickly --------------------------------------------------------


def _bench_databases(url: str) -> set[str]:
    admin = libpq_url(url)
    with psycopg.connect(admin, autocommit=True) as connection:
        rows = connection.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'es\\_bench\\_%'"
        ).fetchall()
    return {row[0] for row in rows}


def test_quick_run_measures_every_operation_and_drops_its_databases(
    eventstore_database_url: str, tmp_path: Path
) -> None:
    server = normalize_url(eventstore_database_url).render_as_string(hide_password=False)
    before = _bench_databases(server)
    report_path = tmp_path / "quick.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--url",
            server,
            "--json",
            str(report_path),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    elapsed = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-4000:]
    assert elapsed < 60, f"--quick took {elapsed:.0f} s"
    assert _bench_databases(server) == before
    report = json.loads(report_path.read_text())
    assert report["mode"] == "quick"
    assert report["server"]["settings"]["fsync"] in ("on", "off")
    assert {case["operation"] for case in report["cases"]} == set(OPERATIONS)
    for case in report["cases"]:
        assert {LIBRARY, FLOOR} <= set(case["sides"]), case["key"]
        assert LIBRARY in case["versus_floor"], case["key"]
    (contention,) = [case for case in report["cases"] if case["key"] == "7.contention"]
    assert all(side["extra"]["contiguous"] for side in contention["sides"].values())
    (rebuilt,) = [case for case in report["cases"] if case["key"] == REBUILD_KEY]
    assert set(rebuilt["sides"]) == {LIBRARY, LIBRARY_DBAPI, LIBRARY_BATCH, FLOOR, FLOOR_BATCH}
    assert "QUICK RUN" in done.stdout
    assert TARGETS_TITLE in done.stdout
    (bulk,) = [case for case in report["cases"] if case["key"] == "12.import"]
    assert bulk["extra"]["events"] == 2_000
    assert {target["description"] for target in report["targets"] if target["operation"] == 12} >= {
        "import events/s vs raw binary COPY"
    }
