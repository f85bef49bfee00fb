"""``RelayConsumer``: the browser's socket relayed to the Gateway's, a pipe.

One consumer per browser socket. On connect it checks, in order: the
``Origin`` (the site's own, so another site's page cannot open the socket
with the user's cookie), the login (``scope["user"]`` from Channels'
``AuthMiddlewareStack``), the kind (only realtime relays), the model, then
the user's limits (``sessions.start_session``); then it opens the Gateway
socket with the site's credential and pumps frames both ways, unchanged:

- browser -> Gateway: ``receive`` puts each frame on a bounded ``Pipe``; a
  task sends them to the Gateway;
- Gateway -> browser: a task reads the Gateway socket onto another bounded
  ``Pipe``; a task sends them to the browser.

A pipe that fills (a side reads slower than the other writes, for
``RELAY_QUEUE_FRAMES`` frames) ends the session with 4413: memory per session
is bounded by two pipes of at most ``RELAY_QUEUE_FRAMES`` frames of at most
``RELAY_MAX_FRAME_BYTES`` each (plus the ``websockets`` read buffer, bounded
the same way). Text frames are parsed only for metering (``Meter``); no frame
content is ever logged or stored.

Refusals accept the socket first and then close it, so the browser sees the
code and reason (a refused handshake shows only 1006). Every way a session
ends goes through ``_finish`` once: the pumps stop, the Gateway socket is
closed (it never outlives the browser's), the audit row is completed, then
the browser's socket is closed with the code and reason of ``CLOSE_CODES``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any
from urllib.parse import parse_qs, urlsplit

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from gateway_realtime.conf import app_settings
from gateway_realtime.limits import Policy, get_policy
from gateway_realtime.models import CloseSide
from gateway_realtime.protocol import Kind
from gateway_realtime.relay import sessions
from gateway_realtime.relay.revocation import group_for
from gateway_realtime.relay.upstream import UpstreamUnavailable, open_upstream

logger = logging.getLogger("gateway_realtime.relay")

# Close codes and reasons the browser sees: one table -------------------------------
LOGIN_REQUIRED = (4401, "login required")
CROSS_SITE = (4403, "cross-site origin refused")
UNKNOWN_KIND = (4404, "unknown relay kind")
MODEL_NOT_ALLOWED = (4404, "model not allowed")
TOO_MANY_SESSIONS = sessions.TOO_MANY_SESSIONS  # (4429, "too many sessions")
QUOTA_EXCEEDED = sessions.QUOTA_EXCEEDED  # (4429, "quota exceeded")
BUDGET_EXCEEDED = sessions.BUDGET_EXCEEDED  # (4429, "budget exceeded")
SESSION_TOO_LONG = (4408, "session too long")
REVOKED_CODE = 4410
REVOKED = (REVOKED_CODE, "session revoked")
FELL_BEHIND = (4413, "fell behind")
FRAME_TOO_LARGE = (1009, "frame too large")
GATEWAY_UNAVAILABLE = (1011, "gateway unavailable")
GATEWAY_ERROR = (1011, "gateway error")
LIMITS_UNAVAILABLE = sessions.LIMITS_UNAVAILABLE  # (1011, "limits unavailable")
RELAY_ERROR = (1011, "relay error")
#: Gateway close codes passed on to the browser as they are.
PASSED_ON = frozenset({1000, 1001})

CLOSE_CODES = (
    LOGIN_REQUIRED,
    CROSS_SITE,
    UNKNOWN_KIND,
    MODEL_NOT_ALLOWED,
    TOO_MANY_SESSIONS,
    QUOTA_EXCEEDED,
    BUDGET_EXCEEDED,
    SESSION_TOO_LONG,
    REVOKED,
    FELL_BEHIND,
    FRAME_TOO_LARGE,
    GATEWAY_UNAVAILABLE,
    GATEWAY_ERROR,
    LIMITS_UNAVAILABLE,
    RELAY_ERROR,
)

RELAYED_KINDS = frozenset({Kind.REALTIME.value})

Frame = str | bytes


class Overflow(Exception):
    """A ``Pipe`` is full: its reader fell behind."""


class _End:
    """The marker after a pipe's last frame."""


_END = _End()


class Pipe:
    """A FIFO of at most ``limit`` frames; ``put`` never waits, it raises ``Overflow``.

    ``close()`` adds an end marker (beyond the limit) after which ``get``
    returns ``None``. ``high_water`` is the most frames it ever held.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a pipe holds at least one frame")
        self.limit = limit
        self.high_water = 0
        self._queue: asyncio.Queue[Frame | _End] = asyncio.Queue()
        self._closed = False

    def __len__(self) -> int:
        return self._queue.qsize() - (1 if self._closed else 0)

    def put(self, frame: Frame) -> None:
        if self._closed:
            return
        if self._queue.qsize() >= self.limit:
            raise Overflow
        self._queue.put_nowait(frame)
        self.high_water = max(self.high_water, self._queue.qsize())

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(_END)

    async def get(self) -> Frame | None:
        frame = await self._queue.get()
        return None if isinstance(frame, _End) else frame


# Origin --------------------------------------------------------------------------


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _allowed_hosts() -> list[str]:
    hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not hosts:
        # What Django's own HttpRequest.get_host() allows in this case.
        hosts = [".localhost", "127.0.0.1", "[::1]"]
    return hosts


def _trusted(origin: str) -> bool:
    """Whether ``origin`` is listed in ``CSRF_TRUSTED_ORIGINS`` (``*.`` wildcards as Django)."""
    parts = urlsplit(origin)
    for trusted in getattr(settings, "CSRF_TRUSTED_ORIGINS", ()):
        if trusted == origin:
            return True
        entry = urlsplit(trusted)
        if entry.scheme != parts.scheme or not entry.netloc.startswith("*."):
            continue
        suffix = entry.netloc[1:]  # ".example.com"
        if parts.netloc.endswith(suffix) and len(parts.netloc) > len(suffix):
            return True
    return False


def origin_allowed(scope: dict[str, Any]) -> bool:
    """The ``Origin`` is the site's own: the request's ``Host`` and allowed, or trusted.

    Missing or ``null`` origins are refused: a browser always sends one on a
    WebSocket handshake, so only a page hiding where it comes from omits it.
    """
    origin = _header(scope, b"origin")
    if not origin or origin == "null":
        return False
    parts = urlsplit(origin)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        return False
    if scope.get("scheme") == "wss" and parts.scheme != "https":
        # As Django's CSRF check: a page served over plain http may not
        # open the site's secure socket.
        return False
    if _trusted(f"{parts.scheme}://{parts.netloc}"):
        return True
    host = _header(scope, b"host")
    if not host or host.lower() != parts.netloc.lower():
        return False
    domain, _port = split_domain_port(host)
    return bool(domain) and validate_host(domain, _allowed_hosts())


# The consumer --------------------------------------------------------------------


class RelayConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    """Relays one browser socket to the Gateway (see the module docstring)."""

    @property
    def channel_layer_alias(self) -> str:
        return app_settings.RELAY_CHANNEL_LAYER

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session: sessions.Session | None = None
        self.upstream: ClientConnection | None = None
        self.group: str | None = None
        self.to_gateway: Pipe | None = None
        self.to_browser: Pipe | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.finishing: asyncio.Task[None] | None = None
        self.gateway_close: tuple[int, str] | None = None
        self.browser_closed = False

    # Connect ---------------------------------------------------------------------

    async def connect(self) -> None:
        await self.accept()
        if not origin_allowed(self.scope):
            await self.refuse(*CROSS_SITE)
            return
        user = self.scope.get("user")
        if (
            user is None
            or not getattr(user, "is_authenticated", False)
            or not getattr(user, "is_active", True)
        ):
            await self.refuse(*LOGIN_REQUIRED)
            return
        # Join the user's group first, so that a revocation sent while the
        # session starts is not lost: Channels hands it over once connect()
        # returns, and it ends whatever connect() started.
        if self.channel_layer is not None:
            try:
                group = group_for(user.pk)
                await self.channel_layer.group_add(group, self.channel_name)
            except Exception as error:
                # Unrevocable sessions are not started (the layer is down, say).
                logger.error(
                    "Relay refused for user %s: the channel layer failed (%s)",
                    user.pk,
                    type(error).__name__,
                )
                await self.refuse(*LIMITS_UNAVAILABLE)
                return
            self.group = group
        kind = str(self.scope.get("url_route", {}).get("kwargs", {}).get("kind", ""))
        if kind not in RELAYED_KINDS:
            await self.refuse(*UNKNOWN_KIND)
            return
        policy: Policy = await database_sync_to_async(get_policy)(user, kind)
        model = self.choose_model(policy)
        if model is None:
            await self.refuse(*MODEL_NOT_ALLOWED)
            return
        client = self.scope.get("client") or (None, None)
        try:
            self.session = await database_sync_to_async(sessions.start_session)(
                user,
                kind,
                model,
                policy,
                ip_address=client[0],
                user_agent=_header(self.scope, b"user-agent") or "",
            )
        except sessions.Refused as refused:
            logger.info("Relay refused for user %s: %s %s", user.pk, refused.code, refused.reason)
            await self.refuse(refused.code, refused.reason)
            return
        session = self.session
        limit = app_settings.RELAY_QUEUE_FRAMES
        try:
            self.upstream = await open_upstream(model, max_queue=limit)
        except Exception as error:
            # UpstreamUnavailable names the failure's type only; anything else
            # is a fault of ours, logged by type too (never the credential).
            logger.warning(
                "Relay session %s: %s",
                session.row.pk,
                error if isinstance(error, UpstreamUnavailable) else type(error).__name__,
            )
            with contextlib.suppress(Exception):
                await database_sync_to_async(sessions.release_quota)(session)
            unavailable = isinstance(error, UpstreamUnavailable)
            await self._end_now(*(GATEWAY_UNAVAILABLE if unavailable else RELAY_ERROR))
            return
        self.to_gateway = Pipe(limit)
        self.to_browser = Pipe(limit)
        self.tasks = [
            asyncio.create_task(self._guarded(self._read_gateway(self.upstream, self.to_browser))),
            asyncio.create_task(self._guarded(self._write_browser(self.to_browser))),
            asyncio.create_task(self._guarded(self._write_gateway(self.upstream, self.to_gateway))),
            asyncio.create_task(self._guarded(self._time_limit(session.seconds_left))),
        ]
        logger.info(
            "Relay session %s started for user %s (%s %s)", session.row.pk, user.pk, kind, model
        )

    async def _end_now(self, code: int, reason: str) -> None:
        self._end_soon(code, reason, CloseSide.RELAY)
        assert self.finishing is not None
        await asyncio.shield(self.finishing)

    async def _guarded(self, pump: Coroutine[Any, Any, None]) -> None:
        """Run one pump; a fault in it ends the session (1011) instead of leaving it hung."""
        try:
            await pump
        except asyncio.CancelledError:
            raise
        except Exception as error:
            session = self.session
            logger.error(
                "Relay session %s: a pump failed (%s); ending the session",
                session.row.pk if session is not None else "?",
                type(error).__name__,
            )
            self._end_soon(*RELAY_ERROR, CloseSide.RELAY)

    def choose_model(self, policy: Policy) -> str | None:
        """The ``?model=`` the page asked for if the policy allows it, else the default."""
        query = self.scope.get("query_string", b"").decode("latin-1")
        asked = parse_qs(query).get("model", [])
        if asked:
            return asked[0] if asked[0] in policy.allowed_models else None
        return policy.default_model

    async def refuse(self, code: int, reason: str) -> None:
        self.browser_closed = True
        if self.group is not None and self.channel_layer is not None:
            with contextlib.suppress(Exception):
                await self.channel_layer.group_discard(self.group, self.channel_name)
            self.group = None
        await self.close(code, reason=reason)

    # Frames ----------------------------------------------------------------------

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Hand the browser's frames straight to ``websocket_receive``.

        Channels' ``dispatch`` first closes stale database connections in its
        one worker thread, before every message. A frame touches no database
        here (``receive`` only meters and queues it), and with every frame of
        every session waiting its turn for that thread, one process saturated
        at 200 sessions (docs/performance.md, "Relay mode"). Every other
        message keeps Channels' own path.
        """
        if message["type"] == "websocket.receive":
            await self.websocket_receive(message)
            return
        await super().dispatch(message)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        frame: Frame | None = text_data if text_data is not None else bytes_data
        pipe, session = self.to_gateway, self.session
        if frame is None or pipe is None or session is None or self.finishing is not None:
            return
        size = len(frame) if isinstance(frame, bytes) else len(frame.encode())
        if size > app_settings.RELAY_MAX_FRAME_BYTES:
            self._end_soon(*FRAME_TOO_LARGE, CloseSide.RELAY)
            return
        session.meter.observe_browser(frame)
        try:
            pipe.put(frame)
        except Overflow:
            self._end_soon(*FELL_BEHIND, CloseSide.LIMIT)
            return
        if session.over_budget():
            self._end_soon(*BUDGET_EXCEEDED, CloseSide.LIMIT)

    async def _write_gateway(self, upstream: ClientConnection, pipe: Pipe) -> None:
        with contextlib.suppress(ConnectionClosed):
            while (frame := await pipe.get()) is not None:
                await upstream.send(frame)

    async def _read_gateway(self, upstream: ClientConnection, pipe: Pipe) -> None:
        session = self.session
        assert session is not None
        try:
            async for frame in upstream:
                response_done = session.meter.observe_gateway(frame)
                try:
                    pipe.put(frame)
                except Overflow:
                    self._end_soon(*FELL_BEHIND, CloseSide.LIMIT)
                    return
                if response_done:
                    await database_sync_to_async(sessions.sync_usage)(session)
                if session.over_budget():
                    # After the event that crossed it, so the browser sees that event.
                    pipe.close()
                    self.gateway_close = BUDGET_EXCEEDED
                    return
        except ConnectionClosed:
            pass
        code = upstream.close_code
        if code in PASSED_ON:
            self.gateway_close = (int(code or 1000), "gateway closed")
        else:
            self.gateway_close = GATEWAY_ERROR
        pipe.close()

    async def _write_browser(self, pipe: Pipe) -> None:
        while (frame := await pipe.get()) is not None:
            if isinstance(frame, str):
                await self.send(text_data=frame)
            else:
                await self.send(bytes_data=frame)
        code, reason = self.gateway_close or GATEWAY_ERROR
        if (code, reason) == BUDGET_EXCEEDED:
            self._end_soon(code, reason, CloseSide.LIMIT)
        else:
            self._end_soon(code, reason, CloseSide.GATEWAY)

    async def _time_limit(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self._end_soon(*SESSION_TOO_LONG, CloseSide.LIMIT)

    # Revocation (a channel-layer group message) ------------------------------------

    async def relay_revoke(self, event: dict[str, Any]) -> None:
        reason = event.get("reason")
        text = reason if isinstance(reason, str) and reason else REVOKED[1]
        self._end_soon(REVOKED_CODE, text, CloseSide.REVOKED)

    # Ending ----------------------------------------------------------------------

    def _end_soon(self, code: int, reason: str, closed_by: str) -> None:
        """End the session once, in a task of its own (callers may be the pumps it stops)."""
        if self.finishing is None:
            self.finishing = asyncio.create_task(self._finish(code, reason, closed_by))

    async def _finish(self, code: int, reason: str, closed_by: str) -> None:
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()
        for task in self.tasks:
            if task is not current:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self.upstream is not None:
            # The browser's close ends the Gateway's with 1000; so does any other end.
            with contextlib.suppress(Exception):
                await self.upstream.close(1000)
        session = self.session
        if session is not None:
            try:
                await database_sync_to_async(sessions.end_session)(session, code, reason, closed_by)
            except Exception as error:
                logger.error(
                    "Relay session %s: the audit row was not completed (%s)",
                    session.row.pk,
                    type(error).__name__,
                )
            meter = session.meter
            logger.info(
                "Relay session %s ended: %s %s by %s; frames %s/%s, bytes %s/%s",
                session.row.pk,
                code,
                reason,
                closed_by,
                meter.frames_from_browser,
                meter.frames_from_gateway,
                meter.bytes_from_browser,
                meter.bytes_from_gateway,
            )
        if self.group is not None and self.channel_layer is not None:
            with contextlib.suppress(Exception):
                await self.channel_layer.group_discard(self.group, self.channel_name)
        if not self.browser_closed:
            self.browser_closed = True
            with contextlib.suppress(Exception):
                await self.close(code, reason=reason)

    async def disconnect(self, code: int) -> None:
        """The browser went away: end the session (the Gateway socket with it)."""
        self.browser_closed = True
        if self.session is None:
            if self.group is not None and self.channel_layer is not None:
                with contextlib.suppress(Exception):
                    await self.channel_layer.group_discard(self.group, self.channel_name)
                self.group = None
            return
        self._end_soon(int(code), "browser closed", CloseSide.BROWSER)
        if self.finishing is not None:
            await asyncio.shield(self.finishing)
