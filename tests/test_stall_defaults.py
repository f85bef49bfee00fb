"""A Gateway stall on the app's defaults, on the servers people actually run.

Runs in the services pass only (PostgreSQL and Redis). The site is the test
settings with none of the resilience settings changed
(``STALL_APP_DEFAULTS=1``: ``MAX_CONCURRENT_MINTS`` 4, ``SLOW_CALL`` 0.75 s,
``TOTAL_TIMEOUT`` 3 s, the breaker's 5 failures), under gunicorn gthread 2x4
and 2x2 and sync 4x1. While the Gateway stalls (the emulator holds every
mint) or trickles (headers, then the body a byte at a time over 20 s), 40
users mint and the login page is fetched. Checks, on outcomes only: every
page answers 200, every mint is answered with a documented refusal, never a
500. How long pages and refusals took is printed with the load average
(docs/deployment.md has the figures from a quiet machine); the benchmark
(``python -m bench stall``) measures them, never a test.
"""

import collections
import contextlib
import os
import statistics
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from gateway_realtime.emulator import GatewayEmulator
from tests.gunicorn_site import gunicorn, services_or_skip, tail
from tests.test_stall import mint, page, session_cookies, until, wait_until_serving

pytestmark = [pytest.mark.load, pytest.mark.django_db(transaction=True)]

TRICKLE = "emulator/slow-body-20"
HEALTHY = {"model": "openai/gpt-realtime-mini"}
REFUSALS = {(504, "gateway_timeout"), (503, "gateway_busy"), (503, "gateway_unavailable")}


@pytest.fixture
def emulator():
    services_or_skip("stall")
    with GatewayEmulator(api_keys=("emulator-key",)) as emu:
        yield emu


@pytest.mark.parametrize("fault", ["stall", "trickle"])
@pytest.mark.parametrize(
    ("worker_class", "workers", "threads"),
    [("gthread", 2, 4), ("gthread", 2, 2), ("sync", 4, 1)],
    ids=["gthread-2x4", "gthread-2x2", "sync-4x1"],
)
def test_a_stall_on_the_default_settings(
    emulator, django_user_model, fault, worker_class, workers, threads
):
    env = {
        "STALL_DB_NAME": connection.settings_dict["NAME"],
        "STALL_GATEWAY_BASE_URL": emulator.base_url,
        "STALL_CACHE_PREFIX": f"stall-{uuid.uuid4().hex}",
        "STALL_APP_DEFAULTS": "1",
        "STALL_MODEL": TRICKLE if fault == "trickle" else "",
    }
    users = [django_user_model.objects.create_user(f"stalld{i:02d}") for i in range(40)]
    cookies = session_cookies(users)
    with gunicorn(
        "tests.stall_settings",
        env,
        workers=workers,
        threads=threads,
        worker_class=worker_class,
        graceful_timeout=2,
        ready=lambda base_url, process, log: wait_until_serving(
            base_url, process, log, workers=workers
        ),
    ) as (base_url, log):
        # Healthy first: every worker has answered mints before the fault.
        with ThreadPoolExecutor(8) as pool:
            warm = list(pool.map(lambda n: mint(base_url, cookies[n], body=HEALTHY), range(16)))
        assert {a.status for a in warm} <= {200, 503}, warm
        emulator.reset()

        def first_mint_at_the_gateway():
            return bool(emulator.requests)

        held = emulator.holding_mints() if fault == "stall" else contextlib.nullcontext()
        with held, ThreadPoolExecutor(50) as pool:
            first = [pool.submit(mint, base_url, cookies[n], "first") for n in range(10)]
            assert until(first_mint_at_the_gateway, 30), tail(log)
            second = [pool.submit(mint, base_url, cookies[n], "second") for n in range(10, 40)]
            pages = [pool.submit(page, base_url) for _ in range(10)]
            answers = [future.result() for future in first + second + pages]
        server_log = tail(log)

    summary = collections.Counter((a.kind, a.status, a.error_type) for a in answers)
    loaded = [a for a in answers if a.kind == "page"]
    refused = sorted(a.seconds for a in answers if a.kind == "second")
    load = os.getloadavg()[0]
    print(
        f"\n{worker_class} {workers}x{threads} {fault}: pages max "
        f"{max(a.seconds for a in loaded):.3f} s, later refusals p50 "
        f"{statistics.median(refused) * 1000:.0f} ms (load average {load:.2f}); {dict(summary)}"
    )
    assert all(a.status == 200 for a in loaded), server_log
    for a in answers:
        if a.kind != "page":
            assert (a.status, a.error_type) in REFUSALS, (a, server_log)
