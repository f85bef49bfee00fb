"""Pages the browser tests load: the tag in every way a site might serve it."""

from django.http import HttpRequest, HttpResponse
from django.template import engines
from django.template.response import TemplateResponse
from django.urls import include, path
from django.views.decorators.cache import cache_page

from gateway_realtime.decorators import no_store_secrets

PAGE = """{% load static gateway_realtime %}<!doctype html>
<html><head><meta charset="utf-8"><title>page</title></head>
<body data-user="{{ request.user.get_username }}">
{% gateway_realtime_config %}
</body></html>"""

MODULE_PAGE = """{% load static gateway_realtime %}<!doctype html>
<html><head><meta charset="utf-8"><title>module</title></head><body>
{% gateway_realtime_config %}
<script type="module">
import { connect } from "{% static 'gateway_realtime/gateway-realtime.mjs' %}";
window.moduleConnect = connect;
</script>
</body></html>"""

#: The config block as the tag renders it for an anonymous user: no secret, a refreshUrl.
BARE = """<!doctype html><html><head><meta charset="utf-8"><title>bare</title></head><body>
<script type="application/json" id="gateway-realtime-realtime" data-gateway-realtime="realtime">
{"token": null, "url": null, "expiresAt": null, "kind": "realtime",
 "protocols": ["ai-gateway-realtime.v1"], "refreshUrl": "/gateway/realtime/",
 "error": null, "reason": "anonymous"}
</script></body></html>"""

BLANK = (
    "<!doctype html><html><head><meta charset='utf-8'><title>blank</title></head>"
    "<body></body></html>"
)


def page(request: HttpRequest) -> HttpResponse:
    return HttpResponse(engines["django"].from_string(PAGE).render({}, request))


def template_response_page(request: HttpRequest) -> TemplateResponse:
    template = engines["django"].from_string(PAGE)
    return TemplateResponse(request, template, {})


def module_page(request: HttpRequest) -> HttpResponse:
    return HttpResponse(engines["django"].from_string(MODULE_PAGE).render({}, request))


def blank(request: HttpRequest) -> HttpResponse:
    return HttpResponse(BLANK)


def bare(request: HttpRequest) -> HttpResponse:
    return HttpResponse(BARE)


urlpatterns = [
    path("page/", page),
    path("protected/", no_store_secrets(page)),
    path("cached/", cache_page(600)(page)),
    path("cached-template/", cache_page(600)(template_response_page)),
    path("module/", module_page),
    path("blank/", blank),
    path("bare/", bare),
    path("gateway/", include("gateway_realtime.urls")),
]
