"""<gateway-realtime-dictation> and <gateway-realtime-speech> in chromium, against the emulator.

Pages come from tests/browser/speech_urls.py; dictation uses the fake
microphone (``mic_context``), speech plays its audio with Web Audio.
"""

from __future__ import annotations

import json

import pytest

from gateway_realtime.models import ClientSecretIssuance, Outcome

pytestmark = pytest.mark.urls("tests.browser.speech_urls")

# Installed before any page script: the elements' events and the page's CSP
# violations, kept on window for the test to read.
RECORDER = """(() => {
  window.recorded = {events: [], violations: [], inputs: 0, changes: 0};
  const elements = "gateway-realtime-dictation, gateway-realtime-speech";
  for (const name of ["error", "state", "max-seconds"]) {
    document.addEventListener(`gateway-realtime-${name}`, (event) => {
      const element = event.composedPath()[0];
      if (!element.matches || !element.matches(elements)) return;
      window.recorded.events.push({id: element.id, name, detail: {
        state: event.detail.state, type: event.detail.type, seconds: event.detail.seconds,
        chunks: element.scheduledChunks,
      }});
    }, true);
  }
  document.addEventListener("input", () => { window.recorded.inputs += 1; }, true);
  document.addEventListener("change", () => { window.recorded.changes += 1; }, true);
  document.addEventListener("securitypolicyviolation", (event) => {
    window.recorded.violations.push({
      directive: event.effectiveDirective, blocked: event.blockedURI, sample: event.sample,
      source: event.sourceFile, line: event.lineNumber,
    });
  });
})();"""


class Frames:
    """Every WebSocket frame the page sent and received, by socket URL, and its uncaught errors."""

    def __init__(self, page):
        self.sent: list[tuple[str, str | bytes]] = []
        self.received: list[tuple[str, str | bytes]] = []
        self.page_errors: list[str] = []
        page.on("websocket", self.watch)
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))

    def watch(self, ws):
        ws.on("framesent", lambda payload: self.sent.append((ws.url, payload)))
        ws.on("framereceived", lambda payload: self.received.append((ws.url, payload)))

    @staticmethod
    def _json(frames, kind):
        return [
            json.loads(payload)
            for url, payload in frames
            if f"/{kind}-model" in url and isinstance(payload, str)
        ]

    def sent_json(self, kind):
        return self._json(self.sent, kind)

    def received_json(self, kind):
        return self._json(self.received, kind)

    def sent_binary(self, kind):
        return [p for url, p in self.sent if f"/{kind}-model" in url and isinstance(p, bytes)]


def wait_until(page, script, arg=None, timeout=15.0):
    """Poll ``script`` (a JS function of ``arg``) until it returns something truthy.

    Not ``page.wait_for_function``: Playwright compiles that predicate in
    the page with eval, which a strict CSP refuses (and reports).
    """
    result = poll(lambda: page.evaluate(script, arg), timeout)
    assert result, f"timed out waiting for {script} ({arg!r})"
    return result


def open_page(context, site, path):
    context.add_init_script(RECORDER)
    page = context.new_page()
    frames = Frames(page)
    page.goto(site + path)
    wait_until(page, "() => customElements.get('gateway-realtime-speech') !== undefined")
    return page, frames


def state_of(page, element_id):
    return page.get_attribute(f"#{element_id}", "state")


def wait_state(page, element_id, *states):
    wait_until(
        page,
        "([id, states]) => states.includes(document.getElementById(id).getAttribute('state'))",
        [element_id, list(states)],
    )
    return state_of(page, element_id)


def events(page, element_id, name):
    return [
        e["detail"]
        for e in page.evaluate("window.recorded.events")
        if e["id"] == element_id and e["name"] == name
    ]


def states(page, element_id):
    return [d["state"] for d in events(page, element_id, "state")]


def status_text(page, element_id):
    return page.locator(f"#{element_id} [part='status']").text_content()


def ended_sessions(emulator, kind, count):
    def done():
        sessions = [s for s in emulator.ws_sessions if s.kind == kind and s.ended_at]
        return sessions if len(sessions) >= count else None

    return poll(done)


def poll(check, timeout=10.0):
    import time

    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def issued(kind):
    return list(ClientSecretIssuance.objects.filter(kind=kind).order_by("created_at"))


# --- dictation -------------------------------------------------------------


def test_dictation_fills_the_field(mic_context, site, emulator, login_to, user):
    login_to(mic_context, user)
    page, frames = open_page(mic_context, site, "/dictation/")
    assert state_of(page, "dictation") == "idle"
    assert issued("transcription") == []  # rendering minted nothing

    page.locator("#dictation").get_by_role("button", name="Dictate").click()
    assert wait_state(page, "dictation", "listening", "error") == "listening"
    # The emulator answers each audio frame with a word: the field grows as they come.
    wait_until(page, "() => document.getElementById('note').value.split(' ').length >= 4")
    interim = page.input_value("#note")
    assert interim.startswith("Note: this is")
    assert page.evaluate("window.recorded.inputs") >= 2

    page.locator("#dictation [part~='stop']").click()
    assert wait_state(page, "dictation", "ended", "error") == "ended"

    [session] = ended_sessions(emulator, "transcription", 1)
    assert session.received[0] == "transcription-stream.start"
    assert "binary" in session.received
    assert session.received[-1] == "transcription-stream.audio-done"
    [start] = [f for f in frames.sent_json("transcription") if f["type"].endswith(".start")]
    assert start["inputAudioFormat"] == {"type": "audio/pcm", "rate": 24000}
    binary = frames.sent_binary("transcription")
    assert binary and all(len(frame) % 2 == 0 for frame in binary)
    [finish] = [f for f in frames.received_json("transcription") if f["type"] == "finish"]
    assert len(finish["text"].split()) == len(binary)

    # The final text replaced the interim words, after a space.
    assert page.input_value("#note") == "Note: " + finish["text"]
    assert page.evaluate("window.recorded.changes") == 1
    line = page.locator("#dictation [part='transcript'][data-role='user']")
    assert line.text_content() == finish["text"]
    assert states(page, "dictation") == ["connecting", "listening", "ended"]

    [row] = issued("transcription")
    assert row.outcome == Outcome.ISSUED
    assert row.token_fingerprint
    assert frames.page_errors == []


# --- speech ----------------------------------------------------------------


def test_speech_plays_the_paragraph(context, site, emulator, login, user):
    login(user)
    page, frames = open_page(context, site, "/speech/")
    assert state_of(page, "speech-para") == "idle"
    assert issued("speech") == []

    page.locator("#speech-para").get_by_role("button", name="Read aloud").click()
    assert wait_state(page, "speech-para", "ended", "error") == "ended"
    changes = events(page, "speech-para", "state")
    assert [c["state"] for c in changes] == ["connecting", "speaking", "ended"]
    # `speaking` came with the first chunk scheduled on the AudioContext.
    assert changes[1]["chunks"] == 1
    assert page.evaluate("document.getElementById('speech-para').scheduledChunks") >= 1
    assert page.evaluate("document.getElementById('speech-para').scheduledSeconds") > 0

    [session] = ended_sessions(emulator, "speech", 1)
    assert session.received[0] == "speech-stream.start"
    assert session.received[-1] == "speech-stream.text-done"
    deltas = [f["delta"] for f in frames.sent_json("speech") if f["type"].endswith(".text-delta")]
    assert deltas and "".join(deltas) == "Some text."
    assert "audio" in session.sent

    [row] = issued("speech")
    assert row.outcome == Outcome.ISSUED
    assert frames.page_errors == []


# --- every press mints ------------------------------------------------------


def dictate_once(page):
    page.locator("#dictation").get_by_role("button", name="Dictate").click()
    assert wait_state(page, "dictation", "listening", "error") == "listening"
    words = len(page.input_value("#note").split())
    grown = "words => document.getElementById('note').value.split(/\\s+/).length >= words + 2"
    wait_until(page, grown, words)
    page.locator("#dictation").get_by_role("button", name="Stop").click()
    assert wait_state(page, "dictation", "ended", "error") == "ended"


def test_each_dictation_mints_a_new_secret(mic_context, site, emulator, login_to, user):
    login_to(mic_context, user)
    page, _ = open_page(mic_context, site, "/dictation/")

    dictate_once(page)
    first = page.input_value("#note")
    dictate_once(page)

    # The second dictation went after the first one's words.
    assert page.input_value("#note").startswith(first + " this is")
    rows = issued("transcription")
    assert [row.outcome for row in rows] == [Outcome.ISSUED, Outcome.ISSUED]
    assert rows[0].token_fingerprint != rows[1].token_fingerprint
    sessions = ended_sessions(emulator, "transcription", 2)
    assert sessions[0].token != sessions[1].token


def test_each_reading_mints_a_new_secret(context, site, emulator, login, user):
    login(user)
    page, frames = open_page(context, site, "/speech/")
    button = page.locator("#speech-text").get_by_role("button", name="Read aloud")

    for reading in (1, 2):
        button.click()
        poll(lambda: states(page, "speech-text").count("ended") == reading)  # noqa: B023
        assert states(page, "speech-text") == ["connecting", "speaking", "ended"] * reading

    rows = issued("speech")
    assert [row.outcome for row in rows] == [Outcome.ISSUED, Outcome.ISSUED]
    assert rows[0].token_fingerprint != rows[1].token_fingerprint
    deltas = [f["delta"] for f in frames.sent_json("speech") if f["type"].endswith(".text-delta")]
    assert "".join(deltas) == "Hello there" * 2


# --- max-seconds -------------------------------------------------------------


def test_max_seconds_ends_dictation(mic_context, site, emulator, login_to, user):
    login_to(mic_context, user)
    page, _ = open_page(mic_context, site, "/dictation/?max_seconds=2")
    assert page.get_attribute("#dictation", "max-seconds") == "2"

    page.locator("#dictation").get_by_role("button", name="Dictate").click()
    assert wait_state(page, "dictation", "listening", "error") == "listening"
    assert wait_state(page, "dictation", "ended", "error") == "ended"

    guard = events(page, "dictation", "max-seconds")
    assert [e["seconds"] for e in guard] == [2]
    assert "Ended after 2 seconds" in status_text(page, "dictation")
    # It ended the way Stop does: audio-done, then the final text in the field.
    [session] = ended_sessions(emulator, "transcription", 1)
    assert session.received[-1] == "transcription-stream.audio-done"
    assert "finish" in session.sent
    assert page.input_value("#note").startswith("Note: this is")


def test_max_seconds_ends_a_reading(context, site, emulator, login, user, monkeypatch):
    # The mint takes longer than the element may last: it gives up and says so.
    monkeypatch.setattr(emulator, "mint_delay", 2.0)
    login(user)
    page, _ = open_page(context, site, "/speech/?max_seconds=1")

    page.locator("#speech-para").get_by_role("button", name="Read aloud").click()
    assert wait_state(page, "speech-para", "ended", "error") == "ended"

    assert states(page, "speech-para") == ["connecting", "ended"]
    guard = events(page, "speech-para", "max-seconds")
    assert [e["seconds"] for e in guard] == [1]
    assert "Ended after 1 seconds" in status_text(page, "speech-para")
    assert_no_socket_after_the_mint(emulator)


def test_stop_while_connecting(mic_context, site, emulator, login_to, user, monkeypatch):
    monkeypatch.setattr(emulator, "mint_delay", 2.0)
    login_to(mic_context, user)
    page, _ = open_page(mic_context, site, "/speech/")

    page.locator("#speech-para").get_by_role("button", name="Read aloud").click()
    assert state_of(page, "speech-para") == "connecting"
    page.locator("#speech-para").get_by_role("button", name="Stop").click()
    assert wait_state(page, "speech-para", "ended", "error") == "ended"
    assert status_text(page, "speech-para") == "Stopped."
    assert page.locator("#speech-para [part~='stop']").is_hidden()

    page.goto(site + "/dictation/")
    wait_until(page, "() => customElements.get('gateway-realtime-dictation') !== undefined")
    page.locator("#dictation").get_by_role("button", name="Dictate").click()
    assert state_of(page, "dictation") == "connecting"
    # Pressing Dictate again stops, as Stop does.
    page.locator("#dictation").get_by_role("button", name="Dictate").click()
    assert wait_state(page, "dictation", "ended", "error") == "ended"
    assert status_text(page, "dictation") == "Stopped."
    assert page.input_value("#note") == "Note:"
    assert_no_socket_after_the_mint(emulator, mints=2)


def assert_no_socket_after_the_mint(emulator, mints=1):
    # The server's mint finished after the page gave up; no socket was opened with it.
    assert poll(
        lambda: ClientSecretIssuance.objects.filter(completed_at__isnull=False).count() == mints
    )
    assert emulator.ws_handshakes == []


# --- errors ------------------------------------------------------------------


def test_quota_exceeded_is_the_error_type(mic_context, site, emulator, login_to, user, settings):
    settings.GATEWAY_REALTIME_QUOTA = 0
    login_to(mic_context, user)
    page, _ = open_page(mic_context, site, "/dictation/")

    page.locator("#dictation").get_by_role("button", name="Dictate").click()
    assert wait_state(page, "dictation", "error", "ended") == "error"
    assert [e["type"] for e in events(page, "dictation", "error")] == ["quota_exceeded"]
    assert page.input_value("#note") == "Note:"

    page.goto(site + "/speech/")
    wait_until(page, "() => customElements.get('gateway-realtime-speech') !== undefined")
    page.locator("#speech-para").get_by_role("button", name="Read aloud").click()
    assert wait_state(page, "speech-para", "error", "ended") == "error"
    assert [e["type"] for e in events(page, "speech-para", "error")] == ["quota_exceeded"]

    rows = ClientSecretIssuance.objects.order_by("created_at")
    assert [(r.kind, r.outcome, r.error_type) for r in rows] == [
        ("transcription", Outcome.REJECTED, "quota_exceeded"),
        ("speech", Outcome.REJECTED, "quota_exceeded"),
    ]
    assert emulator.ws_sessions == []


def test_a_failing_stream_is_an_error(mic_context, site, emulator, login_to, user, settings):
    # The emulator's `ws-error` model: the Gateway sends an error part, then closes 1011.
    settings.GATEWAY_REALTIME_DEFAULT_MODELS = {
        "transcription": "emulator/ws-error",
        "speech": "emulator/ws-error",
    }
    login_to(mic_context, user)
    page, frames = open_page(mic_context, site, "/dictation/")

    page.locator("#dictation").get_by_role("button", name="Dictate").click()
    assert wait_state(page, "dictation", "error", "ended") == "error"
    [error] = events(page, "dictation", "error")
    assert error["type"] == "internal_server_error"
    assert status_text(page, "dictation")
    assert page.input_value("#note") == "Note:"

    page.goto(site + "/speech/")
    wait_until(page, "() => customElements.get('gateway-realtime-speech') !== undefined")
    page.locator("#speech-para").get_by_role("button", name="Read aloud").click()
    assert wait_state(page, "speech-para", "error", "ended") == "error"
    [error] = events(page, "speech-para", "error")
    assert error["type"] == "internal_server_error"
    assert [s.close_code for s in ended_sessions(emulator, "speech", 1)] == [1011]
    assert frames.page_errors == []


def test_empty_text_and_missing_target_mint_nothing(mic_context, site, emulator, login_to, user):
    login_to(mic_context, user)
    page, _ = open_page(mic_context, site, "/speech/")

    page.locator("#speech-empty").get_by_role("button", name="Read aloud").click()
    assert wait_state(page, "speech-empty", "error") == "error"
    assert [e["type"] for e in events(page, "speech-empty", "error")] == ["nothing_to_read"]
    assert status_text(page, "speech-empty")

    page.goto(site + "/dictation/")
    wait_until(page, "() => customElements.get('gateway-realtime-dictation') !== undefined")
    page.locator("#dictation-lost").get_by_role("button", name="Dictate").click()
    assert wait_state(page, "dictation-lost", "error") == "error"
    assert [e["type"] for e in events(page, "dictation-lost", "error")] == ["missing_target"]

    assert ClientSecretIssuance.objects.count() == 0
    assert emulator.ws_sessions == []


def test_microphone_denied(mic_context, site, emulator, login_to, user):
    login_to(mic_context, user)
    page, _ = open_page(mic_context, site, "/dictation-no-microphone/")

    page.locator("#dictation").get_by_role("button", name="Dictate").click()
    assert wait_state(page, "dictation", "error", "ended") == "error"
    assert [e["type"] for e in events(page, "dictation", "error")] == ["microphone_denied"]
    assert ClientSecretIssuance.objects.count() == 0  # no microphone, no mint


def test_no_microphone(context, site, emulator, login, user):
    # A browser with no (fake) microphone at all.
    login(user)
    page, _ = open_page(context, site, "/dictation/")

    page.locator("#dictation").get_by_role("button", name="Dictate").click()
    assert wait_state(page, "dictation", "error", "ended") == "error"
    assert [e["type"] for e in events(page, "dictation", "error")] == ["microphone_unavailable"]
    assert ClientSecretIssuance.objects.count() == 0


# --- strict Content-Security-Policy -------------------------------------------


def is_eval_probe(violation):
    # zod, inside the vendored AI SDK, asks once whether `new Function` works
    # and catches the refusal: the one violation a strict page sees.
    return (
        violation["directive"] == "script-src"
        and violation["blocked"] == "eval"
        and violation["source"].endswith("/static/gateway_realtime/vendor/ai-sdk.min.mjs")
    )


def test_elements_work_under_a_strict_csp(mic_context, site, emulator, login_to, user):
    from tests.browser.speech_urls import STRICT_CSP

    login_to(mic_context, user)
    mic_context.add_init_script(RECORDER)
    page = mic_context.new_page()
    frames = Frames(page)
    response = page.goto(site + "/strict/")
    assert response.headers["content-security-policy"] == STRICT_CSP
    assert "script-src 'self';" in STRICT_CSP
    wait_until(page, "() => customElements.get('gateway-realtime-dictation') !== undefined")

    page.locator("#dictation").get_by_role("button", name="Dictate").click()
    assert wait_state(page, "dictation", "listening", "error") == "listening"
    wait_until(page, "() => document.getElementById('note').value.split(' ').length >= 2")
    page.locator("#dictation").get_by_role("button", name="Stop").click()
    assert wait_state(page, "dictation", "ended", "error") == "ended"
    [finish] = [f for f in frames.received_json("transcription") if f["type"] == "finish"]
    assert page.input_value("#note") == finish["text"]

    page.locator("#speech-para").get_by_role("button", name="Read aloud").click()
    assert wait_state(page, "speech-para", "ended", "error") == "ended"
    assert states(page, "speech-para") == ["connecting", "speaking", "ended"]
    deltas = [f["delta"] for f in frames.sent_json("speech") if f["type"].endswith(".text-delta")]
    assert "".join(deltas) == "Read under a strict policy."

    # The elements' stylesheet (a <link> in each shadow root) loaded too.
    for element_id in ("dictation", "speech-para"):
        assert page.evaluate(
            "id => document.getElementById(id).shadowRoot.querySelector('link').sheet"
            ".cssRules.length",
            element_id,
        )
    violations = page.evaluate("window.recorded.violations")
    assert [v for v in violations if not is_eval_probe(v)] == []
    assert len(violations) <= 1
    assert frames.page_errors == []
