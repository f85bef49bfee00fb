"""Relay mode across processes: two uvicorn servers sharing a Redis channel layer.

Runs in the services pass only (``make test-services``: PostgreSQL and
Redis; skipped with the reason otherwise). The test process runs the Gateway
emulator and starts two uvicorn processes serving ``tests.relay.asgi_site``
(settings ``tests.relay.site_settings``: the test database, a Redis channel
layer with this run's prefix, at most one relayed session per user). Real
WebSocket clients (``websockets``) connect with a session cookie and the
site's own Origin, as a browser would. Checks:

- ``revoke_sessions(user)`` called in the test process (a third process)
  closes the session that server 2 holds with 4410 and the reason;
- the one-session cap holds across both servers: with a session live on
  server 1, a second one on server 2 is refused with 4429, and once the
  first ends a new one is accepted;
- one user's budget is spent live by two sessions on two servers: together
  they relay no more audio than the budget;
- a server that shuts down closes its sessions with 1012 and records them
  as closed by the server.
"""

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import pytest
import requests
from django.conf import settings
from django.db import connection
from django.test import Client, override_settings
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from gateway_realtime.emulator import GatewayEmulator
from gateway_realtime.models import CloseSide, RelaySession, RelayUsage
from gateway_realtime.relay.revocation import revoke_sessions
from tests.gunicorn_site import free_port, services_or_skip, stop, tail
from tests.relay import site_policy
from tests.relay.conftest import in_a_thread

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RELAY_PATH = "/ws/gateway-realtime/realtime/"
WAIT_S = 20.0


def channel_layers(prefix):
    """The servers' channel layer (``tests.relay.site_settings``), for this process too."""
    url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    return {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": url, "socket_timeout": 10}], "prefix": prefix},
        }
    }


@pytest.fixture(scope="module")
def emulator(django_db_setup):
    services_or_skip("relay multi-process")
    with GatewayEmulator(
        host="127.0.0.1", port=0, api_keys=("emulator-key",), allow_api_key_ws=True
    ) as emu:
        yield emu


@pytest.fixture(scope="module")
def prefix():
    return f"relaytest-{uuid.uuid4().hex[:12]}"


def server_env(emulator, prefix):
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="tests.relay.site_settings",
        RELAY_SITE_DB_NAME=connection.settings_dict["NAME"],
        RELAY_SITE_PREFIX=prefix,
        RELAY_SITE_GATEWAY_BASE_URL=emulator.base_url,
        RELAY_SITE_MAX_SESSIONS="1",
    )
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def start_server(env):
    """One uvicorn process serving the relay site: (process, log, origin)."""
    port = free_port()
    log = tempfile.NamedTemporaryFile("w+", suffix=".log")  # noqa: SIM115
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.relay.asgi_site:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--lifespan",
            "off",
            "--no-access-log",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return process, log, f"http://127.0.0.1:{port}"


def stop_server(process, log):
    stop(process)
    log.close()


@pytest.fixture(scope="module")
def servers(emulator, prefix):
    """Two uvicorn processes serving the relay site: their origins (http://host:port)."""
    env = server_env(emulator, prefix)
    started = []
    try:
        for _ in range(2):
            started.append(start_server(env))
        for process, log, origin in started:
            wait_until_serving(origin, process, log)
        yield [(origin, log) for _, log, origin in started]
    finally:
        for process, log, _ in started:
            stop_server(process, log)


@pytest.fixture
def layer(prefix):
    """This process on the servers' channel layer."""
    with override_settings(CHANNEL_LAYERS=channel_layers(prefix)):
        yield


def wait_until_serving(origin, process, log):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail("uvicorn exited:\n" + tail(log))
        try:
            if requests.get(origin + "/admin/login/", timeout=5).status_code == 200:
                return
        except requests.RequestException:  # not listening yet
            pass
        time.sleep(0.1)
    pytest.fail(f"uvicorn at {origin} did not answer:\n" + tail(log))


def session_cookie(user):
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def open_relay(origin, cookie):
    """A browser's relay socket: the session cookie and the site's own Origin."""
    return connect(
        "ws" + origin.removeprefix("http") + RELAY_PATH,
        origin=origin,
        additional_headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"},
        open_timeout=WAIT_S,
    )


def first_event(ws, log):
    """The Gateway's first event through the relay: the session is live and joined its group."""
    try:
        frame = ws.recv(timeout=WAIT_S)
    except ConnectionClosed as closed:
        pytest.fail(f"the relay closed the session: {closed.rcvd}\n" + tail(log))
    except TimeoutError:
        pytest.fail("no event from the Gateway through the relay\n" + tail(log))
    return frame


def close_of(ws, log):
    """Read until the relay closes the socket: its (code, reason)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            ws.recv(timeout=max(0.1, deadline - time.monotonic()))
        except ConnectionClosed as closed:
            assert closed.rcvd is not None, "closed without a close frame"
            return closed.rcvd.code, closed.rcvd.reason
        except TimeoutError:
            break
    pytest.fail("the relay did not close the session\n" + tail(log))


def wait_for_no_live_session(user):
    deadline = time.monotonic() + WAIT_S
    while RelaySession.objects.filter(user=user, ended_at__isnull=True).exists():
        if time.monotonic() > deadline:
            pytest.fail("the relayed session's row was never completed")
        time.sleep(0.05)


def test_revoke_in_one_process_closes_a_session_held_by_another(servers, layer, django_user_model):
    user = django_user_model.objects.create_user(username="revoked-user", password="pw")
    other = django_user_model.objects.create_user(username="other-user", password="pw")
    (first, first_log), (second, second_log) = servers
    with (
        open_relay(second, session_cookie(user)) as ws,
        open_relay(first, session_cookie(other)) as bystander,
    ):
        assert '"session-created"' in first_event(ws, second_log)
        assert '"session-created"' in first_event(bystander, first_log)
        assert in_a_thread(revoke_sessions, user, reason="banned by the test") is True
        assert close_of(ws, second_log) == (4410, "banned by the test")
        wait_for_no_live_session(user)
        row = RelaySession.objects.get(user=user)
        assert (row.closed_by, row.close_code, row.close_reason) == (
            CloseSide.REVOKED,
            4410,
            "banned by the test",
        )
        # Another user's session, on the other server, goes on.
        assert RelaySession.objects.get(user=other).ended_at is None
        bystander.send('{"type":"session-update","config":{}}')
        assert '"session-updated"' in bystander.recv(timeout=WAIT_S)
    wait_for_no_live_session(other)


def test_the_session_cap_holds_across_servers(servers, django_user_model):
    user = django_user_model.objects.create_user(username="capped-user", password="pw")
    cookie = session_cookie(user)
    (first, first_log), (second, second_log) = servers
    with open_relay(first, cookie) as ws:
        assert '"session-created"' in first_event(ws, first_log)
        with open_relay(second, cookie) as refused:
            assert close_of(refused, second_log) == (4429, "too many sessions")
    # The first session ended (the browser closed it): the cap frees up.
    wait_for_no_live_session(user)
    with open_relay(second, cookie) as ws:
        assert '"session-created"' in first_event(ws, second_log)
    wait_for_no_live_session(user)
    rows = RelaySession.objects.filter(user=user)
    assert rows.filter(closed_by=CloseSide.BROWSER).count() == 2
    # The refused attempt, if audited, is a refusal, never a session.
    refused = rows.exclude(closed_by=CloseSide.BROWSER)
    assert {(row.closed_by, row.close_code) for row in refused} <= {(CloseSide.LIMIT, 4429)}


def audio_frame(seconds):
    """An ``input-audio-append`` of ``seconds`` of 24 kHz PCM16 silence."""
    audio = base64.b64encode(bytes(int(48000 * seconds))).decode()
    return json.dumps({"type": "input-audio-append", "audio": audio})


def spent_audio(user):
    usage = RelayUsage.objects.filter(user=user).first()
    return 0.0 if usage is None else usage.audio_seconds


def wait_for_spent(user, seconds):
    deadline = time.monotonic() + WAIT_S
    while spent_audio(user) < seconds - 1e-6:
        if time.monotonic() > deadline:
            pytest.fail(f"the shared counter never reached {seconds} s: {spent_audio(user)}")
        time.sleep(0.02)


def test_two_sessions_on_two_servers_spend_one_budget(servers, django_user_model):
    user = django_user_model.objects.create_user(username="budget-user", password="pw")
    cookie = session_cookie(user)
    (first, first_log), (second, second_log) = servers
    half = audio_frame(0.5)
    with open_relay(first, cookie) as one, open_relay(second, cookie) as two:
        assert '"session-created"' in first_event(one, first_log)
        assert '"session-created"' in first_event(two, second_log)
        # Turn by turn, each waiting until the other server's usage is in the counter.
        one.send(half)
        wait_for_spent(user, 0.5)
        two.send(half)
        wait_for_spent(user, 1.0)
        one.send(half)
        wait_for_spent(user, 1.5)
        # The budget is reached here: server 2 refuses this frame, or relays it
        # if its last read of the counter is older than server 1's add (at most
        # one interval) and ends the session at its next read.
        two.send(half)
        assert close_of(two, second_log) == (4429, "budget exceeded")
        # Server 1 ends its session at its next read of the counter, maybe
        # before this frame arrives, else when it does.
        with contextlib.suppress(ConnectionClosed):
            one.send(half)
        assert close_of(one, first_log) == (4429, "budget exceeded")
    wait_for_no_live_session(user)
    relayed = sum(row.audio_seconds_in for row in RelaySession.objects.filter(user=user))
    # What the rows say was relayed is what the shared counter holds, and
    # together the two sessions passed the budget by at most what the other
    # metered within one interval (docs/relay.md): here one frame, when a
    # loaded machine delays a server's read of the counter.
    assert spent_audio(user) == pytest.approx(relayed)
    assert 1.5 <= relayed <= site_policy.BUDGET_SECONDS + 0.5


def test_a_server_shutdown_closes_its_sessions_with_1012(emulator, prefix, django_user_model):
    user = django_user_model.objects.create_user(username="shutdown-user", password="pw")
    process, log, origin = start_server(server_env(emulator, prefix))
    try:
        wait_until_serving(origin, process, log)
        with open_relay(origin, session_cookie(user)) as ws:
            assert '"session-created"' in first_event(ws, log)
            process.send_signal(signal.SIGTERM)
            assert close_of(ws, log)[0] == 1012
        process.wait(timeout=WAIT_S)
        wait_for_no_live_session(user)
        row = RelaySession.objects.get(user=user)
        assert (row.closed_by, row.close_code) == (CloseSide.SERVER, 1012)
        assert "Traceback" not in tail(log)
    finally:
        stop_server(process, log)
