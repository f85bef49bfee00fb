"""``make demo`` (example_project/demo.py): real Gateway or emulator, its pages, a clean stop."""

from __future__ import annotations

import json
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
from django.contrib.auth.models import Permission
from django.contrib.staticfiles import finders
from django.db import connection

from example_project.demo import DEMO_PASSWORD, DEMO_USERNAME, uses_real_gateway
from gateway_realtime.models import ClientSecretIssuance
from gateway_realtime.services import mint_client_secret
from tests.conftest import database_down

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


def _script_and_style_problems(html):
    """Inline scripts (but inert JSON blocks) and style attributes: what a strict CSP blocks."""
    problems = []
    for match in re.finditer(r"<script\b([^>]*)>(.*?)</script>", html, re.S):
        attrs, body = match.groups()
        if 'type="application/json"' in attrs:
            continue
        if "src=" not in attrs or body.strip():
            problems.append(match.group(0)[:80])
    problems += re.findall(r"<[^>]+\sstyle=", html)
    return problems


@pytest.mark.django_db
@pytest.mark.urls("example_project.urls")
def test_the_demo_page_has_the_three_elements_and_mints_nothing(demo_site, client, gateway, user):
    client.force_login(user)
    response = client.get("/")
    html = response.content.decode()
    assert len(gateway.calls) == 0
    assert not ClientSecretIssuance.objects.exists()
    assert (
        '<gateway-realtime-voice setup-url="/api/realtime-token/realtime/" api="realtime"' in html
    )
    # The Live model's element asks for its model, on the Live route.
    assert (
        '<gateway-realtime-voice setup-url="/api/realtime-token/realtime/"'
        ' model="openai/gpt-live-1" api="live"' in html
    )
    assert '<textarea id="note"' in html
    assert (
        '<gateway-realtime-dictation for="note" setup-url="/api/realtime-token/transcription/"'
        in html
    )
    assert '<p id="para">' in html
    assert '<gateway-realtime-speech setup-url="/api/realtime-token/speech/"' in html
    assert 'for="para"' in html
    # The text chat stays, labelled as the fallback, and connects on demand.
    assert "fallback for machines without a microphone" in html
    block = re.search(
        r'<script type="application/json" id="gateway-realtime-realtime"[^>]*>(.*?)<', html
    )
    config = json.loads(block[1])
    assert config["token"] is None
    assert config["refreshUrl"] == "/api/realtime-token/realtime/"
    assert _script_and_style_problems(html) == []


@pytest.mark.django_db
@pytest.mark.urls("example_project.urls")
def test_the_demo_page_sends_a_strict_csp_that_lets_the_gateway_in(
    demo_site, client, user, settings
):
    client.force_login(user)
    csp = client.get("/")["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self' wss://gateway.test"
    settings.GATEWAY_REALTIME_BASE_URL = "http://127.0.0.1:8787/v4/ai"
    assert "connect-src 'self' ws://127.0.0.1:8787;" in client.get("/")["Content-Security-Policy"]


def test_the_script_check_sees_inline_scripts_and_styles():
    assert _script_and_style_problems('<script>alert(1)</script><p style="x">') == [
        "<script>alert(1)</script>",
        "<p style=",
    ]
    assert _script_and_style_problems('<script type="application/json">{}</script>') == []
    assert _script_and_style_problems('<script type="module" src="/a.mjs"></script>') == []


@pytest.mark.django_db
@pytest.mark.urls("example_project.urls")
def test_the_demo_page_shows_what_is_left_of_the_quota(demo_site, client, gateway, user, settings):
    client.force_login(user)
    assert "No quota applies to you" in client.get("/").content.decode()
    settings.GATEWAY_REALTIME_QUOTA = 5
    mint_client_secret(user=user, kind="speech")
    html = client.get("/").content.decode()
    assert '<strong id="quota-left">4</strong> of 5 client secrets left' in html
    assert "It is full again in " in html
    with connection.execute_wrapper(database_down):
        html = client.get("/").content.decode()
    assert "Your quota cannot be read just now" in html


@pytest.mark.django_db
@pytest.mark.urls("example_project.urls")
def test_staff_get_a_link_to_their_own_audit_rows(demo_site, client, gateway, user, other_user):
    mint_client_secret(user=user, kind="realtime")
    mint_client_secret(user=other_user, kind="speech")
    client.force_login(user)
    assert 'id="audit-link"' not in client.get("/").content.decode()
    user.is_staff = True
    user.save()
    # Staff without the permission to view the rows get no link to a 403.
    assert 'id="audit-link"' not in client.get("/").content.decode()
    user.user_permissions.add(Permission.objects.get(codename="view_clientsecretissuance"))
    user = type(user).objects.get(pk=user.pk)  # a fresh permission cache
    client.force_login(user)
    html = client.get("/").content.decode()
    link = re.search(r'<a id="audit-link" href="([^"]+)"', html)[1]
    assert link == f"/admin/gateway_realtime/clientsecretissuance/?user__id__exact={user.pk}"
    changelist = client.get(link)
    # The admin accepts the lookup (an unknown one redirects with ?e=1) and
    # lists only this user's rows.
    assert changelist.status_code == 200
    rows = list(changelist.context["cl"].result_list)
    assert [row.user_id for row in rows] == [user.pk]
