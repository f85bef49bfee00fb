"""``make demo RELAY=1`` (``python -m example_project.demo --relay``): relay mode in the demo.

The relayed conversation itself, in chromium, is tests/browser/test_relay_browser.py.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from example_project import demo
from tests.test_demo import _free_port, _NoRedirect, _script_and_style_problems, nesting_problems

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def demo_site(settings):
    settings.INSTALLED_APPS = [*settings.INSTALLED_APPS, "example_project"]
    settings.LOGIN_URL = "/accounts/login/"
    return settings


@pytest.mark.django_db
@pytest.mark.urls("example_project.urls")
@pytest.mark.parametrize("relay", [True, False])
def test_the_demo_page_shows_the_relayed_element_only_when_relay_mode_is_on(
    demo_site, client, gateway, user, relay
):
    demo_site.DEMO_RELAY = relay
    client.force_login(user)
    html = client.get("/").content.decode()
    relayed = re.search(r"<gateway-realtime-voice ([^>]*)>", html.split('id="relay-title"')[-1])
    if relay:
        assert "Talk through the relay" in html
        assert relayed
        assert 'relay-url="/ws/gateway-realtime/realtime/"' in relayed[1]
        assert 'id="relay-voice"' in relayed[1]
        assert 'label="Talk (relayed)"' in relayed[1]
        assert "setup-url" not in relayed[1]
    else:
        assert "Talk through the relay" not in html
        assert "relay-url" not in html
    # The client-secret element is there either way, and nothing was minted.
    assert '<gateway-realtime-voice setup-url="/api/realtime-token/realtime/"' in html
    assert len(gateway.calls) == 0
    assert nesting_problems(html) == []
    assert _script_and_style_problems(html) == []


def test_relay_needs_its_extra_and_says_how_to_get_it(monkeypatch, capsys):
    monkeypatch.setattr(demo, "relay_missing", lambda: ["uvicorn"])
    assert demo.main(["--relay"]) == 2
    assert "make demo RELAY=1" in capsys.readouterr().err


def test_the_demo_serves_the_relay_under_uvicorn_and_stops_cleanly(tmp_path):
    pytest.importorskip("uvicorn", reason="--relay serves the site with uvicorn")
    pytest.importorskip("channels", reason="--relay needs the relay extra")
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AI_GATEWAY_", "DJANGO_"))},
        "SQLITE_PATH": str(tmp_path / "demo.sqlite3"),
        "PYTHONUNBUFFERED": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "example_project.demo", "--port", str(port), "--relay"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = []
    try:
        for line in proc.stdout:
            output.append(line)
            if "password:" in line:
                break
        assert "with relay mode, served by uvicorn" in "".join(output)
        opener = urllib.request.build_opener(_NoRedirect)
        for _ in range(200):
            try:
                opener.open(f"http://127.0.0.1:{port}/", timeout=5)
            except urllib.error.HTTPError as err:
                assert err.code == 302
                break
            except OSError:
                assert proc.poll() is None, "".join(output)
                time.sleep(0.1)
        else:
            pytest.fail("the demo site did not answer")
        # The relay is routed: an anonymous socket is accepted, then closed with 4401.
        with (
            connect(
                f"ws://127.0.0.1:{port}/ws/gateway-realtime/realtime/",
                origin=f"http://127.0.0.1:{port}",
                open_timeout=10,
            ) as ws,
            pytest.raises(ConnectionClosed) as closed,
        ):
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4401
        # ... and the static files the elements need are served.
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/static/gateway_realtime/elements.mjs", timeout=5
        ) as static:
            assert static.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, rest
    assert "Gateway emulator stopped." in rest
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
