"""A small closed-loop load generator: N threads, each with its own keep-alive connection.

Bounded twice: by a request count and by wall time, whichever comes first.
Loopback only; it refuses any other host.
"""

from __future__ import annotations

import http.client
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.stats import Result

#: One request; returns whether it succeeded. Built once per thread.
Call = Callable[[], bool]
CallFactory = Callable[[], Call]

LOOPBACK = ("127.0.0.1", "localhost")


@dataclass
class HttpTarget:
    """A request to repeat against a loopback server."""

    port: int
    path: str
    method: str = "GET"
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    expect: int = 200
    host: str = "127.0.0.1"
    #: Bytes the body must contain to count as a success (a page that rendered
    #: an error block instead of a secret still answers 200).
    must_contain: bytes | None = None
    #: Reopen each keep-alive connection after this many requests. A server
    #: with several worker processes (gunicorn) keeps a connection in the
    #: worker that accepted it; if one worker happened to accept them all, it
    #: would serve everything on one core while the others idle. Reconnecting
    #: now and then lets the least busy worker pick the next connection up,
    #: as it would with many browsers (or a proxy) in front.
    reconnect_every: int = 20

    def factory(self, cookies: list[str]) -> CallFactory:
        """Per-thread calls, each thread logged in as the next user in ``cookies``."""
        if self.host not in LOOPBACK:
            raise ValueError("the bench only talks to loopback")
        counter = itertools.count()

        def make() -> Call:
            index = next(counter)
            headers = dict(self.headers)
            if cookies:
                headers["Cookie"] = cookies[index % len(cookies)]
            conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            sent = 0

            def call() -> bool:
                nonlocal conn, sent
                try:
                    conn.request(self.method, self.path, body=self.body, headers=headers)
                    response = conn.getresponse()
                    body = response.read()
                    sent += 1
                    if response.will_close or sent % self.reconnect_every == 0:
                        conn.close()
                    if self.must_contain is not None and self.must_contain not in body:
                        return False
                    return response.status == self.expect
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                    return False

            return call

        return make


def run_load(
    name: str,
    factory: CallFactory,
    *,
    concurrency: int,
    max_requests: int,
    max_seconds: float,
    warmup: int = 3,
    on_start: Callable[[], None] | None = None,
    on_stop: Callable[[], None] | None = None,
) -> Result:
    """Run ``concurrency`` threads until ``max_requests`` or ``max_seconds``.

    Each thread first makes ``warmup`` unmeasured calls (connections, caches,
    pools); then all start together, ``on_start`` running just before.
    ``on_stop`` runs once the last thread finished, before anything else.
    """
    tickets = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    errors = [0]
    marks: dict[str, float] = {}

    def start_clock() -> None:
        if on_start is not None:
            on_start()
        marks["start"] = time.perf_counter()
        marks["deadline"] = marks["start"] + max_seconds

    barrier = threading.Barrier(concurrency, action=start_clock)

    def worker() -> None:
        call = factory()
        for _ in range(warmup):
            call()
        barrier.wait()
        mine: list[float] = []
        failed = 0
        deadline = marks["deadline"]
        while next(tickets) < max_requests:
            began = time.perf_counter()
            if began > deadline:
                break
            ok = call()
            elapsed = time.perf_counter() - began
            if ok:
                mine.append(elapsed * 1000)
            else:
                failed += 1
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - marks["start"]
    if on_stop is not None:
        on_stop()
    return Result(
        name=name, concurrency=concurrency, latencies_ms=latencies, errors=errors[0], wall_s=wall
    )


def run_open_loop(
    name: str,
    factory: CallFactory,
    *,
    rate: float,
    seconds: float,
    threads: int,
    warmup: int = 2,
) -> Result:
    """Offer ``rate`` requests per second for ``seconds``, whatever the answers take.

    Request ``i`` is due at ``start + i / rate``; a free thread (each with its
    own connection) takes the next one, waits for its time and sends it. Its
    latency runs from the time it was due, so a server (or a generator) that
    falls behind shows it in the figures instead of slowing the offered load
    down (no coordinated omission). ``concurrency`` in the result is the rate.
    """
    total = max(1, int(rate * seconds))
    tickets = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    errors = [0]
    marks: dict[str, float] = {}

    def start_clock() -> None:
        marks["start"] = time.perf_counter() + 0.05

    barrier = threading.Barrier(threads, action=start_clock)

    def worker() -> None:
        call = factory()
        for _ in range(warmup):
            call()
        barrier.wait()
        start = marks["start"]
        mine: list[float] = []
        failed = 0
        while (index := next(tickets)) < total:
            due = start + index / rate
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            ok = call()
            elapsed = time.perf_counter() - due
            if ok:
                mine.append(elapsed * 1000)
            else:
                failed += 1
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    wall = time.perf_counter() - marks["start"]
    return Result(
        name=name,
        concurrency=int(rate),
        latencies_ms=latencies,
        errors=errors[0],
        wall_s=wall,
        notes=f"open loop, {rate:g}/s offered",
    )
