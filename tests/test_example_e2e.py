"""End to end over real sockets: example_project, driven like the AI SDK, minting
through the local Gateway emulator, compared with the official @ai-sdk/gateway.

The example site runs in its own process (``runserver``) with its own settings
and a throw-away SQLite file; the emulator runs in this process.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from gateway_realtime.emulator import GatewayEmulator
from tests.browser import setup_deps

REPO = Path(__file__).resolve().parent.parent
NODE_DIR = REPO / "tests" / "node"
NODE_CACHE = setup_deps.OFFICIAL_CACHE
API_KEY = "e2e-site-credential-7f3a91"
PASSWORD = "e2e-password-1"

KINDS = {
    "realtime": "openai/gpt-realtime-2",
    "transcription": "openai/gpt-4o-transcribe",
    "speech": "elevenlabs/eleven-v3",
}
CONTRACT_HEADERS = [
    "authorization",
    "ai-gateway-protocol-version",
    "ai-gateway-auth-method",
    "x-vercel-ai-gateway-team",
    "content-type",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the example site exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the example site did not start listening")


@pytest.fixture(scope="module", params=[None, "my-team"], ids=["no-team", "team"])
def stack(request, tmp_path_factory):
    team = request.param
    emulator = GatewayEmulator(api_keys=(API_KEY,), team=team).start()
    env = {
        **os.environ,
        "AI_GATEWAY_API_KEY": API_KEY,
        "AI_GATEWAY_BASE_URL": emulator.base_url,
        "AI_GATEWAY_TEAM": team or "",
        "SQLITE_PATH": str(tmp_path_factory.mktemp("site") / "db.sqlite3"),
        "DJANGO_DEBUG": "0",
        "DJANGO_SETTINGS_MODULE": "example_project.settings",
        "PYTHONPATH": str(REPO),
    }
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    manage = [sys.executable, str(REPO / "example_project" / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v0"], env=env, check=True, cwd=REPO)
    subprocess.run(
        [
            *manage,
            "shell",
            "-c",
            "from django.contrib.auth import get_user_model; "
            f"get_user_model().objects.create_user('e2e', password='{PASSWORD}')",
        ],
        env=env,
        check=True,
        cwd=REPO,
    )
    port = free_port()
    proc = subprocess.Popen(
        [*manage, "runserver", f"127.0.0.1:{port}", "--noreload", "--skip-checks"],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, proc)
        yield {"emulator": emulator, "site": f"http://127.0.0.1:{port}", "team": team}
    finally:
        proc.terminate()
        try:
            _, stderr = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
        emulator.stop()
        # The site's own log must never contain the credential.
        assert API_KEY.encode() not in stderr


def logged_in(site: str) -> requests.Session:
    browser = requests.Session()
    page = browser.get(f"{site}/accounts/login/", timeout=10)
    assert page.status_code == 200
    csrf = browser.cookies["csrftoken"]
    done = browser.post(
        f"{site}/accounts/login/",
        data={"username": "e2e", "password": PASSWORD, "csrfmiddlewaretoken": csrf},
        headers={"Referer": f"{site}/accounts/login/"},
        allow_redirects=False,
        timeout=10,
    )
    assert done.status_code == 302, done.text[:500]
    return browser


def ai_sdk_fetch(browser: requests.Session, site: str, kind: str, extra: dict | None = None):
    """What the AI SDK's realtime session sends: same-origin JSON, cookie, no CSRF token."""
    body = {"sessionConfig": {"instructions": "Be brief."}, **(extra or {})}
    return browser.post(
        f"{site}/api/realtime-token/{kind}/",
        data=json.dumps(body),
        headers={
            "Content-Type": "application/json",
            "Origin": site,
            "Sec-Fetch-Site": "same-origin",
            "Sec-Fetch-Mode": "cors",
        },
        timeout=10,
    )


@pytest.mark.parametrize("kind", list(KINDS))
def test_ai_sdk_request_mints_through_the_emulator(stack, kind):
    emulator, site = stack["emulator"], stack["site"]
    browser = logged_in(site)
    emulator.reset()
    response = ai_sdk_fetch(browser, site, kind)
    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store, private"
    body = response.json()
    assert set(body) == {"token", "url", "expiresAt"}
    assert body["token"].startswith("vcst_")
    model = KINDS[kind].replace("/", "%2F")
    ws_base = emulator.base_url.replace("http", "ws", 1)
    assert body["url"] == f"{ws_base}/{kind}-model?ai-model-id={model}"
    assert isinstance(body["expiresAt"], int | float) and body["expiresAt"] > time.time()
    assert body["token"] in emulator.issued
    assert API_KEY not in response.text
    (received,) = emulator.requests
    assert received.method == "POST"
    assert received.path == "/v1/realtime/client-secrets"
    expected = {"model": KINDS[kind]}
    if kind != "realtime":
        expected["routeKind"] = kind
    expected["expiresIn"] = 120  # example_project's GATEWAY_REALTIME_DEFAULT_LIFETIME
    assert received.body == json.dumps(expected, separators=(",", ":")).encode()
    assert received.header("authorization") == f"Bearer {API_KEY}"
    assert received.header("x-vercel-ai-gateway-team") == stack["team"]


def test_cross_site_and_anonymous_requests_mint_nothing(stack):
    emulator, site = stack["emulator"], stack["site"]
    emulator.reset()
    anonymous = requests.Session()
    assert ai_sdk_fetch(anonymous, site, "realtime").status_code in {401, 403}
    browser = logged_in(site)
    response = browser.post(
        f"{site}/api/realtime-token/realtime/",
        data="{}",
        headers={
            "Content-Type": "application/json",
            "Origin": "https://evil.example",
            "Sec-Fetch-Site": "cross-site",
        },
        timeout=10,
    )
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "cross_site_request"
    assert emulator.requests == []


@pytest.fixture(scope="module")
def official_client():
    """The official provider, installed by `make browser-deps` (tests never install it)."""
    problem = setup_deps.official_client_problem() or (
        None if shutil.which("node") else "node is needed to run the official client"
    )
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    shutil.copy(NODE_DIR / "official_mint.mjs", NODE_CACHE / "official_mint.mjs")

    def mint(**options):
        done = subprocess.run(
            ["node", str(NODE_CACHE / "official_mint.mjs"), json.dumps(options)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return json.loads(done.stdout)

    return mint


#: What each comparison mints: the kind's default model, and a Live model
#: (the realtime kind's fourth route, wire contract section 8).
OFFICIAL_CASES = {**{kind: (kind, model) for kind, model in KINDS.items()}}
OFFICIAL_CASES["live"] = ("realtime", "openai/gpt-live-1")


@pytest.mark.parametrize("case", list(OFFICIAL_CASES))
@pytest.mark.parametrize("lifetime", [None, 120])
def test_gateway_receives_what_the_official_client_sends(stack, official_client, case, lifetime):
    emulator, site = stack["emulator"], stack["site"]
    browser = logged_in(site)
    kind, model = OFFICIAL_CASES[case]

    emulator.reset()
    extra = {} if lifetime is None else {"expiresAfterSeconds": lifetime}
    if model != KINDS[kind]:
        extra["model"] = model
    ours = ai_sdk_fetch(browser, site, kind, extra)
    assert ours.status_code == 200, ours.text
    (our_request,) = emulator.requests

    emulator.reset()
    theirs = official_client(
        baseURL=emulator.base_url,
        apiKey=API_KEY,
        team=stack["team"],
        kind=kind,
        model=model,
        # example_project asks for 120 s when the browser names no lifetime
        expiresAfterSeconds=lifetime or 120,
    )
    assert "result" in theirs, theirs
    (official_request,) = emulator.requests

    assert our_request.method == official_request.method
    assert our_request.path == official_request.path
    assert our_request.body == official_request.body
    for name in CONTRACT_HEADERS:
        assert our_request.header(name) == official_request.header(name), name
    # Same URL for the browser, too.
    assert ours.json()["url"] == theirs["result"]["url"]
