"""The relay's meter: audio on every path, in every format, and no frame that crashes it."""

from __future__ import annotations

import base64
import contextlib
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway_realtime.relay.metering import (
    CONSERVATIVE_BYTES_PER_SECOND,
    Meter,
    UnreadableFrame,
    base64_size,
    bytes_per_second,
)


def b64(size: int) -> str:
    return base64.b64encode(bytes(size)).decode()


def append(size: int) -> str:
    """What the AI SDK sends: ``{"type":"input-audio-append","audio":"..."}``, compact."""
    return json.dumps({"type": "input-audio-append", "audio": b64(size)}, separators=(",", ":"))


def update(**config) -> str:
    return json.dumps({"type": "session-update", "config": config})


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 47, 48000, 48001])
def test_base64_size_is_the_decoded_length(size):
    assert base64_size(b64(size)) == size


def test_pcm_at_the_sdk_default_rate():
    meter = Meter()
    meter.observe_browser(append(48000))  # 1 s of 24 kHz PCM16
    assert meter.audio_seconds_in == pytest.approx(1.0)


def test_the_fast_path_and_the_parser_agree():
    fast, parsed = Meter(), Meter()
    fast.observe_browser(append(48000))
    parsed.observe_browser(json.dumps({"audio": b64(48000), "type": "input-audio-append"}))
    assert fast.audio_seconds_in == parsed.audio_seconds_in == pytest.approx(1.0)


def test_an_escaped_event_type_is_still_metered():
    meter = Meter()
    frame = append(48000).replace("-", "\\u002d", 1)
    assert "input-audio-append" not in frame
    meter.observe_browser(frame)
    assert meter.audio_seconds_in == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("event", "config"),
    [
        ("session-update", {"inputAudioFormat": {"type": "audio/pcm", "rate": 16000}}),
        ("session-start", {"inputAudioFormat": {"type": "audio/pcm", "rate": 16000}}),
    ],
)
def test_the_rate_is_read_from_session_update_and_session_start(event, config):
    meter = Meter()
    meter.observe_browser(json.dumps({"type": event, "config": config}))
    meter.observe_browser(append(32000))  # 1 s at 16 kHz
    assert meter.audio_seconds_in == pytest.approx(1.0)


def test_a_format_change_without_a_rate_resets_to_the_formats_default():
    meter = Meter()
    meter.observe_browser(update(inputAudioFormat={"type": "audio/pcm", "rate": 16000}))
    meter.observe_browser(update(inputAudioFormat={"type": "audio/pcm"}))
    meter.observe_browser(append(48000))
    assert meter.audio_seconds_in == pytest.approx(1.0)  # 24 kHz again


@pytest.mark.parametrize("kind", ["audio/pcmu", "audio/pcma"])
def test_g711_is_metered_by_its_own_bytes_per_second(kind):
    meter = Meter()
    meter.observe_browser(update(inputAudioFormat={"type": kind}))
    meter.observe_browser(append(8000))
    assert meter.audio_seconds_in == pytest.approx(1.0)


@pytest.mark.parametrize(
    "audio_format",
    [
        {"type": "audio/opus"},
        {"type": "audio/pcm", "rate": 10**9},
        {"type": "audio/pcm", "rate": 24000.5},
        {"type": "audio/pcm", "rate": True},
        {"type": None},
        {},
    ],
)
def test_an_unknown_format_or_rate_is_metered_conservatively(audio_format):
    assert bytes_per_second(audio_format) == CONSERVATIVE_BYTES_PER_SECOND
    meter = Meter()
    meter.observe_browser(update(inputAudioFormat=audio_format))
    meter.observe_browser(append(8000))
    assert meter.audio_seconds_in == pytest.approx(1.0)


def test_audio_in_conversation_items_is_metered():
    meter = Meter()
    item = {"type": "audio-message", "role": "user", "audio": b64(48000)}
    meter.observe_browser(json.dumps({"type": "conversation-item-create", "item": item}))
    nested = {"type": "message", "content": [{"type": "input-audio", "audio": b64(24000)}]}
    meter.observe_browser(json.dumps({"type": "conversation-item-create", "item": nested}))
    assert meter.audio_seconds_in == pytest.approx(1.5)


def test_binary_browser_frames_are_metered_conservatively():
    meter = Meter()
    meter.observe_browser(bytes(16000))
    assert meter.audio_seconds_in == pytest.approx(16000 / CONSERVATIVE_BYTES_PER_SECOND)


def test_gateway_audio_and_usage():
    meter = Meter()
    meter.observe_browser(update(outputAudioFormat={"type": "audio/pcm", "rate": 16000}))
    delta = {"type": "audio-delta", "itemId": "i1", "delta": b64(32000), "raw": {"a": 1}}
    assert meter.observe_gateway(json.dumps(delta, separators=(",", ":"))) is False
    assert meter.observe_gateway(json.dumps({"itemId": "i1", **delta})) is False  # parsed
    done = {"type": "response-done", "usage": {"inputTokens": 7, "outputTokens": 11}}
    assert meter.observe_gateway(json.dumps(done)) is True
    closed = {"type": "session-closed", "usage": {"inputTokens": 1, "outputTokens": 2}}
    assert meter.observe_gateway(json.dumps(closed)) is True
    assert meter.audio_seconds_out == pytest.approx(2.0)
    assert (meter.input_tokens, meter.output_tokens, meter.tokens) == (8, 13, 21)


@pytest.mark.parametrize(
    "frame",
    [
        '{"type":"input-audio-append","audio":"AAAA","x":' + "[" * 50_000 + "]" * 50_000 + "}",
        '{"type":"input-audio-append","audio":"AAAA",',
        '{"type":"input-audio-append","n":' + "9" * 5000 + "}",
        "input-audio-append \udcff",
    ],
    ids=["nested", "truncated", "huge-int", "lone-surrogate"],
)
def test_a_browser_frame_that_may_carry_audio_but_cannot_be_read_is_unreadable(frame):
    with pytest.raises(UnreadableFrame):
        Meter().observe_browser(frame)


@pytest.mark.parametrize(
    "frame",
    ["[" * 50_000 + "]" * 50_000, '{"type":"x","n":' + "9" * 5000 + "}", "not json", "[1]"],
)
def test_a_frame_without_audio_is_only_counted(frame):
    meter = Meter()
    meter.observe_browser(frame)
    assert (meter.frames_from_browser, meter.audio_seconds_in) == (1, 0.0)


text_or_bytes = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from(["type", "audio", "delta", "config", "item", "usage", "rate"])
                | st.text(max_size=8),
                children,
                max_size=4,
            )
        ),
        max_leaves=20,
    ).map(lambda value: json.dumps(value, allow_nan=True)),
)
event_types = st.sampled_from(
    [
        "input-audio-append",
        "conversation-item-create",
        "session-update",
        "session-start",
        "audio-delta",
        "response-done",
        "session-closed",
    ]
)


@settings(max_examples=300, deadline=None)
@given(frames=st.lists(st.one_of(text_or_bytes, event_types.map(lambda t: f'{{"type":"{t}"'))))
def test_no_frame_crashes_the_meter_or_makes_its_counters_invalid(frames):
    meter = Meter()
    for frame in frames:
        with contextlib.suppress(UnreadableFrame):
            meter.observe_browser(frame)
        assert meter.observe_gateway(frame) in (True, False)
    for value in meter.fields().values():
        assert value >= 0 and not math.isnan(value) and not math.isinf(value)
