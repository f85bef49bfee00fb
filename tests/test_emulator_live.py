"""The emulator's Live route (wire contract section 8), over real sockets.

The mint with ``routeKind: "live"``, the ``live-model`` handshake, and the
normalized Live protocol: ``session-start`` validated as the provider's
``buildSessionConfig`` validates it, audio both ways, ``context-append``,
mute and unmute, and ``session-close`` answered with the final usage.
"""

from __future__ import annotations

import array
import base64
import itertools
import math
import struct
from collections.abc import Iterator
from typing import Any

import pytest

from gateway_realtime.emulator import GatewayEmulator
from tests.test_emulator import HEADERS, KEY, WsClient, assert_contract_error, mint, token_for

LIVE = "openai/gpt-live-1"
MARKER = "ai-gateway-realtime.v1"
PCM24 = {"type": "audio/pcm", "rate": 24000}


@pytest.fixture
def emu() -> Iterator[GatewayEmulator]:
    with GatewayEmulator(api_keys=(KEY,)) as emulator:
        yield emulator


def open_live(emu: GatewayEmulator, model: str = LIVE) -> WsClient:
    token = token_for(emu, model, route_kind="live")
    ws = WsClient(emu, "live", model, [MARKER, f"ai-gateway-auth.{token}"])
    assert ws.status == 101
    assert ws.headers["sec-websocket-protocol"] == MARKER
    return ws


def start(ws: WsClient, config: dict[str, Any] | None = None, model: str = LIVE) -> dict:
    fmt = {"inputAudioFormat": PCM24, "outputAudioFormat": PCM24}
    ws.send_json({"type": "session-start", "modelId": model, "config": config or fmt})
    started = ws.recv_json()
    assert started["type"] == "session-started", started
    return started


def tone(rate: int, seconds: float, amplitude: int = 8000) -> bytes:
    samples = array.array(
        "h",
        (
            int(amplitude * math.sin(2 * math.pi * 300 * n / rate))
            for n in range(int(rate * seconds))
        ),
    )
    return samples.tobytes()


def append(ws: WsClient, audio: bytes, **extra: Any) -> None:
    ws.send_json({"type": "input-audio-append", "audio": base64.b64encode(audio).decode(), **extra})


def speak_a_turn(ws: WsClient, rate: int = 24000, speech: bytes | None = None) -> None:
    """Half a second of speech, then half a second of quiet: the VAD's turn."""
    append(ws, speech if speech is not None else tone(rate, 0.5))
    append(ws, bytes(2 * rate // 2))


def test_a_live_mint_is_recorded_for_the_live_route(emu: GatewayEmulator) -> None:
    response = mint(emu, LIVE, route_kind="live")
    assert response.status_code == 200
    info = emu.issued[response.json()["token"]]
    assert (info.kind, info.model) == ("live", LIVE)
    bad = mint(emu, LIVE, route_kind="conversation")
    body = assert_contract_error(bad, 400, "invalid_request_error")
    assert "'transcription', 'speech' or 'live'" in body["error"]["message"]


def test_the_live_route_takes_only_a_live_secret_for_its_model(emu: GatewayEmulator) -> None:
    realtime = token_for(emu, LIVE)  # minted without routeKind: the realtime route's
    with WsClient(emu, "live", LIVE, [MARKER, f"ai-gateway-auth.{realtime}"]) as ws:
        assert (ws.status, ws.error_type()) == (403, "kind_mismatch")
    live = token_for(emu, LIVE, route_kind="live")
    with WsClient(emu, "live", "openai/gpt-live-1.1", [MARKER, f"ai-gateway-auth.{live}"]) as ws:
        assert (ws.status, ws.error_type()) == (403, "model_mismatch")
    with WsClient(emu, "live", LIVE, ["ai-gateway-speech.v1", f"ai-gateway-auth.{live}"]) as ws:
        assert (ws.status, ws.error_type()) == (400, "invalid_subprotocol")


@pytest.mark.parametrize("model", ["openai/gpt-live-1", "openai/gpt-live-1.1"])
def test_a_live_only_model_is_refused_on_the_realtime_route(
    emu: GatewayEmulator, model: str
) -> None:
    token = token_for(emu, model)
    with WsClient(emu, "realtime", model, [MARKER, f"ai-gateway-auth.{token}"]) as ws:
        assert (ws.status, ws.error_type()) == (400, "invalid_model")
    assert not emu.issued[token].used  # refused before the secret was spent


def test_a_live_conversation_end_to_end(emu: GatewayEmulator) -> None:
    with open_live(emu) as ws:
        started = start(
            ws, {"inputAudioFormat": PCM24, "outputAudioFormat": PCM24, "voice": "marin"}
        )
        assert started["delegationMode"] == "client" and started["sessionId"]

        ws.send_json(
            {
                "type": "context-append",
                "content": "The user is in Paris.",
                "delegationId": None,
                "eventId": "ctx-1",
            }
        )
        assert ws.recv_json() == {
            "type": "command-acknowledged",
            "command": "context-append",
            "clientEventId": "ctx-1",
            "raw": {"source": "ai-gateway-emulator", "type": "ack"},
        }

        speak_a_turn(ws)
        events = ws.recv_until("session-usage")
        heard, *reply, usage = events
        assert heard["type"] == "transcript-fragment" and heard["speaker"] == "user"
        assert heard["delta"] == "(emulated transcript of 0.5 s of audio)"
        assert (heard["startMs"], heard["endMs"]) == (0, 500)
        chunks = [event for event in reply if event["type"] == "audio-chunk"]
        words = [event for event in reply if event["type"] == "transcript-fragment"]
        assert len(chunks) == len(words) > 1
        assert {word["speaker"] for word in words} == {"assistant"}
        text = "".join(word["delta"] for word in words)
        assert text.startswith(f"Emulated Live reply from {LIVE}: you spoke for 0.5 seconds.")
        assert text.endswith("Context: The user is in Paris.")
        # The reply starts after the input it answers, word after word.
        assert words[0]["startMs"] >= 1000
        assert all(a["endMs"] == b["startMs"] for a, b in itertools.pairwise(words))
        # 125 ms of the session's PCM a word: an audible tone, not silence.
        audio = base64.b64decode(chunks[0]["delta"])
        assert len(audio) == 2 * 24000 // 8
        assert any(audio)
        assert usage["usage"] == {"seconds": 1.0}

        ws.send_json({"type": "session-close", "eventId": "bye"})
        closed = ws.recv_json()
        assert closed["type"] == "session-closed"
        assert closed["usage"] == {"seconds": 1.0}
        assert closed["reason"] == "client-requested"
        assert closed["sessionId"] == started["sessionId"]
        assert ws.recv_close() == 1000
        ws.send_frame(0x8, struct.pack("!H", 1000))
    [session] = emu.wait_for_ws_sessions(1)
    assert session.received == [
        "session-start",
        "context-append",
        "input-audio-append",
        "input-audio-append",
        "session-close",
    ]
    assert session.config["voice"] == "marin"
    assert session.close_code == 1000


@pytest.mark.parametrize(
    ("audio_format", "speech", "silence"),
    [
        ({"type": "audio/pcm", "rate": 16000}, tone(16000, 0.5), bytes(16000)),
        # G.711: a loud byte (far from zero) is speech; 0xff / 0xd5 encode zero.
        ({"type": "audio/pcmu", "rate": 8000}, b"\x80" * 4000, b"\xff" * 4000),
        ({"type": "audio/pcma", "rate": 8000}, b"\xaa" * 4000, b"\xd5" * 4000),
    ],
)
def test_every_live_format_is_heard_and_answered_in_kind(
    emu: GatewayEmulator, audio_format: dict, speech: bytes, silence: bytes
) -> None:
    with open_live(emu) as ws:
        start(ws, {"inputAudioFormat": audio_format, "outputAudioFormat": audio_format})
        append(ws, speech)
        append(ws, silence)
        heard, first_chunk, *_ = ws.recv_until("session-usage")
        assert heard["delta"] == "(emulated transcript of 0.5 s of audio)"
        audio = base64.b64decode(first_chunk["delta"])
        per_second = audio_format["rate"] * (2 if audio_format["type"] == "audio/pcm" else 1)
        assert len(audio) == per_second // 8


BAD_CONFIGS = [
    (
        {"inputAudioFormat": {"type": "audio/pcm", "rate": 44100}},
        "audio/pcm at 44100 Hz is not supported",
    ),
    ({"inputAudioFormat": {"type": "audio/pcmu", "rate": 16000}}, "audio/pcmu at 16000 Hz"),
    ({"outputAudioFormat": {"type": "audio/opus", "rate": 24000}}, "audio/opus"),
    ({"inputAudioFormat": {"type": "audio/pcm"}}, "at None Hz"),
    (
        {"inputAudioFormat": PCM24, "outputAudioFormat": {"type": "audio/pcm", "rate": 16000}},
        "the same input and output audio format",
    ),
    ({"turnDetection": {"type": "server-vad"}}, "turnDetection is not a Live session setting"),
    ({"tools": []}, "tools is not a Live session setting"),
    ({"instructions": 3}, "instructions must be a string"),
    ({"providerOptions": {"anthropic": {}}}, "namespace 'anthropic'"),
    (
        {"providerOptions": {"openai": {"temperature": 1}}},
        "openai.temperature is not a Live option",
    ),
    ({"providerOptions": {"openai": {"delegation": {"type": "server"}}}}, "openai.delegation"),
    ({"providerOptions": {"openai": {"voice": {"id": ""}}}}, "openai.voice"),
    ({"providerOptions": {"openai": {"store": "yes"}}}, "openai.store"),
    (
        {
            "providerOptions": {
                "openai": {
                    "input": [
                        {
                            "type": "message",
                            "role": "user",
                            "content": [{"type": "text", "text": "x"}],
                        }
                    ]
                }
            }
        },
        "openai.input",
    ),
    ("not an object", "config must be an object"),
]


@pytest.mark.parametrize(("config", "message"), BAD_CONFIGS)
def test_a_session_start_the_provider_would_refuse_is_refused(
    emu: GatewayEmulator, config: Any, message: str
) -> None:
    with open_live(emu) as ws:
        ws.send_json({"type": "session-start", "modelId": LIVE, "config": config, "eventId": "s1"})
        error = ws.recv_json()
        assert (error["type"], error["code"], error["clientEventId"]) == (
            "error",
            "invalid_session_config",
            "s1",
        )
        assert message in error["message"]
        assert ws.recv_close() == 1008


def test_the_provider_options_it_allows_start_a_session(emu: GatewayEmulator) -> None:
    options = {
        "gateway": {"order": ["openai"]},
        "openai": {
            "delegation": None,
            "store": False,
            "voice": {"id": "marin"},
            "input": [
                {
                    "type": "message",
                    "role": "developer",
                    "content": [{"type": "input_text", "text": "Be brief."}],
                },
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "Hi."}],
                },
            ],
        },
    }
    with open_live(emu) as ws:
        start(ws, {"instructions": "Be kind.", "providerOptions": options})


def test_session_start_must_name_the_sockets_model(emu: GatewayEmulator) -> None:
    with open_live(emu) as ws:
        ws.send_json({"type": "session-start", "modelId": "openai/gpt-live-1.1", "config": {}})
        error = ws.recv_json()
        assert error["code"] == "invalid_session_config" and "modelId" in error["message"]
        assert ws.recv_close() == 1008


def test_anything_else_is_an_error_and_the_session_stays_open(emu: GatewayEmulator) -> None:
    with open_live(emu) as ws:
        ws.send_json({"type": "input-audio-mute", "eventId": "m0"})
        early = ws.recv_json()
        assert (early["code"], early["clientEventId"]) == ("session_not_started", "m0")
        start(ws)
        for event, code in [
            ({"type": "session-start", "modelId": LIVE, "config": {}}, "session_started"),
            ({"type": "response-create"}, "unknown_event"),
            ({"type": "conversation-item-create", "item": {}}, "unknown_event"),
            ({"type": "input-audio-commit"}, "unknown_event"),
            ({"type": "input-audio-append", "audio": "not base64!"}, "invalid_audio"),
            ({"type": "input-audio-append", "audio": 3}, "invalid_audio"),
            ({"type": "input-audio-append", "audio": "", "extra": 1}, "invalid_event"),
            ({"type": "session-close", "eventId": 7}, "invalid_event"),
            ({"type": "context-append", "content": 3, "delegationId": None}, "invalid_context"),
            (
                {"type": "context-append", "content": "x", "delegationId": "dlg_nope"},
                "invalid_context",
            ),
            (
                {
                    "type": "context-append",
                    "content": "x",
                    "delegationId": None,
                    "providerOptions": {"openai": {"channel": "shout"}},
                },
                "invalid_context",
            ),
        ]:
            ws.send_json(event)
            error = ws.recv_json()
            assert (error["type"], error["code"]) == ("error", code), event
        ws.send_frame(0x2, b"\x00\x01")
        assert ws.recv_json()["code"] == "invalid_event"
        ws.send_frame(0x1, b"{not json")
        assert ws.recv_json()["code"] == "invalid_json"
        # Still open: a close gets the final usage.
        ws.send_json({"type": "session-close"})
        assert ws.recv_json()["type"] == "session-closed"
        assert ws.recv_close() == 1000


def test_muted_audio_is_counted_but_not_heard(emu: GatewayEmulator) -> None:
    with open_live(emu) as ws:
        start(ws)
        ws.send_json({"type": "input-audio-mute", "eventId": "m1"})
        ack = ws.recv_json()
        assert (ack["type"], ack["command"], ack["clientEventId"]) == (
            "command-acknowledged",
            "input-audio-mute",
            "m1",
        )
        speak_a_turn(ws)  # no answer while muted
        ws.send_json({"type": "input-audio-unmute", "eventId": "u1"})
        ack = ws.recv_json()
        assert (ack["command"], ack["clientEventId"]) == ("input-audio-unmute", "u1")
        speak_a_turn(ws)
        heard = ws.recv_json()
        assert heard["type"] == "transcript-fragment" and heard["startMs"] == 1000
        ws.recv_until("session-usage")
        ws.send_json({"type": "session-close"})
        assert ws.recv_json()["usage"] == {"seconds": 2.0}


def test_a_client_delegation_is_answered_with_context_append(emu: GatewayEmulator) -> None:
    options = {"openai": {"delegation": {"type": "client"}}}
    with open_live(emu) as ws:
        start(ws, {"providerOptions": options})
        speak_a_turn(ws)
        assert ws.recv_json()["speaker"] == "user"
        created = ws.recv_json()
        assert (created["type"], created["target"]) == ("delegation-created", "client")
        ws.send_json(
            {
                "type": "context-append",
                "content": "It is 12 degrees.",
                "delegationId": created["delegationId"],
                "providerOptions": {"openai": {"channel": "commentary"}},
            }
        )
        assert ws.recv_json()["command"] == "context-append"
        words = [e for e in ws.recv_until("session-usage") if e["type"] == "transcript-fragment"]
        assert "".join(w["delta"] for w in words) == "The delegation answered: It is 12 degrees."
        # A delegation is answered once.
        ws.send_json(
            {"type": "context-append", "content": "again", "delegationId": created["delegationId"]}
        )
        assert ws.recv_json()["code"] == "invalid_context"


def test_a_relay_opens_the_live_route_with_header_auth() -> None:
    with GatewayEmulator(api_keys=(KEY,), allow_api_key_ws=True) as emu:
        extra = [(name, value) for name, value in HEADERS.items()]
        with WsClient(emu, "live", LIVE, None, extra=extra) as ws:
            assert ws.status == 101
            start(ws)
            ws.send_json({"type": "session-close"})
            assert ws.recv_json()["type"] == "session-closed"
        wrong = [*extra[1:], ("Authorization", "Bearer wrong-key")]
        with WsClient(emu, "live", LIVE, None, extra=wrong) as ws:
            assert (ws.status, ws.error_type()) == (401, "authentication_error")


@pytest.mark.parametrize("fault", ["emulator/ws-drop", "emulator/ws-error"])
def test_the_websocket_faults_apply_once_the_session_started(
    emu: GatewayEmulator, fault: str
) -> None:
    with open_live(emu, fault) as ws:
        start(ws, model=fault)
        if fault == "emulator/ws-error":
            assert ws.recv_json()["type"] == "error"
            assert ws.recv_close() == 1011
        else:
            with pytest.raises(ConnectionError):
                ws.recv_frame()
