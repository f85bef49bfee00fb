"""The stall scenario of ``make bench``: the Gateway stops answering, users keep pressing "talk".

The stand-in Gateway holds every mint for 20 s (``mint_delay``). 10 users
mint at once, a second later 30 more; meanwhile 10 plain page requests,
spread over the first 5 s, stand for the rest of the site. Each request is
one visitor on a fresh connection. What counts: how long the pages wait, and
how fast the mints after the first wave are answered (refused at once by the
bulkhead or the open circuit, rather than queued behind the stalled ones).
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench.stats import percentile

FIRST_WAVE = 10
SECOND_WAVE = 30
SECOND_WAVE_AFTER_S = 1.0
PAGES = 10
PAGES_OVER_S = 5.0
CLIENT_TIMEOUT_S = 60.0


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
        second = self.of("second")
        if not second:
            return None
        return round(percentile([a.seconds * 1000 for a in second], 50), 1)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kind in ("first", "second", "page"):
            answers = self.of(kind)
            statuses = Counter(
                f"{a.status}{' ' + a.error_type if a.error_type else ''}"
                if a.status is not None
                else "no answer"
                for a in answers
            )
            out[kind] = {
                "statuses": dict(sorted(statuses.items())),
                "max_s": round(max((a.seconds for a in answers), default=0.0), 3),
                "p50_s": round(percentile([a.seconds for a in answers], 50), 3)
                if answers
                else None,
            }
        return out


def _request(
    port: int, method: str, path: str, headers: dict[str, str], body: bytes | None
) -> tuple[int | None, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT_S)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
    except (OSError, http.client.HTTPException):
        return None, ""
    finally:
        conn.close()
    error_type = ""
    if response.status != 200 and b'"type"' in data:
        import json

        try:
            error_type = str(json.loads(data)["error"]["type"])
        except (ValueError, KeyError, TypeError):
            error_type = ""
    return response.status, error_type


def run_stall(
    port: int,
    cookies: list[str],
    mint_path: str,
    mint_headers: dict[str, str],
    mint_body: bytes,
    page_path: str,
) -> StallRun:
    """Run the storm against the site on ``port``; ``cookies`` needs 40 + 1 users."""
    if len(cookies) < FIRST_WAVE + SECOND_WAVE + 1:
        raise ValueError("the stall scenario needs 41 logged-in users")
    run = StallRun()
    lock = threading.Lock()
    start = time.perf_counter()

    def visit(kind: str, at: float, method: str, path: str, headers: dict[str, str]) -> None:
        pause = start + at - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        began = time.perf_counter()
        body = mint_body if method == "POST" else None
        status, error_type = _request(port, method, path, headers, body)
        answer = Answer(kind, time.perf_counter() - began, status, error_type)
        with lock:
            run.answers.append(answer)

    threads = []
    for n in range(FIRST_WAVE + SECOND_WAVE):
        kind, at = ("first", 0.0) if n < FIRST_WAVE else ("second", SECOND_WAVE_AFTER_S)
        headers = dict(mint_headers, Cookie=cookies[n])
        threads.append(threading.Thread(target=visit, args=(kind, at, "POST", mint_path, headers)))
    page_headers = {"Cookie": cookies[FIRST_WAVE + SECOND_WAVE]}
    for n in range(PAGES):
        at = PAGES_OVER_S * n / PAGES
        threads.append(
            threading.Thread(target=visit, args=("page", at, "GET", page_path, page_headers))
        )
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(CLIENT_TIMEOUT_S + 10)
    return run
