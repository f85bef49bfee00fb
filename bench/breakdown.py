"""Where one mint's server CPU goes: ``python -m bench.breakdown [N]``.

Runs N no-op requests, N mints (and N design-floor mints, see
``bench/floor.py``, on PostgreSQL and Redis) through Django's test client in this
process (the emulator in a child process) and adds up the CPU time of this
thread inside each step of the mint path, the paths taking turns in
five rounds. Uses the bench database and cache
as ``make bench`` left them. Numbers for docs/performance.md.
"""

from __future__ import annotations

import collections
import functools
import json
import os
import sys
import time
from typing import Any

ROUNDS = 5


def _wrap(owner: Any, name: str, label: str, totals: collections.Counter[str]) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return original(*args, **kwargs)
        finally:
            totals[label] += time.thread_time() - started

    setattr(owner, name, timed)


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    from bench.gateway import RemoteEmulator
    from bench.run import PG_URL, REDIS_URL, reachable

    emulator = RemoteEmulator(api_keys=("emulator-key",))
    try:
        os.environ["BENCH_GATEWAY_BASE_URL"] = emulator.base_url
        os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
        if reachable("127.0.0.1", 5432):
            os.environ.setdefault("BENCH_DATABASE_URL", PG_URL)
        if reachable("127.0.0.1", 6379):
            os.environ.setdefault("BENCH_REDIS_URL", REDIS_URL)
        import django

        django.setup()
        from django.contrib.auth import get_user_model
        from django.test import Client

        from gateway_realtime import authentication, client, services, throttling, views

        totals: collections.Counter[str] = collections.Counter()
        steps = [
            (authentication.SameOriginSessionAuthentication, "authenticate", "session auth"),
            (throttling.ClientSecretRateThrottle, "allow_request", "burst rate (cache)"),
            (views.MintRequestSerializer, "is_valid", "request validation"),
            # On PostgreSQL the claim also inserts the audit row, in one statement.
            (services, "claim_quota", "quota claim (+ audit INSERT on PostgreSQL)"),
            (services, "_save", "audit writes (the completing UPDATE, + INSERT elsewhere)"),
            (client.GatewayClient, "mint", "Gateway call (GatewayClient.mint)"),
        ]
        for owner, name, label in steps:
            if hasattr(owner, name):
                _wrap(owner, name, label, totals)

        http = Client(HTTP_HOST="127.0.0.1")
        user, _ = get_user_model().objects.get_or_create(username="bench-breakdown")
        http.force_login(user)
        body = json.dumps({"sessionConfig": {}})
        headers = {"HTTP_ORIGIN": "http://127.0.0.1", "HTTP_SEC_FETCH_SITE": "same-origin"}
        paths = ["/bench/noop/", "/api/realtime-token/realtime/"]
        if os.environ.get("BENCH_DATABASE_URL") and os.environ.get("BENCH_REDIS_URL"):
            paths.append("/bench/floor-mint/")  # bench/floor.py: the total only
        for path in paths:
            for _ in range(30):
                http.post(path, body, content_type="application/json", **headers)
        # The paths take turns in ROUNDS slices, as in the bench, so that a
        # change in the VM's speed weighs on all of them alike.
        cpu: collections.Counter[str] = collections.Counter()
        steps_by_path = {path: collections.Counter[str]() for path in paths}
        for _ in range(ROUNDS):
            for path in paths:
                totals.clear()
                started = time.thread_time()
                for _ in range(count // ROUNDS):
                    http.post(path, body, content_type="application/json", **headers)
                cpu[path] += time.thread_time() - started
                steps_by_path[path].update(totals)
        done = count // ROUNDS * ROUNDS
        for path in paths:
            print(f"{path}: {cpu[path] / done * 1000:.2f} ms CPU per request")
            for label, seconds in steps_by_path[path].most_common():
                print(f"  {seconds / done * 1000:6.2f} ms  {label}")
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
