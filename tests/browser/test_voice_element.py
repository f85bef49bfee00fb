"""<gateway-realtime-voice> in chromium: fake microphone, the Gateway emulator, Django pages.

The pages are in tests/browser/voice_urls.py. An init script (which the
strict-CSP page's policy does not apply to) records in ``window.__voice``
every ``gateway-realtime:state`` and ``error`` event, each time the element
gained its ``playing`` attribute, and every CSP violation report.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from gateway_realtime.models import ClientSecretIssuance, Outcome

pytestmark = pytest.mark.urls("tests.browser.voice_urls")

RECORDER = """
window.__voice = { states: [], errors: [], played: 0, violations: [] };
document.addEventListener("gateway-realtime:state", (event) => {
  window.__voice.states.push(event.detail.state);
}, true);
document.addEventListener("error", (event) => {
  if (event instanceof CustomEvent && event.detail) {
    window.__voice.errors.push({ type: event.detail.type, message: event.detail.message });
  }
}, true);
document.addEventListener("securitypolicyviolation", (event) => {
  window.__voice.violations.push({
    directive: event.effectiveDirective,
    blocked: event.blockedURI,
    sample: event.sample,
    source: event.sourceFile,
  });
}, true);
new MutationObserver((records) => {
  for (const record of records) {
    if (record.target.hasAttribute && record.target.hasAttribute("playing")) window.__voice.played += 1;
  }
}).observe(document, { subtree: true, attributes: true, attributeFilter: ["playing"] });
"""

ELEMENT = "document.querySelector('gateway-realtime-voice')"
TALK = "[part='talk-button']"


def lines(page, role: str) -> list[str]:
    """The text of the transcript lines of ``role``, in order."""
    return page.evaluate(
        f"""(role) => [...{ELEMENT}.shadowRoot.querySelector("[part='log']").children]
            .filter((line) => line.getAttribute("part") === "transcript" && line.dataset.role === role)
            .map((line) => line.textContent)""",
        role,
    )


def wait_state(page, state: str) -> None:
    page.wait_for_function(f"{ELEMENT} && {ELEMENT}.getAttribute('state') === {state!r}")


def wait_for(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``check`` (server-side records) until it returns something true."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {check}")
        time.sleep(0.05)


def realtime_sessions(emulator) -> list[Any]:
    return [s for s in emulator.ws_sessions if s.kind == "realtime"]


def open_page(context, site: str, path: str = "/voice/"):
    page = context.new_page()
    page.add_init_script(RECORDER)
    page.goto(site + path)
    page.wait_for_function(f"customElements.get('gateway-realtime-voice') && {ELEMENT}")
    return page


def test_talk_listens_transcribes_both_sides_and_plays_the_reply(
    mic_context, site, emulator, login_to, user
):
    login_to(mic_context, user)
    page = open_page(mic_context, site)
    assert page.get_attribute("gateway-realtime-voice", "state") == "idle"

    page.click(TALK)

    wait_state(page, "listening")
    page.wait_for_function(
        f"""(() => {{
          const log = {ELEMENT}.shadowRoot.querySelector("[part='log']");
          const done = (role) => [...log.children].some(
            (line) => line.dataset.role === role && line.dataset.state === "done" && line.textContent);
          return done("user") && done("assistant");
        }})()"""
    )
    [user_line, *_] = lines(page, "user")
    [assistant_line, *_] = lines(page, "assistant")
    assert user_line.startswith("(emulated transcript of ")
    assert assistant_line.startswith("Emulated reply from openai/gpt-realtime-2: you said")
    # The log is an aria-live region in the shadow root.
    assert page.evaluate(
        f"{ELEMENT}.shadowRoot.querySelector(\"[part='log']\").getAttribute('aria-live')"
    ) == "polite"
    # The reply's audio played, and the element said so while it did.
    page.wait_for_function("window.__voice.played > 0")
    # ... and went back to listening once the reply was over.
    page.wait_for_function(
        """(() => {
          const states = window.__voice.states;
          const speaking = states.indexOf("speaking");
          return speaking > 0 && states.indexOf("listening", speaking) > speaking;
        })()"""
    )
    assert page.evaluate("window.__voice.states")[:3] == ["connecting", "listening", "speaking"]

    page.click("[part='hang-up-button']")
    wait_state(page, "ended")
    [session] = wait_for(lambda: realtime_sessions(emulator))
    assert "input-audio-append" in session.received
    assert "speech-started" in session.sent  # the microphone was not silent
    assert "response-done" in session.sent
