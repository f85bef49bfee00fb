"""The benchmark's parts that run without servers: figures, the table, the load generator."""

import itertools
import json
import math

import pytest

from bench.load import run_load
from bench.run import main
from bench.stall import Answer, StallRun
from bench.stats import Result, format_table, load_average, percentile, ratio


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


def test_ratio_is_none_when_not_computable():
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(None, 2.0) is None
    assert ratio(1.0, 0.0) is None
    assert ratio(math.nan, 1.0) is None


def test_rounds_merge_and_the_summary_carries_the_load_average():
    result = Result("ours", 8, [10.0, 20.0], errors=1, load=[0.1, 0.2, 0.3])
    result.add(Result("ours", 8, [30.0, 40.0], errors=2, load=[0.4, 0.5, 0.6]))
    assert (result.ok, result.errors, result.p50) == (4, 3, 25.0)
    assert result.summary() == {
        "ok": 4,
        "errors": 3,
        "p50_ms": 25.0,
        "p99_ms": 39.7,
        "load_average": [0.4, 0.5, 0.6],
    }
    assert len(load_average()) == 3


def test_every_row_of_the_table_has_its_load_average():
    results = [
        Result("ours", 1, [1.0], load=[0.25, 0, 0]),
        Result("anchor", 32, [], errors=5, load=[1.5, 0, 0]),
    ]
    lines = format_table(results).splitlines()
    assert lines[0].split() == [
        "scenario",
        "clients",
        "ok",
        "errors",
        "p50",
        "ms",
        "p99",
        "ms",
        "load",
    ]
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].split() == ["ours", "1", "1", "0", "1.0", "1.0", "0.25"]
    assert lines[3].split() == ["anchor", "32", "0", "5", "n/a", "n/a", "1.50"]
    assert len({len(line) for line in lines}) == 1  # aligned columns


def test_load_generator_counts_every_measured_call_after_the_warm_up():
    calls = itertools.count()

    def factory():
        return lambda: next(calls) % 4 != 0

    result = run_load("fake", factory, concurrency=3, seconds=0.02, warmup=5)
    made = next(calls)
    assert result.ok + result.errors == made - 3 * 5
    assert result.ok == len(result.latencies_ms)
    assert len(result.load) == 3


def test_stall_figures_and_summary():
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


def test_an_unknown_part_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["capacity"])
    assert "token, stall, protection, relay" in capsys.readouterr().err


def test_the_json_line_has_the_load_average_when_no_part_can_run(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr("bench.run.services", lambda: "no PostgreSQL here")
    monkeypatch.delenv("GATEWAY_REALTIME_REQUIRE_SERVICES", raising=False)
    assert main(["token", "--save", str(tmp_path / "run.json")]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    data = json.loads(line)
    assert data["skipped"] == "no PostgreSQL here"
    assert len(data["load_average_at_start"]) == len(data["load_average_at_end"]) == 3
    assert json.loads((tmp_path / "run.json").read_text()) == data


def test_the_named_figures_come_from_the_runs_results() -> None:
    from bench.run import figures

    out = {
        "token": {"c1": {"ratio_p50": 1.1}, "c8": {"ratio_p50": 1.2, "ratio_p99": 1.5}},
        "stall": {"page_max_s": 0.02, "second_wave_p50_ms": 90.0},
        "stall_defaults_2x4": {"page_max_s": 0.4, "second_wave_p50_ms": 150.0},
    }
    assert figures(out) == {
        "time_to_token_ratio_p50_c1": 1.1,
        "time_to_token_ratio_p50_c8": 1.2,
        "time_to_token_ratio_p99_c8": 1.5,
        "stall_page_max_s": 0.02,
        "stall_fail_fast_p50_ms": 90.0,
        "stall_page_max_s_defaults_2x4": 0.4,
        "stall_fail_fast_p50_ms_defaults_2x4": 150.0,
    }
    assert figures({}) == {}
