"""The AI SDK's own browser session in chromium, through the relay, logged in by cookie only.

Django's live server is WSGI, so the relay runs where it runs in production:
the example site's ``asgi.py`` under uvicorn, in a subprocess with its own
SQLite file (migrated first; the test reads its rows with ``sqlite3``), in
front of the Gateway emulator started here with ``allow_api_key_ws``. The
browser logs in through the site's login form, nothing else: its only
credential is the session cookie. It presses the relayed voice element's
talk button (``relay-url``, ``{% gateway_realtime_voice relay=True %}``) with
the fake microphone, and the AI SDK's realtime session talks to the
emulator through the site's own WebSocket.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway_realtime.emulator import GatewayEmulator
from tests.browser import waiting
from tests.browser.waiting import wait_for

pytest.importorskip("channels", reason="relay mode needs the relay extra (channels)")
pytest.importorskip("uvicorn", reason="the relay's browser test serves the site with uvicorn")

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "relay-browser-key"
USERNAME = "relay-user"
PASSWORD = "relay-user-password"
RELAYED = "#relay-voice"
WS_PATH = "/ws/gateway-realtime/realtime/"

RECORDER = """
window.__relay = { states: [], errors: [] };
document.addEventListener("gateway-realtime-state", (event) => {
  if (event.target.id === "relay-voice") window.__relay.states.push(event.detail.state);
}, true);
document.addEventListener("gateway-realtime-error", (event) => {
  if (event instanceof CustomEvent && event.detail && event.target.id === "relay-voice") {
    window.__relay.errors.push({ type: event.detail.type, message: event.detail.message });
  }
}, true);
"""

ELEMENT = f"document.querySelector({RELAYED!r})"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def until(page: Any, expression: str, timeout: float = 20.0) -> Any:
    return waiting.until(page, expression, timeout, recorded="window.__relay")


class RelaySite:
    """example_project under uvicorn in a subprocess, on a SQLite file of its own."""

    def __init__(self, tmp: Path, emulator: GatewayEmulator) -> None:
        self.db = tmp / "relay-site.sqlite3"
        self.port = _free_port()
        self.origin = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AI_GATEWAY_", "DJANGO_"))},
            "DJANGO_SETTINGS_MODULE": "example_project.settings",
            "SQLITE_PATH": str(self.db),
            "AI_GATEWAY_BASE_URL": emulator.base_url,
            "AI_GATEWAY_API_KEY": API_KEY,
            "DEMO_RELAY": "1",
            "PYTHONUNBUFFERED": "1",
        }
        self.env.pop("REDIS_URL", None)
        self.env.pop("RELAY_REDIS_URL", None)
        self.log = tmp / "uvicorn.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None

    def prepare(self) -> None:
        script = (
            "import django; django.setup()\n"
            "from django.core.management import call_command\n"
            "from django.contrib.auth import get_user_model\n"
            "call_command('migrate', interactive=False, verbosity=0)\n"
            f"get_user_model().objects.create_user({USERNAME!r}, password={PASSWORD!r})\n"
        )
        subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, env=self.env, check=True, timeout=120
        )

    def start(self) -> None:
        self._log_file = self.log.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "example_project.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--lifespan",
                "off",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.origin}/accounts/login/", timeout=5).close()
                return
            except (urllib.error.URLError, OSError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("uvicorn did not start:\n" + self.output()) from None
                time.sleep(0.1)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log_file is not None:
            self._log_file.close()

    def rows(self, sql: str, *params: Any) -> list[sqlite3.Row]:
        with sqlite3.connect(self.db, timeout=10) as conn:
            conn.row_factory = sqlite3.Row
            return conn.execute(sql, params).fetchall()


@pytest.fixture
def relay_emulator() -> Iterator[GatewayEmulator]:
    with GatewayEmulator(
        host="127.0.0.1", port=0, api_keys=(API_KEY,), allow_api_key_ws=True
    ) as emulator:
        yield emulator


@pytest.fixture
def relay_site(tmp_path: Path, relay_emulator: GatewayEmulator) -> Iterator[RelaySite]:
    site = RelaySite(tmp_path, relay_emulator)
    site.prepare()
    site.start()
    yield site
    site.stop()


@pytest.fixture
def relay_page(mic_browser: Any, relay_site: RelaySite) -> Iterator[tuple[Any, dict[str, list]]]:
    """A logged-in page of the relay site (through its login form) and what it sent."""
    context = mic_browser.new_context(permissions=["microphone"])
    context.set_default_timeout(20_000)
    seen: dict[str, list] = {"requests": [], "websockets": []}
    page = context.new_page()
    page.on("request", lambda request: seen["requests"].append((request.method, request.url)))
    page.on("websocket", lambda ws: seen["websockets"].append(ws.url))
    page.add_init_script(RECORDER)
    page.goto(f"{relay_site.origin}/accounts/login/?next=/")
    page.fill("input[name='username']", USERNAME)
    page.fill("input[name='password']", PASSWORD)
    page.click("form [type='submit']")
    page.wait_for_url(f"{relay_site.origin}/")
    until(page, f"!!customElements.get('gateway-realtime-voice') && !!{ELEMENT}")
    yield page, seen
    context.close()


def test_the_ai_sdk_session_talks_through_the_relay_with_only_the_session_cookie(
    relay_page: tuple[Any, dict[str, list]],
    relay_site: RelaySite,
    relay_emulator: GatewayEmulator,
) -> None:
    page, seen = relay_page
    cookies = {cookie["name"] for cookie in page.context.cookies()}
    assert cookies <= {"sessionid", "csrftoken"}, cookies
    assert page.get_attribute(RELAYED, "relay-url") == WS_PATH
    assert page.get_attribute(RELAYED, "setup-url") is None

    page.click(f"{RELAYED} [part~='talk']")
    until(page, f"{ELEMENT}.getAttribute('state') === 'listening'")
    until(
        page,
        f"""(() => {{
          const log = {ELEMENT}.shadowRoot.querySelector("[part='log']");
          const done = (role) => [...log.children].some((line) =>
            line.dataset.role === role && line.dataset.state === "done" && line.textContent);
          return done("user") && done("assistant");
        }})()""",
    )
    assistant = page.evaluate(
        f"""[...{ELEMENT}.shadowRoot.querySelectorAll("[part='transcript']")]
            .filter((line) => line.dataset.role === "assistant").map((l) => l.textContent)"""
    )
    assert assistant[0].startswith("Emulated reply from openai/gpt-realtime-2: you said")
    page.click(f"{RELAYED} [part~='hang-up']")
    until(page, f"{ELEMENT}.getAttribute('state') === 'ended'")
    assert page.evaluate("window.__relay.errors") == []

    # The page's only socket went to the site's own origin, the relay's route.
    assert seen["websockets"] == [f"ws://127.0.0.1:{relay_site.port}{WS_PATH}"]
    # No setup request and no secret: nothing went to a setup endpoint, and
    # every request stayed on the site.
    assert not [url for _, url in seen["requests"] if "/api/realtime-token/" in url]
    assert all(url.startswith(relay_site.origin) for _, url in seen["requests"])
    assert relay_site.rows("SELECT id FROM gateway_realtime_clientsecretissuance") == []

    # The Gateway saw the site's credential in a header, not a client secret.
    [session] = wait_for(
        lambda: [s for s in relay_emulator.ws_sessions if s.close_code is not None]
    )
    assert session.kind == "realtime"
    assert session.token == "server-socket"  # header auth; the emulator keeps no credential
    assert session.subprotocols == []
    assert "session-update" in session.received
    assert "input-audio-append" in session.received
    assert "response-done" in session.sent

    # The relayed session's audit row, completed when the browser hung up.
    [row] = wait_for(
        lambda: relay_site.rows(
            "SELECT * FROM gateway_realtime_relaysession WHERE ended_at IS NOT NULL"
        )
    )
    assert row["username"] == USERNAME
    assert row["kind"] == "realtime"
    assert row["closed_by"] == "browser"
    assert row["frames_from_browser"] > 0
    assert row["frames_from_gateway"] > 0


#: Delays the AI SDK's ``onclose`` handler by 300 ms: the microphone's frames
#: meanwhile meet a closed socket, and the SDK reports "Realtime WebSocket is
#: not open" instead of the close's code and reason (a race that happens on
#: its own when a close handshake takes longer than a microphone frame).
LATE_ONCLOSE = """
const onclose = Object.getOwnPropertyDescriptor(WebSocket.prototype, "onclose");
Object.defineProperty(WebSocket.prototype, "onclose", {
  configurable: true,
  get() { return onclose.get.call(this); },
  set(handler) {
    const socket = this;
    const late = handler && ((event) => setTimeout(() => handler.call(socket, event), 300));
    onclose.set.call(this, late);
  },
});
"""


@pytest.mark.parametrize("late_onclose", [False, True], ids=["onclose", "late-onclose"])
def test_logging_out_ends_the_relayed_session_and_the_element_says_why(
    relay_page: tuple[Any, dict[str, list]], relay_site: RelaySite, late_onclose: bool
) -> None:
    page, _ = relay_page
    if late_onclose:
        page.add_init_script(LATE_ONCLOSE)
        page.reload()
        until(page, f"!!customElements.get('gateway-realtime-voice') && !!{ELEMENT}")
    page.click(f"{RELAYED} [part~='talk']")
    until(page, f"{ELEMENT}.getAttribute('state') === 'listening'")
    wait_for(
        lambda: relay_site.rows(
            "SELECT id FROM gateway_realtime_relaysession WHERE ended_at IS NULL"
        )
    )

    # Log out in a second tab of the same browser: the relay revokes the
    # user's live sessions, and this page's element ends with the reason.
    other = page.context.new_page()
    other.goto(f"{relay_site.origin}/")
    other.click("form[action='/accounts/logout/'] [type='submit']")
    other.wait_for_load_state()

    until(page, f"{ELEMENT}.getAttribute('state') === 'ended'")
    assert page.evaluate("window.__relay.errors") == []
    [row] = wait_for(
        lambda: relay_site.rows(
            "SELECT * FROM gateway_realtime_relaysession WHERE ended_at IS NOT NULL"
        )
    )
    assert row["closed_by"] == "revoked"
    assert row["close_code"] == 4410
    # The close reason the relay sent ("logged out") is what the element says.
    reason = row["close_reason"]
    assert reason
    status = page.evaluate(f"{ELEMENT}.shadowRoot.querySelector(\"[part='status']\").textContent")
    assert status == f"{reason[0].upper()}{reason[1:]}."


def test_a_relay_refusal_is_a_typed_error_with_the_relays_reason(
    relay_page: tuple[Any, dict[str, list]], relay_site: RelaySite
) -> None:
    page, seen = relay_page
    # Only the realtime kind relays: the relay accepts, then closes with 4404.
    page.evaluate(f"{ELEMENT}.setAttribute('relay-url', '/ws/gateway-realtime/speech/')")
    page.click(f"{RELAYED} [part~='talk']")
    until(page, f"{ELEMENT}.getAttribute('state') === 'error'")
    assert page.evaluate("window.__relay.errors") == [
        {"type": "not_found", "message": "Unknown relay kind."}
    ]
    status = page.evaluate(f"{ELEMENT}.shadowRoot.querySelector(\"[part='status']\").textContent")
    assert status == "Unknown relay kind."
    assert seen["websockets"] == [f"ws://127.0.0.1:{relay_site.port}/ws/gateway-realtime/speech/"]
    # The microphone the press opened was released.
    assert page.evaluate(f"{ELEMENT}.session") is None
    assert relay_site.rows("SELECT id FROM gateway_realtime_relaysession") == []


LIVE = "#relay-live-voice"
LIVE_ELEMENT = f"document.querySelector({LIVE!r})"


def test_a_live_model_talks_through_the_relay_and_is_metered(
    relay_page: tuple[Any, dict[str, list]],
    relay_site: RelaySite,
    relay_emulator: GatewayEmulator,
) -> None:
    page, seen = relay_page
    assert page.get_attribute(LIVE, "model") == "openai/gpt-live-1"
    assert page.get_attribute(LIVE, "api") == "live"

    page.click(f"{LIVE} [part~='talk']")
    until(page, f"{LIVE_ELEMENT}.getAttribute('state') === 'listening'")
    until(
        page,
        f"""[...{LIVE_ELEMENT}.shadowRoot.querySelectorAll("[part='transcript']")]
            .some((line) => line.dataset.role === "assistant"
              && line.textContent.startsWith("Emulated Live reply from openai/gpt-live-1"))""",
    )
    page.click(f"{LIVE} [part~='hang-up']")
    until(page, f"{LIVE_ELEMENT}.getAttribute('state') === 'ended'")
    assert page.evaluate(f"{LIVE_ELEMENT}.getAttribute('state')") == "ended"

    # The page's socket went to the relay, asking for the Live model.
    assert seen["websockets"] == [
        f"ws://127.0.0.1:{relay_site.port}{WS_PATH}?model=openai%2Fgpt-live-1"
    ]
    assert relay_site.rows("SELECT id FROM gateway_realtime_clientsecretissuance") == []
    # The relay opened the Live route with header authentication.
    [session] = wait_for(
        lambda: [s for s in relay_emulator.ws_sessions if s.close_code is not None]
    )
    assert (session.kind, session.model) == ("live", "openai/gpt-live-1")
    assert session.token == "server-socket"
    assert session.subprotocols == []
    assert session.received[0] == "session-start"
    assert "input-audio-append" in session.received
    assert session.received[-1] == "session-close"
    assert session.sent[-1] == "session-closed"
    # Metered both ways, in the session's format.
    [row] = wait_for(
        lambda: relay_site.rows(
            "SELECT * FROM gateway_realtime_relaysession WHERE ended_at IS NOT NULL"
        )
    )
    assert (row["kind"], row["model"]) == ("realtime", "openai/gpt-live-1")
    assert row["audio_seconds_in"] > 0
    assert row["audio_seconds_out"] > 0
