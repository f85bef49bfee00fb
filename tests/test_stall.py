"""The Gateway stalls: the site stays up, mints fail cleanly, the breaker opens and closes.

Runs in the services pass only (``make test-services``: PostgreSQL and
Redis). The Gateway emulator, in this process, holds every mint
(``holding_mints``) until the test lets go. A gunicorn site (2 workers x 4
``gthread`` threads, short deadlines and cool-down: ``tests/stall_settings.py``)
takes 10 mints at once and, once the Gateway holds one of them, 30 more and
10 requests for its login page. Checks, on outcomes only (how long each
answer took is printed, and measured by ``python -m bench`` on a quiet
machine, never asserted here):

- every page answers 200 while the Gateway holds mints;
- no mint answers 500: each is a documented refusal (504 ``gateway_timeout``,
  503 ``gateway_busy`` or ``gateway_unavailable``), and the bulkhead refused
  some while the Gateway held the others;
- the breaker opens on every worker: 503 ``gateway_unavailable`` from both
  worker processes;
- when the Gateway recovers, a probe mint succeeds after the cool-down and
  then mints succeed on every worker.
"""

import collections
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import requests
from django.conf import settings
from django.db import connection
from django.test import Client

from gateway_realtime.emulator import GatewayEmulator
from tests.gunicorn_site import gunicorn, services_or_skip, tail

pytestmark = [pytest.mark.load, pytest.mark.django_db(transaction=True)]

WORKERS = 2
THREADS = 4
TOTAL_TIMEOUT = 2.0
COOLDOWN = 3


@pytest.fixture
def emulator():
    services_or_skip("stall")
    # Healthy at first: the test warms the site up, then the Gateway stalls.
    with GatewayEmulator(api_keys=("emulator-key",)) as emu:
        yield emu


@pytest.fixture
def site(emulator):
    env = {
        "STALL_DB_NAME": connection.settings_dict["NAME"],
        "STALL_GATEWAY_BASE_URL": emulator.base_url,
        "STALL_CACHE_PREFIX": f"stall-{uuid.uuid4().hex}",
        "STALL_TOTAL_TIMEOUT": str(TOTAL_TIMEOUT),
        "STALL_BREAKER_COOLDOWN": str(COOLDOWN),
    }
    with gunicorn(
        "tests.stall_settings",
        env,
        workers=WORKERS,
        threads=THREADS,
        graceful_timeout=2,
        ready=wait_until_serving,
    ) as served:
        yield served


def wait_until_serving(base_url, process, log, workers=WORKERS):
    """Until every worker has answered a page (each imported Django)."""
    pids = set()
    deadline = time.monotonic() + 60
    while len(pids) < workers and time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail("gunicorn exited:\n" + tail(log))
        try:
            response = requests.get(base_url + "/admin/login/", timeout=10)
            pids.add(response.headers.get("X-Worker-Pid"))
        except requests.RequestException:  # not listening yet, or a worker still booting
            time.sleep(0.1)
    if len(pids) < workers:
        pytest.fail("gunicorn's workers did not all answer:\n" + tail(log))


@dataclass
class Answer:
    kind: str
    seconds: float
    status: int
    error_type: str | None
    pid: str | None
    retry_after: str | None


def session_cookies(users):
    cookies = []
    for user in users:
        client = Client()
        client.force_login(user)
        cookies.append(client.cookies[settings.SESSION_COOKIE_NAME].value)
    return cookies


def mint(base_url, cookie, kind="mint", body=None):
    """One mint from a new visitor (a fresh connection, so either worker may take it)."""
    began = time.perf_counter()
    response = requests.post(
        base_url + "/gateway/realtime/",
        json={"sessionConfig": {}, **(body or {})},
        headers={
            "Origin": base_url,
            "Sec-Fetch-Site": "same-origin",
            "Connection": "close",
        },
        cookies={settings.SESSION_COOKIE_NAME: cookie},
        timeout=30,
    )
    elapsed = time.perf_counter() - began
    try:
        error_type = response.json().get("error", {}).get("type")
    except ValueError:
        error_type = None
    return Answer(
        kind,
        elapsed,
        response.status_code,
        error_type,
        response.headers.get("X-Worker-Pid"),
        response.headers.get("Retry-After"),
    )


def page(base_url):
    began = time.perf_counter()
    response = requests.get(base_url + "/admin/login/", headers={"Connection": "close"}, timeout=30)
    return Answer(
        "page",
        time.perf_counter() - began,
        response.status_code,
        None,
        response.headers.get("X-Worker-Pid"),
        None,
    )


def storm(base_url, cookies, emulator):
    """10 mints; once the Gateway holds one, 30 more mints and 10 page loads, all at once."""
    with ThreadPoolExecutor(50) as pool:
        first = [pool.submit(mint, base_url, cookies[n], "first") for n in range(10)]
        emulator.wait_for_held_mints(1)
        second = [pool.submit(mint, base_url, cookies[n], "second") for n in range(10, 40)]
        pages = [pool.submit(page, base_url) for _ in range(10)]
        return [future.result() for future in first + second + pages]


def until(condition, seconds, step=0.05):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return False


def test_gateway_stall(site, emulator, django_user_model):
    base_url, log = site
    users = [django_user_model.objects.create_user(f"stall{i:02d}") for i in range(40)]
    cookies = session_cookies(users)

    # Warm every thread of both workers up (imports, database connections)
    # while the Gateway is healthy, as on a site that has been running. More
    # clients than threads: a mint beyond the bulkhead is refused (503
    # gateway_busy) and warms its thread all the same.
    with ThreadPoolExecutor(2 * WORKERS * THREADS) as pool:
        warm = list(pool.map(lambda n: mint(base_url, cookies[n]), range(40)))
    assert {(a.status, a.error_type) for a in warm} <= {(200, None), (503, "gateway_busy")}, warm
    assert len({a.pid for a in warm if a.status == 200}) == WORKERS, warm

    emulator.reset()
    with emulator.holding_mints():
        answers = storm(base_url, cookies, emulator)
        server_log = tail(log)
        summary = collections.Counter((a.kind, a.status, a.error_type) for a in answers)
        print(f"stall: {dict(summary)}")
        for a in sorted(answers, key=lambda a: (a.kind, a.seconds)):
            print(f"  {a.kind:6} {a.seconds:6.3f} s  {a.status} {a.error_type or ''} pid {a.pid}")

        # The rest of the site keeps answering.
        pages = [a for a in answers if a.kind == "page"]
        assert all(a.status == 200 for a in pages), server_log

        # No mint answers 500; each is a documented refusal.
        mints = [a for a in answers if a.kind != "page"]
        for a in mints:
            assert (a.status, a.error_type) in {
                (504, "gateway_timeout"),
                (503, "gateway_busy"),
                (503, "gateway_unavailable"),
            }, (a, server_log)
            if a.status == 503:
                assert int(a.retry_after) >= 1
        # The bulkhead refused mints while the Gateway held others.
        assert any(a.error_type == "gateway_busy" for a in mints), summary
        assert emulator.requests, "no mint reached the Gateway"

        # The breaker is open on every worker: 503 gateway_unavailable from both.
        unavailable = {}

        def open_on_every_worker():
            answer = mint(base_url, cookies[0])
            assert answer.status in (503, 504), answer
            if answer.error_type == "gateway_unavailable":
                unavailable[answer.pid] = answer
            return len(unavailable) == WORKERS

        assert until(open_on_every_worker, 30), (unavailable, tail(log))

    # The Gateway recovers: after the cool-down one probe decides, then every
    # worker mints again.
    probe = []

    def probe_succeeds():
        answer = mint(base_url, cookies[1])
        probe.append(answer)
        return answer.status == 200

    assert until(probe_succeeds, TOTAL_TIMEOUT + COOLDOWN + 30), (probe, tail(log))
    recovered = collections.defaultdict(list)
    for n in range(40):
        answer = mint(base_url, cookies[2 + n % 30])
        assert answer.status == 200, (answer, tail(log))
        recovered[answer.pid].append(answer)
        if len(recovered) == WORKERS and n >= 5:
            break
    assert len(recovered) == WORKERS, dict(recovered)
