"""The stall: the Gateway stops answering and users keep pressing "talk".

The stand-in Gateway answers after 50 ms while the site warms up, then holds
every mint for 20 s. 10 users mint at once, a second later 30 more; meanwhile
10 requests for a plain page, spread over the first 5 s, stand for the rest of
the site. Each request is a visitor on a fresh connection. What counts: how
long the pages wait, and how fast the second wave is answered (refused at
once by the bulkhead or the open circuit rather than queued).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench.load import SETUP_BODY, http_call, run_load, same_origin
from bench.procs import API_KEY, gunicorn
from bench.stats import load_average, percentile

STALL_S = 20.0
FIRST_WAVE, SECOND_WAVE, SECOND_WAVE_AFTER_S = 10, 30, 1.0
PAGES, PAGES_OVER_S = 10, 5.0
USERS = FIRST_WAVE + SECOND_WAVE + 1


@dataclass
class Answer:
    kind: str  # "first", "second", "page"
    seconds: float
    status: int | None  # None: no answer (connection error or client timeout)
    error_type: str = ""


@dataclass
class StallRun:
    answers: list[Answer] = field(default_factory=list)

    def of(self, kind: str) -> list[Answer]:
        return [a for a in self.answers if a.kind == kind]

    @property
    def page_max_s(self) -> float | None:
        pages = self.of("page")
        return round(max(a.seconds for a in pages), 3) if pages else None

    @property
    def fail_fast_p50_ms(self) -> float | None:
        second = [a.seconds * 1000 for a in self.of("second")]
        return round(percentile(second, 50), 1) if second else None

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kind in ("first", "second", "page"):
            answers = self.of(kind)
            statuses = Counter(
                "no answer" if a.status is None else f"{a.status} {a.error_type}".strip()
                for a in answers
            )
            seconds = [a.seconds for a in answers]
            out[kind] = {
                "statuses": dict(sorted(statuses.items())),
                "p50_s": round(percentile(seconds, 50), 3) if seconds else None,
                "max_s": round(max(seconds), 3) if seconds else None,
            }
        return out


def request(port: int, method: str, path: str, cookie: str) -> tuple[int | None, str]:
    """One visitor's request on a connection of its own: the status and the error type."""
    headers = same_origin(port, cookie)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=SETUP_BODY if method == "POST" else None, headers=headers)
        response = conn.getresponse()
        data = response.read()
    except (OSError, http.client.HTTPException):
        return None, ""
    finally:
        conn.close()
    try:
        return response.status, str(json.loads(data)["error"]["type"])
    except (ValueError, KeyError, TypeError):
        return response.status, ""


def storm(port: int, cookies: list[str], mint_path: str, page_path: str) -> StallRun:
    """The two waves of mints and the pages against the site on ``port``."""
    run, lock, start = StallRun(), threading.Lock(), time.perf_counter()

    def visit(kind: str, at: float, method: str, path: str, cookie: str) -> None:
        time.sleep(max(0.0, start + at - time.perf_counter()))
        began = time.perf_counter()
        status, error_type = request(port, method, path, cookie)
        with lock:
            run.answers.append(Answer(kind, time.perf_counter() - began, status, error_type))

    visits = [
        ("first", 0.0) if n < FIRST_WAVE else ("second", SECOND_WAVE_AFTER_S)
        for n in range(FIRST_WAVE + SECOND_WAVE)
    ]
    threads = [
        threading.Thread(target=visit, args=(kind, at, "POST", mint_path, cookies[n]))
        for n, (kind, at) in enumerate(visits)
    ]
    threads += [
        threading.Thread(
            target=visit, args=("page", PAGES_OVER_S * n / PAGES, "GET", page_path, cookies[-1])
        )
        for n in range(PAGES)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return run


def stall(
    cookies: list[str],
    env: dict[str, str],
    mint_path: str,
    *,
    workers: int = 4,
    threads: int = 8,
    app_defaults: bool = False,
) -> dict[str, Any]:
    """The bench site, warmed up against a healthy Gateway, when that Gateway stalls.

    As docs/deployment.md recommends (4 gthread workers x 8, the bulkhead at
    6), or with ``app_defaults`` the app's own defaults on ``workers`` x ``threads``.
    """
    from gateway_realtime.emulator import GatewayEmulator

    site_env = {
        **env,
        "BENCH_APP_DEFAULTS": "1" if app_defaults else "0",
        # A circuit of its own: the previous stall left the shared one open.
        "BENCH_RUN": uuid.uuid4().hex,
    }
    with GatewayEmulator(api_keys=(API_KEY,), mint_delay=0.05) as gateway:
        site = gunicorn(
            {**site_env, "BENCH_GATEWAY_BASE_URL": gateway.base_url},
            workers=workers,
            threads=threads,
        )
        try:
            # A site that has been running: every thread has served pages and mints.
            for method, path in (("GET", "/page/"), ("POST", mint_path)):
                factory = http_call(site.port, path, cookies, method)
                run_load("warm-up", factory, concurrency=24, seconds=0, warmup=4)
            gateway.mint_delay = STALL_S
            run = storm(site.port, cookies[:USERS], mint_path, "/page/")
        finally:
            site.stop()
    summary = {
        "page_max_s": run.page_max_s,
        "second_wave_p50_ms": run.fail_fast_p50_ms,
        **run.summary(),
        "load_average": load_average(),
    }
    load = " ".join(f"{value:.2f}" for value in summary["load_average"])
    setup = (
        f"the app's defaults, {workers}x{threads}"
        if app_defaults
        else f"tuned, {workers}x{threads}"
    )
    print(f"A Gateway stalling {STALL_S:.0f} s on every mint ({setup}; load average {load}):")
    print(f"  pages: {summary['page']}")
    print(f"  first wave ({FIRST_WAVE} mints at once): {summary['first']}")
    print(f"  second wave ({SECOND_WAVE} mints a second later): {summary['second']}")
    return summary
