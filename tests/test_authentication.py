"""``gateway_realtime.authentication``: the same-origin check that replaces the CSRF token.

Every request here goes through ``SameOriginClient``, which enforces CSRF checks:
Django's default test client skips them altogether, which would prove nothing.
"""

from __future__ import annotations

from typing import Any

import pytest
import responses
from django.conf import settings as django_settings
from django.test import RequestFactory
from django.utils.crypto import get_random_string
from rest_framework import exceptions

from gateway_realtime.authentication import (
    CrossSiteRequestRejected,
    check_same_origin,
    is_trusted_origin,
    request_origin,
)
from gateway_realtime.models import ClientSecretIssuance
from tests.conftest import SAME_ORIGIN, SameOriginClient, assert_private

pytestmark = pytest.mark.django_db

REALTIME = "/gateway/realtime/"


# Accepted ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(SAME_ORIGIN, id="origin+fetch-site"),
        pytest.param({"HTTP_ORIGIN": "http://testserver"}, id="origin-only"),
        pytest.param({"HTTP_SEC_FETCH_SITE": "same-origin"}, id="fetch-site-only"),
        pytest.param({"HTTP_ORIGIN": "HTTP://TestServer"}, id="origin-case"),
        pytest.param(
            {"HTTP_ORIGIN": "http://testserver", "HTTP_SEC_FETCH_SITE": "Same-Origin"},
            id="fetch-site-case",
        ),
    ],
)
def test_same_origin_is_accepted(
    same_origin: SameOriginClient, gateway: responses.RequestsMock, headers: dict[str, str]
) -> None:
    response = same_origin(REALTIME, origin_headers=False, **headers)
    assert response.status_code == 200, response.content
    assert response.json()["token"].startswith("vcst_test")
    assert len(gateway.calls) == 1


def test_json_with_charset_is_accepted(
    same_origin: SameOriginClient, gateway: responses.RequestsMock
) -> None:
    response = same_origin(REALTIME, content_type="application/json; charset=utf-8")
    assert response.status_code == 200


def test_valid_csrf_token_is_accepted(
    same_origin: SameOriginClient, gateway: responses.RequestsMock
) -> None:
    token = get_random_string(32)
    same_origin.cookies[django_settings.CSRF_COOKIE_NAME] = token
    response = same_origin(REALTIME, origin_headers=False, HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200, response.content
    assert len(gateway.calls) == 1


def test_wrong_csrf_token_without_origin_headers_is_rejected(
    same_origin: SameOriginClient, gateway: responses.RequestsMock
) -> None:
    same_origin.cookies[django_settings.CSRF_COOKIE_NAME] = get_random_string(32)
    response = same_origin(REALTIME, origin_headers=False, HTTP_X_CSRFTOKEN=get_random_string(32))
    assert response.status_code == 403
    assert len(gateway.calls) == 0


@pytest.mark.parametrize("fetch_site", [None, "same-origin"])
def test_csrf_trusted_origin_exact_match(
    same_origin: SameOriginClient,
    gateway: responses.RequestsMock,
    settings: Any,
    fetch_site: str | None,
) -> None:
    settings.CSRF_TRUSTED_ORIGINS = ["https://app.example.com"]
    headers = {"HTTP_ORIGIN": "https://app.example.com"}
    if fetch_site:
        headers["HTTP_SEC_FETCH_SITE"] = fetch_site
    response = same_origin(REALTIME, origin_headers=False, **headers)
    assert response.status_code == 200, response.content


# Rejected ----------------------------------------------------------------------

REJECTED_HEADERS = [
    pytest.param({"HTTP_SEC_FETCH_SITE": "cross-site"}, id="cross-site"),
    pytest.param({"HTTP_SEC_FETCH_SITE": "same-site"}, id="same-site"),
    pytest.param({"HTTP_SEC_FETCH_SITE": "none"}, id="fetch-site-none"),
    pytest.param({"HTTP_SEC_FETCH_SITE": ""}, id="fetch-site-empty"),
    pytest.param(
        {"HTTP_ORIGIN": "http://testserver", "HTTP_SEC_FETCH_SITE": "cross-site"},
        id="same-origin-but-cross-site",
    ),
    pytest.param(
        {"HTTP_ORIGIN": "http://testserver", "HTTP_SEC_FETCH_SITE": "same-site"},
        id="same-origin-but-same-site",
    ),
    pytest.param({"HTTP_ORIGIN": "https://evil.example"}, id="foreign-origin"),
    pytest.param(
        {"HTTP_ORIGIN": "https://evil.example", "HTTP_SEC_FETCH_SITE": "same-origin"},
        id="foreign-origin-same-origin-fetch",
    ),
    pytest.param({"HTTP_ORIGIN": "null"}, id="null-origin"),
    pytest.param({"HTTP_ORIGIN": ""}, id="empty-origin"),
    pytest.param({"HTTP_ORIGIN": "https://testserver"}, id="other-scheme"),
    pytest.param({"HTTP_ORIGIN": "http://testserver:8080"}, id="other-port"),
    pytest.param({"HTTP_ORIGIN": "http://testserver.evil.example"}, id="suffix-host"),
    pytest.param({"HTTP_ORIGIN": "http://sub.testserver"}, id="subdomain"),
    pytest.param({}, id="no-headers"),
    pytest.param({"HTTP_REFERER": "http://testserver/page"}, id="referer-only"),
]


@pytest.mark.parametrize("headers", REJECTED_HEADERS)
def test_cross_site_is_rejected(
    same_origin: SameOriginClient, gateway: responses.RequestsMock, headers: dict[str, str]
) -> None:
    response = same_origin(REALTIME, origin_headers=False, **headers)
    assert response.status_code == 403, response.content
    assert response.json()["error"]["type"] == "cross_site_request"
    assert_private(response)
    assert len(gateway.calls) == 0
    assert ClientSecretIssuance.objects.count() == 0


@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        ("text/plain", b'{"sessionConfig": {}}'),
        ("text/plain;charset=UTF-8", b"{}"),
        ("application/x-www-form-urlencoded", b"sessionConfig=x"),
        ("multipart/form-data; boundary=BoUnDaRy", b"--BoUnDaRy--\r\n"),
        ("application/json-patch+json", b"{}"),
        ("", b"{}"),
    ],
)
@pytest.mark.parametrize(
    "headers", [pytest.param(SAME_ORIGIN, id="same-origin"), pytest.param({}, id="no-headers")]
)
def test_non_json_bodies_are_rejected(
    same_origin: SameOriginClient,
    gateway: responses.RequestsMock,
    content_type: str,
    data: bytes,
    headers: dict[str, str],
) -> None:
    response = same_origin(
        REALTIME, data, content_type=content_type, origin_headers=False, **headers
    )
    assert response.status_code == 415, response.content
    assert response.json()["error"]["type"] == "unsupported_media_type"
    assert_private(response)
    assert len(gateway.calls) == 0
    assert ClientSecretIssuance.objects.count() == 0


def test_real_form_post_is_rejected(
    same_origin: SameOriginClient, gateway: responses.RequestsMock
) -> None:
    response = same_origin.post(REALTIME, {"sessionConfig": "x"}, **SAME_ORIGIN)
    assert response.status_code == 415
    assert len(gateway.calls) == 0


def test_valid_csrf_token_still_needs_json(
    same_origin: SameOriginClient, gateway: responses.RequestsMock
) -> None:
    token = get_random_string(32)
    same_origin.cookies[django_settings.CSRF_COOKIE_NAME] = token
    response = same_origin(
        REALTIME, content_type="text/plain", origin_headers=False, HTTP_X_CSRFTOKEN=token
    )
    assert response.status_code == 415
    assert len(gateway.calls) == 0


@pytest.mark.parametrize(
    "trusted", [["https://*.example.com"], ["https://app.example.com/"], ["https://example.com"]]
)
def test_trusted_origins_match_exactly(
    same_origin: SameOriginClient,
    gateway: responses.RequestsMock,
    settings: Any,
    trusted: list[str],
) -> None:
    settings.CSRF_TRUSTED_ORIGINS = trusted
    response = same_origin(REALTIME, origin_headers=False, HTTP_ORIGIN="https://app.example.com")
    assert response.status_code == 403
    assert len(gateway.calls) == 0


def test_anonymous_cross_site(same_origin_as: Any, gateway: responses.RequestsMock) -> None:
    anonymous = same_origin_as(None)
    response = anonymous(REALTIME, origin_headers=False, HTTP_ORIGIN="https://evil.example")
    assert response.status_code in (401, 403)
    assert len(gateway.calls) == 0


# The functions -----------------------------------------------------------------


def test_request_origin() -> None:
    factory = RequestFactory()
    assert request_origin(factory.post("/")) == "http://testserver"
    assert request_origin(factory.post("/", secure=True)) == "https://testserver"
    assert request_origin(factory.post("/", HTTP_HOST="LocalHost:8000")) == "http://localhost:8000"


def test_is_trusted_origin(settings: Any) -> None:
    settings.CSRF_TRUSTED_ORIGINS = ["https://App.Example.com", "https://*.example.org"]
    request = RequestFactory().post("/")
    assert is_trusted_origin(request, "http://testserver")
    assert is_trusted_origin(request, "https://app.example.com")
    assert not is_trusted_origin(request, "https://x.example.org")
    assert not is_trusted_origin(request, "null")


def test_check_same_origin() -> None:
    factory = RequestFactory()
    ok = factory.post("/", content_type="application/json", HTTP_SEC_FETCH_SITE="same-origin")
    check_same_origin(ok)
    with pytest.raises(exceptions.UnsupportedMediaType):
        check_same_origin(factory.post("/", "x", content_type="text/plain", **SAME_ORIGIN))
    with pytest.raises(CrossSiteRequestRejected, match="neither Origin nor Sec-Fetch-Site"):
        check_same_origin(factory.post("/", content_type="application/json"))
    with pytest.raises(CrossSiteRequestRejected):
        check_same_origin(
            factory.post("/", content_type="application/json", HTTP_SEC_FETCH_SITE="cross-site")
        )
    assert issubclass(CrossSiteRequestRejected, exceptions.PermissionDenied)
