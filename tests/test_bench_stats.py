"""The benchmark's pure parts (bench/stats.py): no servers, no timing."""

import json
import math
import time

import pytest

from bench.loadgen import HttpTarget, run_load
from bench.plot import series
from bench.stats import (
    REQUIRED_KEYS,
    Result,
    format_cpu_table,
    format_table,
    json_line,
    merge_results,
    percentile,
    ratio,
)


@pytest.mark.parametrize(
    ("values", "pct", "expected"),
    [
        ([5.0], 50, 5.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
        ([4.0, 1.0, 3.0, 2.0], 0, 1.0),
        ([4.0, 1.0, 3.0, 2.0], 100, 4.0),
        (list(range(1, 101)), 99, 99.01),
    ],
)
def test_percentile_interpolates_like_numpy(values, pct, expected):
    assert percentile(values, pct) == pytest.approx(expected)


def test_percentile_of_nothing_is_nan_and_range_is_checked():
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_result_summary():
    result = Result("mint", 4, [10.0, 20.0, 30.0, 40.0], errors=1, wall_s=2.0, cpu_s=0.02)
    assert result.ok == 4
    assert result.p50 == 25.0
    assert result.throughput == 2.0
    assert result.cpu_ms_per_request == 5.0
    summary = result.summary()
    assert "latencies_ms" not in summary
    assert summary["p50_ms"] == 25.0
    assert summary["errors"] == 1


def test_result_without_successes_has_no_numbers():
    result = Result("broken", 2, [], errors=5, wall_s=1.0)
    assert result.cpu_ms_per_request is None
    assert result.summary()["p50_ms"] is None
    assert "n/a" in format_table([result])


def test_ratio_is_none_when_not_computable():
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(None, 2.0) is None
    assert ratio(1.0, 0.0) is None
    assert ratio(math.nan, 1.0) is None


def test_table_has_a_header_and_one_row_per_result():
    results = [Result("a", 1, [1.0], 0, 1.0), Result("longer name", 16, [2.0, 4.0], 0, 1.0)]
    lines = format_table(results).splitlines()
    assert lines[0].split()[:2] == ["scenario", "conc"]
    assert set(lines[1]) <= {"-", " "}
    assert lines[3].startswith("longer name")
    assert len({len(line) for line in lines}) == 1  # aligned columns


def test_json_line_has_every_required_key_first_and_parses():
    line = json_line({"cpu_per_mint": 3.1, "mode": "quick"})
    assert "\n" not in line
    data = json.loads(line)
    assert list(data)[: len(REQUIRED_KEYS)] == list(REQUIRED_KEYS)
    assert data["cpu_per_mint"] == 3.1
    assert data["scale_ratio_1m"] is None
    assert data["mode"] == "quick"


def test_json_line_keeps_what_the_next_bench_builds_on_and_not_the_retired_ratios():
    assert {
        "cpu_per_mint",
        "cpu_per_mint_vs_anchor",
        "scale_ratio_1m",
        "handshakes_per_1000",
    } <= set(REQUIRED_KEYS)
    assert not [key for key in REQUIRED_KEYS if "overhead_ratio" in key]


def test_json_line_has_issue_12s_keys_even_when_not_measured():
    issue_12 = [
        "gateway_latency_ms",
        "time_to_token_ratio_p50_c1",
        "time_to_token_ratio_p50_c8",
        "time_to_token_ratio_p99_c8",
        "time_to_token_ratio_p50_c32",
        "capacity_mints_per_s",
        "stall_page_max_s",
        "stall_fail_fast_p50_ms",
        "handshakes_per_1000",
        "server_threads",
        "scale_ratio_1m",
        "cpu_per_mint_vs_anchor",
    ]
    assert set(issue_12) <= set(REQUIRED_KEYS)
    data = json.loads(json_line({"gateway_latency_ms": 50, "capacity_mints_per_s": None}))
    assert [key for key in issue_12 if key not in data] == []
    assert data["gateway_latency_ms"] == 50
    assert data["time_to_token_ratio_p50_c32"] is None


def test_open_loop_generator_offers_its_rate_and_times_from_the_due_time():
    from bench.loadgen import run_open_loop

    def factory():
        def call():
            time.sleep(0.01)
            return True

        return call

    started = time.perf_counter()
    result = run_open_loop("fake", factory, rate=100, seconds=0.5, threads=4, warmup=0)
    elapsed = time.perf_counter() - started
    assert result.ok == 50 and result.errors == 0
    assert 0.45 <= elapsed < 2.0  # paced, not as fast as it can
    assert min(result.latencies_ms) >= 10.0


def test_stall_summary_and_figures():
    from bench.stall import Answer, StallRun

    run = StallRun(
        [
            Answer("first", 5.0, 504, "gateway_timeout"),
            Answer("second", 0.01, 503, "gateway_busy"),
            Answer("second", 0.02, 503, "gateway_unavailable"),
            Answer("second", 5.0, 504, "gateway_timeout"),
            Answer("page", 0.05, 200),
            Answer("page", 0.4, 200),
            Answer("page", 30.0, None),
        ]
    )
    assert run.page_max_s == 30.0
    assert run.fail_fast_p50_ms == 20.0
    summary = run.summary()
    assert summary["second"]["statuses"] == {
        "503 gateway_busy": 1,
        "503 gateway_unavailable": 1,
        "504 gateway_timeout": 1,
    }
    assert summary["page"]["statuses"] == {"200": 2, "no answer": 1}
    assert StallRun().page_max_s is None and StallRun().fail_fast_p50_ms is None


def test_plot_series_groups_by_scenario_and_sorts_by_concurrency():
    results = [
        {"name": "mint endpoint (ours)", "concurrency": 4, "p50_ms": 3.0, "p99_ms": 9.0},
        {"name": "mint endpoint (ours)", "concurrency": 1, "p50_ms": 1.0, "p99_ms": 2.0},
        {"name": "mint, 0 audit rows", "concurrency": 8, "p50_ms": 5.0, "p99_ms": 6.0},
    ]
    assert series(results) == {"mint endpoint (ours)": [(1, 1.0, 2.0), (4, 3.0, 9.0)]}


def test_load_generator_counts_successes_and_failures_within_its_bounds():
    calls = iter(range(1000))

    def factory():
        return lambda: next(calls) % 4 != 0

    result = run_load("fake", factory, concurrency=2, max_requests=40, max_seconds=60, warmup=1)
    assert result.ok + result.errors == 40
    assert result.errors == 10


def test_load_generator_talks_to_loopback_only():
    with pytest.raises(ValueError):
        HttpTarget(port=80, path="/", host="example.com").factory([])


def test_report_renders_results_metrics_and_machine():
    from bench.report import render

    run = {
        "machine": {"cpus": 2},
        "metrics": {"cpu_per_mint": 1.2},
        "results": [Result("mint", 4, [1.0, 3.0], 0, 1.0, cpu_s=0.002).summary()],
    }
    text = render(run)
    assert "| mint | 4 | 2 | 0 | 2.0 |" in text
    assert "| `cpu_per_mint` | 1.2 |" in text
    assert "| cpus | 2 |" in text


def test_cpu_by_process_adds_every_kind_per_request():
    result = Result(
        "mint",
        4,
        [1.0] * 100,
        0,
        1.0,
        cpu_s=1.0,
        cpu_others_s={"postgresql": 0.2, "load generator": 0.05},
    )
    assert result.cpu_ms_per_request_by_process() == {
        "server": 10.0,
        "postgresql": 2.0,
        "load generator": 0.5,
        "total": 12.5,
    }
    assert result.summary()["cpu_ms_per_req_by_process"]["total"] == 12.5
    # The direct mint has no server, only the others.
    direct = Result("direct", 4, [1.0] * 10, 0, 1.0, cpu_others_s={"emulator": 0.01})
    assert direct.cpu_ms_per_request_by_process() == {"emulator": 1.0, "total": 1.0}
    assert Result("none", 1, [1.0], 0, 1.0).cpu_ms_per_request_by_process() == {}
    table = format_cpu_table([result, direct, Result("none", 1, [1.0], 0, 1.0)]).splitlines()
    assert table[0].split()[:3] == ["scenario", "conc", "server"]
    assert len(table) == 4  # header, rule, two rows
    assert table[2].split()[-1] == "12.50"
    assert " - " in table[3]


def test_merge_results_of_rounds():
    rounds = [
        Result("mint", 4, [1.0, 2.0], 1, 1.0, cpu_s=0.5, cpu_others_s={"postgresql": 0.1}),
        Result("mint", 4, [3.0, 4.0, 5.0], 0, 2.0, cpu_s=0.25, cpu_others_s={"postgresql": 0.2}),
    ]
    merged = merge_results(rounds)
    assert merged.latencies_ms == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert (merged.errors, merged.wall_s, merged.cpu_s) == (1, 3.0, 0.75)
    assert merged.cpu_others_s == pytest.approx({"postgresql": 0.3})
    assert merged.p50 == 3.0
    assert merged.notes == "2 rounds"
    # A round without server CPU (the direct mint) leaves it unknown.
    assert merge_results([Result("direct", 4, [1.0], 0, 1.0)] * 2).cpu_s is None
