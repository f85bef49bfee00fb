"""Plot p50 latency by concurrency from a saved run: ``python -m bench.plot RUN.json OUT.png``."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

# The scenarios measured at every concurrency, in legend order.
SERIES = (
    "mint endpoint (ours)",
    "page with tag",
    "anchor (Node getToken)",
    "page without tag",
    "no-op DRF endpoint",
    "direct mint (GatewayClient)",
)


def series(results: list[dict[str, Any]]) -> dict[str, list[tuple[int, float, float]]]:
    """``name -> [(concurrency, p50, p99)]`` for the side-by-side scenarios."""
    found: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    for result in results:
        if result["name"] in SERIES and result["p50_ms"] is not None:
            found[result["name"]].append(
                (result["concurrency"], result["p50_ms"], result["p99_ms"])
            )
    return {name: sorted(found[name]) for name in SERIES if name in found}


def plot(run: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    data = series(run["results"])
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for name, points in data.items():
        xs = [c for c, _, _ in points]
        line = ax.plot(xs, [p50 for _, p50, _ in points], marker="o", label=f"{name} p50")[0]
        ax.plot(xs, [p99 for _, _, p99 in points], linestyle=":", color=line.get_color(), alpha=0.6)
    concurrencies = sorted({c for points in data.values() for c, _, _ in points})
    ax.set_xscale("log", base=2)
    ax.set_xticks(concurrencies, [str(c) for c in concurrencies])
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    # Label 2, 3 and 5 between the decades; more would overlap.
    ax.yaxis.set_minor_formatter(
        FuncFormatter(lambda value, _: f"{value:g}" if f"{value:g}"[0] in "235" else "")
    )
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("latency, ms (solid p50, dotted p99; log scale)")
    metrics = run.get("metrics", {})
    ax.set_title(
        f"Latency by concurrency ({metrics.get('mode', '?')} run, {metrics.get('database', '?')})"
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    plot(json.loads(Path(argv[0]).read_text()), Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
