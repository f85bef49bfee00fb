"""The emulator's server (aiohttp), mint route, WebSocket handshake and API.

See the package docstring (``gateway_realtime.emulator``) for what it serves
and the fault models it understands. aiohttp does the HTTP/1.1 and RFC 6455
work; this module decides what to answer.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ipaddress
import itertools
import json
import logging
import re
import secrets
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, cast
from urllib.parse import parse_qs

from aiohttp import WSCloseCode, web

from .sessions import WsSession, run_session

__all__ = [
    "MINT_PATH",
    "REDIRECTED_MINT_PATH",
    "GatewayEmulator",
    "IssuedToken",
    "RecordedRequest",
    "WsHandshake",
    "is_loopback_host",
]

logger = logging.getLogger("gateway_realtime.emulator")

MINT_PATH = "/v1/realtime/client-secrets"
# Where `emulator/redirect` points; the same mint, minus that fault.
REDIRECTED_MINT_PATH = "/emulator/redirected" + MINT_PATH
HEALTH_PATH = "/healthz"
PROTOCOL_VERSION = "0.0.1"
AUTH_METHODS = ("api-key", "oidc")
TEAM_HEADER = "x-vercel-ai-gateway-team"
SERVER_NAME = "ai-gateway-emulator"

# The emulator plays the Gateway, so it keeps its own copy of the wire names
# instead of importing the client's: a typo on either side then shows up as
# a failing test rather than being shared silently.
KIND_MARKERS = {
    "realtime": "ai-gateway-realtime.v1",
    "transcription": "ai-gateway-transcription.v1",
    "speech": "ai-gateway-speech.v1",
    # The Live route offers the realtime marker (wire contract section 8).
    "live": "ai-gateway-realtime.v1",
}
AUTH_PREFIX = "ai-gateway-auth."
TEAM_PREFIX = "ai-gateway-team."
ROUTE_KINDS = ("transcription", "speech", "live")
# The models the Gateway serves only on the Live route: it refuses them on
# the realtime route with ``invalid_model``.
LIVE_ONLY_MODELS = frozenset({"openai/gpt-live-1", "openai/gpt-live-1.1"})

_MAX_HEAD = 64 * 1024
_MAX_BODY = 1024 * 1024
_MAX_PROTOCOL_HEADER = 8 * 1024
_HUGE_BODY_BYTES = 5 * 1024 * 1024
_DEFAULT_SLOW_SECONDS = 5.0
#: How long a mint hangs with ``fail_with="hang"``: longer than any client waits.
HANG_SECONDS = 60.0
#: What ``fail_every`` makes every Nth mint do.
FAULTS = ("503", "hang")
# How long a WebSocket close waits for the peer's close frame, and how long
# stop() lets a request in flight finish before cancelling it.
_CLOSE_TIMEOUT = 2.0
_SHUTDOWN_GRACE = 1.0
_SLOW_RE = re.compile(r"^emulator/slow-(headers|body)(?:-(\d+(?:\.\d+)?))?$")
_BASE64URL = re.compile(r"^[A-Za-z0-9_-]+$")


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` names only this machine (``localhost`` or 127/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class RecordedRequest:
    """One plain HTTP request as the emulator received it.

    ``headers`` keeps names and values exactly as sent, in order; ``status``
    is what the emulator answered (``None`` when it dropped the connection).
    """

    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    client: tuple[str, int] | None
    connection_id: int
    received_at: float
    status: int | None = None

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    @property
    def header_names(self) -> list[str]:
        """Header names as sent, in order."""
        return [key for key, _ in self.headers]

    def json(self) -> Any:
        """The body parsed as JSON (raises ``ValueError`` if it is not)."""
        return json.loads(self.body)

    def __getitem__(self, key: str) -> Any:
        # Dict-style access too, for callers that treat records as dicts.
        return getattr(self, key)


@dataclass
class IssuedToken:
    """A client secret the emulator minted and what it is good for."""

    token: str
    model: str
    kind: str
    expires_at: int
    issued_at: float
    team: str | None = None
    used: bool = False

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


@dataclass
class WsHandshake:
    """One WebSocket opening handshake, accepted (101) or refused."""

    path: str
    headers: list[tuple[str, str]]
    subprotocols: list[str]
    status: int
    error_type: str | None
    client: tuple[str, int] | None
    received_at: float = field(default_factory=time.time)

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


class _Refused(Exception):
    """A WebSocket handshake the emulator turns down with plain HTTP."""

    def __init__(
        self, status: int, error_type: str, message: str, *headers: tuple[str, str]
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.headers = list(headers)


@dataclass
class _Reply:
    """What to answer, decided before any byte goes out."""

    status: int
    body: bytes = b""
    content_type: str | None = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    # How to deliver it: the fault models change the timing or drop it.
    mode: Literal["normal", "drop", "slow-headers", "slow-body"] = "normal"
    delay: float = 0.0


def _json_bytes(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def _error_body(
    message: str,
    error_type: str | None,
    *,
    param: object = None,
    code: str | int | None = None,
    generation_id: str | None = None,
) -> bytes:
    # Exactly the contract's failure shape, all four keys always present.
    return _json_bytes(
        {
            "error": {"message": message, "type": error_type, "param": param, "code": code},
            "generationId": generation_id,
        }
    )


def _error(status: int, message: str, error_type: str | None, **kwargs: Any) -> _Reply:
    return _Reply(status, _error_body(message, error_type, **kwargs))


def _generation_id() -> str:
    return f"gen_emu_{secrets.token_hex(8)}"


def _response(reply: _Reply) -> web.StreamResponse:
    response = web.Response(status=reply.status, body=reply.body, headers=reply.headers)
    if reply.content_type is not None:
        response.content_type = reply.content_type
    return response


def _raw_headers(request: web.BaseRequest) -> list[tuple[str, str]]:
    # As sent: aiohttp's raw headers keep the client's spelling and order.
    return [
        (name.decode("latin-1"), value.decode("latin-1")) for name, value in request.raw_headers
    ]


def _tokens(request: web.BaseRequest, name: str) -> set[str]:
    """Comma-separated header tokens, lower-cased (e.g. Connection)."""
    return {
        item.strip().lower()
        for value in request.headers.getall(name, [])
        for item in value.split(",")
        if item.strip()
    }


def _client(request: web.BaseRequest) -> tuple[str, int] | None:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER_NAME


class _Connection(asyncio.Protocol):
    """aiohttp's protocol for one connection, passed through unchanged.

    It lets the emulator count and number connections and abort what is
    left when it stops, using nothing but asyncio's ``Protocol`` interface.
    """

    def __init__(self, emulator: GatewayEmulator, inner: asyncio.Protocol) -> None:
        self.emulator = emulator
        self.inner = inner
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream server's transports are always full Transports.
        self.transport = cast(asyncio.Transport, transport)
        self.emulator._connection_made(self.transport)
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.emulator._connection_lost(self.transport)
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class GatewayEmulator:
    """A local stand-in for the Vercel AI Gateway, on one port.

    Serves ``POST /v1/realtime/client-secrets`` at the origin root and the
    WebSocket routes ``{base_path}/realtime-model``, ``/live-model``, ``/transcription-model``
    and ``/speech-model``. ``start()`` runs an asyncio loop in a daemon thread
    and returns once the port is listening; ``stop()`` ends it. The records
    (``requests``, ``issued``, ``ws_sessions``, ``ws_handshakes``) are
    snapshots safe to read from any thread.

    Options beyond the documented ones: ``oidc_tokens`` are bearer tokens
    accepted with ``ai-gateway-auth-method: oidc``; ``allow_api_key_ws`` lets
    an API key open a WebSocket the way a server-side client would;
    ``stream_delay`` spaces out scripted deltas (seconds);
    ``max_message_size`` caps one WebSocket message; ``allow_remote`` is
    needed to bind anything but loopback. ``mint_delay`` is how long every
    successful mint waits before answering (seconds; other requests are
    served meanwhile), a Gateway round trip or a stalled Gateway; it may be
    changed while running (``emulator.mint_delay = 20``). ``fail_every``
    (N) makes every Nth mint request fail as ``fail_with`` says: ``"503"``
    answers 503 at once (no token is issued), ``"hang"`` answers nothing for
    ``HANG_SECONDS``; a Gateway failing some of its calls. Both may be
    changed while running; the count starts at the first mint.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        api_keys: Iterable[str] = ("emulator-key",),
        team: str | None = None,
        base_path: str = "/v4/ai",
        default_ttl: int = 60,
        max_ttl: int = 3600,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        *,
        oidc_tokens: Iterable[str] = (),
        allow_api_key_ws: bool = False,
        allow_remote: bool = False,
        stream_delay: float = 0.0,
        max_message_size: int = 256 * 1024,
        keep_alive_timeout: float = 75.0,
        mint_delay: float = 0.0,
        fail_every: int = 0,
        fail_with: str = "503",
    ) -> None:
        if not allow_remote and not is_loopback_host(host):
            raise ValueError(
                f"Refusing to bind {host!r}: the emulator is loopback-only unless allow_remote=True"
            )
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if not 1 <= default_ttl <= max_ttl:
            raise ValueError("default_ttl must be between 1 and max_ttl")
        self.host = host
        if isinstance(api_keys, str):
            # A lone string would otherwise become a set of its characters.
            api_keys = (api_keys,)
        if isinstance(oidc_tokens, str):
            oidc_tokens = (oidc_tokens,)
        self.api_keys = frozenset(key for key in api_keys if key)
        if not self.api_keys:
            raise ValueError("at least one non-empty API key is needed")
        self.oidc_tokens = frozenset(token for token in oidc_tokens if token)
        self.team = team or None
        base_path = base_path.strip()
        self.base_path = ("/" + base_path.strip("/")) if base_path.strip("/") else ""
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl
        self.tls_cert = tls_cert
        self.tls_key = tls_key
        self.allow_api_key_ws = allow_api_key_ws
        self.stream_delay = stream_delay
        self.max_message_size = max_message_size
        self.keep_alive_timeout = keep_alive_timeout
        self.mint_delay = mint_delay
        if fail_with not in FAULTS:
            raise ValueError(f"fail_with must be one of {FAULTS}")
        if fail_every < 0:
            raise ValueError("fail_every must be 0 (never) or more")
        self.fail_every = fail_every
        self.fail_with = fail_with
        self._mint_requests = 0
        self._requested_port = port
        self._port: int | None = None
        self._ws_routes = {f"{self.base_path}/{kind}-model": kind for kind in KIND_MARKERS}

        self._lock = threading.Lock()
        # Notified whenever a WebSocket session ends (wait_for_ws_sessions).
        self._session_ended = threading.Condition(self._lock)
        # Successful mints held by holding_mints(), and a condition to wait on them.
        self._held_mints = 0
        self._held_changed = threading.Condition(self._lock)
        self._mint_gate: asyncio.Event | None = None
        self._requests: list[RecordedRequest] = []
        self._issued: dict[str, IssuedToken] = {}
        self._ws_sessions: list[WsSession] = []
        self._ws_handshakes: list[WsHandshake] = []
        self._tcp_connections = 0
        self._huge_padding: str | None = None

        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._sockets: dict[web.WebSocketResponse, WsSession] = {}
        # Open connections and their numbers (only the loop's thread touches these).
        self._connections: dict[asyncio.Transport, int] = {}
        self._connection_ids = itertools.count(1)

    # ----------------------------------------------------------------- API

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked for)."""
        if self._port is None:
            raise RuntimeError("the emulator is not started")
        return self._port

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:<port>`` (``https`` with TLS)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The base URL a client is configured with, e.g. ``.../v4/ai``."""
        return self.origin + self.base_path

    @property
    def ws_base_url(self) -> str:
        """``base_url`` with ``http`` swapped for ``ws``, as browsers derive it."""
        return "ws" + self.base_url[len("http") :]

    @property
    def mint_url(self) -> str:
        return self.origin + MINT_PATH

    @property
    def requests(self) -> list[RecordedRequest]:
        """Plain HTTP requests received (not health checks or upgrades)."""
        with self._lock:
            return list(self._requests)

    @property
    def issued(self) -> dict[str, IssuedToken]:
        """Token -> what it was minted for, and whether it was used."""
        with self._lock:
            return dict(self._issued)

    @property
    def ws_sessions(self) -> list[WsSession]:
        """WebSocket sessions that have ended, oldest first."""
        with self._lock:
            return list(self._ws_sessions)

    @contextlib.contextmanager
    def holding_mints(self) -> Iterator[None]:
        """Hold every successful mint (after ``mint_delay``) until the block ends.

        A stalled Gateway released at will: other requests are answered
        meanwhile, and ``wait_for_held_mints`` says when mints are waiting.
        """
        self._set_mint_gate(False)
        try:
            yield
        finally:
            self._set_mint_gate(True)

    def _set_mint_gate(self, open_: bool) -> None:
        loop = self._loop
        if loop is None:
            raise RuntimeError("the emulator is not started")

        async def flip() -> None:
            assert self._mint_gate is not None
            if open_:
                self._mint_gate.set()
            else:
                self._mint_gate.clear()

        # Done in the loop before returning, so no mint slips past the change.
        asyncio.run_coroutine_threadsafe(flip(), loop).result(timeout=_CLOSE_TIMEOUT)

    def wait_for_held_mints(self, count: int, timeout: float = 10.0) -> None:
        """Wait until ``count`` mints are held by ``holding_mints`` (``TimeoutError`` if not)."""
        with self._held_changed:
            if not self._held_changed.wait_for(lambda: self._held_mints >= count, timeout):
                raise TimeoutError(f"{self._held_mints} of {count} mints are held")

    def wait_for_ws_sessions(self, count: int = 1, timeout: float = 10.0) -> list[WsSession]:
        """Wait until ``count`` WebSocket sessions have ended; return them all.

        A session is recorded once its socket is closed on the emulator's
        side, a moment after the client saw the close. Raises
        ``TimeoutError`` when fewer have ended after ``timeout`` seconds.
        """
        with self._session_ended:
            if not self._session_ended.wait_for(
                lambda: len(self._ws_sessions) >= count, timeout=timeout
            ):
                raise TimeoutError(f"{len(self._ws_sessions)} of {count} WebSocket sessions ended")
            return list(self._ws_sessions)

    @property
    def ws_handshakes(self) -> list[WsHandshake]:
        """Every WebSocket opening handshake, accepted or refused."""
        with self._lock:
            return list(self._ws_handshakes)

    @property
    def tcp_connections(self) -> int:
        """TCP connections accepted since start (or the last ``reset()``)."""
        with self._lock:
            return self._tcp_connections

    def reset(self) -> None:
        """Forget all records and counters (issued tokens too)."""
        with self._lock:
            self._requests.clear()
            self._issued.clear()
            self._ws_sessions.clear()
            self._ws_handshakes.clear()
            self._tcp_connections = 0
            self._mint_requests = 0

    def issue_token(
        self, model: str, kind: str = "realtime", expires_in: int | None = None
    ) -> IssuedToken:
        """Mint a client secret directly, without an HTTP request."""
        if kind not in KIND_MARKERS:
            raise ValueError(f"unknown kind {kind!r}")
        return self._issue(model, kind, expires_in)

    def expire_token(self, token: str) -> None:
        """Make an issued token expired now (to test expiry without waiting)."""
        with self._lock:
            self._issued[token].expires_at = int(time.time()) - 1

    def start(self) -> GatewayEmulator:
        """Start serving in a daemon thread; return once listening."""
        if self._thread is not None:
            raise RuntimeError("the emulator is already started")
        self._ready.clear()
        self._startup_error = None
        self._thread = threading.Thread(
            target=self._thread_main, name="gateway-emulator", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            self._thread.join()
            self._thread = None
            raise self._startup_error
        return self

    def stop(self) -> None:
        """Stop serving, close every connection and end the thread."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout=10)
        self._thread = None
        self._loop = None
        self._stopping = None

    def __enter__(self) -> GatewayEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.base_url if self._port is not None else "not started"
        return f"<GatewayEmulator {where}>"

    # ------------------------------------------------------------ the loop

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to start() if not ready yet
            if not self._ready.is_set():
                self._startup_error = exc
                self._ready.set()
            else:
                logger.exception("gateway emulator stopped with an error")

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._mint_gate = asyncio.Event()
        self._mint_gate.set()
        ssl_context: ssl.SSLContext | None = None
        if self.tls_cert and self.tls_key:
            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_context.load_cert_chain(self.tls_cert, self.tls_key)
        app = web.Application(client_max_size=_MAX_BODY)
        # One handler for every path: an upgrade request is a WebSocket
        # handshake wherever it is sent, and each refusal has a contract body.
        app.router.add_route("*", "/{path:.*}", self._handle)
        app.on_response_prepare.append(_server_header)
        app.on_shutdown.append(self._close_websockets)
        runner = web.AppRunner(
            app,
            access_log=None,
            keepalive_timeout=self.keep_alive_timeout,
            max_line_size=_MAX_HEAD,
            max_field_size=_MAX_HEAD,
            shutdown_timeout=_SHUTDOWN_GRACE,
        )
        await runner.setup()
        try:
            server = await self._loop.create_server(
                self._counting(runner),
                self.host,
                self._requested_port,
                ssl=ssl_context,
                backlog=512,
                reuse_address=True,
                ssl_shutdown_timeout=_CLOSE_TIMEOUT if ssl_context else None,
            )
        except BaseException:
            await runner.cleanup()
            raise
        self._port = int(server.sockets[0].getsockname()[1])
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            await runner.cleanup()
            # A TLS close waits for the peer's close_notify: do not let one
            # outlive the loop.
            for transport in list(self._connections):
                transport.abort()
            await server.wait_closed()
            # Let the aborted transports run their connection_lost callbacks.
            await asyncio.sleep(0)

    def _counting(self, runner: web.AppRunner) -> Callable[[], asyncio.Protocol]:
        """The runner's protocol factory, watched to count and number connections.

        aiohttp documents ``web.Server`` (``runner.server``) as a protocol
        factory for ``loop.create_server()``; each protocol it makes is seen
        through asyncio's ``Protocol`` interface by a ``_Connection``.
        """
        server = runner.server
        assert server is not None  # runner.setup() made it
        return lambda: _Connection(self, server())

    def _connection_made(self, transport: asyncio.Transport) -> None:
        self._connections[transport] = next(self._connection_ids)
        with self._lock:
            self._tcp_connections += 1

    def _connection_lost(self, transport: asyncio.Transport) -> None:
        self._connections.pop(transport, None)

    def _connection_id(self, request: web.BaseRequest) -> int:
        transport = request.transport
        return 0 if transport is None else self._connections.get(transport, 0)

    async def _close_websockets(self, app: web.Application) -> None:
        closing = []
        for ws, record in list(self._sockets.items()):
            record.close_code = int(WSCloseCode.GOING_AWAY)
            closing.append(ws.close(code=WSCloseCode.GOING_AWAY, message=b"emulator stopping"))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True), 1)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.raw_path.partition("?")[0]
        if path in self._ws_routes or "websocket" in _tokens(request, "upgrade"):
            return await self._websocket(request)
        if path == HEALTH_PATH and request.method == "GET":
            return _response(_Reply(200, b'{"ok":true}'))
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            response = _response(_error(413, "Request body too large", "invalid_request_error"))
            response.force_close()
            return response
        record = RecordedRequest(
            method=request.method,
            path=request.raw_path,
            headers=_raw_headers(request),
            body=body,
            client=_client(request),
            connection_id=self._connection_id(request),
            received_at=time.time(),
        )
        with self._lock:
            self._requests.append(record)
        if path in (MINT_PATH, REDIRECTED_MINT_PATH):
            if request.method != "POST":
                reply = _error(405, "Use POST", "invalid_request_error")
                reply.headers.append(("Allow", "POST"))
            else:
                fault = self._scheduled_fault()
                if fault == "503":
                    reply = _error(503, "Emulated outage of one call", "internal_server_error")
                elif fault == "hang":
                    await asyncio.sleep(HANG_SECONDS)
                    reply = _error(504, "Emulated hang", "internal_server_error")
                else:
                    reply = self._mint(request, body, redirected=path == REDIRECTED_MINT_PATH)
        else:
            reply = _error(404, f"No route for {request.method} {path}", "not_found")
        logger.info("%s %s -> %s", request.method, request.raw_path, reply.status)
        if reply.mode != "drop":
            record.status = reply.status
        # Read per request, so a change while running applies to the next mint.
        delay = self.mint_delay
        if reply.status == 200 and path in (MINT_PATH, REDIRECTED_MINT_PATH):
            if delay > 0:
                await asyncio.sleep(delay)
            await self._pass_mint_gate()
        return await self._deliver(request, reply)

    def _scheduled_fault(self) -> str | None:
        """``fail_with`` for every ``fail_every``-th mint request, else None."""
        with self._lock:
            self._mint_requests += 1
            count = self._mint_requests
        every = self.fail_every
        return self.fail_with if every and count % every == 0 else None

    async def _pass_mint_gate(self) -> None:
        gate = self._mint_gate
        if gate is None or gate.is_set():
            return
        with self._held_changed:
            self._held_mints += 1
            self._held_changed.notify_all()
        try:
            await gate.wait()
        finally:
            with self._held_changed:
                self._held_mints -= 1
                self._held_changed.notify_all()

    async def _deliver(self, request: web.BaseRequest, reply: _Reply) -> web.StreamResponse:
        if reply.mode == "drop":
            # Fault injection: hang up without a single byte of answer. aiohttp
            # then finds the transport closing and never writes this response.
            if request.transport is not None:
                request.transport.close()
            return web.Response()
        if reply.mode == "slow-headers":
            await asyncio.sleep(reply.delay)
        if reply.mode != "slow-body" or len(reply.body) < 2:
            return _response(reply)
        # Headers and half the body now, the rest a byte group at a time.
        response = web.StreamResponse(status=reply.status, headers=reply.headers)
        if reply.content_type is not None:
            response.content_type = reply.content_type
        response.content_length = len(reply.body)
        half = len(reply.body) // 2
        rest = reply.body[half:]
        steps = min(10, len(rest))
        size = -(-len(rest) // steps)
        with contextlib.suppress(ConnectionError):  # the client gave up
            await response.prepare(request)
            await response.write(reply.body[:half])
            for offset in range(0, len(rest), size):
                await asyncio.sleep(reply.delay / steps)
                await response.write(rest[offset : offset + size])
        return response

    # ------------------------------------------------------------- HTTP

    def _check_credentials(self, request: web.BaseRequest) -> _Reply | None:
        headers = request.headers
        authorization = headers.getall("authorization", [])
        if not authorization:
            return _error(401, "Missing Authorization header", "authentication_error")
        scheme, _, credential = authorization[0].partition(" ")
        if len(authorization) > 1 or scheme.lower() != "bearer" or not credential.strip():
            return _error(
                401, "Authorization must be one 'Bearer <credential>'", "authentication_error"
            )
        method = headers.get("ai-gateway-auth-method")
        if method not in AUTH_METHODS:
            return _error(
                400,
                "ai-gateway-auth-method must be 'api-key' or 'oidc'",
                "invalid_request_error",
                param={"header": "ai-gateway-auth-method"},
            )
        accepted = self.api_keys if method == "api-key" else self.oidc_tokens
        if credential.strip() not in accepted:
            message = "Invalid API key" if method == "api-key" else "Invalid OIDC token"
            return _error(401, message, "authentication_error", code="invalid_credentials")
        if headers.get("ai-gateway-protocol-version") != PROTOCOL_VERSION:
            return _error(
                400,
                f"ai-gateway-protocol-version must be {PROTOCOL_VERSION}",
                "invalid_request_error",
                param={"header": "ai-gateway-protocol-version"},
            )
        if self.team is not None and headers.get(TEAM_HEADER) != self.team:
            return _error(
                403,
                "This credential is not allowed for the requested team",
                "forbidden",
                param={"ruleId": "team-scope"},
            )
        return None

    def _parse_body(
        self, request: web.BaseRequest, raw: bytes
    ) -> tuple[dict[str, Any] | None, _Reply | None]:
        def invalid(message: str, name: str | None = None) -> tuple[None, _Reply]:
            param = {"field": name} if name else None
            return None, _error(400, message, "invalid_request_error", param=param)

        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return invalid("Content-Type must be application/json")
        try:
            body = json.loads(raw)
        except ValueError:
            return invalid("Body is not valid JSON")
        if not isinstance(body, dict):
            return invalid("Body must be a JSON object")
        unknown = sorted(set(body) - {"model", "routeKind", "expiresIn"})
        if unknown:
            return invalid(f"Unknown field {unknown[0]!r}", unknown[0])
        model = body.get("model")
        if not isinstance(model, str) or not model.strip() or len(model) > 256:
            return invalid("model must be a non-empty string", "model")
        if any(ord(char) < 32 or ord(char) == 127 for char in model):
            return invalid("model contains control characters", "model")
        if "routeKind" in body and body["routeKind"] not in ROUTE_KINDS:
            return invalid("routeKind must be 'transcription', 'speech' or 'live'", "routeKind")
        if "expiresIn" in body:
            expires_in = body["expiresIn"]
            if type(expires_in) is not int or not 1 <= expires_in <= self.max_ttl:
                return invalid(
                    f"expiresIn must be an integer from 1 to {self.max_ttl}", "expiresIn"
                )
        return body, None

    def _issue(
        self, model: str, kind: str, expires_in: int | None, token: str | None = None
    ) -> IssuedToken:
        now = time.time()
        info = IssuedToken(
            token=token or f"vcst_{secrets.token_urlsafe(24)}",
            model=model,
            kind=kind,
            expires_at=int(now) + (expires_in or self.default_ttl),
            issued_at=now,
            team=self.team,
        )
        with self._lock:
            self._issued[info.token] = info
        return info

    def _mint(self, request: web.BaseRequest, raw: bytes, *, redirected: bool) -> _Reply:
        failure = self._check_credentials(request)
        if failure is not None:
            return failure
        body, failure = self._parse_body(request, raw)
        if failure is not None or body is None:
            return failure or _error(400, "Bad body", "invalid_request_error")
        model: str = body["model"]
        kind: str = body.get("routeKind", "realtime")
        expires_in: int | None = body.get("expiresIn")
        if not (redirected and model == "emulator/redirect"):
            fault = self._fault(model, kind, expires_in)
            if fault is not None:
                return fault
        info = self._issue(model, kind, expires_in)
        return self._success(info)

    def _success(self, info: IssuedToken, **extra: Any) -> _Reply:
        payload = {"token": info.token, "expiresAt": info.expires_at, **extra}
        return _Reply(200, _json_bytes(payload), headers=[("Cache-Control", "no-store")])

    def _fault(self, model: str, kind: str, expires_in: int | None) -> _Reply | None:
        """The reply a fault model asks for, or None for an ordinary model."""
        gen = _generation_id()
        name = model.rpartition("/")[2]
        if model == "emulator/rate-limited" or name in ("ratelimited", "rate-limited"):
            reply = _error(
                429,
                "Rate limit exceeded",
                "rate_limit_exceeded",
                code="rate_limited",
                generation_id=gen,
            )
            reply.headers.append(("Retry-After", "7"))
            return reply
        if "missing" in model:
            return _error(
                404,
                f"Model {model} not found",
                "model_not_found",
                param={"modelId": model},
                code="model_not_found",
                generation_id=gen,
            )
        simple = {
            "emulator/forbidden": (
                403,
                "Blocked by a policy rule",
                "forbidden",
                {"ruleId": "emulator-rule"},
            ),
            "emulator/access-denied": (
                403,
                "Access policy denied",
                "access_policy_denied",
                {
                    "policyIds": ["pol_emulator"],
                    "removedModels": ["emulator/access-denied"],
                    "removedProviders": ["emulator"],
                },
            ),
            "emulator/not-found": (404, "Resource not found", "not_found", None),
            "emulator/invalid": (400, "Emulated invalid request", "invalid_request_error", None),
            "emulator/auth-error": (401, "Emulated bad credential", "authentication_error", None),
            "emulator/internal": (
                500,
                "Emulated internal failure",
                "emulator_internal_error",
                None,
            ),
        }
        if model in simple:
            status, message, error_type, param = simple[model]
            return _error(status, message, error_type, param=param, generation_id=gen)
        if model == "emulator/bad-gateway":
            html = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
            return _Reply(502, html, "text/html; charset=utf-8")
        if model == "emulator/html":
            html = b"<!doctype html><html><body><p>Not JSON at all</p></body></html>"
            return _Reply(200, html, "text/html; charset=utf-8")
        if model == "emulator/malformed":
            return _Reply(200, b'{"token": "vcst_truncated", "expiresAt": 17')
        if model == "emulator/no-token":
            return _Reply(200, b'{"expiresAt":1}')
        if model == "emulator/empty-token":
            return _Reply(200, _json_bytes({"token": "", "expiresAt": int(time.time()) + 60}))
        if model in ("emulator/bad-expiry", "emulator/bad-expiry-string"):
            info = self._issue(model, kind, expires_in)
            bad: object = -1 if model == "emulator/bad-expiry" else "tomorrow"
            return _Reply(200, _json_bytes({"token": info.token, "expiresAt": bad}))
        if model == "emulator/huge":
            info = self._issue(model, kind, expires_in)
            if self._huge_padding is None:
                self._huge_padding = "x" * _HUGE_BODY_BYTES
            return self._success(info, padding=self._huge_padding)
        if model == "emulator/redirect":
            return _Reply(
                307, b"", None, headers=[("Location", self.origin + REDIRECTED_MINT_PATH)]
            )
        if model == "emulator/drop":
            return _Reply(0, mode="drop")
        if model == "emulator/spaces-token":
            token = f"vcst_emu has,space{secrets.token_hex(4)}"
            return self._success(self._issue(model, kind, expires_in, token=token))
        slow = _SLOW_RE.match(model)
        if slow is not None:
            delay = float(slow.group(2)) if slow.group(2) else _DEFAULT_SLOW_SECONDS
            reply = self._success(self._issue(model, kind, expires_in))
            reply.mode = "slow-headers" if slow.group(1) == "headers" else "slow-body"
            reply.delay = delay
            return reply
        return None

    # -------------------------------------------------------- WebSocket

    def _check_upgrade(
        self,
        request: web.BaseRequest,
        ws: web.WebSocketResponse,
        kind: str | None,
        query: str,
        protocols: list[str],
    ) -> tuple[IssuedToken, str | None]:
        """Validate a WebSocket handshake; return (token info, team) or raise _Refused."""
        if kind is None:
            raise _Refused(404, "not_found", "No WebSocket route here")
        if request.method != "GET":
            raise _Refused(405, "invalid_request_error", "Use GET")
        if "websocket" not in _tokens(request, "upgrade"):
            raise _Refused(
                426,
                "upgrade_required",
                "This route only speaks WebSocket",
                ("Upgrade", "websocket"),
            )
        if "upgrade" not in _tokens(request, "connection"):
            raise _Refused(400, "invalid_request_error", "Connection: Upgrade is needed")
        if request.headers.get("sec-websocket-version") != "13":
            raise _Refused(
                426,
                "upgrade_required",
                "Only WebSocket version 13",
                ("Sec-WebSocket-Version", "13"),
            )
        models = parse_qs(query, keep_blank_values=True).get("ai-model-id", [])
        if len(models) != 1 or not models[0]:
            raise _Refused(400, "invalid_request_error", "Exactly one ai-model-id is needed")
        model = models[0]
        if kind == "realtime" and model in LIVE_ONLY_MODELS:
            raise _Refused(400, "invalid_model", f"{model} is served on the live-model route only")
        offered = request.headers.getall("sec-websocket-protocol", [])
        if sum(len(value) for value in offered) > _MAX_PROTOCOL_HEADER:
            raise _Refused(431, "header_too_large", "Sec-WebSocket-Protocol is too large")
        if self.allow_api_key_ws and not protocols and "authorization" in request.headers:
            return self._check_server_socket(request, ws, kind, model)
        marker = KIND_MARKERS[kind]
        if not protocols or protocols[0] != marker:
            raise _Refused(400, "invalid_subprotocol", f"The first subprotocol must be {marker}")
        if not ws.can_prepare(request).ok:
            # aiohttp's own handshake checks, the Sec-WebSocket-Key among them.
            raise _Refused(400, "invalid_request_error", "Not a valid WebSocket handshake")
        if len(protocols) < 2 or not protocols[1].startswith(AUTH_PREFIX):
            raise _Refused(401, "token_missing", f"The second subprotocol must be {AUTH_PREFIX}…")
        token = protocols[1][len(AUTH_PREFIX) :]
        team: str | None = None
        if self.team is not None:
            if len(protocols) < 3 or not protocols[2].startswith(TEAM_PREFIX):
                raise _Refused(
                    403, "team_required", f"The third subprotocol must be {TEAM_PREFIX}…"
                )
            team = _decode_team(protocols[2][len(TEAM_PREFIX) :])
            if team is None:
                raise _Refused(400, "invalid_subprotocol", "The team must be unpadded base64url")
            if team != self.team:
                raise _Refused(403, "team_mismatch", "Wrong team")
        if self.allow_api_key_ws and token in self.api_keys:
            # A server-side client authenticating with the long-lived key.
            return IssuedToken(token, model, kind, 0, time.time(), self.team), team
        with self._lock:
            info = self._issued.get(token)
            if info is None:
                raise _Refused(401, "token_invalid", "Unknown client secret")
            if info.used:
                raise _Refused(401, "token_used", "This client secret was already used")
            if time.time() >= info.expires_at:
                raise _Refused(401, "token_expired", "This client secret has expired")
            if info.kind != kind:
                raise _Refused(403, "kind_mismatch", f"This client secret is for {info.kind}")
            if info.model != model:
                raise _Refused(403, "model_mismatch", "This client secret is for another model")
            # Single use: spend it while still holding the lock, so that two
            # racing handshakes can never both get in.
            info.used = True
        return info, team

    def _check_server_socket(
        self, request: web.BaseRequest, ws: web.WebSocketResponse, kind: str, model: str
    ) -> tuple[IssuedToken, str | None]:
        """A server-side socket (relay mode): the mint's header auth, no subprotocol.

        Realtime and Live only, as on the Gateway (the ``conversation`` intent). The
        record's token is ``"server-socket"``: the credential is not kept.
        """
        if kind not in ("realtime", "live"):
            raise _Refused(400, "invalid_request_error", "Server sockets are realtime or Live only")
        refused = self._check_credentials(request)
        if refused is not None:
            error = json.loads(refused.body).get("error", {}) if refused.body else {}
            raise _Refused(
                refused.status,
                str(error.get("type") or "authentication_error"),
                str(error.get("message") or "refused"),
            )
        if not ws.can_prepare(request).ok:
            raise _Refused(400, "invalid_request_error", "Not a valid WebSocket handshake")
        return IssuedToken("server-socket", model, kind, 0, time.time(), self.team), self.team

    def _record_handshake(
        self,
        request: web.BaseRequest,
        path: str,
        protocols: list[str],
        status: int,
        error_type: str | None,
    ) -> None:
        handshake = WsHandshake(
            path, _raw_headers(request), protocols, status, error_type, _client(request)
        )
        with self._lock:
            self._ws_handshakes.append(handshake)
        logger.info("WS %s -> %s %s", request.raw_path, status, error_type or "")

    async def _websocket(self, request: web.BaseRequest) -> web.StreamResponse:
        path, _, query = request.raw_path.partition("?")
        kind = self._ws_routes.get(path)
        protocols = [
            item.strip()
            for value in request.headers.getall("sec-websocket-protocol", [])
            for item in value.split(",")
            if item.strip()
        ]
        ws = web.WebSocketResponse(
            protocols=[KIND_MARKERS[kind]] if kind else [],
            max_msg_size=self.max_message_size,
            timeout=_CLOSE_TIMEOUT,
            # The script answers a close frame itself, echoing the peer's code.
            autoclose=False,
            # Negotiate no extension (no permessage-deflate), as the emulator never has.
            compress=False,
        )
        try:
            info, team = self._check_upgrade(request, ws, kind, query, protocols)
        except _Refused as refused:
            self._record_handshake(request, path, protocols, refused.status, refused.error_type)
            reply = _error(refused.status, refused.message, refused.error_type)
            reply.headers.extend(refused.headers)
            response = _response(reply)
            response.force_close()
            return response
        assert kind is not None  # _check_upgrade refuses unknown routes
        self._record_handshake(request, path, protocols, 101, None)
        await ws.prepare(request)
        record = WsSession(
            kind=kind,
            model=info.model,
            token=info.token,
            team=team,
            subprotocols=protocols,
            started_at=time.time(),
        )

        def drop() -> None:
            # Fault injection: end the TCP stream without a close frame.
            if request.transport is not None:
                request.transport.abort()

        self._sockets[ws] = record
        try:
            await run_session(ws, record, delay=self.stream_delay, drop=drop)
        finally:
            self._sockets.pop(ws, None)
            with self._lock:
                self._ws_sessions.append(record)
                self._session_ended.notify_all()
        return ws


def _decode_team(value: str) -> str | None:
    """Decode base64url without padding, strictly (None when malformed)."""
    if not _BASE64URL.match(value):
        return None
    try:
        raw = base64.b64decode(value + "=" * (-len(value) % 4), altchars=b"-_", validate=True)
        return raw.decode("utf-8")
    except (binascii.Error, ValueError):
        return None
