"""Scripted conversations the emulator speaks on an accepted WebSocket.

Three small scripts, one per route kind, each speaking the wire format the
official clients expect (see the package docstring for the event list):

- realtime: normalized AI SDK realtime events, the ``RealtimeModelV4``
  client and server event unions, one JSON object per text frame;
- transcription: the transcription-stream envelope v1 (``transcription-stream.*``
  client frames, binary audio, ``TranscriptionModelV4StreamPart`` replies);
- speech: the speech-stream envelope v1 (``speech-stream.*`` client frames,
  ``SpeechModelV4StreamPart`` replies with base64 audio).
"""

from __future__ import annotations

import array
import asyncio
import base64
import json
import math
import re
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WebSocketError, WSCloseCode, WSMsgType, web

__all__ = ["WsSession", "run_session"]

JsonObject = dict[str, Any]
#: One data message: text frames arrive as ``str``, binary ones as ``bytes``.
Message = str | bytes

_SOURCE = "ai-gateway-emulator"
_DEFAULT_RATE = 24000
# Mean absolute PCM16 amplitude above which a chunk counts as speech; quiet
# room noise from a real microphone stays well under it.
_SPEECH_LEVEL = 500.0
_TRANSCRIPT_WORDS = (
    "this",
    "is",
    "an",
    "emulated",
    "transcript",
    "from",
    "the",
    "AI",
    "Gateway",
    "emulator",
)


@dataclass
class WsSession:
    """What happened on one WebSocket the emulator accepted."""

    kind: str
    model: str
    token: str
    team: str | None
    subprotocols: list[str]
    started_at: float
    ended_at: float | None = None
    close_code: int | None = None
    received: list[str] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    #: The Live session's ``session-start`` config, once it started.
    config: JsonObject = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        # Dict-style access too, for callers that treat records as dicts.
        return getattr(self, key)


def _words(text: str) -> list[str]:
    # Keep the spaces with the words so that joining the deltas gives the text.
    return re.findall(r"\S+\s*", text) or [text]


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Seconds of audio the emulator speaks for each word of its reply: a whole
# number of the tone's periods, so that the words join without a click.
_WORD_SECONDS = 0.125
_TONE_HZ = 440.0
_TONE_AMPLITUDE = 3000


def _tone(rate: int, seconds: float) -> bytes:
    """A soft sine tone as little-endian PCM16, so a listener hears the reply."""
    samples = array.array(
        "h",
        (
            int(_TONE_AMPLITUDE * math.sin(2 * math.pi * _TONE_HZ * index / rate))
            for index in range(max(1, int(rate * seconds)))
        ),
    )
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()


def _silence(rate: int, seconds: float) -> bytes:
    samples = max(1, int(rate * seconds))
    return b"\x00\x00" * samples


def _pcm_level(chunk: bytes) -> float:
    """Mean absolute amplitude of little-endian PCM16 (0 for odd or empty)."""
    if not chunk or len(chunk) % 2:
        return 0.0
    samples = array.array("h")
    samples.frombytes(chunk)
    if sys.byteorder == "big":
        samples.byteswap()
    return sum(map(abs, samples)) / len(samples)


def _rate_of(audio_format: object) -> int:
    if isinstance(audio_format, dict):
        rate = audio_format.get("rate")
        if isinstance(rate, int | float) and not isinstance(rate, bool) and 8000 <= rate <= 96000:
            return int(rate)
    return _DEFAULT_RATE


class _Closed(Exception):
    """The WebSocket is closed (or closing): the script is over."""


# Codes a peer may put on the wire (RFC 6455 section 7.4); 1005 and 1006
# only ever describe a close locally.
_SENDABLE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011})


def _echoable(code: object) -> bool:
    return isinstance(code, int) and (code in _SENDABLE_CODES or 3000 <= code <= 4999)


class _Script:
    """Shared plumbing: sending JSON, recording, closing, fault models."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        record: WsSession,
        delay: float,
        drop: Callable[[], None],
    ) -> None:
        self.ws = ws
        self.record = record
        self.delay = delay
        self.drop = drop
        self.counter = 0

    def new_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}_emu_{self.counter}"

    async def send(self, event: JsonObject) -> None:
        self.record.sent.append(str(event.get("type")))
        try:
            await self.ws.send_str(json.dumps(event, separators=(",", ":")))
        except ConnectionError as exc:
            raise _Closed from exc

    async def close(self, code: int, reason: str = "") -> None:
        """Start the closing handshake; the session ends with ``code``."""
        self.record.close_code = int(code)
        await self.ws.close(code=code, message=reason.encode("utf-8"))

    async def pause(self) -> None:
        # Lets a demo show streaming; zero (the default) in tests.
        if self.delay > 0:
            await asyncio.sleep(self.delay)

    async def fault(self) -> bool:
        """Apply a WebSocket fault model; True when the session is over."""
        model = self.record.model
        if model == "emulator/ws-drop":
            self.record.close_code = int(WSCloseCode.ABNORMAL_CLOSURE)
            self.drop()
            return True
        if model == "emulator/ws-error":
            await self.send(self.error_event("Emulated upstream failure", "internal_server_error"))
            await self.close(WSCloseCode.INTERNAL_ERROR, "emulated failure")
            return True
        return False

    def error_event(self, message: str, code: str) -> JsonObject:
        raise NotImplementedError

    async def receive(self) -> Message:
        """The next data message; raises ``_Closed`` once the peer closes."""
        message = await self.ws.receive()
        if message.type is WSMsgType.TEXT or message.type is WSMsgType.BINARY:
            data: Message = message.data
            return data
        if message.type is WSMsgType.CLOSE:
            # Answer the peer's close frame with its own code, as RFC 6455
            # section 5.5.1 suggests.
            code = message.data if _echoable(message.data) else WSCloseCode.OK
            self.record.close_code = int(code)
            await self.ws.close(code=code, drain=False)
        elif message.type is WSMsgType.ERROR and isinstance(message.data, WebSocketError):
            # aiohttp has already closed with the protocol error's code.
            self.record.close_code = int(message.data.code)
        raise _Closed

    async def run(self) -> None:
        raise NotImplementedError


class _EventScript(_Script):
    """Scripts that speak one JSON event per text frame (realtime and Live).

    Every server event carries a ``raw``; a frame that is not a JSON object
    with a string ``type`` gets an ``error`` event and the session goes on.
    """

    def error_event(self, message: str, code: str, client_event_id: object = None) -> JsonObject:
        event: JsonObject = {"type": "error", "message": message, "code": code}
        if isinstance(client_event_id, str):
            event["clientEventId"] = client_event_id
        event["raw"] = {"source": _SOURCE, "type": "error"}
        return event

    def raw(self, name: str, **extra: Any) -> JsonObject:
        return {"source": _SOURCE, "type": name, **extra}

    async def opening(self) -> bool:
        """What the script sends first; True when that already ended the session."""
        return False

    async def handle(self, event: JsonObject) -> bool:
        """Answer one client event; True when the session is over."""
        raise NotImplementedError

    async def run(self) -> None:
        if await self.opening():
            return
        while True:
            message = await self.receive()
            if not isinstance(message, str):
                self.record.received.append("binary")
                await self.send(self.error_event("Binary frames are not accepted", "invalid_event"))
                continue
            try:
                event = json.loads(message)
            except ValueError:
                self.record.received.append("invalid-json")
                await self.send(self.error_event("Invalid JSON", "invalid_json"))
                continue
            if not isinstance(event, dict) or not isinstance(event.get("type"), str):
                self.record.received.append("invalid-event")
                await self.send(self.error_event("Event must have a string type", "invalid_event"))
                continue
            self.record.received.append(event["type"])
            if await self.handle(event):
                return


class _RealtimeScript(_EventScript):
    """Normalized AI SDK realtime events (``@ai-sdk/provider`` RealtimeModelV4).

    The ``ai`` browser session sends ``session-update`` on open and turns
    ``connected`` on ``session-created``/``session-updated``; text and audio
    replies are reduced from ``text-delta``/``audio-transcript-delta`` keyed
    by ``itemId``.
    """

    def __init__(
        self,
        ws: web.WebSocketResponse,
        record: WsSession,
        delay: float,
        drop: Callable[[], None],
    ) -> None:
        super().__init__(ws, record, delay, drop)
        self.session_id = f"sess_emu_{secrets.token_hex(8)}"
        self.started = time.monotonic()
        self.config: JsonObject = {}
        self.pending_input: list[str] = []
        self.pending_tool: tuple[str, str] | None = None
        self.audio = bytearray()
        self.speech_item: str | None = None
        self.silent_seconds = 0.0

    async def opening(self) -> bool:
        await self.send(
            {"type": "session-created", "sessionId": self.session_id, "raw": self.raw("session")}
        )
        return await self.fault()

    async def handle(self, event: JsonObject) -> bool:
        kind = event["type"]
        handler: Callable[[JsonObject], Any] | None = {
            "session-update": self.on_session_update,
            "session-start": self.on_session_start,
            "session-close": self.on_session_close,
            "conversation-item-create": self.on_item_create,
            "response-create": self.on_response_create,
            "response-cancel": self.on_ignored,
            "input-audio-append": self.on_audio_append,
            "input-audio-commit": self.on_audio_commit,
            "input-audio-clear": self.on_audio_clear,
            "conversation-item-truncate": self.on_ignored,
            "input-audio-mute": self.on_acknowledged,
            "input-audio-unmute": self.on_acknowledged,
            "context-append": self.on_acknowledged,
        }.get(kind)
        if handler is None:
            await self.send(
                self.error_event(
                    f"Unknown event type {kind!r}", "unknown_event", event.get("eventId")
                )
            )
            return False
        return bool(await handler(event))

    async def on_ignored(self, event: JsonObject) -> None:
        return None

    async def on_acknowledged(self, event: JsonObject) -> None:
        ack: JsonObject = {"type": "command-acknowledged", "command": event["type"]}
        if isinstance(event.get("eventId"), str):
            ack["clientEventId"] = event["eventId"]
        ack["raw"] = self.raw("ack")
        await self.send(ack)

    async def on_session_update(self, event: JsonObject) -> None:
        config = event.get("config")
        if not isinstance(config, dict):
            await self.send(
                self.error_event("config must be an object", "invalid_config", event.get("eventId"))
            )
            return
        self.config.update(config)
        await self.send({"type": "session-updated", "raw": self.raw("session", config=self.config)})

    async def on_session_start(self, event: JsonObject) -> None:
        config = event.get("config")
        if isinstance(config, dict):
            self.config.update(config)
        await self.send(
            {
                "type": "session-started",
                "sessionId": self.session_id,
                "delegationMode": "client",
                "raw": self.raw("session"),
            }
        )

    async def on_session_close(self, event: JsonObject) -> bool:
        seconds = round(time.monotonic() - self.started, 3)
        await self.send(
            {
                "type": "session-closed",
                "sessionId": self.session_id,
                "usage": {"seconds": seconds},
                "reason": "client-requested",
                "raw": self.raw("session"),
            }
        )
        await self.close(WSCloseCode.OK)
        return True

    async def on_item_create(self, event: JsonObject) -> None:
        item = event.get("item")
        if not isinstance(item, dict):
            await self.send(self.error_event("item must be an object", "invalid_item"))
            return
        item_type = item.get("type")
        if item_type == "text-message" and isinstance(item.get("text"), str):
            self.pending_input.append(item["text"])
        elif item_type == "audio-message" and isinstance(item.get("audio"), str):
            self.pending_input.append(self.describe_audio(len(self._b64(item["audio"]))))
        elif item_type == "function-call-output" and isinstance(item.get("output"), str):
            self.pending_tool = (str(item.get("name") or "tool"), item["output"])
        else:
            await self.send(self.error_event("Unsupported conversation item", "invalid_item"))
            return
        item_id = self.new_id("item")
        await self.send(
            {
                "type": "conversation-item-added",
                "itemId": item_id,
                "item": item,
                "raw": self.raw("conversation.item"),
            }
        )

    @staticmethod
    def _b64(data: str) -> bytes:
        try:
            return base64.b64decode(data, validate=False)
        except ValueError:
            return b""

    def describe_audio(self, size: int) -> str:
        rate = _rate_of(self.config.get("inputAudioFormat"))
        return f"(emulated transcript of {size / (2 * rate):.1f} s of audio)"

    def vad_enabled(self) -> bool:
        detection = self.config.get("turnDetection", {})
        if detection is None:
            return False
        if isinstance(detection, dict) and detection.get("type") == "disabled":
            return False
        audio_format = self.config.get("inputAudioFormat")
        return not isinstance(audio_format, dict) or audio_format.get("type") in (None, "audio/pcm")

    async def on_audio_append(self, event: JsonObject) -> None:
        audio = event.get("audio")
        if not isinstance(audio, str):
            await self.send(self.error_event("audio must be a base64 string", "invalid_audio"))
            return
        chunk = self._b64(audio)
        self.audio.extend(chunk)
        if not self.vad_enabled() or not chunk:
            return
        # A tiny energy VAD: loud chunks start a turn, then enough trailing
        # silence ends it and the emulator answers, as a server VAD would.
        rate = _rate_of(self.config.get("inputAudioFormat"))
        seconds = len(chunk) / (2 * rate)
        if _pcm_level(chunk) >= _SPEECH_LEVEL:
            self.silent_seconds = 0.0
            if self.speech_item is None:
                self.speech_item = self.new_id("item")
                await self.send(
                    {"type": "speech-started", "itemId": self.speech_item, "raw": self.raw("vad")}
                )
            return
        if self.speech_item is None:
            # Silence before anyone spoke is not kept as input.
            self.audio.clear()
            return
        self.silent_seconds += seconds
        detection = self.config.get("turnDetection")
        silence_ms = 500.0
        if isinstance(detection, dict) and isinstance(detection.get("silenceDurationMs"), int):
            silence_ms = float(detection["silenceDurationMs"])
        if self.silent_seconds * 1000 >= silence_ms:
            item_id = self.speech_item
            self.speech_item = None
            self.silent_seconds = 0.0
            await self.send({"type": "speech-stopped", "itemId": item_id, "raw": self.raw("vad")})
            await self.commit(item_id)
            await self.respond({})

    async def on_audio_commit(self, event: JsonObject) -> None:
        if not self.audio:
            await self.send(
                self.error_event("The input audio buffer is empty", "input_audio_buffer_empty")
            )
            return
        item_id = self.speech_item or self.new_id("item")
        self.speech_item = None
        self.silent_seconds = 0.0
        await self.commit(item_id)

    async def on_audio_clear(self, event: JsonObject) -> None:
        self.audio.clear()
        self.speech_item = None
        self.silent_seconds = 0.0

    async def commit(self, item_id: str) -> None:
        transcript = self.describe_audio(len(self.audio))
        self.audio.clear()
        self.pending_input.append(transcript)
        await self.send({"type": "audio-committed", "itemId": item_id, "raw": self.raw("audio")})
        await self.send(
            {
                "type": "input-transcription-completed",
                "itemId": item_id,
                "transcript": transcript,
                "raw": self.raw("transcription"),
            }
        )

    async def on_response_create(self, event: JsonObject) -> None:
        options = event.get("options")
        await self.respond(options if isinstance(options, dict) else {})

    def find_tool(self, text: str) -> JsonObject | None:
        tools = self.config.get("tools")
        if not isinstance(tools, list):
            return None
        lowered = text.lower()
        for tool in tools:
            if not isinstance(tool, dict):
                continue
            found: JsonObject = tool
            name = found.get("name")
            if isinstance(name, str) and name and name.lower() in lowered:
                return found
        return None

    @staticmethod
    def tool_arguments(tool: JsonObject) -> str:
        # Fill the required parameters with placeholder values of their type.
        params = tool.get("parameters")
        args: JsonObject = {}
        if isinstance(params, dict) and isinstance(params.get("properties"), dict):
            required = params.get("required")
            names = required if isinstance(required, list) else list(params["properties"])
            for name in names:
                spec = params["properties"].get(name)
                kind = spec.get("type") if isinstance(spec, dict) else None
                placeholders: dict[object, object] = {
                    "number": 1,
                    "integer": 1,
                    "boolean": True,
                    "array": [],
                    "object": {},
                }
                args[str(name)] = placeholders.get(kind, "emulator")
        return json.dumps(args, separators=(",", ":"))

    async def respond(self, options: JsonObject) -> None:
        response_id = self.new_id("resp")
        item_id = self.new_id("item")
        user_text = " ".join(self.pending_input)
        self.pending_input.clear()
        tool_result = self.pending_tool
        self.pending_tool = None
        await self.send(
            {"type": "response-created", "responseId": response_id, "raw": self.raw("response")}
        )
        ids = {"responseId": response_id, "itemId": item_id}
        await self.send({"type": "output-item-added", **ids, "raw": self.raw("item")})
        tool = None if tool_result else self.find_tool(user_text)
        if tool is not None:
            await self.call_tool(ids, tool)
            return
        if tool_result is not None:
            reply = f"The {tool_result[0]} tool returned {tool_result[1]}."
        elif user_text:
            reply = f"Emulated reply from {self.record.model}: you said {user_text[:200]!r}."
        else:
            reply = f"Hello from the AI Gateway emulator ({self.record.model})."
        modalities = options.get("modalities", self.config.get("outputModalities"))
        audio = isinstance(modalities, list) and "audio" in modalities
        await self.send({"type": "content-part-added", **ids, "raw": self.raw("part")})
        rate = _rate_of(self.config.get("outputAudioFormat"))
        for word in _words(reply):
            await self.pause()
            if audio:
                # A soft tone a word, so that a listener hears the reply.
                chunk = base64.b64encode(_tone(rate, _WORD_SECONDS)).decode("ascii")
                await self.send(
                    {"type": "audio-delta", **ids, "delta": chunk, "raw": self.raw("audio")}
                )
                await self.send(
                    {
                        "type": "audio-transcript-delta",
                        **ids,
                        "delta": word,
                        "raw": self.raw("text"),
                    }
                )
            else:
                await self.send(
                    {"type": "text-delta", **ids, "delta": word, "raw": self.raw("text")}
                )
        if audio:
            await self.send({"type": "audio-done", **ids, "raw": self.raw("audio")})
            await self.send(
                {
                    "type": "audio-transcript-done",
                    **ids,
                    "transcript": reply,
                    "raw": self.raw("text"),
                }
            )
        else:
            await self.send({"type": "text-done", **ids, "text": reply, "raw": self.raw("text")})
        await self.send({"type": "content-part-done", **ids, "raw": self.raw("part")})
        await self.finish_response(ids, len(user_text), len(reply))

    async def call_tool(self, ids: dict[str, str], tool: JsonObject) -> None:
        call_id = self.new_id("call")
        arguments = self.tool_arguments(tool)
        half = len(arguments) // 2
        for piece in (arguments[:half], arguments[half:]):
            await self.pause()
            await self.send(
                {
                    "type": "function-call-arguments-delta",
                    **ids,
                    "callId": call_id,
                    "delta": piece,
                    "raw": self.raw("function_call"),
                }
            )
        await self.send(
            {
                "type": "function-call-arguments-done",
                **ids,
                "callId": call_id,
                "name": tool["name"],
                "arguments": arguments,
                "raw": self.raw("function_call"),
            }
        )
        await self.finish_response(ids, 0, len(arguments))

    async def finish_response(self, ids: dict[str, str], chars_in: int, chars_out: int) -> None:
        await self.send({"type": "output-item-done", **ids, "raw": self.raw("item")})
        # Roughly four characters a token, so that usage is plausible.
        usage = {"inputTokens": chars_in // 4 + 1, "outputTokens": chars_out // 4 + 1}
        await self.send(
            {
                "type": "response-done",
                "responseId": ids["responseId"],
                "status": "completed",
                "usage": usage,
                "raw": self.raw("response"),
            }
        )


class _StreamScript(_Script):
    """Common part of the transcription and speech stream envelopes."""

    prefix = ""

    def error_event(self, message: str, code: str) -> JsonObject:
        # Envelope rule 4: servers may send `{type, message}` error payloads.
        return {"type": "error", "error": {"type": code, "message": message}}

    async def refuse(self, message: str) -> None:
        # Envelope rule 5: an error part is terminal, then a non-1000 close.
        await self.send(self.error_event(message, "invalid_request_error"))
        await self.close(WSCloseCode.POLICY_VIOLATION, "invalid frame")

    async def begin(self) -> JsonObject | None:
        """Read and check the start frame; answer stream-start/metadata."""
        message = await self.receive()
        frame = self.parse(message)
        if frame is None or frame.get("type") != f"{self.prefix}.start":
            await self.refuse(f"The first frame must be a {self.prefix}.start text frame")
            return None
        await self.send({"type": "stream-start", "warnings": []})
        await self.send(
            {"type": "response-metadata", "timestamp": _now_iso(), "modelId": self.record.model}
        )
        return frame

    def parse(self, message: Message) -> JsonObject | None:
        if not isinstance(message, str):
            self.record.received.append("binary")
            return None
        try:
            frame = json.loads(message)
        except ValueError:
            self.record.received.append("invalid-json")
            return None
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            self.record.received.append("invalid-frame")
            return None
        self.record.received.append(frame["type"])
        return frame


class _TranscriptionScript(_StreamScript):
    """Transcription-stream envelope v1: one transcript word per audio frame."""

    prefix = "transcription-stream"

    async def run(self) -> None:
        start = await self.begin()
        if start is None or await self.fault():
            return
        audio_format = start.get("inputAudioFormat")
        if not isinstance(audio_format, dict) or not isinstance(audio_format.get("type"), str):
            await self.refuse("start frame must have an inputAudioFormat object with a string type")
            return
        pcm = audio_format.get("type") == "audio/pcm"
        rate = _rate_of(audio_format)
        received = 0
        words: list[str] = []
        while True:
            message = await self.receive()
            if isinstance(message, bytes):
                self.record.received.append("binary")
                received += len(message)
                word = _TRANSCRIPT_WORDS[len(words) % len(_TRANSCRIPT_WORDS)]
                delta = word if not words else " " + word
                words.append(word)
                await self.pause()
                await self.send({"type": "transcript-delta", "id": "segment_0", "delta": delta})
                continue
            frame = self.parse(message)
            if frame is None:
                await self.refuse("Text frames must be JSON objects with a string type")
                return
            if frame["type"] != f"{self.prefix}.audio-done":
                continue  # Envelope rule 6: unknown frames are ignored.
            text = " ".join(words)
            seconds = round(received / (2 * rate), 3) if pcm else 0.0
            segments = [{"text": text, "startSecond": 0.0, "endSecond": seconds}] if text else []
            await self.send(
                {
                    "type": "transcript-final",
                    "id": "segment_0",
                    "text": text,
                    "startSecond": 0.0,
                    "endSecond": seconds,
                }
            )
            finish: JsonObject = {
                "type": "finish",
                "text": text,
                "segments": segments,
                "language": "en",
                "usage": {"audioBytes": received},
            }
            if pcm:
                finish["durationInSeconds"] = seconds
            await self.send(finish)
            await self.close(WSCloseCode.OK)
            return


class _SpeechScript(_StreamScript):
    """Speech-stream envelope v1: a little silence per input text delta."""

    prefix = "speech-stream"

    async def run(self) -> None:
        start = await self.begin()
        if start is None or await self.fault():
            return
        output_format = start.get("outputFormat")
        audio_format: JsonObject = {"type": "audio/pcm", "rate": _DEFAULT_RATE}
        if isinstance(output_format, dict) and isinstance(output_format.get("type"), str):
            audio_format = {"type": output_format["type"], "rate": _rate_of(output_format)}
        characters = 0
        while True:
            frame = self.parse(await self.receive())
            if frame is None:
                await self.refuse("Frames must be JSON text objects with a string type")
                return
            if frame["type"] == f"{self.prefix}.text-delta":
                delta = frame.get("delta")
                if not isinstance(delta, str):
                    await self.refuse("text-delta frame must have a string delta")
                    return
                if not delta:
                    continue  # Empty deltas carry only metadata (rule 2).
                characters += len(delta)
                # About 10 ms of silence a character, at most a quarter second.
                seconds = min(0.25, 0.01 * len(delta))
                audio = base64.b64encode(_silence(int(audio_format["rate"]), seconds))
                await self.pause()
                await self.send(
                    {
                        "type": "audio",
                        "id": "audio_0",
                        "audio": audio.decode("ascii"),
                        "audioFormat": audio_format,
                    }
                )
            elif frame["type"] == f"{self.prefix}.text-done":
                await self.send({"type": "finish", "usage": {"inputCharacters": characters}})
                await self.close(WSCloseCode.OK)
                return


# The Live route (wire contract section 8): what the provider's
# ``buildSessionConfig`` and ``serializeClientEvent`` let through, checked
# here as the Gateway would check it.
_LIVE_FORMATS = frozenset(
    {("audio/pcm", 16000), ("audio/pcm", 24000), ("audio/pcma", 8000), ("audio/pcmu", 8000)}
)
_LIVE_SETTINGS = frozenset(
    {"instructions", "voice", "inputAudioFormat", "outputAudioFormat", "providerOptions"}
)
_LIVE_OPENAI_OPTIONS = frozenset({"delegation", "input", "store", "voice"})
_LIVE_CONTEXT_CHANNELS = frozenset({"commentary", "instructions", "thinking"})
_LIVE_MAX_INPUT_MESSAGES = 128
_LIVE_EVENT_KEYS = {
    "session-start": frozenset({"modelId", "config"}),
    "session-close": frozenset(),
    "input-audio-mute": frozenset(),
    "input-audio-unmute": frozenset(),
    "input-audio-append": frozenset({"audio"}),
    "context-append": frozenset({"content", "delegationId", "providerOptions"}),
}


def _g711_levels(law: str) -> tuple[int, ...]:
    """|linear PCM16| of each G.711 byte (ITU-T G.711 expansion)."""
    levels = []
    for byte in range(256):
        if law == "mu":
            value = ~byte & 0xFF
            magnitude = ((((value & 0x0F) << 3) + 0x84) << ((value >> 4) & 7)) - 0x84
            levels.append(magnitude << 2)
        else:
            value = byte ^ 0x55
            exponent = (value >> 4) & 7
            mantissa = (value & 0x0F) << 4
            magnitude = mantissa + 8 if exponent == 0 else (mantissa + 0x108) << (exponent - 1)
            levels.append(magnitude << 3)
    return tuple(levels)


_G711_LEVELS = {"audio/pcmu": _g711_levels("mu"), "audio/pcma": _g711_levels("a")}
# The byte each G.711 law encodes zero as.
_G711_SILENCE = {"audio/pcmu": b"\xff", "audio/pcma": b"\xd5"}


def _live_format_error(name: str, value: object) -> str | None:
    if not isinstance(value, dict) or set(value) - {"type", "rate"}:
        return f"{name} must be an object with type and rate"
    if (value.get("type"), value.get("rate")) not in _LIVE_FORMATS:
        return (
            f"{name} {value.get('type')} at {value.get('rate')} Hz is not supported; use "
            "audio/pcm at 16000 or 24000 Hz, or audio/pcma or audio/pcmu at 8000 Hz"
        )
    return None


def _exact_keys(value: object, keys: set[str]) -> bool:
    return isinstance(value, dict) and set(value) == keys


def _live_input_message(message: object) -> bool:
    if not _exact_keys(message, {"type", "role", "content"}):
        return False
    assert isinstance(message, dict)
    content = message["content"]
    if message["type"] != "message" or not isinstance(content, list) or len(content) != 1:
        return False
    part = content[0]
    if not _exact_keys(part, {"type", "text"}) or not isinstance(part["text"], str):
        return False
    if message["role"] == "assistant":
        return part["type"] in ("text", "output_text")
    return message["role"] in ("developer", "user") and part["type"] == "input_text"


def _live_provider_options_error(options: object) -> str | None:
    if not isinstance(options, dict):
        return "providerOptions must be an object"
    for namespace, value in options.items():
        if namespace not in ("gateway", "openai"):
            return f"providerOptions namespace {namespace!r} is not supported on Live"
        if not isinstance(value, dict):
            return f"providerOptions.{namespace} must be an object"
    for key, value in options.get("openai", {}).items():
        if key not in _LIVE_OPENAI_OPTIONS:
            return f"providerOptions.openai.{key} is not a Live option"
        valid = {
            "delegation": value is None or value == {"type": "client"},
            "store": isinstance(value, bool),
            "voice": _exact_keys(value, {"id"})
            and isinstance(value["id"], str)
            and bool(value["id"]),
            "input": isinstance(value, list)
            and len(value) <= _LIVE_MAX_INPUT_MESSAGES
            and all(map(_live_input_message, value)),
        }[key]
        if not valid:
            return f"providerOptions.openai.{key} is not valid"
    return None


def _live_config_error(config: object) -> str | None:
    """Why a ``session-start`` config is refused, or None when it is valid."""
    if not isinstance(config, dict):
        return "config must be an object"
    for key, value in config.items():
        if key not in _LIVE_SETTINGS:
            return f"{key} is not a Live session setting"
        if key in ("instructions", "voice") and not isinstance(value, str):
            return f"{key} must be a string"
    for name in ("inputAudioFormat", "outputAudioFormat"):
        if name in config and (problem := _live_format_error(name, config[name])):
            return problem
    formats = [config[name] for name in ("inputAudioFormat", "outputAudioFormat") if name in config]
    if len(formats) == 2 and formats[0] != formats[1]:
        return "Live needs the same input and output audio format"
    if "providerOptions" in config:
        return _live_provider_options_error(config["providerOptions"])
    return None


class _LiveScript(_EventScript):
    """The Live route's normalized protocol: one continuous conversation.

    Nothing is sent until the client's ``session-start``; then audio flows
    both ways. A small energy VAD ends the user's turn after half a second
    of quiet, and the emulator answers at once with ``transcript-fragment``
    events for both speakers and ``audio-chunk`` audio in the session's
    format (a soft tone for PCM), then a cumulative ``session-usage``.
    ``session-close`` is answered with ``session-closed`` and the session's
    usage: the seconds of input audio it received.
    """

    def __init__(
        self,
        ws: web.WebSocketResponse,
        record: WsSession,
        delay: float,
        drop: Callable[[], None],
    ) -> None:
        super().__init__(ws, record, delay, drop)
        self.session_id = f"sess_emu_{secrets.token_hex(8)}"
        self.started = False
        self.audio_format: JsonObject = {"type": "audio/pcm", "rate": _DEFAULT_RATE}
        self.client_delegation = False
        self.muted = False
        self.input_seconds = 0.0
        self.output_ms = 0
        self.turn_seconds = 0.0
        self.turn_start_ms: int | None = None
        self.silent_seconds = 0.0
        self.context: list[str] = []
        self.delegations: set[str] = set()

    @property
    def bytes_per_second(self) -> int:
        rate = int(self.audio_format["rate"])
        return 2 * rate if self.audio_format["type"] == "audio/pcm" else rate

    async def handle(self, event: JsonObject) -> bool:
        kind = event["type"]
        event_id = event.get("eventId")
        allowed = _LIVE_EVENT_KEYS.get(kind)
        if allowed is None:
            await self.send(
                self.error_event(f"{kind!r} is not a Live client event", "unknown_event", event_id)
            )
            return False
        extra = sorted(set(event) - allowed - {"type", "eventId"})
        if extra or ("eventId" in event and not isinstance(event_id, str)):
            problem = f"unknown field {extra[0]!r}" if extra else "eventId must be a string"
            await self.send(self.error_event(f"{kind}: {problem}", "invalid_event", event_id))
            return False
        if kind == "session-start":
            return await self.on_session_start(event)
        if not self.started:
            await self.send(
                self.error_event(f"{kind} before session-start", "session_not_started", event_id)
            )
            return False
        if kind == "session-close":
            return await self.on_session_close()
        if kind == "input-audio-append":
            await self.on_audio(event)
        elif kind == "context-append":
            await self.on_context(event)
        else:
            self.muted = kind == "input-audio-mute"
            if self.muted:
                self.end_turn_unheard()
            await self.acknowledge(kind, event_id)
        return False

    async def acknowledge(self, command: str, event_id: object) -> None:
        ack: JsonObject = {"type": "command-acknowledged", "command": command}
        if isinstance(event_id, str):
            ack["clientEventId"] = event_id
        ack["raw"] = self.raw("ack")
        await self.send(ack)

    async def on_session_start(self, event: JsonObject) -> bool:
        event_id = event.get("eventId")
        if self.started:
            await self.send(
                self.error_event("The session has already started", "session_started", event_id)
            )
            return False
        problem: str | None
        if event.get("modelId") != self.record.model:
            problem = "session-start modelId must be the model this socket was opened for"
        else:
            problem = _live_config_error(event.get("config"))
        if problem is not None:
            # The session cannot start: say why, then close as a policy refusal.
            await self.send(self.error_event(problem, "invalid_session_config", event_id))
            await self.close(WSCloseCode.POLICY_VIOLATION, "invalid session-start")
            return True
        config: JsonObject = event["config"]
        chosen = config.get("inputAudioFormat") or config.get("outputAudioFormat")
        if chosen:
            self.audio_format = dict(chosen)
        openai = config.get("providerOptions", {}).get("openai", {})
        self.client_delegation = openai.get("delegation") == {"type": "client"}
        self.started = True
        self.record.config = dict(config)
        await self.send(
            {
                "type": "session-started",
                "sessionId": self.session_id,
                "delegationMode": "client",
                "raw": self.raw("session"),
            }
        )
        return await self.fault()

    async def on_session_close(self) -> bool:
        await self.send(
            {
                "type": "session-closed",
                "sessionId": self.session_id,
                "usage": {"seconds": round(self.input_seconds, 3)},
                "reason": "client-requested",
                "raw": self.raw("session"),
            }
        )
        await self.close(WSCloseCode.OK)
        return True

    async def on_context(self, event: JsonObject) -> None:
        event_id = event.get("eventId")
        content = event.get("content")
        delegation = event.get("delegationId")
        options = event.get("providerOptions")
        problem = None
        if not isinstance(content, str):
            problem = "content must be a string"
        elif delegation is not None and not isinstance(delegation, str):
            problem = "delegationId must be a string or null"
        elif isinstance(delegation, str) and delegation not in self.delegations:
            problem = f"Unknown delegation {delegation!r}"
        elif options is not None and not (
            isinstance(options, dict)
            and all(
                name == "openai"
                and isinstance(value, dict)
                and all(
                    key == "channel" and channel in _LIVE_CONTEXT_CHANNELS
                    for key, channel in value.items()
                )
                for name, value in options.items()
            )
        ):
            problem = (
                "providerOptions may only hold openai.channel (commentary, instructions, thinking)"
            )
        if problem is not None:
            await self.send(self.error_event(problem, "invalid_context", event_id))
            return
        assert isinstance(content, str)
        await self.acknowledge("context-append", event_id)
        if isinstance(delegation, str):
            self.delegations.discard(delegation)
            await self.speak(f"The delegation answered: {content[:200]}")
        else:
            self.context.append(content)

    def end_turn_unheard(self) -> None:
        self.turn_seconds = 0.0
        self.turn_start_ms = None
        self.silent_seconds = 0.0

    def level(self, chunk: bytes) -> float:
        table = _G711_LEVELS.get(str(self.audio_format["type"]))
        if table is None:
            return _pcm_level(chunk)
        return sum(table[byte] for byte in chunk) / len(chunk)

    async def on_audio(self, event: JsonObject) -> None:
        audio = event.get("audio")
        try:
            chunk = base64.b64decode(audio, validate=True) if isinstance(audio, str) else None
        except ValueError:
            chunk = None
        if chunk is None:
            await self.send(
                self.error_event("audio must be base64", "invalid_audio", event.get("eventId"))
            )
            return
        if not chunk:
            return
        seconds = len(chunk) / self.bytes_per_second
        at_ms = round(self.input_seconds * 1000)
        self.input_seconds += seconds
        if self.muted:
            return
        if self.level(chunk) >= _SPEECH_LEVEL:
            if self.turn_start_ms is None:
                self.turn_start_ms = at_ms
            self.turn_seconds += seconds + self.silent_seconds
            self.silent_seconds = 0.0
            return
        if self.turn_start_ms is None:
            return
        self.silent_seconds += seconds
        if self.silent_seconds < 0.5:
            return
        start_ms, spoken = self.turn_start_ms, self.turn_seconds
        self.end_turn_unheard()
        heard = f"(emulated transcript of {spoken:.1f} s of audio)"
        await self.send(
            {
                "type": "transcript-fragment",
                "speaker": "user",
                "delta": heard,
                "startMs": start_ms,
                "endMs": start_ms + round(spoken * 1000),
                "raw": self.raw("transcript"),
            }
        )
        if self.client_delegation:
            delegation = self.new_id("dlg")
            self.delegations.add(delegation)
            await self.send(
                {
                    "type": "delegation-created",
                    "delegationId": delegation,
                    "target": "client",
                    "offsetMs": start_ms,
                    "raw": self.raw("delegation"),
                }
            )
            return
        reply = f"Emulated Live reply from {self.record.model}: you spoke for {spoken:.1f} seconds."
        if self.context:
            reply += f" Context: {' '.join(self.context)[:200]}"
            self.context.clear()
        await self.speak(reply)

    def output_audio(self, seconds: float) -> bytes:
        silence = _G711_SILENCE.get(str(self.audio_format["type"]))
        if silence is not None:
            return silence * max(1, int(self.audio_format["rate"] * seconds))
        return _tone(int(self.audio_format["rate"]), seconds)

    async def speak(self, text: str) -> None:
        """Say ``text``: per word, its audio and its transcript fragment."""
        word_ms = round(_WORD_SECONDS * 1000)
        # The reply starts no earlier than the input it answers.
        self.output_ms = max(self.output_ms, round(self.input_seconds * 1000))
        chunk = base64.b64encode(self.output_audio(_WORD_SECONDS)).decode("ascii")
        for word in _words(text):
            await self.pause()
            await self.send({"type": "audio-chunk", "delta": chunk, "raw": self.raw("audio")})
            await self.send(
                {
                    "type": "transcript-fragment",
                    "speaker": "assistant",
                    "delta": word,
                    "startMs": self.output_ms,
                    "endMs": self.output_ms + word_ms,
                    "raw": self.raw("transcript"),
                }
            )
            self.output_ms += word_ms
        await self.send(
            {
                "type": "session-usage",
                "usage": {"seconds": round(self.input_seconds, 3)},
                "raw": self.raw("usage"),
            }
        )


_SCRIPTS: dict[str, type[_Script]] = {
    "realtime": _RealtimeScript,
    "live": _LiveScript,
    "transcription": _TranscriptionScript,
    "speech": _SpeechScript,
}


async def run_session(
    ws: web.WebSocketResponse,
    record: WsSession,
    *,
    delay: float = 0.0,
    drop: Callable[[], None],
) -> None:
    """Run the kind's script until either side closes.

    ``drop`` ends the connection without a close frame (the ``ws-drop`` fault).
    """
    script = _SCRIPTS[record.kind](ws, record, delay, drop)
    try:
        await script.run()
    except _Closed:
        pass
    finally:
        if record.close_code is None and ws.close_code is not None:
            record.close_code = int(ws.close_code)
        record.ended_at = time.time()
