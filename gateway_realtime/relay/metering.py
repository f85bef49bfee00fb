"""Metering a relayed session from its frames: frames, bytes, audio seconds and tokens.

The budget (``RELAY_BUDGET``) is spent by what this meter counts, so it counts
audio on every path the Gateway accepts it, in the format in effect, and never
crashes on a frame it cannot read. The event shapes are the AI SDK's
normalized realtime events (``@ai-sdk/provider``'s ``RealtimeModelV4ClientEvent``
and ``RealtimeModelV4ServerEvent``), which the Gateway speaks as they are.

From the browser:

- audio: every ``audio`` value of an event, wherever it sits: the ``audio``
  of ``input-audio-append`` and of a ``conversation-item-create``'s
  ``audio-message`` item are the SDK's two; one nested elsewhere is counted
  too (the meter does not guess which shapes the Gateway takes). A value
  that is not a string counts every string in it. Base64 is measured by its
  length, without decoding it: the most bytes it can decode to.
- formats: ``config.inputAudioFormat`` / ``config.outputAudioFormat`` of
  ``session-update`` (the realtime route) and ``session-start`` (the Live
  route, where one format given alone sets both sides, as the SDK does).
  A format object replaces the last one whole, so a format without a
  ``rate`` is that format's default (see ``bytes_per_second``).
- binary frames: the protocol is JSON text (the SDK sends none, and the
  Gateway refuses them), so their bytes are counted as audio at the
  conservative 8,000 bytes a second and nothing in them is read.

The conservative rule: audio is metered at the fewest bytes a second it
could be in (the most seconds). So a format the meter does not know, or a
rate it does not trust, is 8,000 bytes a second; a declared format that
gives *more* seconds applies at once, one that gives *fewer* applies only
once the Gateway confirms it (``session-updated`` / ``session-started``
while it is the only declaration outstanding), so a format the Gateway
refuses or ignores never lowers the count; after a Gateway ``error``
(which may be a declaration's refusal) audio is metered for the rest of
the session at the lowest rate it started with or declared; and a config
naming an audio format, encoding or sample rate where the SDK defines none
(in ``providerOptions``, which providers spread over their own session
payload, or under an unknown key) meters both directions at 8,000 bytes a
second for the rest of the session.

From the Gateway (never raises; a frame it cannot read is relayed uncounted):

- audio: ``delta`` of ``audio-delta`` (the realtime route) and of
  ``audio-chunk`` (the Live route), in the output format;
- tokens: the ``usage`` of ``response-done``, ``backend-response-done``,
  ``input-transcription-completed`` and ``session-closed`` (see
  ``usage_tokens``); ``observe_gateway`` returns ``True`` for these, so the
  caller adds the usage to the shared counter at once.

A browser text frame that may carry metered content (it holds a JSON
escape, which could spell anything, an ``"audio"`` key or the name of a
config event) but cannot be read (malformed, nested too deeply for the
parser, a duplicate key, ``NaN``, a number the parser refuses) raises
``UnreadableFrame``: the relay refuses it rather than relay audio it did
not count. So does text that is not UTF-8 (a lone surrogate), which could
not be sent on anyway. Nothing else ever raises from ``observe_browser``.

Cheap by design: a frame without those markers is not parsed, and the exact
shapes the SDK sends audio in (``{"type":"input-audio-append","audio":"…"}``)
and the Gateway answers in (``{"type":"audio-delta",…,"delta":"…",…}``)
are measured with string searches, without parsing the JSON or decoding
the base64.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

#: PCM16 sample rate when a format names none (the AI SDK's default).
DEFAULT_PCM_RATE = 24000
#: Bytes a second of G.711 (µ-law, a-law): 8000 one-byte samples.
G711_BYTES_PER_SECOND = 8000
#: The fewest bytes a second of audio can take in any format: the conservative rate.
CONSERVATIVE_BYTES_PER_SECOND = 8000
#: PCM sample rates the meter trusts; any other is metered conservatively.
PCM_RATES = range(8000, 48001)
#: A token count is capped here (per event and in total), so a number the
#: Gateway should never send cannot overflow the audit row's columns.
MAX_TOKENS = 2**53

_DEFAULT_BYTES_PER_SECOND = 2 * DEFAULT_PCM_RATE

# The AI SDK's own audio frame: JSON.stringify({type, audio}).
_APPEND_PREFIX = '{"type":"input-audio-append","audio":"'
_APPEND_SUFFIX = '"}'
_CONFIG_EVENTS = {"session-update": False, "session-start": True}  # -> one format sets both

_TYPE_PREFIX = '{"type":"'
_DELTA_KEY = '"delta":"'
_GATEWAY_AUDIO = frozenset({"audio-delta", "audio-chunk"})
# The realtime route's and the Live route's audio, as the Gateway writes them.
_AUDIO_PREFIXES = ('{"type":"audio-delta"', '{"type":"audio-chunk"')
_GATEWAY_USAGE = frozenset(
    {"response-done", "backend-response-done", "input-transcription-completed", "session-closed"}
)
_GATEWAY_CONFIRMS = frozenset({"session-updated", "session-started"})
_GATEWAY_MARKERS = tuple(
    f'"{kind}"' for kind in sorted(_GATEWAY_AUDIO | _GATEWAY_USAGE | _GATEWAY_CONFIRMS | {"error"})
)

# Keys of the SDK's session config; any other key (``providerOptions`` first)
# is passed to the provider as it is, so it is searched for audio formats.
_CONFIG_KEYS = frozenset(
    {
        "instructions",
        "voice",
        "outputModalities",
        "inputAudioFormat",
        "outputAudioFormat",
        "inputAudioTranscription",
        "outputAudioTranscription",
        "turnDetection",
        "tools",
    }
)
_FORMAT_WORDS = ("format", "samplerate", "encoding", "mimetype")


class UnreadableFrame(Exception):
    """A browser text frame that may carry metered content (audio, a format) but cannot be read."""


def frame_size(frame: str | bytes) -> int:
    """A frame's size on the wire: its bytes, or its text's UTF-8 length (never raises).

    ASCII text (every audio frame: JSON and base64) is measured without
    encoding it; ``str.isascii`` reads a flag CPython keeps on the string.
    """
    if isinstance(frame, bytes) or frame.isascii():
        return len(frame)
    return len(frame.encode(errors="replace"))


def base64_size(data: str) -> int:
    """Bytes a base64 string decodes to, from its length (without decoding it).

    An upper bound for any text: a decoder that skips what is not base64
    yields fewer bytes, never more.
    """
    return _base64_span(data, 0, len(data))


def _base64_span(text: str, start: int, end: int) -> int:
    size = end - start
    if size <= 0:
        return 0
    padding = (text[end - 1] == "=") + (size > 1 and text[end - 2] == "=")
    return max(0, size * 3 // 4 - padding)


def bytes_per_second(audio_format: object) -> int:
    """Bytes a second of an ``inputAudioFormat`` / ``outputAudioFormat`` value.

    ``audio/pcm`` is 16-bit, ``2 * rate`` (``rate`` absent: 24000 Hz, the AI
    SDK's default; a rate outside ``PCM_RATES`` is not trusted);
    ``audio/pcmu`` and ``audio/pcma`` are G.711, 8000 bytes a second whatever
    rate they name. Anything else (another type, a rate that is not a whole
    number in range, a value that is not an object) is metered at
    ``CONSERVATIVE_BYTES_PER_SECOND``.
    """
    if not isinstance(audio_format, dict):
        return CONSERVATIVE_BYTES_PER_SECOND
    kind = audio_format.get("type")
    if kind == "audio/pcm":
        rate = audio_format.get("rate", DEFAULT_PCM_RATE)
        if isinstance(rate, float) and rate.is_integer():
            rate = int(rate)
        if isinstance(rate, int) and not isinstance(rate, bool) and rate in PCM_RATES:
            return 2 * rate
        return CONSERVATIVE_BYTES_PER_SECOND
    if kind in ("audio/pcmu", "audio/pcma"):
        return G711_BYTES_PER_SECOND
    return CONSERVATIVE_BYTES_PER_SECOND


def usage_tokens(usage: dict[str, Any]) -> tuple[int, int]:
    """Input and output tokens of one ``usage`` object (never negative, at most ``MAX_TOKENS``).

    Reads both shapes the Gateway's events use: ``inputTokens`` /
    ``outputTokens`` (with ``totalTokens``), and the SDK's
    ``RealtimeModelV4Usage`` (``inputTextTokens`` + ``inputAudioTokens``,
    ``outputTextTokens`` + ``outputAudioTokens``). Where both are given the
    larger is taken, so a total and its parts are not added twice. The
    ``cachedInput*Tokens`` fields are parts of the input counts, so they are
    not added; a ``totalTokens`` above input plus output counts its remainder
    as output. ``seconds`` (the Live route's session length) and
    ``audioSeconds`` (a transcription's length) are not tokens: the audio is
    metered from the frames. A count that is not a finite non-negative number
    is 0; a fraction is rounded up.
    """
    given_in = _count(usage.get("inputTokens"))
    given_out = _count(usage.get("outputTokens"))
    parts_in = _count(usage.get("inputTextTokens")) + _count(usage.get("inputAudioTokens"))
    parts_out = _count(usage.get("outputTextTokens")) + _count(usage.get("outputAudioTokens"))
    tokens_in = max(given_in, parts_in)
    tokens_out = max(given_out, parts_out)
    total = _count(usage.get("totalTokens"))
    if total > tokens_in + tokens_out:
        tokens_out = total - tokens_in
    return min(tokens_in, MAX_TOKENS), min(tokens_out, MAX_TOKENS)


def _count(value: object) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return min(value, MAX_TOKENS) if value > 0 else 0
    if isinstance(value, float) and math.isfinite(value) and value > 0:
        return min(math.ceil(value), MAX_TOKENS)
    return 0


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Parsers disagree on which of two equal keys wins; a browser frame that
    # has two is not guessed at.
    event = dict(pairs)
    if len(event) != len(pairs):
        raise ValueError("duplicate key")
    return event


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_BROWSER_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_no_constant)


def _strings_size(value: object) -> int:
    """Base64 bytes of a string, or of every string inside a list or object."""
    if isinstance(value, str):
        return base64_size(value)
    total = 0
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            total += base64_size(node)
        elif isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return total


def _audio_size(event: dict[str, Any]) -> int:
    """Base64 bytes of every ``audio`` value anywhere in a parsed event (iterative)."""
    total = 0
    stack: list[Any] = [event]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "audio":
                    total += _strings_size(value)
                elif isinstance(value, dict | list):
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(value for value in node if isinstance(value, dict | list))
    return total


def _may_meter(frame: str) -> bool:
    """Whether a browser text frame may carry audio or a format, so must be read.

    Audio is always under an ``"audio"`` key and formats in a ``session-*``
    event, unless a JSON escape spells them, and an escape can spell any
    character. The escape's search waits on a one-character search for a
    backslash, which CPython runs at ``memchr`` speed (a two-character
    needle scans an 8 KB frame some 70 times slower).
    """
    return '"audio"' in frame or "session-" in frame or ("\\" in frame and "\\u" in frame)


def _leading_type(frame: str) -> str | None:
    """The ``type`` of a Gateway frame that starts with it.

    The Gateway writes each event with its type first (``JSON.stringify`` of
    one object, so no key twice), so that type is the event's. ``None``: the
    frame does not start so (or the type is escaped); it is searched instead.
    """
    if not frame.startswith(_TYPE_PREFIX):
        return None
    start = len(_TYPE_PREFIX)
    end = frame.find('"', start, start + 64)
    if end == -1 or frame.find("\\", start, end) != -1:
        return None
    return frame[start:end]


def _names_a_format(config: dict[str, Any]) -> bool:
    """Whether a config names an audio format, encoding or rate outside the SDK's own keys."""
    stack: list[Any] = [{key: value for key, value in config.items() if key not in _CONFIG_KEYS}]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if _is_format_word(key):
                    return True
                stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str) and node.startswith("audio/"):
            return True
    return False


def _is_format_word(key: str) -> bool:
    word = key.lower().replace("_", "").replace("-", "")
    return word == "rate" or any(part in word for part in _FORMAT_WORDS)


@dataclasses.dataclass
class Meter:
    """Counters of one session (see the module docstring); ``fields()`` are ``RelaySession``'s.

    ``observe_browser`` raises ``UnreadableFrame`` and nothing else;
    ``observe_gateway`` never raises. Counters never decrease, are never
    negative and never ``NaN``.
    """

    frames_from_browser: int = 0
    frames_from_gateway: int = 0
    bytes_from_browser: int = 0
    bytes_from_gateway: int = 0
    audio_seconds_in: float = 0.0
    audio_seconds_out: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    #: The bytes a second audio is metered at now, each way.
    input_bytes_per_second: int = _DEFAULT_BYTES_PER_SECOND
    output_bytes_per_second: int = _DEFAULT_BYTES_PER_SECOND
    # The lowest rate each way the session has declared or been in.
    _lowest_in: int = dataclasses.field(default=_DEFAULT_BYTES_PER_SECOND, init=False, repr=False)
    _lowest_out: int = dataclasses.field(default=_DEFAULT_BYTES_PER_SECOND, init=False, repr=False)
    # Declarations the Gateway has not confirmed, and the last one's rates
    # (None: that side not given).
    _outstanding: int = dataclasses.field(default=0, init=False, repr=False)
    _pending: tuple[int | None, int | None] = dataclasses.field(
        default=(None, None), init=False, repr=False
    )
    # No declared rate may raise the rates any more (see the module docstring).
    _distrusted: bool = dataclasses.field(default=False, init=False, repr=False)

    # The browser -----------------------------------------------------------------------

    def observe_browser(self, frame: str | bytes) -> None:
        """Count one browser frame; raise ``UnreadableFrame`` (only) for one that cannot be read."""
        try:
            self.frames_from_browser += 1
            if isinstance(frame, str):
                self._browser_text(frame)
            elif isinstance(frame, bytes | bytearray | memoryview):
                size = len(bytes(frame))
                self.bytes_from_browser += size
                self.audio_seconds_in += size / CONSERVATIVE_BYTES_PER_SECOND
            else:
                raise UnreadableFrame("not a text or binary frame")
        except UnreadableFrame:
            raise
        except Exception as error:
            # Whatever else goes wrong, the frame is refused, never relayed uncounted.
            raise UnreadableFrame(type(error).__name__) from None

    def _browser_text(self, frame: str) -> None:
        if frame.isascii():
            self.bytes_from_browser += len(frame)
        else:
            try:
                self.bytes_from_browser += len(frame.encode())
            except UnicodeEncodeError:
                self.bytes_from_browser += len(frame.encode(errors="replace"))
                raise UnreadableFrame("not UTF-8") from None
        if frame.startswith(_APPEND_PREFIX) and frame.endswith(_APPEND_SUFFIX):
            start, end = len(_APPEND_PREFIX), len(frame) - len(_APPEND_SUFFIX)
            if (
                start <= end
                and frame.find('"', start, end) == -1
                and frame.find("\\", start, end) == -1
            ):
                # The SDK's own shape: no other field, nothing escaped.
                self.audio_seconds_in += (
                    _base64_span(frame, start, end) / self.input_bytes_per_second
                )
                return
        if not _may_meter(frame):
            return
        try:
            event = _BROWSER_DECODER.decode(frame)
        except (ValueError, RecursionError, MemoryError):
            raise UnreadableFrame("not JSON the meter can read") from None
        if not isinstance(event, dict):
            return  # the Gateway takes only objects
        size = _audio_size(event)
        if size:
            self.audio_seconds_in += size / self.input_bytes_per_second
        kind = event.get("type")
        config = event.get("config")
        if isinstance(kind, str) and kind in _CONFIG_EVENTS and isinstance(config, dict):
            self._declare(config, both=_CONFIG_EVENTS[kind])

    def _declare(self, config: dict[str, Any], *, both: bool) -> None:
        """A session config's formats: fewer bytes a second now, more once confirmed."""
        rate_in = (
            bytes_per_second(config["inputAudioFormat"]) if "inputAudioFormat" in config else None
        )
        rate_out = (
            bytes_per_second(config["outputAudioFormat"]) if "outputAudioFormat" in config else None
        )
        if both:
            # The Live route has one format both ways; the SDK fills a side not given.
            rate_in = rate_out if rate_in is None else rate_in
            rate_out = rate_in if rate_out is None else rate_out
        if _names_a_format(config):
            rate_in = rate_out = CONSERVATIVE_BYTES_PER_SECOND
            self._distrusted = True
        if rate_in is not None:
            self._lowest_in = min(self._lowest_in, rate_in)
            self.input_bytes_per_second = min(self.input_bytes_per_second, rate_in)
        if rate_out is not None:
            self._lowest_out = min(self._lowest_out, rate_out)
            self.output_bytes_per_second = min(self.output_bytes_per_second, rate_out)
        self._outstanding += 1
        self._pending = (rate_in, rate_out)

    # The Gateway -----------------------------------------------------------------------

    def observe_gateway(self, frame: str | bytes) -> bool:
        """Count one Gateway frame; ``True`` when it carried usage. Never raises."""
        try:
            self.frames_from_gateway += 1
            if isinstance(frame, str):
                self.bytes_from_gateway += frame_size(frame)
                return self._gateway_text(frame)
            if isinstance(frame, bytes | bytearray | memoryview):
                data = bytes(frame)
                self.bytes_from_gateway += len(data)
                # The SDK reads a binary frame as JSON text too.
                if data[:1] == b"{":
                    return self._gateway_text(data.decode(errors="replace"))
            return False
        except Exception:
            return False  # relayed, counted as far as it could be read

    def _gateway_text(self, frame: str) -> bool:
        if frame.startswith(_AUDIO_PREFIXES) and self._audio_delta(frame, len(_AUDIO_PREFIXES[0])):
            return False
        kind = _leading_type(frame)
        if kind is None:
            if not any(marker in frame for marker in _GATEWAY_MARKERS):
                return False
        elif kind in _GATEWAY_AUDIO:
            pass  # a shape the string search does not measure: parsed
        elif kind in _GATEWAY_CONFIRMS:
            self._confirmed()
            return False
        elif kind == "error":
            self._refused()
            return False
        elif kind not in _GATEWAY_USAGE:
            return False
        try:
            event = json.loads(frame)
        except (ValueError, RecursionError, MemoryError):
            return False
        return isinstance(event, dict) and self._gateway_event(event)

    def _audio_delta(self, frame: str, after_type: int) -> bool:
        """Measure ``delta`` without parsing; ``False``: not a shape this can measure safely."""
        key = frame.find(_DELTA_KEY, after_type)
        if key == -1:
            return False
        # Nothing opens a nested value or escapes a quote before the key, so
        # it is the event's own ``delta``.
        before = frame[after_type:key]
        if "{" in before or "[" in before or "\\" in before:
            return False
        start = key + len(_DELTA_KEY)
        end = frame.find('"', start)
        if end == -1 or frame[end - 1] == "\\":
            return False  # an escaped quote: not base64, parsed instead
        # Any other escape (the Gateway writes none in base64) only makes the
        # text longer than what it decodes to: counted high, never low.
        self.audio_seconds_out += _base64_span(frame, start, end) / self.output_bytes_per_second
        return True

    def _gateway_event(self, event: dict[str, Any]) -> bool:
        kind = event.get("type")
        if not isinstance(kind, str):
            return False
        if kind in _GATEWAY_AUDIO:
            size = _strings_size(event.get("delta"))
            self.audio_seconds_out += size / self.output_bytes_per_second
        elif kind in _GATEWAY_CONFIRMS:
            self._confirmed()
        elif kind == "error":
            self._refused()
        elif kind in _GATEWAY_USAGE:
            usage = event.get("usage")
            if isinstance(usage, dict):
                tokens_in, tokens_out = usage_tokens(usage)
                self.input_tokens = min(self.input_tokens + tokens_in, MAX_TOKENS)
                self.output_tokens = min(self.output_tokens + tokens_out, MAX_TOKENS)
                return True
        return False

    def _confirmed(self) -> None:
        """The Gateway took a declaration: the only one outstanding may now raise the rates."""
        if self._outstanding == 0:
            return  # not an answer to a declaration of this browser's
        if self._outstanding == 1 and not self._distrusted:
            rate_in, rate_out = self._pending
            if rate_in is not None:
                self.input_bytes_per_second = rate_in
            if rate_out is not None:
                self.output_bytes_per_second = rate_out
        self._outstanding -= 1

    def _refused(self) -> None:
        """A Gateway error, perhaps a declaration's refusal: the lowest rates, for good."""
        self._distrusted = True
        self.input_bytes_per_second = self._lowest_in
        self.output_bytes_per_second = self._lowest_out

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


__all__ = [
    "CONSERVATIVE_BYTES_PER_SECOND",
    "DEFAULT_PCM_RATE",
    "G711_BYTES_PER_SECOND",
    "MAX_TOKENS",
    "PCM_RATES",
    "Meter",
    "UnreadableFrame",
    "base64_size",
    "bytes_per_second",
    "frame_size",
    "usage_tokens",
]
