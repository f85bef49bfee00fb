"""Markdown for docs/performance.md from a saved run: ``python -m bench.report RUN.json``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.stats import PROCESS_KINDS


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def render(run: dict[str, Any]) -> str:
    lines = ["| scenario | clients | ok | errors | p50 ms | p99 ms | req/s | server CPU ms/req |"]
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in run["results"]:
        lines.append(
            f"| {r['name']} | {r['concurrency']} | {r['ok']} | {r['errors']} | "
            f"{_cell(r['p50_ms'])} | {_cell(r['p99_ms'])} | {_cell(r['rps'])} | "
            f"{_cell(r['cpu_ms_per_req'])} |"
        )
    lines.append("")
    lines.append(
        "| scenario | clients | server | postgresql | redis | emulator | load generator "
        "| all, CPU ms/req |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in run["results"]:
        by_process = r.get("cpu_ms_per_req_by_process") or {}
        if not by_process:
            continue
        cells = [by_process.get(kind) for kind in PROCESS_KINDS]
        lines.append(
            f"| {r['name']} | {r['concurrency']} | " + " | ".join(_cell(c) for c in cells) + " |"
        )
    lines.append("")
    lines.append("| metric | value |")
    lines.append("|---|---|")
    for key, value in run["metrics"].items():
        lines.append(f"| `{key}` | {json.dumps(value)} |")
    lines.append("")
    lines.append("| machine | |")
    lines.append("|---|---|")
    for key, value in run.get("machine", {}).items():
        lines.append(f"| {key} | {value} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(render(json.loads(Path(sys.argv[1]).read_text())))
