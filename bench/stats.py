"""The bench's pure parts, tested without servers (tests/test_bench_stats.py)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile (0..100), interpolated between closest ranks like numpy's."""
    if not values:
        return math.nan
    if not 0 <= pct <= 100:
        raise ValueError("pct must be between 0 and 100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def load_average() -> list[float]:
    """The 1, 5 and 15-minute load averages: a figure counts only from a quiet machine."""
    return [round(value, 2) for value in os.getloadavg()]


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator`` to 2 places; ``None`` when either is missing or not a number."""
    if numerator is None or denominator is None or math.isnan(numerator):
        return None
    if math.isnan(denominator) or denominator <= 0:
        return None
    return round(numerator / denominator, 2)


def rounded(value: float, digits: int = 1) -> float | None:
    return None if math.isnan(value) else round(value, digits)


@dataclass
class Result:
    """One scenario at one concurrency: its latencies (ms), its failures, and the load."""

    name: str
    concurrency: int
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    errors: int = 0
    load: list[float] = field(default_factory=load_average)

    @property
    def ok(self) -> int:
        return len(self.latencies_ms)

    @property
    def p50(self) -> float:
        return percentile(self.latencies_ms, 50)

    @property
    def p99(self) -> float:
        return percentile(self.latencies_ms, 99)

    def add(self, other: Result) -> None:
        """Merge one more round of the same scenario; the load is the latest round's."""
        self.latencies_ms += other.latencies_ms
        self.errors += other.errors
        self.load = other.load

    def summary(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "errors": self.errors,
            "p50_ms": rounded(self.p50),
            "p99_ms": rounded(self.p99),
            "load_average": self.load,
        }


def format_table(results: Iterable[Result]) -> str:
    """Fixed-width rows, the 1-minute load average beside each scenario's figures."""
    rows = [("scenario", "clients", "ok", "errors", "p50 ms", "p99 ms", "load")]
    for r in results:
        p50, p99 = rounded(r.p50), rounded(r.p99)
        rows.append(
            (
                r.name,
                str(r.concurrency),
                str(r.ok),
                str(r.errors),
                "n/a" if p50 is None else f"{p50:.1f}",
                "n/a" if p99 is None else f"{p99:.1f}",
                f"{r.load[0]:.2f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        numbers = [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join([row[0].ljust(widths[0]), *numbers]))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
