"""What the element tags render: ``{% gateway_realtime_voice %}`` and its siblings.

Each tag writes a ``<script type="module">`` that loads
``static/gateway_realtime/elements.mjs`` (browsers load a module once, however
many tags a page has) and one custom element with the setup endpoint's URL,
the kind's default model and ``max-seconds`` in its attributes. Rendering
mints nothing: the element asks the setup endpoint for a secret when the user
presses its button, so a page with elements costs no quota or Gateway call
and may be cached like any other page.

``{% gateway_realtime_voice relay=True %}`` writes ``relay-url`` instead of
``setup-url``: the element then talks through the site's relay (relay mode,
docs/relay.md) at ``RELAY_PATH``, or at ``relay_url="..."`` when the site
routes its relay elsewhere. The relay is an ASGI route (the site's
``asgi.py``), not a Django URL, so the path cannot be reversed; the element
makes it an absolute ws:// or wss:// URL from the page's location.

The markup comes from ``gateway_realtime/elements/<name>.html``; a site may
override those templates. Which attributes the elements understand is in
docs/browser.md.
"""

from __future__ import annotations

from typing import Any

from django import template
from django.template.loader import get_template
from django.templatetags.static import static
from django.utils.safestring import SafeString, mark_safe

from gateway_realtime.conf import app_settings
from gateway_realtime.protocol import Kind, is_live

#: The module that defines the three custom elements.
ELEMENTS_SCRIPT = "gateway_realtime/elements.mjs"

#: Keyword arguments the tags pass through as attributes (``_`` becomes ``-``).
PASSED_ATTRIBUTES = frozenset({"id", "class", "title", "label", "lang", "voice"})

#: Where ``relay_urlpatterns()`` routes the realtime relay by default.
RELAY_PATH = "/ws/gateway-realtime/realtime/"

KIND_OF = {
    "voice": Kind.REALTIME,
    "dictation": Kind.TRANSCRIPTION,
    "speech": Kind.SPEECH,
}


def _seconds(tag: str, value: Any) -> str:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not seconds > 0:
        raise template.TemplateSyntaxError(
            f"{tag}: max_seconds must be a positive number of seconds; got {value!r}."
        )
    return f"{seconds:g}"


def relay_option(options: dict[str, Any]) -> str | None:
    """The voice tag's ``relay`` / ``relay_url`` options as the ``relay-url`` to write.

    Pops both from ``options``; ``None`` when the element is not relayed.
    """
    relay = options.pop("relay", None)
    relay_url = options.pop("relay_url", None)
    if relay_url is not None and relay is not None:
        raise template.TemplateSyntaxError(
            "gateway_realtime_voice: give relay=True or relay_url, not both."
        )
    if relay_url is not None:
        if not isinstance(relay_url, str) or not relay_url.strip():
            raise template.TemplateSyntaxError(
                "gateway_realtime_voice: relay_url must be the relay's path or ws(s):// URL."
            )
        return relay_url.strip()
    return RELAY_PATH if relay else None


def render_element(
    name: str, *, setup_url: str | None, relay_url: str | None = None, **options: Any
) -> SafeString:
    """Render ``gateway_realtime/elements/<name>.html`` for one element.

    ``options``: ``max_seconds`` (default ``GATEWAY_REALTIME_ELEMENT_MAX_SECONDS``),
    ``target`` / ``text`` (dictation and speech), ``model`` (voice: the model
    the element asks for, default the kind's default model; its ``api``
    attribute says whether that model is Live), and the attributes in
    ``PASSED_ATTRIBUTES``. Raises ``TemplateSyntaxError`` for anything else,
    and when the kind's setup endpoint is not routed (unless ``relay_url``
    is given: a relayed element uses no setup endpoint).
    """
    tag = f"gateway_realtime_{name}"
    kind = KIND_OF[name]
    if relay_url:
        setup_url = None
    elif not setup_url:
        raise template.TemplateSyntaxError(
            f"{tag}: the {kind.value} setup endpoint is not routed; "
            'include("gateway_realtime.urls") in your URLconf.'
        )
    max_seconds = _seconds(tag, options.pop("max_seconds", app_settings.ELEMENT_MAX_SECONDS))
    model = app_settings.default_model(kind) or ""
    api = None
    if name == "voice":
        asked = options.pop("model", None)
        if asked is not None and (not isinstance(asked, str) or not asked.strip()):
            raise template.TemplateSyntaxError(
                f'{tag}: model must be a model id, e.g. model="openai/gpt-live-1".'
            )
        if asked is not None:
            model = asked.strip()
        # The route the server mints the model on (wire contract section 8),
        # so that the browser's AI SDK model speaks the same protocol.
        live = bool(model) and is_live(kind, model, app_settings.REALTIME_API)
        api = "live" if live else "realtime"
        if asked is None and not live:
            # The element asks for no model: the endpoint (the user's policy)
            # decides, as for any page that names none. A Live session names
            # its model in session-start, so a Live default is asked for.
            model = ""
    target = options.pop("target", None)
    text = options.pop("text", None)
    unknown = sorted(set(options) - PASSED_ATTRIBUTES)
    if unknown:
        raise template.TemplateSyntaxError(
            f"{tag}: unknown option {', '.join(unknown)}; "
            f"it takes max_seconds{', model' if name == 'voice' else ''} and "
            f"{', '.join(sorted(PASSED_ATTRIBUTES))}."
        )
    attrs = [
        (key.replace("_", "-"), str(value)) for key, value in options.items() if value is not None
    ]
    context = {
        "script_url": static(ELEMENTS_SCRIPT),
        "setup_url": setup_url,
        "relay_url": relay_url,
        "model": model,
        "api": api,
        "max_seconds": max_seconds,
        "target": target,
        "text": text,
        "attrs": attrs,
    }
    # The template autoescapes every value; its output is safe markup.
    return mark_safe(get_template(f"gateway_realtime/elements/{name}.html").render(context))  # noqa: S308
