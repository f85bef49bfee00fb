"""The README's Quickstart, followed on a fresh ``startproject`` with the built wheel.

It ends where a newcomer does: in Chromium, with the fake microphone, the
user logs in, presses Talk on the voice element and hears the emulator answer.

The steps are parsed from README.md, not copied here, so the test fails when
the README and the package drift apart. Each code block of the Install and
Quickstart sections is either a shell block, whose commands run in order
(with the changes a test needs: no prompts, free ports, no reloader), or a
file block, applied as the paragraph before it says:

- In `FILE`, add at the end:
- In `FILE`, add this line / these lines at the end of `NAME`:
- In `FILE`, add this line first in `NAME`:
- In `FILE`, replace the line `OLD` with:
- Create `FILE`:  /  Replace the contents of `FILE` with:

Then, as a browser would: the page redirects to the admin's login, the login
form works (CSRF token from the form), and the page carries the voice element
and no secret; then Chromium talks to it.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from tests.distributions import QUICKSTART_VENV, ROOT, Distributions

pytestmark = pytest.mark.quickstart

if os.environ.get("GATEWAY_REALTIME_TEST_SERVICES") == "1":
    pytest.skip(
        "runs in the SQLite pass: it builds its own project in a fresh virtualenv and "
        "uses none of the suite's database or cache",
        allow_module_level=True,
    )

README = ROOT / "README.md"
PACKAGE = "django-gateway-realtime"
USERNAME, PASSWORD = "quickstart", "quickstart-password-1"
#: Environment variables of this test run that must not reach the new project.
AMBIENT = (
    "AI_GATEWAY_API_KEY",
    "VERCEL_OIDC_TOKEN",
    "VERCEL",
    "DJANGO_SETTINGS_MODULE",
    "PYTHONPATH",
    "VIRTUAL_ENV",
)

ADD_AT_END = re.compile(r"In `(?P<file>[^`]+)`, add at the end")
ADD_TO_LIST_END = re.compile(
    r"In `(?P<file>[^`]+)`, add (?:this line|these lines) at the end of `(?P<name>\w+)`"
)
ADD_TO_LIST_START = re.compile(r"In `(?P<file>[^`]+)`, add this line first in `(?P<name>\w+)`")
REPLACE_LINE = re.compile(r"In `(?P<file>[^`]+)`, replace the line `(?P<old>[^`]+)` with")
CREATE = re.compile(r"^Create `(?P<file>[^`]+)`")
REPLACE_FILE = re.compile(r"^Replace the contents of `(?P<file>[^`]+)` with")


@dataclass(frozen=True)
class Block:
    lang: str
    lead: str  # the paragraph just before the block, on one line
    body: str


def quickstart_blocks(text: str) -> list[Block]:
    """The fenced blocks from "## Install" up to the next section after "## Quickstart"."""
    start = text.index("\n## Install")
    end = text.index("\n## ", text.index("\n## Quickstart") + 1)
    section = text[start:end]
    blocks = []
    for match in re.finditer(r"^```(\w*)\n(.*?)^```$", section, re.M | re.S):
        before = section[: match.start()].rstrip()
        lead = before.rsplit("\n\n", 1)[-1]
        blocks.append(Block(match.group(1), " ".join(lead.split()), match.group(2)))
    return blocks


def insert_in_list(source: str, name: str, lines: str, *, first: bool) -> str:
    """Insert ``lines`` first in, or at the end of, the top-level list ``name = [...]``."""
    rows = source.splitlines(keepends=True)
    opening = next(i for i, row in enumerate(rows) if re.match(rf"{name} = \[\s*$", row))
    closing = next(i for i in range(opening, len(rows)) if rows[i].rstrip() == "]")
    at = opening + 1 if first else closing
    return "".join([*rows[:at], lines, *rows[at:]])


@dataclass
class Quickstart:
    """Follows the README in ``workdir`` with the virtualenv ``venv``."""

    workdir: Path
    venv: Path
    env: dict[str, str]
    project: Path | None = None
    emulator_url: str | None = None
    server_url: str | None = None
    processes: list[subprocess.Popen[str]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    readme_emulator_url: str | None = None

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def run(self, *args: str, env: dict[str, str] | None = None) -> str:
        result = subprocess.run(
            args,
            cwd=self.project or self.workdir,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert result.returncode == 0, f"{shlex.join(args)}:\n{result.stdout}{result.stderr}"
        return result.stdout + result.stderr

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> Path:
        log = self.workdir / f"{name}.log"
        handle = log.open("w")
        process = subprocess.Popen(
            args,
            cwd=self.project,
            env={**self.env, **(env or {})},
            stdout=handle,
            stderr=subprocess.STDOUT,
            text=True,
        )
        handle.close()
        self.processes.append(process)
        self.logs.append(log)
        return log

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def output(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()}" for log in self.logs)

    # Shell blocks ------------------------------------------------------------

    def command(self, line: str) -> None:
        words = shlex.split(line)
        assignments = {}
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
            key, value = words.pop(0).split("=", 1)
            assignments[key] = value
        match words:
            case ["pip", "install", spec]:
                # `make dist-deps` installed the wheel with the emulator extra.
                assert spec in {PACKAGE, f"{PACKAGE}[emulator]"}, line
            case ["django-admin", "startproject", name]:
                self.run(self.bin("django-admin"), "startproject", name)
            case ["cd", name]:
                self.project = (self.project or self.workdir) / name
                assert (self.project / "manage.py").is_file(), line
            case ["python", "-m", "gateway_realtime.emulator"]:
                self.start_emulator()
            case ["python", "manage.py", "startapp", name]:
                self.run(self.bin("python"), "manage.py", "startapp", name)
            case ["python", "manage.py", "migrate"]:
                self.run(self.bin("python"), "manage.py", "migrate")
            case ["python", "manage.py", "createsuperuser"]:
                self.run(
                    self.bin("python"),
                    "manage.py",
                    "createsuperuser",
                    "--noinput",
                    env={
                        "DJANGO_SUPERUSER_USERNAME": USERNAME,
                        "DJANGO_SUPERUSER_PASSWORD": PASSWORD,
                        "DJANGO_SUPERUSER_EMAIL": "quickstart@example.com",
                    },
                )
            case ["python", "manage.py", "runserver"]:
                self.start_server(assignments)
            case _:
                pytest.fail(f"README Quickstart command this test does not know: {line!r}")
        if assignments:
            assert words[-1] == "runserver", f"environment only for runserver: {line!r}"

    def start_emulator(self) -> None:
        log = self.start(
            "emulator", self.bin("python"), "-m", "gateway_realtime.emulator", "--port", "0"
        )
        line = wait_for(lambda: _listening_line(log), 30, "the emulator to listen", self)
        self.emulator_url = line.rsplit(" ", 1)[1]

    def start_server(self, assignments: dict[str, str]) -> None:
        port = free_port()
        self.start(
            "runserver",
            self.bin("python"),
            "manage.py",
            "runserver",
            "--noreload",
            f"127.0.0.1:{port}",
            env=assignments,
        )
        self.server_url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(self.server_url), 60, "runserver to answer", self)

    # File blocks -------------------------------------------------------------

    def apply(self, block: Block) -> None:
        assert self.project is not None, f"a file block before `cd`: {block.lead!r}"
        body = block.body
        if self.readme_emulator_url and self.readme_emulator_url in body:
            # The README's fixed port; this run's emulator listens on a free one.
            assert self.emulator_url, "the emulator's URL is set before the emulator runs"
            body = body.replace(self.readme_emulator_url, self.emulator_url)
        for pattern in (ADD_TO_LIST_START, ADD_TO_LIST_END, REPLACE_LINE, ADD_AT_END):
            match = pattern.search(block.lead)
            if match:
                break
        else:
            match = CREATE.search(block.lead) or REPLACE_FILE.search(block.lead)
        assert match, f"README Quickstart block without a known instruction: {block.lead!r}"
        path = self.project / match.group("file")
        if match.re is CREATE:
            assert not path.exists(), f"{path.name} exists already: {block.lead!r}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body)
            return
        source = path.read_text()
        if match.re is REPLACE_FILE:
            source = body
        elif match.re is ADD_AT_END:
            source = source.rstrip("\n") + "\n\n" + body
        elif match.re is REPLACE_LINE:
            old = match.group("old") + "\n"
            assert source.count(old) == 1, f"{path.name} has no single line {old!r}"
            source = source.replace(old, body)
        else:
            source = insert_in_list(
                source, match.group("name"), body, first=match.re is ADD_TO_LIST_START
            )
        path.write_text(source)


def _listening_line(log: Path) -> str | None:
    for line in log.read_text().splitlines():
        if line.startswith("Gateway emulator listening on "):
            return line
    return None


def _answers(url: str | None) -> bool:
    try:
        requests.get(f"{url}/admin/login/", timeout=2)
    except requests.ConnectionError:
        return False
    return True


def wait_for(check, seconds: float, what: str, quickstart: Quickstart):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        if any(p.poll() is not None for p in quickstart.processes):
            break
        time.sleep(0.2)
    pytest.fail(f"gave up waiting for {what}:\n{quickstart.output()}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def venv(distributions: Distributions) -> Path:
    """A fresh virtualenv with the built wheel and its emulator extra, as a user's would be.

    `make dist-deps` installs it (tests/distributions.py); the test only uses it.
    """
    return QUICKSTART_VENV


@pytest.fixture
def quickstart(venv: Path, tmp_path: Path) -> Iterator[Quickstart]:
    env = {k: v for k, v in os.environ.items() if k not in AMBIENT}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    run = Quickstart(workdir=tmp_path, venv=venv, env=env)
    try:
        yield run
    finally:
        run.stop()


def test_the_readme_quickstart_works_on_a_fresh_project(
    quickstart: Quickstart, mic_browser: Any
) -> None:
    readme = README.read_text()
    printed = re.search(r"`Gateway emulator listening on (\S+)`", readme)
    assert printed, "the README says where the emulator listens"
    quickstart.readme_emulator_url = printed.group(1)

    for block in quickstart_blocks(readme):
        if block.lang == "sh":
            for line in block.body.splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    quickstart.command(line)
        else:
            quickstart.apply(block)

    assert quickstart.emulator_url and quickstart.server_url, "the Quickstart runs both"
    # The README's URL is the emulator's, but for the port (this run's is a free one).
    readme_url, real_url = (
        urlsplit(quickstart.readme_emulator_url),
        urlsplit(quickstart.emulator_url),
    )
    assert (readme_url.scheme, readme_url.hostname, readme_url.path) == (
        real_url.scheme,
        real_url.hostname,
        real_url.path,
    )
    site = quickstart.server_url
    assert "unapplied migration" not in quickstart.output()

    # A new project has no login page but the admin's: LOGIN_URL points there.
    browser = requests.Session()
    anonymous = browser.get(f"{site}/voice/", allow_redirects=False, timeout=30)
    assert anonymous.status_code == 302
    assert anonymous.headers["Location"] == "/admin/login/?next=/voice/"

    form = browser.get(f"{site}/admin/login/?next=/voice/", timeout=30)
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
    assert csrf, form.text
    page = browser.post(
        f"{site}/admin/login/?next=/voice/",
        data={
            "csrfmiddlewaretoken": csrf.group(1),
            "username": USERNAME,
            "password": PASSWORD,
            "next": "/voice/",
        },
        timeout=30,
    )
    assert page.status_code == 200, quickstart.output()
    assert page.url == f"{site}/voice/"
    # The page holds no secret: the element mints when the user presses Talk.
    assert '<gateway-realtime-voice setup-url="/api/realtime-token/realtime/"' in page.text
    assert "vcst_" not in page.text
    for script in re.findall(r'<script type="module" src="([^"]+)"', page.text):
        assert browser.get(f"{site}{script}", timeout=30).status_code == 200, script

    talk_in_chromium(site, mic_browser)


def talk_in_chromium(site: str, mic_browser: Any) -> None:
    """Log in, press Talk with the fake microphone, and hear the emulator answer."""
    context = mic_browser.new_context(permissions=["microphone"])
    try:
        context.set_default_timeout(30_000)
        page = context.new_page()
        page.goto(f"{site}/voice/")
        page.fill("#id_username", USERNAME)
        page.fill("#id_password", PASSWORD)
        page.click("[type=submit]")
        page.wait_for_url(f"{site}/voice/")
        voice = page.locator("gateway-realtime-voice")
        page.evaluate(
            """() => {
              window.heard = { playing: 0, errors: [] };
              const voice = document.querySelector("gateway-realtime-voice");
              new MutationObserver(() => {
                if (voice.hasAttribute("playing")) window.heard.playing += 1;
              }).observe(voice, { attributes: true, attributeFilter: ["playing"] });
              voice.addEventListener("gateway-realtime-error",
                (event) => window.heard.errors.push(event.detail.type));
            }"""
        )
        voice.get_by_role("button", name="Talk").click()
        # The assistant's answer, transcribed to its end and played aloud.
        voice.locator(
            "[part~='transcript'][data-role='assistant'][data-state='done']"
        ).first.wait_for()
        page.wait_for_function("() => window.heard.playing > 0")
        assert page.evaluate("window.heard.errors") == []
        answer = voice.locator("[part~='transcript'][data-role='assistant']").first.text_content()
        assert answer.startswith("Emulated reply from openai/gpt-realtime-2"), answer
        voice.get_by_role("button", name="Hang up").click()
        page.wait_for_selector("gateway-realtime-voice[state='ended']")
    finally:
        context.close()
