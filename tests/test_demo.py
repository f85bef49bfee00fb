"""``make demo`` (example_project/demo.py): real Gateway or emulator, and a clean Ctrl-C."""

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

from example_project.demo import uses_real_gateway

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("environ", "real"),
    [
        ({}, False),
        ({"AI_GATEWAY_API_KEY": "k"}, True),
        (
            {
                "AI_GATEWAY_API_KEY": "k",
                "AI_GATEWAY_BASE_URL": "https://ai-gateway.vercel.sh/v4/ai",
            },
            True,
        ),
        ({"AI_GATEWAY_API_KEY": "k", "AI_GATEWAY_BASE_URL": "http://127.0.0.1:8787/v4/ai"}, False),
        ({"AI_GATEWAY_API_KEY": "k", "AI_GATEWAY_BASE_URL": "http://localhost:1/v4/ai"}, False),
        ({"AI_GATEWAY_API_KEY": "", "AI_GATEWAY_BASE_URL": "https://x.example/v4/ai"}, False),
    ],
)
def test_uses_real_gateway(environ, real):
    assert uses_real_gateway(environ) is real


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_demo_runs_and_ctrl_c_stops_everything(tmp_path):
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AI_GATEWAY_", "DJANGO_"))},
        "SQLITE_PATH": str(tmp_path / "demo.sqlite3"),
        "PYTHONUNBUFFERED": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "example_project.demo", "--port", str(port)],
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
        text = "".join(output)
        assert f"Open http://127.0.0.1:{port}/" in text
        assert "username: demo" in text
        emulator_port = int(re.search(r"emulator at http://127\.0\.0\.1:(\d+)/v4/ai", text)[1])

        opener = urllib.request.build_opener(_NoRedirect)
        for _ in range(100):  # the dev server starts right after the banner
            try:
                opener.open(f"http://127.0.0.1:{port}/", timeout=5)
            except urllib.error.HTTPError as err:
                assert err.code == 302
                assert err.headers["Location"].startswith("/accounts/login/")
                break
            except OSError:
                proc.poll()
                assert proc.returncode is None, "".join(output)
                time.sleep(0.1)
        else:
            pytest.fail("the demo site did not answer")
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, rest
    assert "Gateway emulator stopped." in rest
    for stopped in (port, emulator_port):
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", stopped), timeout=1).close()
