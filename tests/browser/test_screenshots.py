"""Screenshots of the three elements on example_project's page, for docs/browser.md.

Each element is pressed (the fake microphone plays a tone) until it shows a
meaningful state, then only the element is shot with ``locator.screenshot``;
all under the page's strict Content-Security-Policy.
``GATEWAY_REALTIME_UPDATE_SCREENSHOTS=1`` writes them to docs/images/ (commit
them); otherwise they go to the test's tmp_path and are only checked to be
PNGs of a sensible size.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from tests.browser.test_demo_page import WATCH_CSP

pytestmark = pytest.mark.urls("example_project.urls")

IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def demo_site(site_settings):
    site_settings.INSTALLED_APPS = [*site_settings.INSTALLED_APPS, "example_project"]
    site_settings.LOGIN_URL = "/accounts/login/"


@pytest.fixture
def out_dir(tmp_path):
    if os.environ.get("GATEWAY_REALTIME_UPDATE_SCREENSHOTS") == "1":
        IMAGES.mkdir(exist_ok=True)
        return IMAGES
    return tmp_path


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (which comes first)."""
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_png_size_reads_the_header():
    header = PNG_SIGNATURE + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", 640, 80)
    assert png_size(header + bytes(5)) == (640, 80)
    with pytest.raises(AssertionError):
        png_size(b"GIF89a" + bytes(30))


def wait_for_state(page, selector, *states):
    page.wait_for_function(
        "([selector, states]) => states.includes(document.querySelector(selector)"
        ".getAttribute('state'))",
        arg=[selector, list(states)],
    )


def shoot(locator, path: Path) -> tuple[int, int]:
    """Shoot ``locator`` into ``path`` once it held still throughout; check the PNG."""
    for _ in range(5):
        before = looks(locator)
        locator.screenshot(path=str(path), animations="disabled", caret="hide")
        if looks(locator) == before:
            break
    else:
        pytest.fail(f"{path.name}: the element kept changing while it was shot")
    data = path.read_bytes()
    width, height = png_size(data)
    # Just the element: wider than a button, much smaller than the page.
    assert 120 <= width <= 900, (path.name, width, height)
    assert 24 <= height <= 700, (path.name, width, height)
    assert len(data) > 1000, path.name
    return width, height


def looks(locator):
    """What the element shows: its state, its shadow root's text and its box."""
    return locator.evaluate(
        "(el) => [el.getAttribute('state'), el.shadowRoot.textContent,"
        " JSON.stringify(el.getBoundingClientRect())]"
    )


def test_screenshots_of_the_three_elements(
    demo_site, mic_context, login_to, site, emulator, user, out_dir
):
    login_to(mic_context, user)
    page = mic_context.new_page()
    page.set_viewport_size({"width": 800, "height": 1000})
    page.add_init_script(WATCH_CSP)
    page.goto(site + "/")
    page.wait_for_function(
        "() => ['voice', 'dictation', 'speech']"
        ".every((n) => customElements.get('gateway-realtime-' + n))"
    )

    # Voice: one whole exchange (the tone is heard, the reply is transcribed
    # to its end), back to listening.
    voice = page.locator("gateway-realtime-voice").first  # the realtime one; then Live
    voice.get_by_role("button", name="Talk", exact=True).click()
    voice.locator("[part~='transcript'][data-role='assistant'][data-state='done']").first.wait_for()
    wait_for_state(page, "gateway-realtime-voice", "listening")
    shoot(voice, out_dir / "voice-element.png")
    voice.get_by_role("button", name="Hang up").click()
    wait_for_state(page, "gateway-realtime-voice", "ended")

    # Dictation: a few of the emulator's words ("this is an emulated
    # transcript..."; one per audio frame, so they keep coming while it
    # listens), then Stop: the final transcript, in the field and the element.
    dictation = page.locator("gateway-realtime-dictation")
    dictation.get_by_role("button", name="Dictate").click()
    page.wait_for_function(
        "() => document.getElementById('note').value.trim().split(/\\s+/).length >= 5"
    )
    dictation.get_by_role("button", name="Stop").click()
    wait_for_state(page, "gateway-realtime-dictation", "ended")
    shoot(dictation, out_dir / "dictation-element.png")

    # Speech: reading the paragraph aloud.
    speech = page.locator("gateway-realtime-speech")
    speech.get_by_role("button", name="Read aloud").click()
    wait_for_state(page, "gateway-realtime-speech", "speaking")
    shoot(speech, out_dir / "speech-element.png")

    # All three worked under the page's strict CSP (but the Zod eval probe,
    # see test_demo_page.py).
    blocked = [v for v in page.evaluate("window.cspViolations") if v != "script-src eval"]
    assert blocked == []
