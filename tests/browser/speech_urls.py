"""Pages for the dictation and speech element tests: the tags as a site writes them."""

from django.http import HttpRequest, HttpResponse
from django.template import engines
from django.urls import include, path

#: What the strict page sends: nothing inline, scripts only from the site.
STRICT_CSP = (
    "default-src 'self'; script-src 'self'; connect-src 'self' ws://127.0.0.1:*; "
    "media-src 'self' blob:"
)

DICTATION = """{% load gateway_realtime %}<!doctype html>
<html><head><meta charset="utf-8"><title>dictation</title></head><body>
<label for="note">Note</label>
<textarea id="note">Note:</textarea>
{% gateway_realtime_dictation "note" id="dictation" max_seconds=max_seconds %}
{% gateway_realtime_dictation "nowhere" id="dictation-lost" %}
</body></html>"""

SPEECH = """{% load gateway_realtime %}<!doctype html>
<html><head><meta charset="utf-8"><title>speech</title></head><body>
<p id="para">Some text.</p>
{% gateway_realtime_speech "para" id="speech-para" max_seconds=max_seconds %}
{% gateway_realtime_speech text="Hello there" id="speech-text" %}
<p id="empty">  </p>
{% gateway_realtime_speech "empty" id="speech-empty" %}
</body></html>"""

STRICT = """{% load gateway_realtime %}<!doctype html>
<html><head><meta charset="utf-8"><title>strict</title></head><body>
<textarea id="note"></textarea>
{% gateway_realtime_dictation "note" id="dictation" %}
<p id="para">Read under a strict policy.</p>
{% gateway_realtime_speech "para" id="speech-para" %}
</body></html>"""


def render(request: HttpRequest, source: str, **context: object) -> HttpResponse:
    return HttpResponse(engines["django"].from_string(source).render(context, request))


def dictation(request: HttpRequest) -> HttpResponse:
    return render(request, DICTATION, max_seconds=request.GET.get("max_seconds", "300"))


def dictation_no_microphone(request: HttpRequest) -> HttpResponse:
    response = render(request, DICTATION, max_seconds="300")
    # The site's own policy refuses the microphone: getUserMedia is denied.
    response["Permissions-Policy"] = "microphone=()"
    return response


def speech(request: HttpRequest) -> HttpResponse:
    return render(request, SPEECH, max_seconds=request.GET.get("max_seconds", "300"))


def strict(request: HttpRequest) -> HttpResponse:
    response = render(request, STRICT)
    response["Content-Security-Policy"] = STRICT_CSP
    return response


urlpatterns = [
    path("dictation/", dictation),
    path("dictation-no-microphone/", dictation_no_microphone),
    path("speech/", speech),
    path("strict/", strict),
    path("gateway/", include("gateway_realtime.urls")),
]
