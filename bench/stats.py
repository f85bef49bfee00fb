"""Pure helpers of the benchmark: percentiles, summaries, the table and the JSON line.

Nothing here touches the network, processes or Django, so the test suite can
check it quickly (tests/test_bench_stats.py).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile (0..100) by linear interpolation between closest ranks.

    The same definition as numpy's default, so numbers compare with other tools.
    """
    if not values:
        return math.nan
    if not 0 <= pct <= 100:
        raise ValueError("pct must be between 0 and 100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return float(ordered[low])
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Result:
    """One measured scenario: latencies in milliseconds and what it cost."""

    name: str
    concurrency: int
    latencies_ms: list[float] = field(repr=False)
    errors: int
    wall_s: float
    cpu_s: float | None = None  # server processes' user+system CPU during the run
    # The other processes on the machine over the same interval, by kind:
    # "postgresql", "redis", "emulator", "load generator".
    cpu_others_s: dict[str, float] = field(default_factory=dict)
    notes: str = ""

    @property
    def ok(self) -> int:
        return len(self.latencies_ms)

    @property
    def p50(self) -> float:
        return percentile(self.latencies_ms, 50)

    @property
    def p99(self) -> float:
        return percentile(self.latencies_ms, 99)

    @property
    def throughput(self) -> float:
        """Successful requests per second of wall time."""
        return self.ok / self.wall_s if self.wall_s > 0 else math.nan

    @property
    def cpu_ms_per_request(self) -> float | None:
        if self.cpu_s is None or not self.ok:
            return None
        return self.cpu_s * 1000 / self.ok

    def cpu_ms_per_request_by_process(self) -> dict[str, float | None]:
        """Server and every other process's CPU per successful request, and their total.

        Empty when nothing was measured. The other processes are
        shared by the whole machine, so their figure is only meaningful while
        one scenario runs at a time, as the bench does.
        """
        if not self.ok or (self.cpu_s is None and not self.cpu_others_s):
            return {}
        by_process: dict[str, float | None] = {}
        total = 0.0
        server = self.cpu_ms_per_request
        if server is not None:
            by_process["server"] = _round(server)
            total += server
        for kind, seconds in self.cpu_others_s.items():
            per_request = seconds * 1000 / self.ok
            by_process[kind] = _round(per_request)
            total += per_request
        by_process["total"] = _round(total)
        return by_process

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        del data["latencies_ms"]
        data.update(
            ok=self.ok,
            p50_ms=_round(self.p50),
            p99_ms=_round(self.p99),
            rps=_round(self.throughput, 1),
            cpu_ms_per_req=_round(self.cpu_ms_per_request),
            cpu_ms_per_req_by_process=self.cpu_ms_per_request_by_process(),
        )
        return data


def merge_results(parts: Sequence[Result]) -> Result:
    """One result from the rounds of one scenario: every latency, the sums of the rest."""
    first = parts[0]
    others: dict[str, float] = {}
    for part in parts:
        for kind, seconds in part.cpu_others_s.items():
            others[kind] = others.get(kind, 0.0) + seconds
    cpu = [part.cpu_s for part in parts]
    return Result(
        name=first.name,
        concurrency=first.concurrency,
        latencies_ms=[latency for part in parts for latency in part.latencies_ms],
        errors=sum(part.errors for part in parts),
        wall_s=sum(part.wall_s for part in parts),
        cpu_s=None if any(c is None for c in cpu) else sum(c for c in cpu if c is not None),
        cpu_others_s=others,
        notes=f"{len(parts)} rounds" if len(parts) > 1 else first.notes,
    )


def _round(value: float | None, digits: int = 3) -> float | None:
    if value is None or math.isnan(value):
        return None
    return round(value, digits)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator`` rounded to 3 places; ``None`` when not computable."""
    if numerator is None or denominator is None:
        return None
    if math.isnan(numerator) or math.isnan(denominator) or denominator <= 0:
        return None
    return round(numerator / denominator, 3)


def format_table(results: Iterable[Result]) -> str:
    """A fixed-width text table, one row per scenario."""
    header = ("scenario", "conc", "ok", "err", "p50 ms", "p99 ms", "req/s", "CPU ms/req")
    rows = [header]
    for r in results:
        cpu = r.cpu_ms_per_request
        rows.append(
            (
                r.name,
                str(r.concurrency),
                str(r.ok),
                str(r.errors),
                _fmt(r.p50),
                _fmt(r.p99),
                _fmt(r.throughput, 1),
                "-" if cpu is None else _fmt(cpu),
            )
        )
    return _render(rows)


PROCESS_KINDS = ("server", "postgresql", "redis", "emulator", "load generator", "total")


def format_cpu_table(results: Iterable[Result]) -> str:
    """CPU ms per request of every process kind, for the scenarios that measured any."""
    header = ("scenario", "conc", *PROCESS_KINDS)
    rows = [header]
    for r in results:
        by_process = r.cpu_ms_per_request_by_process()
        if not by_process:
            continue
        cells = [by_process.get(kind) for kind in PROCESS_KINDS]
        rows.append((r.name, str(r.concurrency), *("-" if c is None else _fmt(c) for c in cells)))
    return _render(rows)


def _render(rows: Sequence[Sequence[str]]) -> str:
    """Fixed-width columns: the first left-aligned, the rest right; a rule under the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        numbers = [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join([row[0].ljust(widths[0]), *numbers]))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: float, digits: int = 2) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


REQUIRED_KEYS = (
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
    "cpu_per_mint",
    "naive_vs_ours_p50",
)


def json_line(metrics: dict[str, Any]) -> str:
    """The last line of the output: one JSON object, every required key present.

    A metric the run could not measure is ``null`` rather than missing, so a
    CI step can always parse the same keys.
    """
    data = {key: metrics.get(key) for key in REQUIRED_KEYS}
    data.update({k: v for k, v in metrics.items() if k not in data})
    return json.dumps(data, sort_keys=False, separators=(", ", ": "), allow_nan=False)
