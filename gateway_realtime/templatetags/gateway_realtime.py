"""Template tags that hand a freshly minted client secret to the page's scripts.

::

    {% load gateway_realtime %}
    {% gateway_realtime_config %}
    {% gateway_realtime_config kind="transcription" lifetime=120 element_id="stt" %}

The tag writes one ``<script type="application/json">`` block (never
executable JavaScript) holding ``{token, url, expiresAt, kind, protocols,
refreshUrl, error, reason}``; ``static/gateway_realtime/gateway-realtime.mjs``
reads it. The tags are thin wrappers over ``secret_config`` and
``json_config_block``, which sites can call from their own code.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

from django import template
from django.http import HttpRequest
from django.template.base import Node, NodeList
from django.template.context import Context
from django.template.library import SimpleNode
from django.template.loader_tags import BlockNode, ExtendsNode, IncludeNode
from django.templatetags.cache import CacheNode
from django.urls import NoReverseMatch, reverse
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

from gateway_realtime.api_errors import error_payload
from gateway_realtime.conf import app_settings
from gateway_realtime.elements import relay_option, render_element
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
    The Gateway call gets ``GATEWAY_REALTIME_TAG_TIMEOUT`` seconds in all, so a
    stalled Gateway delays the page by that much at most (``gateway_timeout``).
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
        secret = mint_client_secret(
            user=user,
            kind=kind,
            model=model or None,
            expires_in=_lifetime(lifetime),
            request=request,
            source=Source.TEMPLATE,
            timeout=app_settings.TAG_TIMEOUT,
        )
    except (GatewayError, GatewayConfigurationError, MintRequestError, MintRejected) as error:
        return _no_token_config(kind, REASON_ERROR, error_payload(error))
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


def _lifetime(value: int | str | None) -> Any:
    # Template variables arrive as strings; mint_client_secret validates the
    # lifetime, whatever its type, and refuses anything but whole seconds.
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None if value == "" else value


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


KIND_VALUES = frozenset(k.value for k in Kind)

CACHE_MISUSE = (
    f"{{% {TAG_NAME} %}} cannot be used inside {{% cache %}}: "
    "a cached fragment would hand one user's secret to another."
)


@register.simple_tag(name=TAG_NAME, takes_context=True)
def gateway_realtime_config(
    context: Context,
    *,
    kind: str = Kind.REALTIME.value,
    model: str | None = None,
    lifetime: int | str | None = None,
    element_id: str | None = None,
) -> SafeString:
    """``{% gateway_realtime_config kind=... model=... lifetime=... element_id=... %}``.

    Every option is a keyword and optional: ``kind`` (``realtime``,
    ``transcription`` or ``speech``; default ``realtime``), ``model`` (one of
    the kind's allowed models; default the kind's default model), ``lifetime``
    (seconds, at most ``GATEWAY_REALTIME_MAX_LIFETIME``) and ``element_id``
    (default ``gateway-realtime-<kind>``). Used inside ``{% cache %}``, even
    through ``{% include %}`` or ``{% extends %}``, it raises
    ``TemplateSyntaxError`` instead of minting.
    """
    if kind not in KIND_VALUES:
        raise template.TemplateSyntaxError(
            f"{TAG_NAME}: kind must be one of {', '.join(k.value for k in Kind)}; got {kind!r}."
        )
    if is_inside_cache_fragment(context):
        raise template.TemplateSyntaxError(CACHE_MISUSE)
    request = getattr(context, "request", None) or context.get("request")
    config = secret_config(
        request if isinstance(request, HttpRequest) else None,
        kind=kind,
        model=model,
        lifetime=lifetime,
    )
    return json_config_block(config, element_id or default_element_id(kind))


@register.simple_tag
def gateway_realtime_voice(**options: Any) -> SafeString:
    """``{% gateway_realtime_voice max_seconds=120 id="talk" %}``: the voice element.

    A talk button, the session's state, a live transcript of both sides,
    audio out, mute and hang up, on the AI SDK's realtime session. Mints
    nothing while the page renders (see ``gateway_realtime.elements``).
    ``relay=True`` (or ``relay_url="/ws/..."``): the element talks through the
    site's relay instead, and the page holds no secret at all (docs/relay.md).
    """
    relay_url = relay_option(options)
    setup_url = None if relay_url else refresh_url(Kind.REALTIME)
    return render_element("voice", setup_url=setup_url, relay_url=relay_url, **options)


@register.simple_tag
def gateway_realtime_dictation(target: str, **options: Any) -> SafeString:
    """``{% gateway_realtime_dictation "ID" %}``: dictate into the input or textarea ``ID``."""
    if not isinstance(target, str) or not target:
        raise template.TemplateSyntaxError(
            "gateway_realtime_dictation needs the id of the input or textarea to fill."
        )
    return render_element(
        "dictation", setup_url=refresh_url(Kind.TRANSCRIPTION), target=target, **options
    )


@register.simple_tag
def gateway_realtime_speech(
    target: str | None = None, *, text: str | None = None, **options: Any
) -> SafeString:
    """``{% gateway_realtime_speech "ID" %}`` or ``{% gateway_realtime_speech text="..." %}``.

    Reads aloud the text of the element ``ID``, or ``text``.
    """
    if not target and not text:
        raise template.TemplateSyntaxError(
            'gateway_realtime_speech needs the id of an element to read, or text="...".'
        )
    return render_element(
        "speech", setup_url=refresh_url(Kind.SPEECH), target=target, text=text, **options
    )


def is_inside_cache_fragment(context: Context) -> bool:
    """Whether the page being rendered has this tag inside a ``{% cache %}`` block.

    Looks at the page's template tree, from the outermost template
    (``context.template``) through the templates it includes and extends, as
    they resolve in this context: any instance of the tag that would render
    inside a cached fragment counts, not only the one rendering now.
    """
    outermost = getattr(context, "template", None)
    if outermost is None:
        return False
    walker = _TemplateWalker(context)
    return any(
        isinstance(node, SimpleNode) and node.func is gateway_realtime_config
        for node in walker.nodes_under_cache(outermost.nodelist)
    )


class _TemplateWalker:
    """Finds the nodes that a page renders inside ``{% cache %}`` blocks."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.seen: set[int] = set()

    def nodes_under_cache(
        self,
        nodelist: NodeList,
        *,
        cached: bool = False,
        blocks: dict[str, BlockNode] | None = None,
    ) -> Iterator[Node]:
        for node in nodelist:
            if cached:
                yield node
            if isinstance(node, BlockNode) and blocks and node.name in blocks:
                # A child template's block replaces the parent's where it stands.
                node = blocks[node.name]
            inner = cached or isinstance(node, CacheNode)
            if isinstance(node, ExtendsNode):
                parent = self._load(node.parent_name)
                if parent is not None:
                    overrides = {
                        block.name: block
                        for block in node.nodelist.get_nodes_by_type(BlockNode)
                        if isinstance(block, BlockNode)
                    }
                    yield from self.nodes_under_cache(
                        parent.nodelist, cached=inner, blocks={**overrides, **(blocks or {})}
                    )
                continue
            if isinstance(node, IncludeNode):
                included = self._load(node.template)
                if included is not None:
                    yield from self.nodes_under_cache(included.nodelist, cached=inner)
            for attr in node.child_nodelists:
                yield from self.nodes_under_cache(
                    getattr(node, attr, None) or NodeList(), cached=inner, blocks=blocks
                )

    def _load(self, name: Any) -> Any:
        """The compiled template an include or extends names here, or ``None``."""
        try:
            value = name.resolve(self.context)
            if isinstance(value, str) and self.context.template is not None:
                value = self.context.template.engine.get_template(value)
        except Exception:  # the render itself reports a missing template
            return None
        value = getattr(value, "template", value)  # a backend's Template wraps one
        if not hasattr(value, "nodelist") or id(value) in self.seen:
            return None
        self.seen.add(id(value))
        return value
