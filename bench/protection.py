"""The other side of the stall protection: a healthy but slow, or partly failing, Gateway.

On the app's own defaults (gunicorn gthread 2 workers x 4 threads, so 6
mint threads), users mint in a closed loop against the package's emulator:

- slow but healthy: every mint answered in 0.9 s, then in 2.5 s, 6 users;
- partly failing: every 7th mint answered 503 (50 ms otherwise), 6 and 20 users.

For each: the share of mints that got a token, the answers by status, and
how often the circuit breaker opened (its WARNING in the site's log), with
the load average. The Gateway itself gives 1.0 for the slow ones and 6/7
(0.86) for the partly failing one.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from bench.load import http_call, run_load
from bench.procs import CACHE, emulator, gunicorn, log
from bench.stats import load_average

WORKERS, THREADS = 2, 4
SLOW = ((0.9, 6), (2.5, 6))
PARTIAL = ((6,), (20,))
OPENED = "The circuit breaker opened"


def scenario(
    name: str,
    cookies: list[str],
    mint_path: str,
    *,
    latency: float,
    users: int,
    seconds: float,
    fail_every: int = 0,
) -> dict[str, Any]:
    extra = ("--fail-every", str(fail_every), "--fail-with", "503") if fail_every else ()
    gateway = emulator(latency, *extra)
    try:
        site = gunicorn(
            {
                **os.environ,
                "BENCH_APP_DEFAULTS": "1",
                "BENCH_RUN": uuid.uuid4().hex,
                "BENCH_GATEWAY_BASE_URL": f"http://127.0.0.1:{gateway.port}/v4/ai",
            },
            workers=WORKERS,
            threads=THREADS,
        )
        try:
            # Two unmeasured mints a user first: every worker has seen the Gateway.
            result = run_load(
                name,
                http_call(site.port, mint_path, cookies),
                concurrency=users,
                seconds=seconds,
                warmup=2,
            )
        finally:
            site.stop()
    finally:
        gateway.stop()
    opened = (CACHE / "gunicorn.log").read_text(errors="replace").count(OPENED)
    minted = len(result.latencies_ms)
    out = {
        "users": users,
        "gateway_latency_s": latency,
        "fail_every": fail_every or None,
        "minted": minted,
        "refused_or_failed": result.errors,
        "success": round(minted / max(1, minted + result.errors), 3),
        "breaker_openings": opened,
        "p50_ms": round(result.p50, 1) if minted else None,
        "load_average": load_average(),
    }
    load = " ".join(f"{value:.2f}" for value in out["load_average"])
    log(f"{name}: {out['success']:.3f} of mints got a token, breaker opened {opened}x")
    print(
        f"  {name}: {minted} tokens, {result.errors} refused or failed "
        f"(success {out['success']:.3f}), breaker opened {opened} times, "
        f"p50 {out['p50_ms']} ms (load average {load})"
    )
    return out


def protection(cookies: list[str], mint_path: str, seconds: float) -> dict[str, Any]:
    """Every scenario; the figures ``bench.run`` names."""
    print(f"A healthy but slow, or partly failing, Gateway (app defaults, {WORKERS}x{THREADS}):")
    out: dict[str, Any] = {}
    for latency, users in SLOW:
        key = f"slow_healthy_{str(latency).replace('.', '_')}"
        out[key] = scenario(key, cookies, mint_path, latency=latency, users=users, seconds=seconds)
    for (users,) in PARTIAL:
        key = f"partial_failure_{users}"
        out[key] = scenario(
            key, cookies, mint_path, latency=0.05, users=users, seconds=seconds, fail_every=7
        )
    return out
