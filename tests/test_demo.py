"""``make demo`` (example_project/demo.py): real Gateway or emulator, its pages, a clean stop."""

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
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders

from example_project.demo import DEMO_PASSWORD, DEMO_USERNAME, uses_real_gateway

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


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_demo_runs_and_a_stop_signal_stops_everything(tmp_path, stop_signal):
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
        proc.send_signal(stop_signal)
        rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, rest
    assert "Gateway emulator stopped." in rest
    for stopped in (port, emulator_port):
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", stopped), timeout=1).close()


# The pages, in process -------------------------------------------------------

#: Start tags that close an open <p> under HTML's parsing rules: a <p> around
#: one of these is not what the markup says (the <form> in a <p> case).
# fmt: off
CLOSES_P = {
    "address", "article", "aside", "blockquote", "details", "dialog", "div", "dl", "fieldset",
    "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header",
    "hgroup", "hr", "main", "menu", "nav", "ol", "p", "pre", "search", "section", "table", "ul",
}
VOID = {
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
    "wbr",
}
# fmt: on


class NestingChecker(HTMLParser):
    """Lists the block elements opened inside a <p>, and end tags that close nothing."""

    def __init__(self):
        super().__init__()
        self.open = []
        self.problems = []

    def handle_starttag(self, tag, attrs):
        if tag in CLOSES_P and "p" in self.open:
            self.problems.append(f"<{tag}> inside <p>")
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        if tag not in self.open:
            self.problems.append(f"</{tag}> closes nothing")
            return
        while self.open.pop() != tag:
            pass


def nesting_problems(html):
    checker = NestingChecker()
    checker.feed(html)
    checker.close()
    return checker.problems + [f"<{tag}> not closed" for tag in checker.open]


def test_the_nesting_check_sees_a_form_in_a_p():
    assert nesting_problems("<p>Hi <form><button>x</button></form></p>") == ["<form> inside <p>"]
    assert nesting_problems("<div><p>Hi</p><form><button>x</button></form></div>") == []


@pytest.fixture
def demo_site(settings):
    settings.INSTALLED_APPS = [*settings.INSTALLED_APPS, "example_project"]
    settings.LOGIN_URL = "/accounts/login/"


@pytest.mark.django_db
@pytest.mark.urls("example_project.urls")
def test_the_login_page_shows_the_demo_account(demo_site, client):
    response = client.get("/accounts/login/?next=/")
    assert response.status_code == 200
    html = response.content.decode()
    assert f"username <strong>{DEMO_USERNAME}</strong>" in html
    assert f"password <strong>{DEMO_PASSWORD}</strong>" in html
    assert nesting_problems(html) == []


@pytest.mark.django_db
@pytest.mark.urls("example_project.urls")
def test_the_demo_page_is_well_nested(demo_site, client, gateway, user):
    client.force_login(user)
    response = client.get("/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'action="/accounts/logout/"' in html
    assert nesting_problems(html) == []


@pytest.mark.urls("example_project.urls")
def test_favicon_is_not_a_404(demo_site, client):
    response = client.get("/favicon.ico")
    assert response.status_code == 302
    assert response["Location"] == "/static/example_project/favicon.svg"
    assert finders.find("example_project/favicon.svg")
