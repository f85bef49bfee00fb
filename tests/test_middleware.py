"""``gateway_realtime.middleware``: pages with a secret are never cached, by anyone.

The middleware, the helpers the decorator shares, and Django's page caches.
"""

from __future__ import annotations

import json
import re

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache
from django.http import HttpResponse
from django.template import engines
from django.template.response import TemplateResponse
from django.test import RequestFactory, override_settings
from django.urls import include, path
from django.utils.cache import patch_cache_control
from django.views.decorators.cache import cache_control, cache_page

from gateway_realtime.decorators import no_store_secrets
from gateway_realtime.middleware import (
    NoStoreSecretsMiddleware,
    mark_secret_in_response,
    protect_response,
    response_carries_secret,
)
from gateway_realtime.testing import fake_gateway

PAGE = (
    "{% load gateway_realtime %}<p>{{ request.user.get_username }}</p>{% gateway_realtime_config %}"
)
TOKEN = re.compile(r'"token":("[^"]*"|null)')


def render_page(request):
    return engines["django"].from_string(PAGE).render({}, request)


@cache_control(public=True, max_age=600)
def public_page(request):
    response = HttpResponse(render_page(request))
    response["ETag"] = '"fixed"'
    response["Expires"] = "Thu, 01 Jan 2099 00:00:00 GMT"
    return response


def template_page(request):
    return TemplateResponse(request, engines["django"].from_string(PAGE), {})


def plain_page(request):
    response = HttpResponse("<p>no secret here</p>")
    patch_cache_control(response, public=True, max_age=60)
    return response


urlpatterns = [
    path("public/", public_page),
    path("cached/", cache_page(600)(public_page)),
    path("cached-template/", cache_page(600)(template_page)),
    path("cached-outer-decorated/", no_store_secrets(cache_page(600)(template_page))),
    path("plain/", plain_page),
    path("gateway/", include("gateway_realtime.urls")),
]

MIDDLEWARE_WITH_OURS = [
    "gateway_realtime.middleware.NoStoreSecretsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]

SITE_CACHE = [
    "django.middleware.cache.UpdateCacheMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.middleware.cache.FetchFromCacheMiddleware",
]

pytestmark = [pytest.mark.urls(__name__), pytest.mark.django_db]


@pytest.fixture(autouse=True)
def fake():
    caches["default"].clear()
    with fake_gateway() as fake:
        yield fake
    caches["default"].clear()


def token_of(response):
    match = TOKEN.search(response.content.decode())
    assert match, response.content
    return json.loads(match.group(1))


def cached_values():
    """Every value in the default cache, as bytes (local memory or Redis)."""
    cache = caches["default"]
    if isinstance(cache, LocMemCache):
        return list(cache._cache.values())
    client = cache._cache.get_client()
    prefix = cache.make_key("").encode()
    return [client.get(key) or b"" for key in client.scan_iter() if key.startswith(prefix)]


def assert_not_cached(*tokens):
    for value in cached_values():
        for token in tokens:
            assert token.encode() not in value


# The middleware -----------------------------------------------------------------


def test_middleware_overrides_whatever_the_view_set(client, user, settings):
    settings.MIDDLEWARE = MIDDLEWARE_WITH_OURS
    client.force_login(user)
    response = client.get("/public/")
    assert token_of(response)
    assert response["Cache-Control"] == "no-store, private"
    assert response["Pragma"] == "no-cache"
    assert "Cookie" in response["Vary"]
    for header in ("ETag", "Expires", "Last-Modified"):
        assert header not in response


def test_middleware_leaves_pages_without_a_secret_alone(client, settings):
    settings.MIDDLEWARE = MIDDLEWARE_WITH_OURS
    anonymous = client.get("/public/")  # the tag renders, but mints nothing
    assert token_of(anonymous) is None
    assert "public" in anonymous["Cache-Control"]
    plain = client.get("/plain/")
    assert plain["Cache-Control"] == "public, max-age=60"


def test_middleware_leaves_a_failed_mint_alone(client, user, settings, fake):
    from gateway_realtime.exceptions import GatewayTimeoutError

    settings.MIDDLEWARE = MIDDLEWARE_WITH_OURS
    fake.fail_with(GatewayTimeoutError("slow"))
    client.force_login(user)
    response = client.get("/public/")
    assert token_of(response) is None
    assert "no-store" not in response["Cache-Control"]


def test_middleware_under_asgi(user):
    request = RequestFactory().get("/")
    request.user = user

    async def view(request):
        return HttpResponse(await sync_to_async(render_page)(request))

    middleware = NoStoreSecretsMiddleware(view)
    response = async_to_sync(middleware)(request)
    assert response["Cache-Control"] == "no-store, private"


# The helpers the decorator shares (the decorator: tests/test_decorators.py) ---------


def test_protect_response_waits_for_a_template_to_render(user):
    request = RequestFactory().get("/")
    request.user = user
    response = protect_response(request, template_page(request))
    assert "Cache-Control" not in response
    response.render()
    assert response["Cache-Control"] == "no-store, private"


def test_mark_is_per_request():
    factory = RequestFactory()
    marked, other = factory.get("/"), factory.get("/")
    mark_secret_in_response(marked)
    assert response_carries_secret(marked)
    assert not response_carries_secret(other)


# Django's page caches ------------------------------------------------------------


SITE_WIDE = {"MIDDLEWARE": SITE_CACHE, "CACHE_MIDDLEWARE_SECONDS": 600}


@pytest.mark.parametrize(
    ("url", "overrides"),
    [
        pytest.param("/cached/", {}, id="cache_page"),
        pytest.param("/cached-template/", {}, id="cache_page-template"),
        pytest.param("/cached-outer-decorated/", {}, id="cache_page-inside-the-decorator"),
        pytest.param("/public/", SITE_WIDE, id="site-wide"),
    ],
)
def test_page_caches_never_store_a_page_with_a_secret(
    client, user, other_user, settings, url, overrides
):
    for name, value in overrides.items():
        setattr(settings, name, value)
    client.force_login(user)
    first = token_of(client.get(url))
    second = token_of(client.get(url))
    client.force_login(other_user)
    third = token_of(client.get(url))
    assert len({first, second, third}) == 3
    assert_not_cached(first, second, third)


@override_settings(**SITE_WIDE)
def test_site_wide_cache_still_caches_pages_without_a_secret(client):
    client.get("/plain/")
    assert any(b"no secret here" in v for v in cached_values())


# The one private hook --------------------------------------------------------------


@pytest.mark.parametrize("marked", [False, True])
def test_django_page_cache_still_reads_the_flag_the_tag_clears(marked):
    """``mark_secret_in_response`` relies on ``request._cache_update_cache``.

    Both cases must hold: Django stores an ordinary page (so the flag is what
    decides), and stores nothing once the page is marked. If Django stops
    reading the flag, the marked case fails and the hook needs replacing.
    """
    from django.middleware.cache import CacheMiddleware

    caches["default"].clear()
    request = RequestFactory().get("/flag/")
    response = HttpResponse("<p>flagged page</p>")
    middleware = CacheMiddleware(lambda request: response, page_timeout=600)
    assert middleware.process_request(request) is None  # a miss: the flag is set now
    if marked:
        mark_secret_in_response(request)
    middleware.process_response(request, response)
    stored = middleware.process_request(RequestFactory().get("/flag/"))
    assert (stored is None) is marked
    caches["default"].clear()
