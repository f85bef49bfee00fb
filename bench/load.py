"""A closed-loop load generator: N threads, each a user with a keep-alive connection of its own."""

from __future__ import annotations

import http.client
import itertools
import threading
import time
from collections.abc import Callable

from bench.stats import Result, load_average

#: One request; returns whether it succeeded. A factory builds one per thread.
Call = Callable[[], bool]
CallFactory = Callable[[], Call]

SETUP_BODY = b'{"sessionConfig": {}}'
#: A gunicorn worker keeps the connections it accepted: reconnecting now and
#: then spreads the clients over the workers, as many browsers would be.
RECONNECT_EVERY = 20


def same_origin(port: int, cookie: str) -> dict[str, str]:
    """A logged-in browser's headers for a same-origin POST to 127.0.0.1:``port``."""
    return {
        "Cookie": cookie,
        "Origin": f"http://127.0.0.1:{port}",
        "Sec-Fetch-Site": "same-origin",
        "Content-Type": "application/json",
    }


def http_call(port: int, path: str, cookies: list[str], method: str = "POST") -> CallFactory:
    """Same-origin requests to 127.0.0.1:``port``, each thread logged in as the next user."""
    users = itertools.count()

    def make() -> Call:
        headers = same_origin(port, cookies[next(users) % len(cookies)])
        body = SETUP_BODY if method == "POST" else None
        conn: http.client.HTTPConnection | None = None
        sent = 0

        def call() -> bool:
            nonlocal conn, sent
            conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = None
                return False
            sent += 1
            if response.will_close or sent % RECONNECT_EVERY == 0:
                conn.close()
                conn = None
            return response.status == 200

        return call

    return make


def run_load(
    name: str, factory: CallFactory, *, concurrency: int, seconds: float, warmup: int
) -> Result:
    """``concurrency`` threads call as fast as answers come for ``seconds``, after
    ``warmup`` unmeasured calls each (connections, pools, Node's JIT)."""
    lock = threading.Lock()
    result = Result(name, concurrency)
    deadline = [0.0]

    def start_clock() -> None:
        deadline[0] = time.perf_counter() + seconds

    barrier = threading.Barrier(concurrency, action=start_clock)

    def worker() -> None:
        call = factory()
        for _ in range(warmup):
            call()
        barrier.wait()
        latencies, errors = [], 0
        while (began := time.perf_counter()) < deadline[0]:
            if call():
                latencies.append((time.perf_counter() - began) * 1000)
            else:
                errors += 1
        with lock:
            result.latencies_ms += latencies
            result.errors += errors

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.load = load_average()
    return result
