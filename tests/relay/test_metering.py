"""The relay's meter: audio on every path, in every format, and no frame that crashes it.

Event shapes are the AI SDK's (``@ai-sdk/provider`` ``RealtimeModelV4ClientEvent`` /
``RealtimeModelV4ServerEvent``); ``compact`` is how ``JSON.stringify`` writes them.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway_realtime.models import RelaySession
from gateway_realtime.relay.metering import (
    CONSERVATIVE_BYTES_PER_SECOND,
    MAX_TOKENS,
    Meter,
    UnreadableFrame,
    base64_size,
    bytes_per_second,
    frame_size,
    usage_tokens,
)
from tests.strategies import json_values


def b64(size: int) -> str:
    return base64.b64encode(bytes(size)).decode()


def compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def append(size: int) -> str:
    """What the AI SDK sends: ``{"type":"input-audio-append","audio":"..."}``."""
    return compact({"type": "input-audio-append", "audio": b64(size)})


def update(**config: object) -> str:
    return compact({"type": "session-update", "config": config})


def start(**config: object) -> str:
    return compact({"type": "session-start", "config": config})


def delta(size: int, kind: str = "audio-delta") -> str:
    """An output audio event as the emulator writes it (``emulator/sessions.py``)."""
    ids = {"responseId": "resp_1", "itemId": "item_1"}
    return compact({"type": kind, **ids, "delta": b64(size), "raw": {"source": "x", "type": "a"}})


UPDATED = compact({"type": "session-updated", "raw": {}})
STARTED = compact({"type": "session-started", "sessionId": "s", "raw": {}})
ERROR = compact({"type": "error", "message": "invalid", "raw": {}})
PCM16K = {"type": "audio/pcm", "rate": 16000}


def seconds_in(meter: Meter, size: int) -> float:
    """The seconds ``size`` bytes of input audio add now."""
    before = meter.audio_seconds_in
    meter.observe_browser(append(size))
    return meter.audio_seconds_in - before


# Sizes and formats -----------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 47, 48000, 48001])
def test_base64_size_is_the_decoded_length(size):
    assert base64_size(b64(size)) == size
    assert base64_size(b64(size).rstrip("=")) == size  # unpadded


def test_frame_size_counts_utf8_bytes_and_never_raises():
    assert frame_size("é") == 2
    assert frame_size(b"\xff\x00") == 2
    assert frame_size("\udcff") == 1  # replaced, not raised


@pytest.mark.parametrize(
    ("audio_format", "expected"),
    [
        ({"type": "audio/pcm"}, 48000),
        ({"type": "audio/pcm", "rate": 16000}, 32000),
        ({"type": "audio/pcm", "rate": 16000.0}, 32000),
        ({"type": "audio/pcmu"}, 8000),
        ({"type": "audio/pcma", "rate": 48000}, 8000),  # G.711 is 8000 B/s whatever it says
    ],
)
def test_bytes_per_second_of_the_sdks_formats(audio_format, expected):
    assert bytes_per_second(audio_format) == expected


@pytest.mark.parametrize(
    "audio_format",
    [
        {"type": "audio/opus"},
        {"type": "audio/pcm", "rate": 10**9},
        {"type": "audio/pcm", "rate": 4000},
        {"type": "audio/pcm", "rate": 24000.5},
        {"type": "audio/pcm", "rate": True},
        {"type": "audio/pcm", "rate": None},
        {"type": "audio/pcm", "rate": "24000"},
        {"type": ["audio/pcm"]},
        {"type": None},
        {},
        "pcm16",
        None,
        [],
    ],
)
def test_an_unknown_format_or_rate_is_metered_conservatively(audio_format):
    assert bytes_per_second(audio_format) == CONSERVATIVE_BYTES_PER_SECOND
    meter = Meter()
    meter.observe_browser(update(inputAudioFormat=audio_format))
    assert seconds_in(meter, 8000) == pytest.approx(1.0)


# Audio from the browser ----------------------------------------------------------------


def test_pcm_at_the_sdk_default_rate():
    meter = Meter()
    assert seconds_in(meter, 48000) == pytest.approx(1.0)  # 1 s of 24 kHz PCM16


@pytest.mark.parametrize(
    "frame",
    [
        json.dumps({"type": "input-audio-append", "audio": b64(48000)}),  # spaces
        json.dumps({"audio": b64(48000), "type": "input-audio-append"}),  # key order
        compact({"type": "input-audio-append", "audio": b64(48000), "eventId": "e1"}),
        compact({"type": "input-audio-append", "audio": b64(48000)}).replace("-", "\\u002d", 1),
        compact({"type": "input-audio-append", "audio": b64(48000)}).replace("/", "\\/"),
        compact({"type": "input-audio-append", "audio": b64(48000)}).replace(
            '"audio"', '"\\u0061udio"'
        ),
    ],
    ids=["spaces", "key-order", "event-id", "escaped-type", "escaped-slash", "escaped-key"],
)
def test_other_spellings_of_an_append_are_read_and_metered_alike(frame):
    meter = Meter()
    meter.observe_browser(frame)
    assert meter.audio_seconds_in == pytest.approx(1.0)


@given(size=st.integers(0, 20000), event_id=st.none() | st.text(max_size=10))
def test_the_fast_path_and_the_parser_agree(size, event_id):
    fast, parsed = Meter(), Meter()
    fast.observe_browser(append(size))
    event = {"audio": b64(size), "type": "input-audio-append"}
    if event_id is not None:
        event["eventId"] = event_id
    parsed.observe_browser(json.dumps(event))
    assert fast.audio_seconds_in == parsed.audio_seconds_in == size / 48000


def test_audio_in_conversation_items_is_metered():
    meter = Meter()
    item = {"type": "audio-message", "role": "user", "audio": b64(48000)}  # the SDK's shape
    meter.observe_browser(compact({"type": "conversation-item-create", "item": item}))
    nested = {"type": "message", "content": [{"type": "input_audio", "audio": b64(24000)}]}
    meter.observe_browser(compact({"type": "conversation-item-create", "item": nested}))
    deep: object = {"audio": b64(24000)}
    for _ in range(50):
        deep = {"content": [deep]}
    meter.observe_browser(compact({"type": "conversation-item-create", "item": deep}))
    listed = {"type": "audio-message", "audio": [b64(12000), {"x": b64(12000)}]}
    meter.observe_browser(compact({"type": "conversation-item-create", "item": listed}))
    assert meter.audio_seconds_in == pytest.approx(1 + 0.5 + 0.5 + 0.5)


def test_text_items_and_other_events_carry_no_audio():
    meter = Meter()
    text = {"type": "text-message", "role": "user", "text": "audio " * 100}
    meter.observe_browser(compact({"type": "conversation-item-create", "item": text}))
    meter.observe_browser(
        compact({"type": "response-create", "options": {"modalities": ["audio"]}})
    )
    meter.observe_browser(compact({"type": "input-audio-commit"}))
    assert (meter.frames_from_browser, meter.audio_seconds_in) == (3, 0.0)


def test_binary_browser_frames_are_metered_conservatively():
    meter = Meter()
    meter.observe_browser(bytes(16000))
    meter.observe_browser(bytearray(8000))
    meter.observe_browser(update(inputAudioFormat={"type": "audio/pcmu"}).encode())
    assert meter.audio_seconds_in > (16000 + 8000) / CONSERVATIVE_BYTES_PER_SECOND
    # The Gateway refuses binary frames, so one cannot set a format.
    assert meter.input_bytes_per_second == 48000
    assert meter.bytes_from_browser > 24000


# Formats -------------------------------------------------------------------------------


@pytest.mark.parametrize("event", [update, start])
def test_a_format_with_more_seconds_applies_at_once(event):
    meter = Meter()
    meter.observe_browser(event(inputAudioFormat=PCM16K))
    assert seconds_in(meter, 32000) == pytest.approx(1.0)  # 1 s at 16 kHz


@pytest.mark.parametrize("kind", ["audio/pcmu", "audio/pcma"])
def test_g711_is_metered_by_its_own_bytes_per_second(kind):
    meter = Meter()
    meter.observe_browser(update(inputAudioFormat={"type": kind}, outputAudioFormat={"type": kind}))
    assert seconds_in(meter, 8000) == pytest.approx(1.0)
    meter.observe_gateway(delta(8000))
    assert meter.audio_seconds_out == pytest.approx(1.0)


def test_a_format_change_without_a_rate_resets_to_the_formats_default():
    meter = Meter()
    meter.observe_browser(update(inputAudioFormat=PCM16K))
    meter.observe_gateway(UPDATED)
    meter.observe_browser(update(inputAudioFormat={"type": "audio/pcm"}))
    meter.observe_gateway(UPDATED)
    assert seconds_in(meter, 48000) == pytest.approx(1.0)  # 24 kHz again
    meter.observe_browser(update(inputAudioFormat={"type": "audio/pcmu", "rate": 24000}))
    assert seconds_in(meter, 8000) == pytest.approx(1.0)  # G.711's 8000, not 24000


def test_a_format_with_fewer_seconds_waits_for_the_gateway():
    meter = Meter()
    meter.observe_browser(update(inputAudioFormat={"type": "audio/pcmu"}))
    meter.observe_gateway(UPDATED)
    meter.observe_browser(update(inputAudioFormat={"type": "audio/pcm"}))
    assert seconds_in(meter, 8000) == pytest.approx(1.0)  # still G.711 until confirmed
    meter.observe_gateway(UPDATED)
    assert seconds_in(meter, 48000) == pytest.approx(1.0)


def test_a_refused_format_cannot_lower_the_count():
    meter = Meter()
    meter.observe_browser(update(inputAudioFormat={"type": "audio/pcmu"}))
    meter.observe_gateway(UPDATED)
    meter.observe_browser(update(inputAudioFormat={"type": "audio/pcm", "rate": 48000}))
    meter.observe_gateway(ERROR)  # the Gateway refused it: still G.711 there
    meter.observe_browser(update(instructions="hi"))
    meter.observe_gateway(UPDATED)
    assert seconds_in(meter, 8000) == pytest.approx(1.0)


def test_an_unanswered_declaration_keeps_later_ones_from_raising_the_rate():
    meter = Meter()
    meter.observe_browser(update(inputAudioFormat={"type": "audio/pcmu"}))
    meter.observe_browser(update(inputAudioFormat={"type": "audio/pcm"}))
    meter.observe_gateway(UPDATED)  # whose? either one: not trusted
    assert meter.input_bytes_per_second == 8000
    meter.observe_gateway(UPDATED)  # the second's: both were taken, in order
    assert meter.input_bytes_per_second == 48000


def test_a_confirmation_nobody_asked_for_changes_nothing():
    meter = Meter()
    meter.observe_gateway(UPDATED)
    meter.observe_gateway(STARTED)
    assert (meter.input_bytes_per_second, meter.output_bytes_per_second) == (48000, 48000)


def test_session_start_sets_both_sides_from_one_format():
    meter = Meter()
    meter.observe_browser(start(inputAudioFormat=PCM16K))
    assert (meter.input_bytes_per_second, meter.output_bytes_per_second) == (32000, 32000)
    other = Meter()
    other.observe_browser(update(inputAudioFormat=PCM16K))
    assert (other.input_bytes_per_second, other.output_bytes_per_second) == (32000, 48000)


@pytest.mark.parametrize(
    "config",
    [
        {"providerOptions": {"audio": {"input": {"format": {"type": "audio/pcmu"}}}}},
        {"providerOptions": {"openai": {"input_audio_format": "g711_ulaw"}}},
        {"providerOptions": {"google": {"sampleRateHertz": 8000}}},
        {"providerOptions": {"x": ["audio/pcmu"]}},
        {"audio": {"output": {"format": {"type": "audio/pcmu"}}}},
        {"input_audio_format": "g711_ulaw"},
    ],
)
def test_a_format_named_outside_the_sdks_keys_meters_conservatively_for_good(config):
    meter = Meter()
    meter.observe_browser(update(inputAudioFormat={"type": "audio/pcm"}, **config))
    meter.observe_gateway(UPDATED)
    assert (meter.input_bytes_per_second, meter.output_bytes_per_second) == (8000, 8000)
    meter.observe_browser(update(inputAudioFormat={"type": "audio/pcm"}))
    meter.observe_gateway(UPDATED)
    assert seconds_in(meter, 8000) == pytest.approx(1.0)


def test_the_sdks_own_keys_and_gateway_options_are_not_mistaken_for_formats():
    tool = {
        "type": "function",
        "name": "book",
        "parameters": {
            "type": "object",
            "properties": {"at": {"type": "string", "format": "date"}},
        },
    }
    meter = Meter()
    meter.observe_browser(
        update(
            inputAudioFormat=PCM16K,
            inputAudioTranscription={"model": "whisper"},
            turnDetection={"type": "server-vad", "silenceDurationMs": 500},
            tools=[tool],
            providerOptions={"gateway": {"tags": ["a"], "user": "u"}},
        )
    )
    meter.observe_gateway(UPDATED)
    assert meter.input_bytes_per_second == 32000


# The Gateway ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["audio-delta", "audio-chunk"])
def test_gateway_audio_on_both_routes(kind):
    meter = Meter()
    meter.observe_browser(update(outputAudioFormat=PCM16K))
    assert meter.observe_gateway(delta(32000, kind)) is False  # string search
    raw_first = {"type": kind, "raw": {"delta": b64(9)}, "delta": b64(32000)}
    assert meter.observe_gateway(compact(raw_first)) is False  # parsed: raw comes first
    assert meter.observe_gateway(json.dumps({"delta": b64(32000), "type": kind})) is False
    assert meter.observe_gateway(delta(32000, kind).encode()) is False  # a binary JSON frame
    assert meter.audio_seconds_out == pytest.approx(4.0)


@given(size=st.integers(0, 20000), item_id=st.text(max_size=10))
def test_the_gateway_fast_path_and_the_parser_agree(size, item_id):
    fast, parsed = Meter(), Meter()
    event = {"type": "audio-delta", "itemId": item_id, "delta": b64(size), "raw": {}}
    fast.observe_gateway(compact(event))
    parsed.observe_gateway(json.dumps(event, sort_keys=True))
    assert fast.audio_seconds_out == parsed.audio_seconds_out == size / 48000


def test_transcript_deltas_are_not_audio():
    meter = Meter()
    event = {"type": "audio-transcript-delta", "responseId": "r", "itemId": "i", "delta": "word"}
    assert meter.observe_gateway(compact(event)) is False
    assert meter.audio_seconds_out == 0.0


@pytest.mark.parametrize(
    ("event", "tokens"),
    [
        ({"type": "response-done", "usage": {"inputTokens": 7, "outputTokens": 11}}, (7, 11)),
        (
            {
                "type": "response-done",
                "usage": {
                    "inputTextTokens": 5,
                    "inputAudioTokens": 20,
                    "cachedInputTextTokens": 4,  # part of the 5: not added
                    "outputTextTokens": 3,
                    "outputAudioTokens": 30,
                },
            },
            (25, 33),
        ),
        (
            {
                "type": "backend-response-done",
                "usage": {"inputTokens": 10, "outputTokens": 5, "totalTokens": 15},
            },
            (10, 5),
        ),
        (
            {"type": "backend-response-done", "usage": {"inputTokens": 10, "totalTokens": 40}},
            (10, 30),
        ),
        (
            {"type": "input-transcription-completed", "usage": {"inputAudioTokens": 9}},
            (9, 0),
        ),
        ({"type": "session-closed", "usage": {"seconds": 12.5}, "reason": "requested"}, (0, 0)),
    ],
)
def test_usage_events_are_counted_and_reported(event, tokens):
    meter = Meter()
    assert meter.observe_gateway(compact({**event, "raw": {}})) is True
    assert (meter.input_tokens, meter.output_tokens) == tokens


def test_events_without_usage_report_none():
    meter = Meter()
    assert meter.observe_gateway(compact({"type": "response-done", "status": "cancelled"})) is False
    assert (
        meter.observe_gateway(compact({"type": "session-usage", "usage": {"seconds": 5}})) is False
    )
    assert meter.observe_gateway(compact({"type": "text-delta", "delta": "usage"})) is False
    assert meter.tokens == 0


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (-5, 0),
        (True, 0),
        (float("nan"), 0),
        (float("inf"), 0),
        ("7", 0),
        (2.5, 3),
        (10**40, MAX_TOKENS),
    ],
)
def test_token_counts_are_read_defensively(count, expected):
    assert usage_tokens({"inputTokens": count}) == (expected, 0)


def test_token_counters_saturate():
    meter = Meter()
    done = json.dumps({"type": "response-done", "usage": {"inputTokens": 10**40}})
    for _ in range(3):
        assert meter.observe_gateway(done) is True
    assert meter.input_tokens == MAX_TOKENS
    assert meter.tokens < 2**63  # fits the audit row's columns


# Frames that cannot be read --------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        '{"type":"input-audio-append","audio":"AAAA","x":' + "[" * 50_000 + "]" * 50_000 + "}",
        '{"type":"input-audio-append","audio":"AAAA",',
        '{"type":"input-audio-append","audio":"}',
        '{"type":"input-audio-append","n":' + "9" * 5000 + ',"audio":"AAAA"}',
        '{"type":"session-update","config":{"inputAudioFormat":{"type":"audio/pcm","rate":NaN}}}',
        '{"type":"response-create","audio":"AAAA","audio":"AAAAAAAA"}',
        '{"type":"input-audio-append","audio":"AAAA","type":"input-audio-append"}',
        '{"typ\\u0065":"input-audio-append","audio":"AAAA"',
        "input-audio-append \udcff",
        "just text \udcff",
    ],
    ids=[
        "nested",
        "truncated",
        "unterminated",
        "huge-int",
        "nan",
        "duplicate-audio",
        "duplicate-type",
        "escaped-truncated",
        "lone-surrogate",
        "lone-surrogate-only",
    ],
)
def test_a_browser_frame_that_may_carry_audio_but_cannot_be_read_is_unreadable(frame):
    meter = Meter()
    with pytest.raises(UnreadableFrame):
        meter.observe_browser(frame)
    assert meter.frames_from_browser == 1 and meter.audio_seconds_in == 0.0


def test_a_frame_of_another_type_is_unreadable():
    with pytest.raises(UnreadableFrame):
        Meter().observe_browser(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "frame",
    [
        "[" * 50_000 + "]" * 50_000,
        '{"type":"x","n":' + "9" * 5000 + "}",
        "not json",
        "[1]",
        '["audio"]',
        '"audio"',
        '{"type":"response-create","options":{"instructions":"say audio"}}',
    ],
)
def test_a_frame_without_audio_is_only_counted(frame):
    meter = Meter()
    meter.observe_browser(frame)
    assert (meter.frames_from_browser, meter.audio_seconds_in) == (1, 0.0)


@pytest.mark.parametrize(
    "frame",
    [
        '{"type":"response-done","usage":' + "[" * 50_000 + "]" * 50_000 + "}",
        '{"type":"response-done","usage":{"inputTokens":' + "9" * 5000 + "}}",
        '{"type":"audio-delta","delta":',
        '{"type":"audio-delta","delta":"AAA\\"',
        '{"type":"response-done","usage":{"inputTokens":NaN,"outputTokens":Infinity}}',
        '{"type":"response-done","usage":[1,2]}',
        '{"type":["response-done"],"usage":{"inputTokens":1}}',
        "\udcff usage",
        b"\xff\xfe{",
        b'{"type":"response-done","usage":{"inputTokens":3}}\xff',
        None,
    ],
)
def test_a_gateway_frame_never_raises_and_is_counted(frame):
    meter = Meter()
    assert meter.observe_gateway(frame) in (True, False)
    assert meter.frames_from_gateway == 1
    for value in meter.fields().values():
        assert value >= 0 and math.isfinite(value)


def test_fields_are_the_audit_rows_counters():
    names = {field.name for field in RelaySession._meta.get_fields()}
    meter = Meter(frames_from_browser=1, input_tokens=2)
    assert set(meter.fields()) <= names
    assert meter.fields()["frames_from_browser"] == 1
    assert meter.audio_seconds == meter.audio_seconds_in + meter.audio_seconds_out
    assert meter.tokens == 2


# Properties ----------------------------------------------------------------------------------

BROWSER_TYPES = [
    "input-audio-append",
    "conversation-item-create",
    "session-update",
    "session-start",
]
GATEWAY_TYPES = ["audio-delta", "audio-chunk", "response-done", "session-closed", "error"]

HUGE = "<a number of 5000 digits>"

# Any JSON value, NaN, infinities and numbers the parser refuses included.
wild_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.just(HUGE)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["audio/pcm", "audio/pcmu", "AAAA", b64(30)]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    *("type", "audio", "delta", "config", "item", "usage", "rate", "inputTokens"),
                    *("inputAudioFormat", "outputAudioFormat", "providerOptions"),
                ]
            )
            | st.text(max_size=8),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


def _dump(value: object) -> str:
    # A number the parser refuses (over 4300 digits), written into the JSON by hand.
    return json.dumps(value, allow_nan=True).replace(json.dumps(HUGE), "9" * 5000)


events = st.builds(
    lambda kind, body: {"type": kind, **body},
    st.sampled_from(BROWSER_TYPES + GATEWAY_TYPES),
    st.dictionaries(st.sampled_from(["audio", "delta", "config", "item", "usage"]), wild_values),
).map(_dump)

frames = st.one_of(
    st.text(max_size=200),
    st.text(st.integers(0xD800, 0xDFFF).map(chr) | st.characters(), min_size=1, max_size=20),
    st.binary(max_size=200),
    json_values.map(json.dumps),
    wild_values.map(_dump),
    events,
    st.tuples(events, st.integers(0, 200)).map(lambda pair: pair[0][: pair[1]]),  # cut short
    events.map(lambda frame: frame.replace("-", "\\u002d")),
    st.integers(1, 3000).map(lambda depth: '{"type":"audio-delta","x":' + "[" * depth),
    st.sampled_from(BROWSER_TYPES + GATEWAY_TYPES).map(lambda kind: f'{{"type":"{kind}"'),
)


@settings(max_examples=400, deadline=None)
@given(steps=st.lists(st.tuples(st.booleans(), frames), max_size=12))
def test_no_frame_crashes_the_meter_or_makes_its_counters_invalid(steps):
    meter = Meter()
    for from_browser, frame in steps:
        before = meter.fields()
        if from_browser:
            with contextlib.suppress(UnreadableFrame):
                meter.observe_browser(frame)
        else:
            assert meter.observe_gateway(frame) in (True, False)
        after = meter.fields()
        for name, value in after.items():
            assert math.isfinite(value) and value >= before[name] >= 0
        assert 8000 <= meter.input_bytes_per_second <= 96000
        assert 8000 <= meter.output_bytes_per_second <= 96000


# A model of the Gateway: each declaration is taken, refused (an ``error``) or
# ignored, in order; its answer reaches the meter some time later. The audio
# the browser sends now is decoded with the formats after every declaration
# already sent; the Gateway's audio, with those it has taken.
FORMATS = [None, {"type": "audio/pcm"}, PCM16K, {"type": "audio/pcm", "rate": 48000}]
FORMATS += [{"type": "audio/pcmu"}, {"type": "audio/pcma"}]
declarations = st.tuples(
    st.sampled_from(FORMATS),
    st.sampled_from(FORMATS),
    st.sampled_from(["taken", "refused", "ignored"]),
)


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(st.one_of(declarations, st.sampled_from(["process", "deliver"])), max_size=20)
)
def test_formats_never_meter_fewer_seconds_than_the_gateway_decodes(steps):
    meter = Meter()
    now = [48000, 48000]  # the Gateway's rates (in, out)
    inbox: list[tuple[list[int | None], str]] = []  # declarations it has not processed
    answers: list[str] = []  # its answers the meter has not seen

    def after(rates: list[int], queued: list[tuple[list[int | None], str]]) -> list[int]:
        rates = list(rates)
        for declared, fate in queued:
            if fate == "taken":
                rates = [r if d is None else d for r, d in zip(rates, declared, strict=True)]
        return rates

    for step in steps:
        if isinstance(step, tuple):
            formats = {
                key: value
                for key, value in zip(
                    ("inputAudioFormat", "outputAudioFormat"), step[:2], strict=True
                )
                if value is not None
            }
            meter.observe_browser(update(**formats))
            declared = [None if value is None else bytes_per_second(value) for value in step[:2]]
            inbox.append((declared, step[2]))
        elif step == "process" and inbox:
            (declared, fate) = inbox.pop(0)
            now = after(now, [(declared, fate)])
            if fate != "ignored":
                answers.append(UPDATED if fate == "taken" else ERROR)
        elif step == "deliver" and answers:
            meter.observe_gateway(answers.pop(0))
        # What the browser sends now is decoded after the declarations queued.
        assert meter.input_bytes_per_second <= after(now, inbox)[0]
        # What the Gateway sends now reaches the meter after its queued answers.
        ahead = copy.deepcopy(meter)
        for answer in answers:
            ahead.observe_gateway(answer)
        assert meter.output_bytes_per_second <= now[1]
        assert ahead.output_bytes_per_second <= now[1]
