"""<gateway-realtime-voice> in chromium: fake microphone, the Gateway emulator, Django pages.

The pages are in tests/browser/voice_urls.py. An init script (which the
strict-CSP page's policy does not apply to) records in ``window.__voice``
every ``gateway-realtime-state``, ``error`` and
``gateway-realtime-max-seconds`` event, each time the element gained its
``playing`` attribute, every CSP violation report and every microphone
stream the page opened.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import caches
from django.test import Client

from gateway_realtime.models import ClientSecretIssuance, Outcome
from tests.browser import setup_deps, waiting
from tests.browser.conftest import CHROMIUM_ARGS
from tests.browser.voice_urls import CSP
from tests.browser.waiting import wait_for

pytestmark = pytest.mark.urls("tests.browser.voice_urls")

RECORDER = """
window.__voice = { states: [], errors: [], expired: [], played: 0, violations: [], streams: [] };
document.addEventListener("gateway-realtime-max-seconds", (event) => {
  window.__voice.expired.push(event.detail.seconds);
}, true);
if (navigator.mediaDevices) {
  const getUserMedia = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = async (constraints) => {
    const stream = await getUserMedia(constraints);
    window.__voice.streams.push(stream);
    return stream;
  };
}
document.addEventListener("gateway-realtime-state", (event) => {
  window.__voice.states.push(event.detail.state);
}, true);
document.addEventListener("gateway-realtime-error", (event) => {
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
    if (record.target.hasAttribute("playing")) window.__voice.played += 1;
  }
}).observe(document, { subtree: true, attributes: true, attributeFilter: ["playing"] });
"""

ELEMENT = "document.querySelector('gateway-realtime-voice')"
TALK = "[part~='talk']"


def lines(page, role: str) -> list[str]:
    """The text of the transcript lines of ``role``, in order."""
    return page.evaluate(
        f"""(role) => [...{ELEMENT}.shadowRoot.querySelector("[part='log']").children]
            .filter((line) => line.getAttribute("part") === "transcript")
            .filter((line) => line.dataset.role === role)
            .map((line) => line.textContent)""",
        role,
    )


def until(page: Any, expression: str, timeout: float = 15.0) -> Any:
    return waiting.until(page, expression, timeout, recorded="window.__voice")


def wait_state(page, state: str) -> None:
    until(page, f"{ELEMENT} && {ELEMENT}.getAttribute('state') === {state!r}")


def realtime_sessions(emulator) -> list[Any]:
    return [s for s in emulator.ws_sessions if s.kind == "realtime"]


def open_page(context, site: str, path: str = "/voice/"):
    page = context.new_page()
    page.add_init_script(RECORDER)
    page.goto(site + path)
    until(page, f"!!customElements.get('gateway-realtime-voice') && !!{ELEMENT}")
    return page


def test_talk_listens_transcribes_both_sides_and_plays_the_reply(
    mic_context, site, emulator, login_to, user
):
    login_to(mic_context, user)
    page = open_page(mic_context, site)
    assert page.get_attribute("gateway-realtime-voice", "state") == "idle"

    page.click(TALK)

    wait_state(page, "listening")
    until(
        page,
        f"""(() => {{
          const log = {ELEMENT}.shadowRoot.querySelector("[part='log']");
          const done = (role) => [...log.children].some((line) =>
            line.dataset.role === role && line.dataset.state === "done" && line.textContent);
          return done("user") && done("assistant");
        }})()""",
    )
    [user_line, *_] = lines(page, "user")
    [assistant_line, *_] = lines(page, "assistant")
    assert user_line.startswith("(emulated transcript of ")
    assert assistant_line.startswith("Emulated reply from openai/gpt-realtime-2: you said")
    # The log is an aria-live region in the shadow root.
    assert (
        page.evaluate(
            f"{ELEMENT}.shadowRoot.querySelector(\"[part='log']\").getAttribute('aria-live')"
        )
        == "polite"
    )
    # The reply's audio played, and the element said so while it did.
    until(page, "window.__voice.played > 0")
    # ... and went back to listening once the reply was over.
    until(
        page,
        """(() => {
          const states = window.__voice.states;
          const speaking = states.indexOf("speaking");
          return speaking > 0 && states.indexOf("listening", speaking) > speaking;
        })()""",
    )
    assert page.evaluate("window.__voice.states")[:3] == ["connecting", "listening", "speaking"]

    page.click("[part~='hang-up']")
    wait_state(page, "ended")
    [session] = wait_for(lambda: realtime_sessions(emulator))
    assert "input-audio-append" in session.received
    assert "speech-started" in session.sent  # the microphone was not silent
    assert "response-done" in session.sent


LIVE_TRACKS = """window.__voice.streams.flatMap((stream) => stream.getTracks())
    .filter((track) => track.readyState === "live").length"""


def capturing(page) -> bool:
    return page.evaluate(f"{ELEMENT}.session.state.isCapturing")


def test_hang_up_releases_the_mic_and_talking_again_mints_a_new_secret(
    mic_context, site, emulator, login_to, user
):
    login_to(mic_context, user)
    page = open_page(mic_context, site)
    mute = "[part~='mute']"

    page.click(TALK)
    wait_state(page, "listening")
    assert page.get_attribute(mute, "aria-pressed") == "false"
    until(page, f"{ELEMENT}.session.state.isCapturing")

    # Mute stops capture and releases the microphone; unmute opens it again.
    page.click(mute)
    assert page.get_attribute(mute, "aria-pressed") == "true"
    assert page.get_attribute("gateway-realtime-voice", "muted") == ""
    until(page, f"!{ELEMENT}.session.state.isCapturing && !({LIVE_TRACKS})")
    page.click(mute)
    assert page.get_attribute(mute, "aria-pressed") == "false"
    until(page, f"{ELEMENT}.session.state.isCapturing && ({LIVE_TRACKS}) === 1")

    page.click("[part~='hang-up']")
    wait_state(page, "ended")
    [first] = wait_for(lambda: realtime_sessions(emulator))
    assert first.close_code is not None
    until(page, f"!({LIVE_TRACKS})")  # the microphone is released
    assert page.evaluate(f"{ELEMENT}.session") is None

    page.click(TALK)
    wait_state(page, "listening")
    page.evaluate(f"{ELEMENT}.hangUp()")
    wait_state(page, "ended")

    first, second = wait_for(
        lambda: len(realtime_sessions(emulator)) == 2 and realtime_sessions(emulator)
    )
    assert first.token != second.token
    issued = ClientSecretIssuance.objects.filter(outcome=Outcome.ISSUED).order_by("pk")
    assert [row.user_id for row in issued] == [user.pk, user.pk]
    assert issued[0].token_fingerprint != issued[1].token_fingerprint
    assert page.evaluate("window.__voice.errors") == []
    # Two calls (each may have had replies, "speaking", in between).
    states = [s for s in page.evaluate("window.__voice.states") if s != "speaking"]
    assert [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s] == [
        "connecting",
        "listening",
        "ended",
        "connecting",
        "listening",
        "ended",
    ]


def test_max_seconds_hangs_up_by_itself_and_says_so(mic_context, site, emulator, login_to, user):
    login_to(mic_context, user)
    page = open_page(mic_context, site, "/voice-short/")
    assert page.text_content(TALK) == "Start talking"
    assert page.get_attribute("gateway-realtime-voice", "max-seconds") == "2"

    page.click(TALK)
    wait_state(page, "listening")
    wait_state(page, "ended")

    status = page.text_content("[part='status']")
    assert "Ended after 2 seconds" in status
    assert page.is_visible("[part='status']")
    assert page.evaluate("window.__voice.expired") == [2]
    assert page.evaluate("window.__voice.errors") == []
    [session] = wait_for(lambda: realtime_sessions(emulator))
    assert session.close_code is not None
    until(page, f"!({LIVE_TRACKS})")


def test_a_cached_page_hands_each_user_their_own_secret(
    mic_browser, mic_context, site, emulator, user, django_user_model
):
    caches["default"].clear()
    other = django_user_model.objects.create_user("other-voice-user", password="x")
    other_context = mic_browser.new_context(permissions=["microphone"])
    other_context.set_default_timeout(15_000)
    try:
        pages = []
        bodies = []
        for context, who in ((mic_context, user), (other_context, other)):
            # A client of its own per user: logging another user into the
            # same client would end the first one's session.
            client = Client()
            client.force_login(who)
            cookie = client.cookies["sessionid"].value
            context.add_cookies([{"name": "sessionid", "value": cookie, "url": site}])
            page = context.new_page()
            page.add_init_script(RECORDER)
            response = page.goto(site + "/voice-cached/")
            bodies.append(response.text())
            pages.append(page)
        # One HTML for both: rendered for the first user, served from the cache.
        assert bodies[0] == bodies[1]
        assert f'data-user="{user.get_username()}"' in bodies[1]
        assert "max-age=600" in response.headers["cache-control"]

        for page in pages:
            page.click(TALK)
            wait_state(page, "listening")
            page.click("[part~='hang-up']")
            wait_state(page, "ended")
    finally:
        other_context.close()

    sessions = wait_for(
        lambda: len(realtime_sessions(emulator)) == 2 and realtime_sessions(emulator)
    )
    tokens = {session.token for session in sessions}
    assert len(tokens) == 2
    issued = ClientSecretIssuance.objects.filter(outcome=Outcome.ISSUED).order_by("pk")
    assert [row.user_id for row in issued] == [user.pk, other.pk]
    assert issued[0].token_fingerprint != issued[1].token_fingerprint
    for token in tokens:
        assert token not in bodies[0]
    assert "vcst_" not in bodies[0]
    assert "ai-gateway-auth" not in bodies[0]


def test_strict_csp_talks_without_script_violations(mic_context, site, emulator, login_to, user):
    login_to(mic_context, user)
    page = mic_context.new_page()
    page.add_init_script(RECORDER)
    response = page.goto(site + "/voice-csp/")
    assert response.headers["content-security-policy"] == CSP
    until(page, f"!!customElements.get('gateway-realtime-voice') && !!{ELEMENT}")

    page.click(TALK)
    wait_state(page, "listening")
    until(
        page,
        f"""[...{ELEMENT}.shadowRoot.querySelector("[part='log']").children]
            .some((line) => line.dataset.role === "assistant" && line.dataset.state === "done")""",
    )
    # The stylesheet (a <link>, not inline CSS) applied.
    assert (
        page.evaluate(
            f"getComputedStyle({ELEMENT}.shadowRoot.querySelector(\"[part='log']\")).overflowY"
        )
        == "auto"
    )
    page.click("[part~='hang-up']")
    wait_state(page, "ended")

    # Nothing was blocked but one probe: zod (inside the vendored AI SDK)
    # tries `new Function("")` once to learn whether it may compile
    # validators, catches the refusal and validates without. Any other
    # report (an inline script, a blocked script file, eval used for real)
    # fails the test.
    violations = page.evaluate("window.__voice.violations")
    eval_probe = {
        "directive": "script-src",
        "blocked": "eval",
        "sample": "",
        "source": site + "/static/gateway_realtime/vendor/ai-sdk.min.mjs",
    }
    assert [v for v in violations if v != eval_probe] == [], violations
    assert len(violations) <= 1, violations


def test_over_quota_is_an_error_event_with_the_endpoints_type_and_the_keyboard_works(
    mic_context, site, emulator, login_to, user, settings
):
    settings.GATEWAY_REALTIME_QUOTA = 0
    login_to(mic_context, user)
    page = open_page(mic_context, site)

    page.keyboard.press("Tab")
    assert (
        page.evaluate(
            f"document.activeElement === {ELEMENT} && "
            f"{ELEMENT}.shadowRoot.activeElement.getAttribute('part')"
        )
        == "button talk"
    )
    page.keyboard.press("Enter")

    wait_state(page, "error")
    errors = page.evaluate("window.__voice.errors")
    assert [error["type"] for error in errors] == ["quota_exceeded"]
    assert page.text_content("[part='status']") == errors[0]["message"]
    # Focus is back on the talk button, and Space presses it.
    assert page.evaluate(f"{ELEMENT}.shadowRoot.activeElement.getAttribute('part')") == (
        "button talk"
    )
    page.keyboard.press(" ")
    until(page, "window.__voice.errors.length === 2")
    assert page.evaluate("window.__voice.errors")[1]["type"] == "quota_exceeded"
    assert page.evaluate("window.__voice.states") == ["connecting", "error", "connecting", "error"]

    assert not ClientSecretIssuance.objects.filter(outcome=Outcome.ISSUED).exists()
    assert ClientSecretIssuance.objects.filter(outcome=Outcome.REJECTED).count() == 2
    assert emulator.ws_handshakes == []
    until(page, f"!({LIVE_TRACKS})")  # the microphone was let go each time


@pytest.fixture(scope="module")
def deny_browser(playwright) -> Iterator[Any]:
    """Chromium with a fake microphone but no fake prompt: asking for it is refused."""
    browser = playwright.chromium.launch(
        executable_path=str(setup_deps.CHROMIUM),
        args=[*CHROMIUM_ARGS, "--use-fake-device-for-media-stream"],
        headless=True,
    )
    yield browser
    browser.close()


def test_a_denied_microphone_is_an_error_and_mints_nothing(
    deny_browser, site, emulator, login_to, user
):
    context = deny_browser.new_context()
    try:
        login_to(context, user)
        page = open_page(context, site)

        page.evaluate(f"{ELEMENT}.start()")

        wait_state(page, "error")
        errors = page.evaluate("window.__voice.errors")
    finally:
        context.close()
    assert [error["type"] for error in errors] == ["microphone_denied"]
    assert errors[0]["message"] == "Microphone access was denied."
    assert not ClientSecretIssuance.objects.exists()
    assert emulator.requests == []


def live_sessions(emulator) -> list[Any]:
    return [s for s in emulator.ws_sessions if s.kind == "live"]


def test_a_live_model_talks_continuously_mutes_and_hangs_up_with_its_final_usage(
    mic_context, site_settings, site, emulator, login_to, user
):
    site_settings.GATEWAY_REALTIME_ALLOWED_MODELS = {"realtime": ["openai/gpt-live-1"]}
    login_to(mic_context, user)
    page = open_page(mic_context, site, "/voice-live/")
    assert page.get_attribute("gateway-realtime-voice", "model") == "openai/gpt-live-1"
    assert page.get_attribute("gateway-realtime-voice", "api") == "live"
    mute = "[part~='mute']"

    page.click(TALK)
    wait_state(page, "listening")
    # The microphone streams from session-started on; the emulator's VAD ends
    # the user's turn on the fake microphone's silence and answers at once.
    until(
        page,
        f"""(() => {{
          const log = {ELEMENT}.shadowRoot.querySelector("[part='log']");
          const has = (role) => [...log.children].some((line) =>
            line.dataset.role === role && line.textContent);
          return has("user") && has("assistant");
        }})()""",
    )
    [user_line, *_] = lines(page, "user")
    assert user_line.startswith("(emulated transcript of ")
    until(
        page,
        f"""[...{ELEMENT}.shadowRoot.querySelectorAll("[part='transcript']")]
            .some((line) => line.dataset.role === "assistant"
              && line.textContent.endsWith("seconds."))""",
    )
    [assistant_line, *_] = lines(page, "assistant")
    assert assistant_line.startswith("Emulated Live reply from openai/gpt-live-1: you spoke for ")
    until(page, "window.__voice.played > 0")  # audio-chunk audio played

    # Mute is the Live protocol's command, acknowledged by the Gateway; the
    # microphone is released meanwhile and opened again on unmute.
    page.click(mute)
    assert page.get_attribute(mute, "aria-pressed") == "true"
    until(page, f"{ELEMENT}.session.state.session.isInputMuted === true && !({LIVE_TRACKS})")
    page.click(mute)
    until(page, f"{ELEMENT}.session.state.session.isInputMuted === false && ({LIVE_TRACKS}) === 1")

    # Hanging up sends session-close; the Gateway answers with the final usage.
    page.click("[part~='hang-up']")
    wait_state(page, "ended")
    [session] = wait_for(lambda: live_sessions(emulator))
    assert session.model == "openai/gpt-live-1"
    assert session.subprotocols[0] == "ai-gateway-realtime.v1"
    assert session.subprotocols[1].startswith("ai-gateway-auth.vcst_")
    assert session.config == {
        "inputAudioFormat": {"type": "audio/pcm", "rate": 24000},
        "outputAudioFormat": {"type": "audio/pcm", "rate": 24000},
    }
    assert session.received[0] == "session-start"
    for event in ("input-audio-append", "input-audio-mute", "input-audio-unmute"):
        assert event in session.received
    assert session.received[-1] == "session-close"
    assert session.sent[-1] == "session-closed"
    assert session.close_code == 1000
    assert page.evaluate(f"{ELEMENT}.session") is None
    until(page, f"!({LIVE_TRACKS})")
    assert page.evaluate("window.__voice.errors") == []
    [row] = ClientSecretIssuance.objects.filter(outcome=Outcome.ISSUED)
    assert (row.user_id, row.model) == (user.pk, "openai/gpt-live-1")
    # The mint asked for the Live route, as the official client does.
    [mint] = [r for r in emulator.requests if r.method == "POST"]
    assert mint.json() == {"model": "openai/gpt-live-1", "routeKind": "live"}


def test_a_secret_for_the_other_route_is_a_clear_setup_error(
    mic_context, site_settings, site, emulator, login_to, user
):
    # The page says realtime; the server mints the Live model on the Live route.
    site_settings.GATEWAY_REALTIME_ALLOWED_MODELS = {"realtime": ["openai/gpt-live-1"]}
    login_to(mic_context, user)
    page = open_page(mic_context, site, "/voice-mismatched/")
    page.click(TALK)
    wait_state(page, "error")
    [error] = page.evaluate("window.__voice.errors")
    assert error["type"] == "setup_failed"
    assert "minted openai/gpt-live-1 for the Live route" in error["message"]
    assert "api attribute" in error["message"]
    assert emulator.ws_handshakes == []  # no socket was opened with it
    until(page, f"!({LIVE_TRACKS})")
