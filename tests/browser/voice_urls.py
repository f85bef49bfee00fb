"""Pages for the voice element's browser tests (tests/browser/test_voice_element.py)."""

from django.http import HttpRequest, HttpResponse
from django.template import engines
from django.urls import include, path
from django.views.decorators.cache import cache_page

#: The header of the strict-CSP page; the test adds the emulator's origin to connect-src.
CSP = (
    "default-src 'self'; script-src 'self'; connect-src 'self' ws://127.0.0.1:*; "
    "media-src 'self' blob:"
)

PAGE = """{% load gateway_realtime %}<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>voice</title></head>
<body data-user="{{ request.user.get_username }}">
<h1>Talk to the assistant</h1>
{% gateway_realtime_voice %}
</body></html>"""

SHORT_PAGE = """{% load gateway_realtime %}<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>voice</title></head>
<body>{% gateway_realtime_voice max_seconds=2 label="Start talking" %}</body></html>"""


LIVE_PAGE = """{% load gateway_realtime %}<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>voice</title></head>
<body>{% gateway_realtime_voice model="openai/gpt-live-1" label="Talk (Live)" %}</body></html>"""

#: An element whose api says realtime for a model the server mints on the Live route.
MISMATCHED_PAGE = """{% load static %}<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>voice</title></head>
<body><script type="module" src="{% static 'gateway_realtime/elements.mjs' %}"></script>
<gateway-realtime-voice setup-url="/gateway/realtime/" model="openai/gpt-live-1" api="realtime">
</gateway-realtime-voice></body></html>"""


def render(request: HttpRequest, source: str) -> HttpResponse:
    return HttpResponse(engines["django"].from_string(source).render({}, request))


def voice(request: HttpRequest) -> HttpResponse:
    return render(request, PAGE)


def short(request: HttpRequest) -> HttpResponse:
    return render(request, SHORT_PAGE)


def live(request: HttpRequest) -> HttpResponse:
    return render(request, LIVE_PAGE)


def mismatched(request: HttpRequest) -> HttpResponse:
    return render(request, MISMATCHED_PAGE)


def strict_csp(request: HttpRequest) -> HttpResponse:
    response = render(request, PAGE)
    response["Content-Security-Policy"] = CSP
    return response


urlpatterns = [
    path("voice/", voice),
    path("voice-short/", short),
    path("voice-cached/", cache_page(600)(voice)),
    path("voice-csp/", strict_csp),
    path("voice-live/", live),
    path("voice-mismatched/", mismatched),
    path("gateway/", include("gateway_realtime.urls")),
]
