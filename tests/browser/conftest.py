"""Fixtures for the browser tests: chromium through Playwright, a live site, the emulator.

Chromium is Debian's (/usr/bin/chromium), never a Playwright download; when it
or Playwright is missing, every test here skips with the reason. The site runs
in a thread on 127.0.0.1 (Django's LiveServerThread, started per test so a
test's MIDDLEWARE override applies) and the Gateway emulator on another port.
"""

from __future__ import annotations

import math
import os
import struct
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.db import connections
from django.test.testcases import LiveServerThread

from gateway_realtime.emulator import GatewayEmulator
from gateway_realtime.testing import emulated_gateway
from tests.browser import setup_deps

# Playwright's sync API runs an event loop in the test thread; the test's own
# ORM calls (creating users, reading audit rows) are still plain sync code.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.browser)
            if item.get_closest_marker("urls") is None:
                item.add_marker(pytest.mark.urls("tests.browser.urls"))


@pytest.fixture(scope="session")
def playwright() -> Iterator[object]:
    problem = setup_deps.chromium_problem()
    if problem:
        pytest.skip(problem)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (it is in the `test` group)")
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="session")
def browser(playwright) -> Iterator[object]:
    browser = playwright.chromium.launch(
        executable_path=str(setup_deps.CHROMIUM), args=CHROMIUM_ARGS, headless=True
    )
    yield browser
    browser.close()


def write_test_wav(
    path: Path,
    *,
    tone_seconds: float = 1.2,
    silence_seconds: float = 2.0,
    rate: int = 48000,
    frequency: float = 440.0,
    amplitude: float = 0.5,
) -> Path:
    """A mono 16-bit WAV: a tone (the "speech"), then silence, so voice detection sees it end.

    Chromium loops the file as the microphone.
    """
    frames = bytearray()
    for n in range(int(tone_seconds * rate)):
        sample = amplitude * math.sin(2 * math.pi * frequency * n / rate)
        frames += struct.pack("<h", int(sample * 32767))
    frames += bytes(2 * int(silence_seconds * rate))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(frames))
    return path


@pytest.fixture(scope="session")
def fake_mic_wav(tmp_path_factory) -> Path:
    """The WAV the fake microphone plays (a tone, then silence)."""
    return write_test_wav(tmp_path_factory.mktemp("mic") / "speech.wav")


@pytest.fixture(scope="session")
def mic_browser(playwright, fake_mic_wav) -> Iterator[object]:
    """Chromium whose microphone plays ``fake_mic_wav``, permission granted."""
    browser = playwright.chromium.launch(
        executable_path=str(setup_deps.CHROMIUM),
        args=[
            *CHROMIUM_ARGS,
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={fake_mic_wav}",
        ],
        headless=True,
    )
    yield browser
    browser.close()


@pytest.fixture
def mic_context(mic_browser, site):
    """A context of ``mic_browser`` for ``site`` (see ``context``), microphone allowed."""
    context = mic_browser.new_context(permissions=["microphone"])
    context.set_default_timeout(15_000)
    yield context
    context.close()


@pytest.fixture
def context(browser, site):
    # Depends on the site so that it closes (with its keep-alive connections)
    # before the server stops.
    context = browser.new_context()
    context.set_default_timeout(15_000)
    yield context
    context.close()


class _StaticLiveServerThread(LiveServerThread):
    # Serves the app's static files from its finders, as runserver does.
    static_handler = StaticFilesHandler


@pytest.fixture
def site_settings(settings):
    """Request before ``site`` to change settings the server reads once (MIDDLEWARE)."""
    return settings


@pytest.fixture
def site(transactional_db, site_settings) -> Iterator[str]:
    """A live server for this test on 127.0.0.1; yields its origin."""
    settings = site_settings
    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
    override = {
        alias: conn
        for alias in connections
        if (conn := connections[alias]).vendor == "sqlite" and conn.is_in_memory_db()
    }
    for conn in override.values():
        # The server thread uses the test's in-memory database connection.
        conn.inc_thread_sharing()
    thread = _StaticLiveServerThread(
        "127.0.0.1", StaticFilesHandler, connections_override=override, port=0
    )
    thread.daemon = True
    thread.start()
    thread.is_ready.wait()
    if thread.error:
        raise thread.error
    yield f"http://127.0.0.1:{thread.port}"
    thread.terminate()
    thread.join()
    # Thread sharing stays on: a request thread whose keep-alive connection
    # ends after this still closes "its" connections, which must not raise.


@pytest.fixture(scope="session")
def _emulator_server() -> Iterator[GatewayEmulator]:
    with GatewayEmulator(host="127.0.0.1", port=0, api_keys=("browser-key",)) as emu:
        yield emu


@pytest.fixture
def emulator(_emulator_server) -> Iterator[GatewayEmulator]:
    _emulator_server.reset()
    with emulated_gateway(_emulator_server) as emu:
        yield emu


@pytest.fixture
def login(context, site, client):
    """Log ``user`` into the browser context with a real session cookie."""

    def do(user):
        client.force_login(user)
        cookie = client.cookies["sessionid"]
        context.add_cookies(
            [{"name": "sessionid", "value": cookie.value, "url": site, "httpOnly": True}]
        )

    return do


@pytest.fixture
def login_to(site, client):
    """``login_to(context, user)``: ``login`` for any browser context (``mic_context``, say)."""

    def do(context, user):
        client.force_login(user)
        cookie = client.cookies["sessionid"]
        context.add_cookies(
            [{"name": "sessionid", "value": cookie.value, "url": site, "httpOnly": True}]
        )

    return do
