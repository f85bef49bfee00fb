"""A local stand-in for the Vercel AI Gateway's realtime surfaces.

Built on aiohttp, installed with the ``emulator`` extra (``pip install
"django-gateway-realtime[emulator]"``); the app itself never imports it. One
aiohttp server answers plain HTTP and WebSocket, so the mint route and the
WebSocket routes share one port, exactly as a browser derives the WebSocket
URL from the base URL::

    from gateway_realtime.emulator import GatewayEmulator

    with GatewayEmulator(api_keys=("emulator-key",)) as emu:
        settings_base_url = emu.base_url   # http://127.0.0.1:<port>/v4/ai
        ...
        assert emu.requests[0].header("ai-gateway-protocol-version") == "0.0.1"

or ``python -m gateway_realtime.emulator --port 8787 --api-key KEY``.

Records (thread-safe snapshots): ``requests`` (every plain HTTP request
except ``GET /healthz``, with method, target, raw ``(name, value)`` headers
in order and case as sent, body, and the status answered), ``issued``
(token -> model, kind, expires_at, used), ``ws_handshakes``, ``ws_sessions``
(ended sessions with the event types received and sent), and
``tcp_connections``. ``reset()`` clears them; ``issue_token()`` and
``expire_token()`` help tests.

Mint route: ``POST /v1/realtime/client-secrets`` at the origin root
-------------------------------------------------------------------
Checks, in order: ``Authorization: Bearer <credential>`` (missing -> 401
``authentication_error``); ``ai-gateway-auth-method`` is ``api-key`` or
``oidc`` (else 400); the credential is one of ``api_keys`` (or of
``oidc_tokens`` for ``oidc``; else 401); ``ai-gateway-protocol-version:
0.0.1`` (else 400); with a ``team`` configured, ``x-vercel-ai-gateway-team``
must equal it (else 403 ``forbidden``, ``param.ruleId``); then the body:
``Content-Type: application/json``, a JSON object with only ``model``
(non-empty string), ``routeKind`` (``transcription`` | ``speech`` |
``live``, omitted for realtime) and ``expiresIn`` (integer 1..max_ttl);
anything else -> 400 ``invalid_request_error`` with ``param.field``. Success is 200
``{"token": "vcst_<urlsafe>", "expiresAt": <int epoch seconds>}``; failures
use the contract shape ``{"error": {"message", "type", "param", "code"},
"generationId"}``. Connections are persistent (HTTP/1.1 keep-alive,
Content-Length framing; chunked request bodies are accepted too).

Fault models (chosen by the ``model`` of a request that passed the checks):

=============================== =============================================
``emulator/rate-limited``,      429 ``rate_limit_exceeded``, ``Retry-After: 7``
``*/ratelimited``
any model containing            404 ``model_not_found``, ``param.modelId``
``missing``
``emulator/forbidden``          403 ``forbidden``, ``param.ruleId``
``emulator/access-denied``      403 ``access_policy_denied``, ``param.policyIds`` etc.
``emulator/not-found``          404 ``not_found``
``emulator/invalid``            400 ``invalid_request_error``
``emulator/auth-error``         401 ``authentication_error``
``emulator/internal``           500, contract-shaped, unknown type
                                ``emulator_internal_error``
``emulator/bad-gateway``        502 with an HTML body
``emulator/html``               200 ``text/html``
``emulator/malformed``          200 JSON cut off mid-object
``emulator/no-token``           200 ``{"expiresAt": 1}``
``emulator/empty-token``        200 with ``"token": ""``
``emulator/bad-expiry``         200 with ``"expiresAt": -1``
``emulator/bad-expiry-string``  200 with ``"expiresAt": "tomorrow"``
``emulator/huge``               200 valid JSON padded past 5 MB
``emulator/redirect``           307 to ``/emulator/redirected/v1/realtime/
                                client-secrets`` on the same emulator (that
                                URL mints normally)
``emulator/slow-headers[-N]``   sleeps N s (default 5; fractions allowed,
                                e.g. ``-0.2``) before any byte, then a
                                normal success
``emulator/slow-body[-N]``      headers and half the body, then the rest
                                trickled over N s (default 5)
``emulator/drop``               closes the connection without answering
``emulator/spaces-token``       200 with a token holding a space and a comma
                                (not a valid subprotocol)
``emulator/ws-drop``            mints normally; the WebSocket is dropped
                                right after ``session-created`` /
                                ``stream-start`` without a close frame
``emulator/ws-error``           mints normally; the WebSocket sends an
                                ``error`` event/part, then closes 1011
=============================== =============================================

Every other model succeeds.

WebSocket routes: ``GET {base_path}/{realtime,live,transcription,speech}-model``
-------------------------------------------------------------------------------
With ``?ai-model-id=<model>`` (form-encoded). ``Sec-WebSocket-Protocol``
must offer, in order: the kind's marker (``ai-gateway-realtime.v1`` for
realtime and Live, ``ai-gateway-transcription.v1``, ``ai-gateway-speech.v1``), then
``ai-gateway-auth.<token>`` and, when the emulator has a team,
``ai-gateway-team.<base64url, no padding>``. The token must be one this
emulator issued, unused, unexpired, minted for that kind (``routeKind``) and
that exact model; it is spent on accept. Refusals are plain HTTP with a
contract-shaped JSON body whose ``error.type`` says why: 400
``invalid_subprotocol`` / ``invalid_request_error``, 401 ``token_missing``,
``token_invalid``, ``token_used``, ``token_expired``, 403 ``kind_mismatch``,
``model_mismatch``, ``team_required``, ``team_mismatch``, 404, 426, 431. The
101 answer selects the marker; no extension is negotiated. aiohttp handles
the framing: fragmented messages, ping/pong, and the close handshake (a
client's close code is echoed); a message over ``max_message_size`` (256 KiB,
the Gateway's frame cap) closes with 1009.

The formats were read from the official packages (``ai`` 7.0.185,
``@ai-sdk/gateway`` 4.0.158, ``@ai-sdk/provider`` 4.0.39,
``@ai-sdk/provider-utils`` 5.0.86): the Gateway realtime model is an
identity codec over the *normalized* AI SDK realtime events
(``gateway-realtime-model.ts``: ``parseServerEvent`` returns the JSON as is,
``serializeClientEvent`` sends the event as is), typed by
``RealtimeModelV4ServerEvent`` / ``RealtimeModelV4ClientEvent``; the ``ai``
browser session (``realtime/realtime-session.ts``,
``realtime-event-reducer.ts``, ``browser-realtime-transport.ts``) sends
``session-update`` on open and becomes ``connected`` on ``session-created``
or ``session-updated``. Transcription and speech use the stream envelopes of
``transcription-stream-envelope.ts`` / ``speech-stream-envelope.ts``.

Realtime (one JSON object per text frame; every server event has ``raw``):

- on accept: ``session-created`` {sessionId}
- ``session-update`` {config} -> ``session-updated`` (config merged)
- ``session-start`` -> ``session-started`` {sessionId, delegationMode}
- ``conversation-item-create`` {item: text-message | audio-message |
  function-call-output} -> ``conversation-item-added`` {itemId, item}
- ``response-create`` [{options.modalities}] -> ``response-created``,
  ``output-item-added``, ``content-part-added``, then per word
  ``text-delta`` (or, when the modalities include audio, ``audio-delta``
  with 125 ms of a soft 440 Hz PCM16 tone + ``audio-transcript-delta``), ``text-done``
  {text} (or ``audio-done`` + ``audio-transcript-done`` {transcript}),
  ``content-part-done``, ``output-item-done``, ``response-done`` {status:
  completed, usage}. The text echoes the user's input. If the session's
  ``tools`` include a function whose name the user's text mentions, the
  response is instead ``function-call-arguments-delta`` x2 +
  ``function-call-arguments-done`` {callId, name, arguments}; a later
  function-call-output + response-create gets a text reply quoting it.
- ``input-audio-append`` {audio base64}: buffered; with PCM input and turn
  detection not disabled, a small energy VAD emits ``speech-started``, and
  after ``silenceDurationMs`` (500) of quiet ``speech-stopped``,
  ``audio-committed``, ``input-transcription-completed`` and a response.
- ``input-audio-commit`` -> ``audio-committed`` +
  ``input-transcription-completed`` (an ``error`` if the buffer is empty);
  ``input-audio-clear`` empties it.
- ``input-audio-mute``/``unmute``, ``context-append`` ->
  ``command-acknowledged``; ``response-cancel``, ``conversation-item-truncate``
  are accepted silently.
- ``session-close`` -> ``session-closed`` {usage.seconds, reason}, close 1000.
- binary frames, bad JSON, unknown types -> ``error`` {message, code}.

Live (``gateway-realtime-model-live.ts``; docs/emulator.md has the table):
nothing until the client's ``session-start`` {modelId, config}, validated as
the provider's ``buildSessionConfig`` validates it (1008 when invalid), then
``session-started``; ``input-audio-append`` through a small VAD, a turn
answered with ``transcript-fragment`` (user), per word ``audio-chunk`` +
``transcript-fragment`` (assistant), and ``session-usage``;
``context-append``, ``input-audio-mute``/``unmute`` ->
``command-acknowledged``; ``session-close`` -> ``session-closed``
{usage.seconds}, close 1000. A Live-only model on the realtime route is
refused with 400 ``invalid_model``.

Transcription (transcription-stream envelope v1): the client sends a
``transcription-stream.start`` text frame {inputAudioFormat}, binary audio
frames, then ``transcription-stream.audio-done``. The emulator answers
``stream-start`` {warnings: []} and ``response-metadata`` {timestamp,
modelId}, one ``transcript-delta`` {id, delta} (a scripted word) per audio
frame, and on audio-done ``transcript-final`` and ``finish`` {text,
segments, language, durationInSeconds for PCM, usage}, then closes 1000.

Speech (speech-stream envelope v1): ``speech-stream.start`` {outputFormat?},
``speech-stream.text-delta`` {delta} frames, ``speech-stream.text-done``.
Answers ``stream-start``, ``response-metadata``, one ``audio`` part {id,
audio: base64 PCM16 silence, audioFormat} per non-empty delta, and
``finish`` {usage.inputCharacters}, then closes 1000.

In both envelopes a bad first frame or malformed frame gets an ``error``
part {error: {type, message}} and a 1008 close; unknown frame types are
ignored.
"""

try:
    import aiohttp  # noqa: F401
except ModuleNotFoundError as exc:  # the app works without it; the emulator does not
    if exc.name != "aiohttp":
        raise
    raise ModuleNotFoundError(
        'The Gateway emulator needs aiohttp: pip install "django-gateway-realtime[emulator]"',
        name="aiohttp",
    ) from None

from .server import (
    MINT_PATH,
    REDIRECTED_MINT_PATH,
    GatewayEmulator,
    IssuedToken,
    RecordedRequest,
    WsHandshake,
    is_loopback_host,
)
from .sessions import WsSession

__all__ = [
    "MINT_PATH",
    "REDIRECTED_MINT_PATH",
    "GatewayEmulator",
    "IssuedToken",
    "RecordedRequest",
    "WsHandshake",
    "WsSession",
    "is_loopback_host",
]
