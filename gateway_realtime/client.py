"""The HTTP client that mints client secrets on the Gateway.

One ``GatewayClient`` per process holds one ``requests.Session`` whose
keep-alive pool is shared by every thread, so a busy site pays the TCP and TLS
handshake once per pooled connection, not once per mint. All network I/O goes
through ``GatewayClient.send``; subclasses can override the ``build_*`` and
``parse_*`` hooks. The wire format itself (URLs, subprotocols, what a usable
token is) lives in ``gateway_realtime.protocol``.
"""

from __future__ import annotations

import email.utils
import json
import math
import os
import threading
import time
from http.cookiejar import DefaultCookiePolicy
from typing import TYPE_CHECKING, Any

import requests
import urllib3.exceptions
from django.utils.module_loading import import_string
from django.views.decorators.debug import sensitive_variables
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from gateway_realtime import __version__
from gateway_realtime.conf import app_settings
from gateway_realtime.credentials import Credential
from gateway_realtime.exceptions import (
    ERROR_TYPES,
    GatewayConnectionError,
    GatewayError,
    GatewayInternalServerError,
    GatewayRateLimitError,
    GatewayResponseError,
    GatewayTimeoutError,
)
from gateway_realtime.protocol import (
    LIVE_ROUTE_KIND,
    PROTOCOL_VERSION,
    GatewayClientProtocol,
    Kind,
    MintedSecret,
    build_ws_url,
    gateway_origin,
    is_live,
    is_usable_token,
    mint_url,
)

USER_AGENT = f"django-gateway-realtime/{__version__}"
# 9999-12-31T23:59:59Z, the last instant a datetime (and the audit row) can hold.
MAX_EXPIRES_AT = 253402300799


def _retry_after(value: str | None) -> int | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0, math.ceil(when.timestamp() - time.time()))


def limit_next_read(response: requests.Response, seconds: float) -> bool:
    """Let the next read of ``response``'s body wait ``seconds`` at most; whether it could.

    requests sets one read time-out when the request is sent; to cut a body
    that trickles in at the call's deadline, the socket's time-out is set
    before each read, through urllib3's ``HTTPResponse.connection`` and the
    connection's ``sock`` (``http.client``). Without them (another transport
    adapter) reads keep requests' time-out and the deadline is checked
    between them.
    """
    sock = getattr(getattr(response.raw, "connection", None), "sock", None)
    if sock is None:
        return False
    sock.settimeout(seconds)
    return True


class GatewayClient:
    """Mints client secrets with ``POST {origin}/v1/realtime/client-secrets``.

    Thread-safe: one instance per process is shared by all threads (see
    ``get_client``). Settings are read when the session is built and on every
    call, never at import.
    """

    def __init__(self) -> None:
        self._session: requests.Session | None = None
        self._lock = threading.Lock()

    # Session ---------------------------------------------------------------

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._session = self.build_session()
        return self._session

    def build_session(self) -> requests.Session:
        """A session with a keep-alive pool, connect-only retries, no cookies, no redirects."""
        session = _GatewaySession()
        # Only our own headers: no requests defaults to drift from the contract.
        session.headers.clear()
        session.cookies.set_policy(_RejectAllCookies())
        session.trust_env = False  # no .netrc credentials, no env proxies by surprise
        retries = Retry(
            total=app_settings.CONNECT_RETRIES,
            connect=app_settings.CONNECT_RETRIES,
            # A request that may have reached the Gateway is never sent twice:
            # a second mint would burn quota and leave an unaudited secret.
            # False (not 0) re-raises the read error itself, so a read time-out
            # stays a time-out instead of becoming a MaxRetryError/ConnectionError.
            read=False,
            status=0,
            other=0,
            redirect=0,
            allowed_methods=None,
            raise_on_redirect=False,
            raise_on_status=False,
            backoff_factor=0.05,
        )
        adapter = HTTPAdapter(
            pool_connections=4,
            pool_maxsize=app_settings.POOL_MAXSIZE,
            max_retries=retries,
            pool_block=False,
        )
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None

    # Hooks -----------------------------------------------------------------

    @sensitive_variables("credential", "headers")
    def build_headers(self, credential: Credential) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {credential.value}",
            "ai-gateway-protocol-version": PROTOCOL_VERSION,
            "ai-gateway-auth-method": credential.method,
        }
        team = app_settings.TEAM
        if team:
            headers["x-vercel-ai-gateway-team"] = team
        headers["Content-Type"] = "application/json"
        headers["User-Agent"] = USER_AGENT
        for name, value in app_settings.EXTRA_HEADERS.items():
            if name.lower() not in {"authorization", "content-type", "content-length", "host"}:
                headers[name] = value
        return headers

    def build_body(self, kind: Kind, model: str, expires_in: int | None) -> bytes:
        """The JSON body, byte for byte like ``JSON.stringify`` in the official client."""
        body: dict[str, Any] = {"model": model}
        if is_live(kind, model, app_settings.REALTIME_API):
            body["routeKind"] = LIVE_ROUTE_KIND
        elif kind.route_kind is not None:
            body["routeKind"] = kind.route_kind
        if expires_in is not None:
            body["expiresIn"] = int(expires_in)
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()

    # The call --------------------------------------------------------------

    # Every local is hidden from error reports here and below: besides the
    # credential, the Gateway's answer may echo it, and holds the token.
    @sensitive_variables()
    def mint(
        self,
        *,
        kind: Kind,
        model: str,
        credential: Credential,
        expires_in: int | None = None,
        timeout: float | None = None,
    ) -> MintedSecret:
        """Mint one client secret; raise a ``GatewayError`` subclass on any failure.

        ``timeout``: the whole call's deadline in seconds, from before
        connecting to the answer's last byte (default
        ``GATEWAY_REALTIME_TOTAL_TIMEOUT``).
        """
        base_url = app_settings.BASE_URL
        url = mint_url(base_url)
        headers = self.build_headers(credential)
        body = self.build_body(kind, model, expires_in)
        status, response_headers, content = self.send(url, headers, body, timeout=timeout)
        if 200 <= status < 300:
            token, expires_at = self.parse_success(content, status, credential)
            return MintedSecret(
                token=token,
                expires_at=expires_at,
                url=build_ws_url(
                    base_url, kind, model, live=is_live(kind, model, app_settings.REALTIME_API)
                ),
                kind=kind,
                model=model,
                status=status,
            )
        raise self.parse_error(status, response_headers, content, credential)

    @sensitive_variables()
    def send(
        self, url: str, headers: dict[str, str], body: bytes, *, timeout: float | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """POST once and read at most ``MAX_RESPONSE_BYTES`` within the deadlines.

        ``timeout`` (default ``GATEWAY_REALTIME_TOTAL_TIMEOUT``) is the whole
        call's deadline: each connect attempt gets at most its share of it,
        the read time-out given to requests is cut to it, and reading the body
        stops when it passes.
        Returns ``(status, headers, body)``. A redirect is never followed.
        Transport failures become ``GatewayTimeoutError`` or
        ``GatewayConnectionError``; the original exception is not chained
        because its frames hold the request headers.
        """
        limit = app_settings.MAX_RESPONSE_BYTES
        total = app_settings.TOTAL_TIMEOUT if timeout is None else timeout
        deadline = time.monotonic() + total
        origin = gateway_origin(url)
        failure: GatewayError | None = None
        try:
            response = self.session.post(
                url,
                data=body,
                headers=headers,
                # The body is read below, within the size cap and the deadline.
                stream=True,
                # Each connect attempt (the first and CONNECT_RETRIES more) gets
                # its share of the deadline, so retries cannot outlast it.
                timeout=(
                    min(app_settings.CONNECT_TIMEOUT, total / (app_settings.CONNECT_RETRIES + 1)),
                    min(app_settings.READ_TIMEOUT, total),
                ),
                allow_redirects=False,
            )
            with response:
                status = response.status_code
                if 300 <= status < 400:
                    raise GatewayResponseError(
                        "The Gateway answered with a redirect, which is never followed.",
                        status_code=status,
                    )
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise GatewayResponseError(
                        f"The Gateway's answer is larger than {limit} bytes.", status_code=status
                    )
                content = self._read_capped(response, limit, deadline, status, total)
                return status, dict(response.headers), content
        except GatewayError:
            raise
        # The streamed body is read from urllib3's response, so its own
        # exceptions (and raw socket errors) arrive here unwrapped by requests.
        except (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError, TimeoutError) as err:
            failure = GatewayTimeoutError(
                f"Timed out talking to the Gateway at {origin} ({type(err).__name__})."
            )
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as err:
            failure = GatewayConnectionError(
                f"Could not reach the Gateway at {origin} ({type(err).__name__})."
            )
        raise failure

    def _read_capped(
        self,
        response: requests.Response,
        limit: int,
        deadline: float,
        status: int,
        total: float,
    ) -> bytes:
        # ``raw.read1`` rather than ``iter_content``: it returns what has
        # arrived, so the deadline is checked between arrivals, and it lets a
        # read time-out through as one (``iter_content`` makes it a
        # ConnectionError, and the contract keeps time-outs distinct).
        chunks: list[bytes] = []
        size = 0
        late = GatewayTimeoutError(
            "The Gateway's answer did not arrive within the mint's deadline "
            f"({total:g} s; GATEWAY_REALTIME_TOTAL_TIMEOUT, or TAG_TIMEOUT for the tag).",
            status_code=status,
        )
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise late
            limit_next_read(response, min(app_settings.READ_TIMEOUT, left))
            try:
                chunk = response.raw.read1(8192)
            except (urllib3.exceptions.TimeoutError, TimeoutError):
                raise late from None
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > limit:
                raise GatewayResponseError(
                    f"The Gateway's answer is larger than {limit} bytes.", status_code=status
                )
            chunks.append(chunk)

    # Parsing ---------------------------------------------------------------

    @sensitive_variables()
    def parse_success(
        self, content: bytes, status: int, credential: Credential
    ) -> tuple[str, int | float | None]:
        try:
            data = json.loads(content)
        except (ValueError, RecursionError):
            raise GatewayResponseError(
                "The Gateway's answer is not JSON.", status_code=status
            ) from None
        if not isinstance(data, dict):
            raise GatewayResponseError("The Gateway's answer is not an object.", status_code=status)
        token = data.get("token")
        if not is_usable_token(token) or token == credential.value:
            raise GatewayResponseError(
                "The Gateway's answer has no usable token.", status_code=status
            )
        expires_at = data.get("expiresAt")
        if expires_at is not None and (
            isinstance(expires_at, bool)
            or not isinstance(expires_at, int | float)
            or not math.isfinite(expires_at)
            or not 0 < expires_at <= MAX_EXPIRES_AT
        ):
            raise GatewayResponseError(
                "The Gateway's answer has an invalid expiresAt.", status_code=status
            )
        assert isinstance(token, str)
        return token, expires_at

    @sensitive_variables()
    def parse_error(
        self,
        status: int,
        headers: dict[str, str],
        content: bytes,
        credential: Credential,
    ) -> GatewayError:
        """Turn a non-2xx answer into the matching ``GatewayError`` subclass."""
        # Should the Gateway echo the credential anywhere (message, param,
        # code, generationId), it must not travel on in the exception.
        secret = credential.value.encode()
        if secret and secret in content:
            content = content.replace(secret, b"[redacted]")
        try:
            data = json.loads(content)
        except (ValueError, RecursionError):
            data = None
        error = data.get("error") if isinstance(data, dict) else None
        if not isinstance(error, dict) or not isinstance(error.get("message"), str):
            return GatewayResponseError(
                "Invalid error response format from the Gateway.", status_code=status
            )
        error_type = error.get("type")
        message = _scrub(error["message"], credential)[:500] or "(no message)"
        generation_id = data.get("generationId") if isinstance(data, dict) else None
        code = error.get("code")
        kwargs: dict[str, Any] = {
            "status_code": status,
            "param": error.get("param"),
            "code": code if isinstance(code, str | int) and not isinstance(code, bool) else None,
            "generation_id": generation_id if isinstance(generation_id, str) else None,
        }
        cls = ERROR_TYPES.get(error_type) if isinstance(error_type, str) else None
        if cls is None:
            return GatewayInternalServerError(message, error_type="internal_server_error", **kwargs)
        if cls is GatewayRateLimitError:
            lowered = {k.lower(): v for k, v in headers.items()}
            return GatewayRateLimitError(
                message, retry_after=_retry_after(lowered.get("retry-after")), **kwargs
            )
        return cls(message, **kwargs)


@sensitive_variables("credential")
def _scrub(text: str, credential: Credential) -> str:
    """Remove the credential from text the Gateway sent back, should it echo it."""
    if credential.value and credential.value in text:
        text = text.replace(credential.value, "[redacted]")
    return text


class _GatewaySession(requests.Session):
    """A session for which no answer is a redirect, so none is followed or read.

    With ``allow_redirects=False`` requests still reads a redirect's whole
    body (to release its connection), past ``MAX_RESPONSE_BYTES``; without a
    redirect target it leaves the body unread, and ``send`` refuses any 3xx.
    """

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        return None


class _RejectAllCookies(DefaultCookiePolicy):
    def set_ok(self, cookie: Any, request: Any) -> bool:
        return False


if TYPE_CHECKING:
    # mypy checks here that the client satisfies the protocol get_client() returns.
    _conforms: GatewayClientProtocol = GatewayClient()

_clients: dict[tuple[str, int], GatewayClientProtocol] = {}
_clients_lock = threading.Lock()


def get_client() -> GatewayClientProtocol:
    """The process's client of ``GATEWAY_REALTIME_CLIENT_CLASS``.

    Keyed by process id as well, so a worker forked from a parent that already
    minted (gunicorn ``--preload``) builds its own pool instead of sharing
    sockets with its siblings.
    """
    path = app_settings.CLIENT_CLASS
    key = (path, os.getpid())
    client = _clients.get(key)
    if client is None:
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                cls = import_string(path)
                client = cls()
                _clients[key] = client
    return client


def reset_clients() -> None:
    """Close and forget every cached client (tests; after changing pool settings)."""
    with _clients_lock:
        for client in _clients.values():
            client.close()
        _clients.clear()
