"""Load: many processes, many users, Gateway faults; nothing lost, nothing over quota.

Runs in the services pass only (``make test-services``: PostgreSQL and
Redis). Starts the Gateway emulator in this process and a gunicorn site with
4 worker processes on the test database, then sends 2,000 mint attempts for
50 users from 20 client threads, some of them for fault models. Checks:

- no 500s, and every answer is the documented one for its model (or a 429);
- no user has more issued secrets than the quota, by even one, and each
  user's quota counter equals the mints it had to keep counting;
- one audit row per attempt that got past the burst rate (rate-limited
  requests are refused from the cache with no row, by design), none pending;
- every token a browser received is in the audit trail exactly once, and the
  Gateway saw exactly one request per audited mint (no retries).
"""

import collections
import hashlib
import random
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.conf import settings
from django.db import connection
from django.test import Client

from gateway_realtime.emulator import GatewayEmulator
from gateway_realtime.models import ClientSecretIssuance, Outcome, QuotaCounter
from tests.gunicorn_site import gunicorn, services_or_skip, tail

pytestmark = [pytest.mark.load, pytest.mark.django_db(transaction=True)]

USERS = 50
CLIENTS = 20
ATTEMPTS = 2000
WORKERS = 4
QUOTA = 30  # 40 attempts per user, so every user runs into it
RATE = "40/2s"  # generous: rarely reached, but counted in Redis on every request
# Well above what a mint takes on a loaded 2-core machine (workers, PostgreSQL,
# Redis and the emulator share it), well below the slow fault's stall.
READ_TIMEOUT = 1.5

# Fault model -> (status, error type); anything else mints (200).
FAULTS = {
    "emulator/rate-limited": (503, "gateway_rate_limit_exceeded"),
    "emulator/internal": (502, "gateway_internal_server_error"),
    "emulator/html": (502, "gateway_response_error"),
    "emulator/drop": (502, "gateway_connection_error"),
    "emulator/slow-headers-4": (504, "gateway_timeout"),
}
FAULT_SHARE = {
    "emulator/rate-limited": 0.03,
    "emulator/internal": 0.03,
    "emulator/html": 0.02,
    "emulator/drop": 0.01,
    "emulator/slow-headers-4": 0.005,
}
LIMIT_TYPES = {"quota_exceeded", "rate_limited"}


def wait_for_port(port, process, log):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail("gunicorn exited:\n" + tail(log))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail("gunicorn did not start:\n" + tail(log))


@pytest.fixture
def emulator():
    services_or_skip("load")
    with GatewayEmulator(host="127.0.0.1", port=0, api_keys=("emulator-key",)) as emu:
        yield emu


@pytest.fixture
def site(emulator):
    env = {
        "LOAD_DB_NAME": connection.settings_dict["NAME"],
        "LOAD_GATEWAY_BASE_URL": emulator.base_url,
        "LOAD_FAULT_MODELS": ",".join(FAULTS),
        "LOAD_QUOTA": str(QUOTA),
        # One window for the whole run, whenever it runs.
        "LOAD_QUOTA_PERIOD": str(10 * 365 * 86400),
        "LOAD_RATE": RATE,
        "LOAD_RATE_KEY_PREFIX": f"load-{uuid.uuid4().hex}",
        "LOAD_READ_TIMEOUT": str(READ_TIMEOUT),
    }

    def ready(base_url, process, log):
        wait_for_port(int(base_url.rsplit(":", 1)[1]), process, log)

    with gunicorn(
        "tests.load_settings", env, workers=WORKERS, threads=2, graceful_timeout=5, ready=ready
    ) as served:
        yield served


def sessions_for(users):
    cookies = {}
    for user in users:
        client = Client()
        client.force_login(user)
        cookies[user.pk] = client.cookies[settings.SESSION_COOKIE_NAME].value
    return cookies


def plan(users):
    """(user, model or None) for every attempt: deterministic, shuffled."""
    rng = random.Random(20261127)
    attempts = []
    for i in range(ATTEMPTS):
        user = users[i % USERS]
        roll, model, edge = rng.random(), None, 0.0
        for fault, share in FAULT_SHARE.items():
            edge += share
            if roll < edge:
                model = fault
                break
        attempts.append((user, model))
    rng.shuffle(attempts)
    return attempts


def test_load(site, emulator, django_user_model):
    base_url, log = site
    users = [django_user_model.objects.create_user(f"load{i:02d}") for i in range(USERS)]
    cookies = sessions_for(users)
    attempts = plan(users)
    local = threading.local()
    sessions = []

    def send(attempt):
        user, model = attempt
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
            sessions.append(session)
        body = {"sessionConfig": {}}
        if model:
            body["model"] = model
        response = session.post(
            base_url + "/gateway/realtime/",
            json=body,
            headers={"Origin": base_url, "Sec-Fetch-Site": "same-origin"},
            cookies={settings.SESSION_COOKIE_NAME: cookies[user.pk]},
            timeout=30,
        )
        return user.pk, model, response.status_code, response.json(), response.headers

    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(send, attempts))
    finally:
        for session in sessions:
            session.close()

    server_log = tail(log)
    assert len(results) == ATTEMPTS

    # Every answer is the documented one; no 500s.
    statuses = collections.Counter(status for _, _, status, _, _ in results)
    assert statuses[500] == 0, server_log
    limited = collections.Counter()
    issued_tokens = collections.defaultdict(list)
    for user_id, model, status, body, headers in results:
        if status == 429:
            assert body["error"]["type"] in LIMIT_TYPES
            assert int(headers["Retry-After"]) >= 1
            limited[body["error"]["type"]] += 1
        elif model in FAULTS:
            assert (status, body["error"]["type"]) == FAULTS[model], (model, body)
            if status == 503:
                assert headers["Retry-After"] == "7"
        else:
            assert status == 200, (status, body, server_log)
            assert body["url"].startswith("ws://127.0.0.1:")
            issued_tokens[user_id].append(body["token"])
        assert headers["Cache-Control"] == "no-store, private"

    rows = ClientSecretIssuance.objects.all()
    by_outcome = collections.Counter(rows.values_list("outcome", flat=True))
    # One row per attempt past the burst rate; quota rejections have a row.
    assert rows.count() == ATTEMPTS - limited["rate_limited"]
    assert by_outcome[Outcome.PENDING] == 0
    assert by_outcome[Outcome.REJECTED] == limited["quota_exceeded"]
    assert by_outcome[Outcome.ISSUED] == sum(len(t) for t in issued_tokens.values())
    assert by_outcome[Outcome.FAILED] == sum(
        1 for _, model, status, _, _ in results if model in FAULTS and status != 429
    )
    assert limited["quota_exceeded"] > 0  # the quota was really tested
    print(f"load: statuses {dict(statuses)}, limited {dict(limited)}, rows {dict(by_outcome)}")

    # The Gateway saw one request per audited mint: no retries, none unaudited.
    assert len(emulator.requests) == by_outcome[Outcome.ISSUED] + by_outcome[Outcome.FAILED]

    # Every token handed out is in the audit trail exactly once, for its user.
    fingerprints = collections.Counter(
        rows.filter(outcome=Outcome.ISSUED).values_list("token_fingerprint", flat=True)
    )
    for user_id, tokens in issued_tokens.items():
        for token in tokens:
            digest = hashlib.sha256(token.encode()).hexdigest()
            assert fingerprints[digest] == 1
            assert rows.get(token_fingerprint=digest).user_id == user_id
    assert sum(fingerprints.values()) == len(fingerprints)

    # Nobody over quota by even one; counters match the mints they had to keep.
    counters = dict(QuotaCounter.objects.values_list("user_id", "used"))
    for user in users:
        mine = rows.filter(user=user)
        issued = mine.filter(outcome=Outcome.ISSUED).count()
        assert issued <= QUOTA, user.username
        kept = mine.filter(outcome=Outcome.FAILED).exclude(upstream_status__gte=400).count()
        assert counters[user.pk] == issued + kept, user.username
        assert counters[user.pk] <= QUOTA
