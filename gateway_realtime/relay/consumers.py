"""``RelayConsumer``: the browser's socket relayed to the Gateway's.

One consumer per browser socket. On connect it checks, in order: the
``Origin`` (``gateway_realtime.origins``: the same rule as the mint
endpoint's), the login (the session cookie), the kind, the model, then the
user's limits (``sessions.start_session``). Then the session runs as one
``asyncio.TaskGroup`` (``__call__``) holding:

- Channels' own message loop (``AsyncConsumer.__call__``): the browser's
  frames (``receive``: metered, then ``await``-sent to the Gateway socket),
  the browser's close, and revocations from the channel layer;
- one reader of the Gateway socket: each frame metered, then ``await``-sent
  to the browser;
- the session's clock (``max_session_seconds``) and its meter, which adds
  the session's usage to the user's shared budget every
  ``RELAY_METER_INTERVAL`` seconds.

Backpressure is the sockets' own: a send waits while the other side's
transport buffer is full, and the Gateway socket reads at most
``RELAY_QUEUE_FRAMES`` frames ahead, so memory per session is bounded in
bytes. A side that takes no frame for ``RELAY_MAX_BEHIND_SECONDS`` ends the
session with 4413; a burst from a browser or Gateway that keeps reading
never does.

Anything that ends one task ends the group: a ``SessionEnd`` raised with a
close code from ``CLOSE_CODES``, the browser's close, a fault of the
channel layer or the database (1011 ``limits unavailable``), a bug (1011
``relay error``, logged by type), or a server shutdown (1012). The one
``finally`` of ``__call__`` then closes the Gateway socket, completes the
audit row, gives the quota back if the Gateway socket never opened, leaves
the revocation group and closes the browser's socket with the code and
reason. Nothing else ends a session, so none can outlive its browser.

Text frames are parsed only for metering (``metering.Meter``); no frame
content is ever logged or stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, TypeVar
from urllib.parse import parse_qs

from channels.consumer import AsyncConsumer
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.contrib import auth
from django.db import Error as DatabaseError
from django.db import close_old_connections
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from gateway_realtime.conf import app_settings
from gateway_realtime.exceptions import LimitsUnavailable
from gateway_realtime.limits import Policy, get_policy
from gateway_realtime.models import CloseSide
from gateway_realtime.origins import scope_header, scope_origin_allowed
from gateway_realtime.protocol import Kind
from gateway_realtime.relay import sessions
from gateway_realtime.relay.metering import UnreadableFrame, frame_size
from gateway_realtime.relay.revocation import group_for
from gateway_realtime.relay.upstream import CLOSE_TIMEOUT, UpstreamUnavailable, open_upstream

try:  # channels-redis's faults; the relay extra installs redis, but a site may not use it
    from redis.exceptions import RedisError
except ImportError:  # pragma: no cover - redis is part of the relay extra
    RedisError = OSError  # type: ignore[assignment,misc]

logger = logging.getLogger("gateway_realtime.relay")

T = TypeVar("T")

# Close codes and reasons the browser sees: one table -------------------------------
LOGIN_REQUIRED = (4401, "login required")
CROSS_SITE = (4403, "cross-site origin refused")
UNKNOWN_KIND = (4404, "unknown relay kind")
MODEL_NOT_ALLOWED = (4404, "model not allowed")
TOO_MANY_SESSIONS = sessions.TOO_MANY_SESSIONS  # (4429, "too many sessions")
QUOTA_EXCEEDED = sessions.QUOTA_EXCEEDED  # (4429, "quota exceeded")
BUDGET_EXCEEDED = sessions.BUDGET_EXCEEDED  # (4429, "budget exceeded")
RATE_LIMITED = sessions.RATE_LIMITED  # (4429, "rate limited")
SESSION_TOO_LONG = (4408, "session too long")
REVOKED_CODE = 4410
REVOKED = (REVOKED_CODE, "session revoked")
FELL_BEHIND = (4413, "fell behind")
UNREADABLE_FRAME = (1007, "unreadable frame")
FRAME_TOO_LARGE = (1009, "frame too large")
GATEWAY_UNAVAILABLE = (1011, "gateway unavailable")
GATEWAY_ERROR = (1011, "gateway error")
LIMITS_UNAVAILABLE = sessions.LIMITS_UNAVAILABLE  # (1011, "limits unavailable")
RELAY_ERROR = (1011, "relay error")
SERVER_SHUTDOWN = (1012, "server restarting")
#: Gateway close codes passed on to the browser as they are.
PASSED_ON = frozenset({1000, 1001})
GATEWAY_CLOSED = "gateway closed"

CLOSE_CODES = (
    LOGIN_REQUIRED,
    CROSS_SITE,
    UNKNOWN_KIND,
    MODEL_NOT_ALLOWED,
    TOO_MANY_SESSIONS,
    QUOTA_EXCEEDED,
    BUDGET_EXCEEDED,
    RATE_LIMITED,
    SESSION_TOO_LONG,
    REVOKED,
    FELL_BEHIND,
    UNREADABLE_FRAME,
    FRAME_TOO_LARGE,
    GATEWAY_UNAVAILABLE,
    GATEWAY_ERROR,
    LIMITS_UNAVAILABLE,
    RELAY_ERROR,
    SERVER_SHUTDOWN,
    (1000, GATEWAY_CLOSED),
    (1001, GATEWAY_CLOSED),
)

RELAYED_KINDS = frozenset({Kind.REALTIME.value})

#: A browser close code an ASGI server sends its application when it shuts down.
SERVER_GOING_AWAY = 1012

#: Faults of the stores the limits live in: the relay fails closed on them.
STORE_FAULTS: tuple[type[BaseException], ...] = (
    LimitsUnavailable,
    DatabaseError,
    RedisError,
    OSError,
)


async def in_db_thread(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``function(*args, **kwargs)`` in Channels' database thread, its connection closed after.

    ``database_sync_to_async`` closes old connections outside the context
    the call ran in, and a session's tasks each have a context of their own,
    so a connection the call opened would outlive it there; closing it in
    the call (``close_old_connections``, which honours ``CONN_MAX_AGE``) is
    what Channels' own ``dispatch`` does once per message.
    """

    def call() -> T:
        try:
            return function(*args, **kwargs)
        finally:
            close_old_connections()

    result: T = await database_sync_to_async(call)()
    return result


class SessionEnd(Exception):
    """Raised inside a session's task group to end it with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str, closed_by: str) -> None:
        super().__init__(f"{code} {reason} ({closed_by})")
        self.code = code
        self.reason = reason
        self.closed_by = closed_by


def origin_allowed(scope: dict[str, Any]) -> bool:
    """Whether the handshake's ``Origin`` is the site's own (``origins.scope_origin_allowed``)."""
    return scope_origin_allowed(scope)


def _first_cause(error: BaseException) -> BaseException:
    """The exception that ended a task group: the first ``SessionEnd``, else the first."""
    if isinstance(error, BaseExceptionGroup):
        match = error.subgroup(lambda e: isinstance(e, SessionEnd))
        if match is not None:
            return _first_cause(match.exceptions[0])
        return _first_cause(error.exceptions[0])
    return error


@dataclasses.dataclass
class _Ending:
    """How the session ended, once decided (the first cause wins)."""

    code: int
    reason: str
    closed_by: str


class RelayConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    """Relays one browser socket to the Gateway (see the module docstring).

    Extension hooks: ``choose_model`` (which model the session runs).
    """

    @property
    def channel_layer_alias(self) -> str:
        return app_settings.RELAY_CHANNEL_LAYER

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session: sessions.Session | None = None
        self.upstream: ClientConnection | None = None
        self.upstream_open = asyncio.Event()
        self.group: str | None = None
        self.ending: _Ending | None = None
        self.browser_gone = False
        self.accepted = False
        self.tasks: asyncio.TaskGroup | None = None
        # When a send to that side started, while it waits (see _clock).
        self.browser_send_since: float | None = None
        self.gateway_send_since: float | None = None
        # Set by Channels' __call__; None until then (a fault may come first).
        self.channel_layer: Any = None
        self.channel_name: str | None = None

    # The session: one task group, one finally ---------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scope = scope
        self.base_send = send
        try:
            async with asyncio.TaskGroup() as tasks:
                self.tasks = tasks
                tasks.create_task(self._channels_loop(scope, receive, send))
        except asyncio.CancelledError:
            # The server cancelled the application: it is shutting down.
            self._decide(*SERVER_SHUTDOWN, CloseSide.SERVER)
            raise
        except BaseException as error:
            self._decide_from(_first_cause(error))
        finally:
            await asyncio.shield(self._finish())

    async def _channels_loop(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Channels' message loop; it returns when the browser has gone (``disconnect``)."""
        await AsyncConsumer.__call__(self, scope, receive, send)
        raise SessionEnd(*self._browser_close())

    def _browser_close(self) -> tuple[int, str, str]:
        ending = self.ending
        if ending is not None:
            return ending.code, ending.reason, ending.closed_by
        return 1005, "browser closed", CloseSide.BROWSER

    def _decide(self, code: int, reason: str, closed_by: str) -> None:
        if self.ending is None:
            self.ending = _Ending(code, reason, closed_by)

    def _decide_from(self, error: BaseException) -> None:
        """Turn what ended the task group into the session's close code (first wins)."""
        session_id = self.session.row.pk if self.session is not None else "-"
        if isinstance(error, SessionEnd):
            self._decide(error.code, error.reason, error.closed_by)
        elif isinstance(error, STORE_FAULTS):
            # The channel layer (revocation) or the database (limits) is gone:
            # fail closed. A fault of a store, not of ours: no traceback.
            logger.warning(
                "Relay session %s: a store failed (%s); ending the session",
                session_id,
                type(error).__name__,
            )
            self._decide(*LIMITS_UNAVAILABLE, CloseSide.RELAY)
        else:
            logger.error(
                "Relay session %s: a fault in the relay (%s); ending the session",
                session_id,
                type(error).__name__,
                exc_info=(type(error), error, error.__traceback__),
            )
            self._decide(*RELAY_ERROR, CloseSide.RELAY)

    async def _finish(self) -> None:
        """The one cleanup path of every session, however it ended."""
        ending = self.ending or _Ending(*RELAY_ERROR, CloseSide.RELAY)
        if self.upstream is not None:
            # Whatever ended the session, the Gateway's socket ends with 1000.
            with contextlib.suppress(Exception):
                await self.upstream.close(1000)
        session = self.session
        if session is not None:
            try:
                await in_db_thread(
                    sessions.end_session,
                    session,
                    ending.code,
                    ending.reason,
                    ending.closed_by,
                    gateway_opened=self.upstream is not None,
                )
            except Exception as error:
                logger.warning(
                    "Relay session %s: the audit row was not completed (%s)",
                    session.row.pk,
                    type(error).__name__,
                )
            meter = session.meter
            logger.info(
                "Relay session %s ended: %s %s by %s; frames %s/%s, bytes %s/%s",
                session.row.pk,
                ending.code,
                ending.reason,
                ending.closed_by,
                meter.frames_from_browser,
                meter.frames_from_gateway,
                meter.bytes_from_browser,
                meter.bytes_from_gateway,
            )
        if self.group is not None and self.channel_layer is not None:
            with contextlib.suppress(Exception):
                await self.channel_layer.group_discard(self.group, self.channel_name)
        if self.browser_gone:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                if not self.accepted:
                    # Channels' loop never reached connect() (the channel
                    # layer failed first): accept, so the browser sees the code.
                    await self.accept()
                await self.close(ending.code, reason=ending.reason)

    # Channels' handlers -------------------------------------------------------------

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        await super().accept(subprotocol, headers)
        self.accepted = True

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Hand the browser's frames straight to ``websocket_receive``.

        Channels' ``dispatch`` first closes stale database connections in its
        one worker thread, before every message. A frame touches no database
        here, and with every frame of every session waiting its turn for that
        thread, one process saturated at 200 sessions (docs/performance.md).
        Every other message keeps Channels' own path. A canary test
        (tests/relay/test_channels_canary.py) fails if Channels' ``dispatch``
        stops being exactly that for ``websocket.receive``.
        """
        if message["type"] == "websocket.receive":
            await self.websocket_receive(message)
            return
        await super().dispatch(message)

    async def connect(self) -> None:
        await self.accept()
        if not origin_allowed(self.scope):
            raise SessionEnd(*CROSS_SITE, CloseSide.LIMIT)
        user = await self.get_user()
        if (
            user is None
            or not getattr(user, "is_authenticated", False)
            or not getattr(user, "is_active", True)
        ):
            raise SessionEnd(*LOGIN_REQUIRED, CloseSide.LIMIT)
        # Join the user's group first, so that a revocation sent while the
        # session starts is not lost: Channels hands it over once connect()
        # returns, and it ends whatever connect() started. Without a channel
        # layer (one process, revocation impossible) the session still runs:
        # check W007 warns about that configuration.
        if self.channel_layer is not None:
            group = group_for(user.pk)
            await self.channel_layer.group_add(group, self.channel_name)
            self.group = group
        kind = str(self.scope.get("url_route", {}).get("kwargs", {}).get("kind", ""))
        if kind not in RELAYED_KINDS:
            raise SessionEnd(*UNKNOWN_KIND, CloseSide.LIMIT)
        policy: Policy = await in_db_thread(get_policy, user, kind)
        model = self.choose_model(policy)
        if model is None:
            raise SessionEnd(*MODEL_NOT_ALLOWED, CloseSide.LIMIT)
        client = self.scope.get("client") or (None, None)
        try:
            self.session = await in_db_thread(
                sessions.start_session,
                user,
                kind,
                model,
                policy,
                ip_address=client[0],
                user_agent=scope_header(self.scope, b"user-agent") or "",
            )
        except sessions.Refused as refused:
            logger.info("Relay refused for user %s: %s %s", user.pk, refused.code, refused.reason)
            closed_by = CloseSide.RELAY if refused.code == 1011 else CloseSide.LIMIT
            raise SessionEnd(refused.code, refused.reason, closed_by) from None
        session = self.session
        logger.info(
            "Relay session %s started for user %s (%s %s)", session.row.pk, user.pk, kind, model
        )
        assert self.tasks is not None
        self.tasks.create_task(self._relay_gateway(session, model))
        self.tasks.create_task(self._clock(session.seconds_left))
        if session.budget_limited:
            self.tasks.create_task(self._meter(session))

    async def get_user(self) -> Any:
        """The logged-in user: ``scope["user"]`` if a middleware set it, else from the session.

        A database that cannot be reached ends the session with 1011
        ``limits unavailable`` (not an HTTP 500 at the handshake).
        """
        if "user" in self.scope:
            return self.scope["user"]
        if "session" not in self.scope:
            return None
        # Django's own lookup (session, backend, session hash), given what it
        # reads of a request: the session.
        request = SimpleNamespace(session=self.scope["session"])
        return await in_db_thread(auth.get_user, request)

    def choose_model(self, policy: Policy) -> str | None:
        """The ``?model=`` the page asked for if the policy allows it, else the default."""
        query = self.scope.get("query_string", b"").decode("latin-1")
        asked = parse_qs(query).get("model", [])
        if asked:
            return asked[0] if asked[0] in policy.allowed_models else None
        return policy.default_model

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """One browser frame: checked, metered, then sent to the Gateway (backpressure)."""
        frame: str | bytes | None = text_data if text_data is not None else bytes_data
        session = self.session
        if frame is None or session is None:
            return  # before the session started: nothing to relay to yet
        if frame_size(frame) > app_settings.RELAY_MAX_FRAME_BYTES:
            raise SessionEnd(*FRAME_TOO_LARGE, CloseSide.LIMIT)
        audio_before = session.meter.audio_seconds_in
        try:
            session.meter.observe_browser(frame)
        except UnreadableFrame:
            raise SessionEnd(*UNREADABLE_FRAME, CloseSide.LIMIT) from None
        if session.over_budget():
            # Refused before it is sent, so the budget is not spent past,
            # and its audio is not counted as spent.
            session.meter.audio_seconds_in = audio_before
            raise SessionEnd(*BUDGET_EXCEEDED, CloseSide.LIMIT)
        await self.upstream_open.wait()
        upstream = self.upstream
        assert upstream is not None
        self.gateway_send_since = asyncio.get_running_loop().time()
        try:
            await upstream.send(frame)
        except ConnectionClosed:
            raise SessionEnd(*self._gateway_close(upstream)) from None
        finally:
            self.gateway_send_since = None

    async def disconnect(self, code: int) -> None:
        """The browser went away (or the server is shutting down: 1012)."""
        self.browser_gone = True
        if code == SERVER_GOING_AWAY:
            self._decide(*SERVER_SHUTDOWN, CloseSide.SERVER)
        else:
            self._decide(int(code), "browser closed", CloseSide.BROWSER)

    async def relay_revoke(self, event: dict[str, Any]) -> None:
        """A ``relay.revoke`` message from the user's group (``revoke_sessions``)."""
        reason = event.get("reason")
        text = reason if isinstance(reason, str) and reason else REVOKED[1]
        raise SessionEnd(REVOKED_CODE, text, CloseSide.REVOKED)

    # The session's tasks ------------------------------------------------------------

    async def _relay_gateway(self, session: sessions.Session, model: str) -> None:
        """Open the Gateway socket, then read it to the end, sending each frame on."""
        try:
            self.upstream = await open_upstream(model, max_queue=app_settings.RELAY_QUEUE_FRAMES)
        except UpstreamUnavailable as error:
            logger.warning("Relay session %s: %s", session.row.pk, error)
            raise SessionEnd(*GATEWAY_UNAVAILABLE, CloseSide.GATEWAY) from None
        upstream = self.upstream
        self.upstream_open.set()
        try:
            async for frame in upstream:
                usage = session.meter.observe_gateway(frame)
                self.browser_send_since = asyncio.get_running_loop().time()
                try:
                    if isinstance(frame, str):
                        await self.send(text_data=frame)
                    else:
                        await self.send(bytes_data=frame)
                except (OSError, RuntimeError):
                    # The ASGI server refuses a send once the browser has gone.
                    self.browser_gone = True
                    raise SessionEnd(1006, "browser closed", CloseSide.BROWSER) from None
                finally:
                    self.browser_send_since = None
                if usage:
                    await self._add_usage(session)
                if session.over_budget():
                    # After the event that crossed it, so the browser sees that event.
                    raise SessionEnd(*BUDGET_EXCEEDED, CloseSide.LIMIT)
        except ConnectionClosed:
            pass
        raise SessionEnd(*self._gateway_close(upstream))

    @staticmethod
    def _gateway_close(upstream: ClientConnection) -> tuple[int, str, str]:
        code = upstream.close_code
        if code in PASSED_ON:
            return int(code or 1000), GATEWAY_CLOSED, CloseSide.GATEWAY
        return (*GATEWAY_ERROR, CloseSide.GATEWAY)

    async def _clock(self, seconds: float) -> None:
        """The session's length, and how long a send to either side may wait.

        A send marks when it started (``*_send_since``) and clears the mark
        when done; this one task looks at the marks a few times per
        ``RELAY_MAX_BEHIND_SECONDS``, so a frame costs two assignments,
        not a timer of its own.
        """
        behind = app_settings.RELAY_MAX_BEHIND_SECONDS
        ends = asyncio.get_running_loop().time() + seconds
        while (now := asyncio.get_running_loop().time()) < ends:
            for since in (self.browser_send_since, self.gateway_send_since):
                if since is not None and now - since >= behind:
                    raise SessionEnd(*FELL_BEHIND, CloseSide.LIMIT)
            await asyncio.sleep(min(behind / 4, ends - now))
        raise SessionEnd(*SESSION_TOO_LONG, CloseSide.LIMIT)

    async def _meter(self, session: sessions.Session) -> None:
        """Add the session's usage to the user's shared budget, every interval."""
        while True:
            await asyncio.sleep(app_settings.RELAY_METER_INTERVAL)
            await self._add_usage(session)

    async def _add_usage(self, session: sessions.Session) -> None:
        if await in_db_thread(sessions.add_usage, session):
            raise SessionEnd(*BUDGET_EXCEEDED, CloseSide.LIMIT)
