"""Metering a relayed session from its frames: frames, bytes, audio seconds and tokens.

The budget (``RELAY_BUDGET``) is spent by what this meter counts, so it
counts audio on every path the Gateway accepts it from the browser, in the
format the session set, and never crashes on a frame it cannot read:

- browser audio: ``input-audio-append`` (``audio``), and any ``audio``
  string inside a ``conversation-item-create`` item (``audio-message``);
- formats: ``inputAudioFormat`` / ``outputAudioFormat`` in the ``config`` of
  ``session-update`` and ``session-start``. ``audio/pcm`` is 16-bit, so
  ``2 * rate`` bytes a second (``rate`` absent: the AI SDK's 24000 Hz);
  ``audio/pcmu`` and ``audio/pcma`` (G.711) are one byte a sample at
  8000 Hz. A format the meter does not know, or a rate it cannot trust,
  is metered at the fewest bytes a second any format takes (8000): the
  most seconds the bytes could be. Binary frames from the browser (the
  protocol is JSON text; the AI SDK sends none) are metered the same way;
- Gateway audio: ``audio-delta`` (``delta``) in the output format; tokens
  from ``usage.inputTokens`` / ``usage.outputTokens`` of ``response-done``,
  and of ``session-closed`` (the Live route's final usage).

A browser text frame that may carry metered content (it names a metered
event, or holds a JSON escape that could hide one) but cannot be read
(malformed, nested too deeply for the parser, not UTF-8) raises
``UnreadableFrame``: the relay refuses it rather than relay audio it did not
count. A Gateway frame the meter cannot read is relayed uncounted.

Cheap by design: a frame that names no metered event is not parsed, and the
exact shapes the AI SDK and the Gateway send audio in are measured from the
base64 text's length, without parsing or decoding it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

#: PCM16 sample rate when a format names none (the AI SDK's default).
DEFAULT_PCM_RATE = 24000
#: Bytes a second of G.711 (µ-law, a-law): 8000 one-byte samples.
G711_BYTES_PER_SECOND = 8000
#: The fewest bytes a second of audio can take in any format: the conservative rate.
CONSERVATIVE_BYTES_PER_SECOND = 8000
#: PCM sample rates the meter trusts; any other is metered conservatively.
PCM_RATES = range(8000, 48001)

_AUDIO_APPEND_PREFIX = '{"type":"input-audio-append","audio":"'
_AUDIO_DELTA_PREFIX = '{"type":"audio-delta"'
_DELTA_KEY = '"delta":"'
_BROWSER_MARKERS = (
    "input-audio-append",
    "conversation-item-create",
    "session-update",
    "session-start",
)
_GATEWAY_MARKERS = ('"audio-delta"', '"response-done"', '"session-closed"')
#: How deep the meter looks for ``audio`` strings in a conversation item.
_ITEM_DEPTH = 8


class UnreadableFrame(Exception):
    """A browser text frame that may carry metered content but cannot be read."""


def frame_size(frame: str | bytes) -> int:
    """A frame's size on the wire: its bytes, or its text's UTF-8 length.

    ASCII text (every audio frame: JSON and base64) is measured without
    encoding it; ``str.isascii`` reads a flag CPython keeps on the string.
    """
    if isinstance(frame, bytes) or frame.isascii():
        return len(frame)
    return len(frame.encode(errors="replace"))


def base64_size(data: str) -> int:
    """Bytes a base64 string decodes to, from its length (without decoding it)."""
    size = len(data)
    if size == 0:
        return 0
    padding = (data[-1] == "=") + (size > 1 and data[-2] == "=")
    return max(0, size * 3 // 4 - padding)


def bytes_per_second(audio_format: object) -> int | None:
    """The bytes a second of ``audio_format`` (a format object); ``None``: not a format."""
    if not isinstance(audio_format, Mapping):
        return None
    kind = audio_format.get("type")
    if kind == "audio/pcm":
        rate = audio_format.get("rate", DEFAULT_PCM_RATE)
        if isinstance(rate, int) and not isinstance(rate, bool) and rate in PCM_RATES:
            return 2 * rate
        return CONSERVATIVE_BYTES_PER_SECOND
    if kind in ("audio/pcmu", "audio/pcma"):
        return G711_BYTES_PER_SECOND
    return CONSERVATIVE_BYTES_PER_SECOND


def _parse(frame: str) -> Any:
    """``json.loads``, or ``None`` for anything it cannot read (never raises)."""
    try:
        return json.loads(frame)
    except (ValueError, RecursionError, MemoryError, TypeError):
        return None


def _count(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return 0


def _audio_in_item(node: object, depth: int = 0) -> int:
    """Bytes of every base64 ``audio`` string in a conversation item (bounded depth)."""
    if depth > _ITEM_DEPTH:
        return 0
    total = 0
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "audio" and isinstance(value, str):
                total += base64_size(value)
            elif isinstance(value, Mapping | list):
                total += _audio_in_item(value, depth + 1)
    elif isinstance(node, list):
        for value in node:
            total += _audio_in_item(value, depth + 1)
    return total


@dataclasses.dataclass
class Meter:
    """Counters of one session (see the module docstring); the fields are ``RelaySession``'s."""

    frames_from_browser: int = 0
    frames_from_gateway: int = 0
    bytes_from_browser: int = 0
    bytes_from_gateway: int = 0
    audio_seconds_in: float = 0.0
    audio_seconds_out: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    input_bytes_per_second: int = 2 * DEFAULT_PCM_RATE
    output_bytes_per_second: int = 2 * DEFAULT_PCM_RATE

    # The browser -----------------------------------------------------------------------

    def observe_browser(self, frame: str | bytes) -> None:
        """Count one browser frame; raise ``UnreadableFrame`` (only) for one that cannot be read."""
        self.frames_from_browser += 1
        if isinstance(frame, bytes):
            self.bytes_from_browser += len(frame)
            self.audio_seconds_in += len(frame) / CONSERVATIVE_BYTES_PER_SECOND
            return
        if frame.isascii():
            self.bytes_from_browser += len(frame)
        else:
            try:
                self.bytes_from_browser += len(frame.encode())
            except UnicodeEncodeError:
                raise UnreadableFrame("not UTF-8") from None
        if frame.startswith(_AUDIO_APPEND_PREFIX) and frame.endswith('"}'):
            audio = frame[len(_AUDIO_APPEND_PREFIX) : -2]
            if '"' not in audio and "\\" not in audio:
                # The AI SDK's own shape: no other field, nothing escaped.
                self._audio_in(base64_size(audio))
                return
        # A JSON escape could spell a metered event's name: such frames are read.
        if "\\u" not in frame and not any(marker in frame for marker in _BROWSER_MARKERS):
            return
        event = _parse(frame)
        if event is None:
            raise UnreadableFrame("not JSON the meter can read")
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        if kind == "input-audio-append":
            appended = event.get("audio")
            if isinstance(appended, str):
                self._audio_in(base64_size(appended))
        elif kind == "conversation-item-create":
            self._audio_in(_audio_in_item(event.get("item")))
        elif kind in ("session-update", "session-start"):
            config = event.get("config")
            if isinstance(config, Mapping):
                self._set_formats(config)

    def _audio_in(self, size: int) -> None:
        self.audio_seconds_in += size / self.input_bytes_per_second

    def _set_formats(self, config: Mapping[str, Any]) -> None:
        rate_in = bytes_per_second(config.get("inputAudioFormat"))
        rate_out = bytes_per_second(config.get("outputAudioFormat"))
        if rate_in is not None:
            self.input_bytes_per_second = rate_in
        if rate_out is not None:
            self.output_bytes_per_second = rate_out

    # The Gateway -----------------------------------------------------------------------

    def observe_gateway(self, frame: str | bytes) -> bool:
        """Count one Gateway frame; ``True`` when it carried usage (never raises)."""
        self.frames_from_gateway += 1
        if isinstance(frame, bytes):
            self.bytes_from_gateway += len(frame)
            return False
        self.bytes_from_gateway += frame_size(frame)
        if frame.startswith(_AUDIO_DELTA_PREFIX):
            # The Gateway's own shape: base64 has no quote, so the next one ends it.
            start = frame.find(_DELTA_KEY)
            if start != -1:
                start += len(_DELTA_KEY)
                end = frame.find('"', start)
                if end != -1:
                    self.audio_seconds_out += (
                        base64_size(frame[start:end]) / self.output_bytes_per_second
                    )
                    return False
        if not any(marker in frame for marker in _GATEWAY_MARKERS):
            return False
        event = _parse(frame)
        if not isinstance(event, dict):
            return False
        kind = event.get("type")
        if kind == "audio-delta":
            delta = event.get("delta")
            if isinstance(delta, str):
                self.audio_seconds_out += base64_size(delta) / self.output_bytes_per_second
            return False
        if kind in ("response-done", "session-closed"):
            usage = event.get("usage")
            if isinstance(usage, Mapping):
                self.input_tokens += _count(usage.get("inputTokens"))
                self.output_tokens += _count(usage.get("outputTokens"))
            return True
        return False

    # Totals ---------------------------------------------------------------------------

    @property
    def audio_seconds(self) -> float:
        return self.audio_seconds_in + self.audio_seconds_out

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def fields(self) -> dict[str, Any]:
        """The ``RelaySession`` counter fields."""
        return {
            "frames_from_browser": self.frames_from_browser,
            "frames_from_gateway": self.frames_from_gateway,
            "bytes_from_browser": self.bytes_from_browser,
            "bytes_from_gateway": self.bytes_from_gateway,
            "audio_seconds_in": self.audio_seconds_in,
            "audio_seconds_out": self.audio_seconds_out,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
        }


__all__ = ["Meter", "UnreadableFrame", "base64_size", "bytes_per_second", "frame_size"]
