"""The other side of the stall protection: a slow or partly failing Gateway is not an outage.

Runs in the services pass only (PostgreSQL and Redis), on the app's own
defaults (``STALL_APP_DEFAULTS=1``) under gunicorn gthread 2 workers x 4
threads, against the Gateway emulator on 127.0.0.1: the bulkhead mints 3 at
once a worker, so the site has 6 mint threads. Users mint in a loop, each
request a new visitor on a connection of its own (so gunicorn spreads them
unevenly, as browsers are). Checks, on outcomes only (statuses, the audit
trail, the breaker's state; how long pages waited is printed, and measured
by ``python -m bench protection``):

- a Gateway answering every mint in 0.05 to 2.5 s (all inside the 3 s
  deadline), 6 users: every mint is a token, the breaker never opens;
- more users than threads: the extra are refused with 503 ``gateway_busy``
  and ``Retry-After`` only, never a 504 or ``gateway_unavailable``;
- one call in 7 answered 503, or hanging, at 6 and 20 users: the breaker
  stays closed, every call the Gateway answered 200 is a token, and each
  failure reaches the browser with its own type.

``tests/test_stall.py`` and ``tests/test_stall_defaults.py`` hold the side
this must not weaken: a stalled Gateway costs the site nothing.
"""

import collections
import os
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings
from django.db import connection
from django.test import override_settings

from gateway_realtime import breaker
from gateway_realtime.emulator import GatewayEmulator
from tests.gunicorn_site import gunicorn, services_or_skip, tail
from tests.test_stall import mint, page, session_cookies, wait_until_serving

pytestmark = [pytest.mark.load, pytest.mark.django_db(transaction=True)]

WORKERS, THREADS = 2, 4
MINT_THREADS = WORKERS * (THREADS - 1)  # the default bulkhead: one fewer than the threads


@pytest.fixture(scope="module")
def emulator():
    with GatewayEmulator(api_keys=("emulator-key",)) as emu:
        yield emu


@pytest.fixture
def site(emulator, django_user_model):
    services_or_skip("protection")
    emulator.mint_delay, emulator.fail_every = 0.0, 0
    prefix = f"protection-{uuid.uuid4().hex}"
    env = {
        "STALL_DB_NAME": connection.settings_dict["NAME"],
        "STALL_GATEWAY_BASE_URL": emulator.base_url,
        "STALL_CACHE_PREFIX": prefix,
        "STALL_APP_DEFAULTS": "1",
        "STALL_MODEL": "",
    }
    users = [django_user_model.objects.create_user(f"prot{i:02d}") for i in range(20)]
    with gunicorn(
        "tests.stall_settings",
        env,
        workers=WORKERS,
        threads=THREADS,
        graceful_timeout=2,
        ready=wait_until_serving,
    ) as (base_url, log):
        yield base_url, log, session_cookies(users), prefix


def learn(base_url, cookies):
    """Mint one at a time until both workers have answered two mints: each has
    seen the Gateway's latency, as on a site that has been running."""
    answered = collections.Counter()
    for n in range(60):
        answer = mint(base_url, cookies[n % len(cookies)])
        assert answer.status == 200, answer
        answered[answer.pid] += 1
        if len(answered) == WORKERS and min(answered.values()) >= 2:
            return
    pytest.fail(f"both workers did not answer: {answered}")


def loop(base_url, cookies, per_user):
    """``len(cookies)`` users, each minting ``per_user`` times in a row."""

    def user(cookie):
        return [mint(base_url, cookie) for _ in range(per_user)]

    with ThreadPoolExecutor(len(cookies)) as pool:
        return [answer for answers in pool.map(user, cookies) for answer in answers]


def circuit(prefix):
    """The site's circuit, read from the Redis cache it shares."""
    site_cache = {**settings.CACHES["default"], "KEY_PREFIX": prefix}
    with override_settings(CACHES={**settings.CACHES, "default": site_cache}):
        return breaker.circuit_state()


def outcomes(answers):
    return collections.Counter((a.status, a.error_type) for a in answers)


@pytest.mark.parametrize("latency", [0.05, 0.5, 0.9, 1.5, 2.5])
def test_a_slow_but_healthy_gateway_mints_every_token(site, emulator, latency):
    base_url, log, cookies, prefix = site
    emulator.mint_delay = latency
    learn(base_url, cookies)
    answers = loop(base_url, cookies[:MINT_THREADS], per_user=4 if latency < 1 else 2)
    print(f"\n{latency} s Gateway, {MINT_THREADS} users: {dict(outcomes(answers))}")
    assert outcomes(answers) == {(200, None): len(answers)}, tail(log)
    assert circuit(prefix).state == breaker.CLOSED


def test_more_users_than_threads_get_busy_and_nothing_else(site, emulator):
    base_url, log, cookies, prefix = site
    emulator.mint_delay = 0.9
    learn(base_url, cookies)
    with ThreadPoolExecutor(1) as pages:
        visits = [pages.submit(page, base_url) for _ in range(6)]
        answers = loop(base_url, cookies[:16], per_user=2)
        loaded = [visit.result() for visit in visits]
    print(
        f"\n16 users on {MINT_THREADS} mint threads: {dict(outcomes(answers))}; pages max "
        f"{max(a.seconds for a in loaded):.2f} s (load average {os.getloadavg()[0]:.2f})"
    )
    assert all(a.status == 200 for a in loaded)
    assert set(outcomes(answers)) <= {(200, None), (503, "gateway_busy")}, tail(log)
    assert all(int(a.retry_after) >= 1 for a in answers if a.status == 503)
    assert circuit(prefix).state == breaker.CLOSED


@pytest.mark.parametrize("users", [6, 20])
@pytest.mark.parametrize("fault", ["503", "hang"])
def test_a_gateway_failing_one_call_in_seven_costs_only_its_failures(site, emulator, fault, users):
    base_url, log, cookies, prefix = site
    emulator.mint_delay = 0.05
    learn(base_url, cookies)
    emulator.reset()
    emulator.fail_every, emulator.fail_with = 7, fault
    answers = loop(base_url, cookies[:users], per_user=8 if fault == "503" else 4)
    emulator.fail_every = 0
    found = outcomes(answers)
    print(f"\n1 call in 7 {fault}, {users} users: {dict(found)}")
    own_failure = (
        (502, "gateway_internal_server_error") if fault == "503" else (504, "gateway_timeout")
    )
    assert set(found) <= {(200, None), own_failure, (503, "gateway_busy")}, tail(log)
    # Every call the Gateway answered 200 became a token.
    assert found[(200, None)] == len(emulator.issued)
    # Every call it failed reached the browser as its own failure.
    failed = sum(1 for r in emulator.requests if r.status != 200)
    assert found[own_failure] == failed > 0
    assert circuit(prefix).state == breaker.CLOSED
