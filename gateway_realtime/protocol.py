"""The Gateway's wire format: route kinds, minted secrets, URLs and subprotocols.

Types and pure functions only (no settings, no I/O), so that the client, the
mint service, the template tag and the test helpers all build the same
strings. Section numbers refer to the wire contract: the mint request (1),
the WebSocket URL (3), the subprotocols a browser offers (4) and the Live
route of the realtime kind (8).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol, runtime_checkable
from urllib.parse import quote_plus, urlsplit

if TYPE_CHECKING:
    from gateway_realtime.credentials import Credential

#: The mint route, resolved against the base URL's origin (section 1).
MINT_PATH = "/v1/realtime/client-secrets"
#: Sent as ``ai-gateway-protocol-version`` with every mint (section 1).
PROTOCOL_VERSION = "0.0.1"

AUTH_SUBPROTOCOL_PREFIX = "ai-gateway-auth."
TEAM_SUBPROTOCOL_PREFIX = "ai-gateway-team."

#: The longest token accepted from the Gateway; the whole
#: ``Sec-WebSocket-Protocol`` header must stay well under 8 KiB.
MAX_TOKEN_LENGTH = 2048
# RFC 7230 token characters: what a Sec-WebSocket-Protocol value may contain.
_SUBPROTOCOL_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


class Kind(StrEnum):
    """The three kinds of Gateway realtime route and what differs between them."""

    REALTIME = "realtime"
    TRANSCRIPTION = "transcription"
    SPEECH = "speech"

    @property
    def route_kind(self) -> str | None:
        """The ``routeKind`` sent when minting; realtime sends none."""
        return None if self is Kind.REALTIME else self.value

    @property
    def ws_path(self) -> str:
        """The WebSocket route under the base URL."""
        return f"/{self.value}-model"

    @property
    def subprotocol(self) -> str:
        """The marker subprotocol the browser offers first."""
        return f"ai-gateway-{self.value}.v1"


KIND_CHOICES = [(kind.value, kind.value.capitalize()) for kind in Kind]

# The realtime kind's two routes (section 8) ------------------------------------------

#: The models ``@ai-sdk/gateway`` 4.0.158 opens on the Live route
#: (``gatewayLiveModelIds``); any other model takes the realtime route unless
#: the site names its route (``GATEWAY_REALTIME_REALTIME_API``).
LIVE_MODEL_IDS = frozenset({"openai/gpt-live-1", "openai/gpt-live-1.1"})
#: The two values a model's route may have, as the official client's ``api`` option.
REALTIME_APIS = ("live", "realtime")
LIVE_ROUTE_KIND = "live"
LIVE_WS_PATH = "/live-model"


def is_live(kind: Kind, model: str, apis: Mapping[str, str] | None = None) -> bool:
    """Whether ``model`` of ``kind`` is minted and opened on the Live route (section 8).

    Only the realtime kind has two routes. ``apis`` maps model ids to
    ``"live"`` or ``"realtime"``, as the official client's ``{ api }``
    option; a model it does not name is Live when the provider lists it.
    """
    if kind is not Kind.REALTIME:
        return False
    chosen = (apis or {}).get(model)
    if chosen in REALTIME_APIS:
        return chosen == "live"
    return model in LIVE_MODEL_IDS


@dataclass(frozen=True)
class MintedSecret:
    """What the Gateway answered to a successful mint.

    The token is a short-lived bearer credential for one WebSocket; it is kept
    out of ``repr`` so that it does not end up in logs or error reports.
    """

    token: str
    expires_at: int | float | None
    url: str
    kind: Kind
    model: str
    #: The Gateway's HTTP status for the mint (recorded in the audit row).
    status: int = 200

    def __repr__(self) -> str:
        return (
            f"MintedSecret(kind={self.kind.value!r}, model={self.model!r}, "
            f"expires_at={self.expires_at!r}, token=<hidden>)"
        )


@runtime_checkable
class GatewayClientProtocol(Protocol):
    """What ``gateway_realtime.client.get_client()`` returns.

    ``GatewayClient``, ``gateway_realtime.testing.FakeGatewayClient`` and any
    class named by ``GATEWAY_REALTIME_CLIENT_CLASS`` provide these two methods.
    """

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

        ``timeout``: the whole call's deadline in seconds (``None``: the
        client's default, ``GATEWAY_REALTIME_TOTAL_TIMEOUT``).
        """
        ...

    def close(self) -> None:
        """Release what the client holds (its connection pool); it may be used again."""
        ...


def gateway_origin(base_url: str) -> str:
    """Scheme, host and port of the base URL: the mint route ignores its path.

    User info (``user:password@``) is dropped: requests would send it as Basic
    auth in place of the credential, and error messages name the origin.
    """
    parts = urlsplit(base_url.rstrip("/"))
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}"


def mint_url(base_url: str) -> str:
    """Where secrets are minted for ``base_url`` (section 1)."""
    return gateway_origin(base_url) + MINT_PATH


def form_encode(value: str) -> str:
    """Encode like the browser's ``URLSearchParams`` (the official client uses it)."""
    # quote_plus keeps "~" and escapes "*"; URLSearchParams does the opposite.
    return quote_plus(value, safe="*").replace("~", "%7E")


def build_ws_url(base_url: str, kind: Kind, model: str, *, live: bool = False) -> str:
    """The WebSocket URL a browser opens for ``kind`` and ``model`` (sections 3 and 8).

    ``live``: the realtime kind's Live route (``/live-model``; see ``is_live``).
    """
    base = base_url[:-1] if base_url.endswith("/") else base_url
    if base.startswith("http"):
        base = "ws" + base[len("http") :]
    path = LIVE_WS_PATH if live and kind is Kind.REALTIME else kind.ws_path
    return f"{base}{path}?ai-model-id={form_encode(model)}"


def websocket_protocols(kind: Kind, token: str | None = None, *, team: str | None) -> list[str]:
    """The ``Sec-WebSocket-Protocol`` values a browser offers, in order (section 4).

    With ``token=None`` the auth entry is left out: the list a page holds
    before its script adds a fresh token. ``team`` (id or slug) is sent
    base64url-encoded without padding, only when set.
    """
    protocols = [kind.subprotocol]
    if token is not None:
        protocols.append(AUTH_SUBPROTOCOL_PREFIX + token)
    if team:
        encoded = base64.urlsafe_b64encode(team.encode()).rstrip(b"=").decode()
        protocols.append(TEAM_SUBPROTOCOL_PREFIX + encoded)
    return protocols


def is_usable_token(token: object) -> bool:
    """A token the browser can send as the ``ai-gateway-auth.<token>`` subprotocol."""
    return (
        isinstance(token, str)
        and 0 < len(token) <= MAX_TOKEN_LENGTH
        and _SUBPROTOCOL_TOKEN.match(token) is not None
    )
