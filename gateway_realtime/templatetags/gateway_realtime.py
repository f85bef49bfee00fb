"""Template tags that hand a freshly minted client secret to the page's scripts.

::

    {% load gateway_realtime %}
    {% gateway_realtime_config %}
    {% gateway_realtime_config kind="transcription" lifetime=120 element_id="stt" %}

The tag writes one ``<script type="application/json">`` block (never
executable JavaScript) holding ``{token, url, expiresAt, kind, protocols,
refreshUrl, error, reason}``; ``static/gateway_realtime/gateway-realtime.js``
reads it. The tags are thin wrappers over ``secret_config`` and
``json_config_block``, which sites can call from their own code.
"""

from __future__ import annotations

import json
import logging
import sys
from types import FrameType
from typing import Any

from django import template
from django.http import HttpRequest
from django.template.base import FilterExpression, Parser, Token, token_kwargs
from django.template.context import Context
from django.templatetags.cache import CacheNode
from django.urls import NoReverseMatch, reverse
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

from gateway_realtime.conf import app_settings
from gateway_realtime.exceptions import (
    GatewayConfigurationError,
    GatewayError,
    MintRejected,
    MintRequestError,
)
from gateway_realtime.middleware import mark_secret_in_response
from gateway_realtime.models import Source
from gateway_realtime.protocol import Kind, websocket_protocols
from gateway_realtime.services import mint_client_secret
from gateway_realtime.views import describe_gateway_error

register = template.Library()
logger = logging.getLogger("gateway_realtime")

TAG_NAME = "gateway_realtime_config"

#: Why a block carries no token (the ``reason`` key), besides an ``error``.
REASON_ANONYMOUS = "anonymous"
REASON_NO_REQUEST = "no_request"
REASON_HEAD = "head_request"
REASON_PREFETCH = "prefetch"
REASON_ERROR = "error"

# Characters that must not appear raw inside <script>: "<" (</script>, <!--),
# ">" and "&" as Django's json_script does, and U+2028/U+2029, which end a
# line in older JavaScript parsers. ensure_ascii already escapes the last two;
# the map keeps that true whatever the encoder does.
_SCRIPT_ESCAPES = {
    ord("<"): "\\u003C",
    ord(">"): "\\u003E",
    ord("&"): "\\u0026",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


def default_element_id(kind: Kind | str) -> str:
    """The block's id when the tag names none: ``gateway-realtime-<kind>``."""
    return f"gateway-realtime-{Kind(kind).value}"


def is_prefetch(request: HttpRequest) -> bool:
    """Whether the browser is only prefetching or prerendering the page."""
    headers = request.headers
    if "prefetch" in headers.get("Sec-Purpose", "").lower():
        return True
    if headers.get("Purpose", "").strip().lower() == "prefetch":
        return True
    if headers.get("X-Moz", "").strip().lower() == "prefetch":
        return True
    return headers.get("X-Purpose", "").strip().lower() == "preview"


def refresh_url(kind: Kind) -> str | None:
    """The endpoint the JS helper asks for a new secret, or ``None`` if not routed."""
    try:
        return reverse(f"gateway_realtime:{kind.value}")
    except NoReverseMatch:
        return None


def _no_token_config(
    kind: Kind, reason: str, error: dict[str, str] | None = None
) -> dict[str, Any]:
    # The non-auth subprotocols, so the JS helper can add a fresh token later.
    protocols = websocket_protocols(kind, team=app_settings.TEAM)
    return {
        "token": None,
        "url": None,
        "expiresAt": None,
        "kind": kind.value,
        "protocols": protocols,
        "refreshUrl": refresh_url(kind),
        "error": error,
        "reason": reason,
    }


def _error_payload(error: Exception) -> dict[str, str]:
    # The endpoint's wording: helps the site owner, never shows a secret.
    if isinstance(error, MintRequestError):
        return {"type": "invalid_request", "message": error.message}
    if isinstance(error, MintRejected):  # this site's own limits: say which
        return {"type": error.error_type, "message": error.message}
    assert isinstance(error, GatewayError | GatewayConfigurationError)
    failure = describe_gateway_error(error)
    codes = failure.get_codes()
    return {
        "type": str(codes if isinstance(codes, str) else failure.default_code),
        "message": str(failure.detail),
    }


def secret_config(
    request: HttpRequest | None,
    *,
    kind: Kind | str = Kind.REALTIME,
    model: str | None = None,
    lifetime: int | str | None = None,
) -> dict[str, Any]:
    """The JSON-ready config for a page: a fresh secret for ``request.user``, or why not.

    Mints through ``mint_client_secret`` (source ``template``) and marks the
    request so the response is never cached (see ``gateway_realtime.middleware``).
    Mints nothing without a request, for anonymous users, for ``HEAD`` and for
    prefetch/prerender requests; those, and any failure, give ``token: null``
    with ``reason`` (and ``error`` for failures), but keep ``refreshUrl`` so the
    page's script can fetch a secret when it needs one. A disallowed model or a
    bad lifetime is an ``error`` too, never an exception: the page still renders.
    """
    kind = Kind(kind)
    if request is None:
        return _no_token_config(kind, REASON_NO_REQUEST)
    if request.method == "HEAD":
        return _no_token_config(kind, REASON_HEAD)
    if is_prefetch(request):
        return _no_token_config(kind, REASON_PREFETCH)
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return _no_token_config(kind, REASON_ANONYMOUS)
    try:
        expires_in = _lifetime(lifetime)
        secret = mint_client_secret(
            user=user,
            kind=kind,
            model=model or None,
            expires_in=expires_in,
            request=request,
            source=Source.TEMPLATE,
        )
    except (GatewayError, GatewayConfigurationError, MintRequestError, MintRejected) as error:
        return _no_token_config(kind, REASON_ERROR, _error_payload(error))
    mark_secret_in_response(request)
    return {
        "token": secret.token,
        "url": secret.url,
        "expiresAt": secret.expires_at,
        "kind": kind.value,
        "protocols": secret.protocols,
        "refreshUrl": refresh_url(kind),
        "error": None,
        "reason": None,
    }


def _lifetime(value: int | str | None) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        if not value.strip().isdigit():
            raise MintRequestError("lifetime must be a whole number of seconds.", param="lifetime")
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise MintRequestError("lifetime must be a whole number of seconds.", param="lifetime")
    return value


def json_config_block(config: dict[str, Any], element_id: str) -> SafeString:
    """``<script type="application/json" id=...>`` holding ``config``, safe in any HTML.

    Like Django's ``json_script``, plus an explicit escape of U+2028/U+2029.
    """
    text = json.dumps(config, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    text = text.translate(_SCRIPT_ESCAPES)
    return format_html(
        '<script type="application/json" id="{}" data-gateway-realtime="{}">{}</script>',
        # escape(), unlike format_html's own, also escapes template literals,
        # which Django marks safe.
        escape(str(element_id)),
        escape(str(config.get("kind", ""))),
        mark_safe(text),  # noqa: S308 - every "<", ">" and "&" is escaped above
    )


def _inside_cache_fragment() -> bool:
    # {% include %} and {% extends %} compile templates separately, so the
    # compile-time check cannot see a {% cache %} around them; CacheNode.render
    # is on the stack whenever a fragment is being rendered for caching.
    # Comparing code objects reads no frame locals, so the walk stays cheap.
    cache_render = CacheNode.render.__code__
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code is cache_render:
            return True
        frame = frame.f_back
    return False


class SecretConfigNode(template.Node):
    """Renders ``json_config_block(secret_config(...))`` for the context's request."""

    def __init__(self, kwargs: dict[str, FilterExpression]) -> None:
        self.kwargs = kwargs

    def render(self, context: Context) -> str:
        if _inside_cache_fragment():
            raise template.TemplateSyntaxError(
                f"{{% {TAG_NAME} %}} cannot be used inside {{% cache %}}: "
                "a cached fragment would hand one user's secret to another."
            )
        values = {name: value.resolve(context) for name, value in self.kwargs.items()}
        kind = Kind(values.get("kind") or Kind.REALTIME)
        request = getattr(context, "request", None) or context.get("request")
        config = secret_config(
            request if isinstance(request, HttpRequest) else None,
            kind=kind,
            model=values.get("model"),
            lifetime=values.get("lifetime"),
        )
        return json_config_block(config, values.get("element_id") or default_element_id(kind))


_OPTIONS = ("kind", "model", "lifetime", "element_id")


@register.tag(name=TAG_NAME)
def gateway_realtime_config(parser: Parser, token: Token) -> SecretConfigNode:
    """``{% gateway_realtime_config kind=... model=... lifetime=... element_id=... %}``.

    Every option is a keyword and optional: ``kind`` (``realtime``,
    ``transcription`` or ``speech``; default ``realtime``), ``model`` (one of
    the kind's allowed models; default the kind's default model), ``lifetime``
    (seconds, at most ``GATEWAY_REALTIME_MAX_LIFETIME``) and ``element_id``
    (default ``gateway-realtime-<kind>``). Inside ``{% cache %}`` it is a
    ``TemplateSyntaxError``.
    """
    if any(command == "cache" for command, _ in parser.command_stack):
        raise template.TemplateSyntaxError(
            f"{{% {TAG_NAME} %}} cannot be used inside {{% cache %}}: "
            "a cached fragment would hand one user's secret to another."
        )
    bits = token.split_contents()[1:]
    kwargs = token_kwargs(bits, parser, support_legacy=False)
    if bits:  # token_kwargs stops at the first bit that is not name=value
        raise template.TemplateSyntaxError(
            f"{TAG_NAME} takes only keyword options ({', '.join(_OPTIONS)}); got {bits[0]!r}."
        )
    unknown = sorted(set(kwargs) - set(_OPTIONS))
    if unknown:
        raise template.TemplateSyntaxError(
            f"{TAG_NAME} got unknown option(s) {', '.join(unknown)}; "
            f"it takes {', '.join(_OPTIONS)}."
        )
    kind = kwargs.get("kind")
    # A literal kind can be checked now rather than on every render.
    if (
        kind is not None
        and isinstance(kind.var, str)
        and not kind.filters
        and kind.var not in {k.value for k in Kind}
    ):
        raise template.TemplateSyntaxError(
            f"{TAG_NAME}: kind must be one of {', '.join(k.value for k in Kind)}."
        )
    return SecretConfigNode(kwargs)
