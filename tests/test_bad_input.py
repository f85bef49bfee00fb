"""Hostile requests to the mint endpoint: every one is a 4xx JSON error.

No case may reach the Gateway, write an audit row or cause a 500. The table
runs with CSRF enforcement on (``SameOriginClient``), as a browser's request
would be checked, so the same-origin rules are in play. The parser and the
serializer on their own: tests/test_parsers.py, tests/test_serializers.py.
"""

import json

import pytest
from django.urls import reverse
from hypothesis import HealthCheck, assume, given, settings

from gateway_realtime.models import ClientSecretIssuance
from tests.conftest import SAME_ORIGIN
from tests.strategies import json_values

URL = reverse("gateway_realtime:realtime")
JSON = "application/json"
GOOD_MODEL = "openai/gpt-realtime-2"


def case(name, body, *, method="POST", content_type=JSON, headers=None, status=None, login=True):
    if not isinstance(body, bytes | str):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogatepass")
    return pytest.param(
        method,
        body,
        content_type,
        SAME_ORIGIN if headers is None else headers,
        status,
        login,
        id=name,
    )


def nested(depth, inner="1"):
    return "[" * depth + inner + "]" * depth


CASES = [
    # --- size, truncation, nesting -------------------------------------------
    case("oversized-by-one", {"model": GOOD_MODEL, "pad": "x" * 16384}, status=413),
    case("oversized-1mb", b'{"pad": "' + b"x" * 1_000_000 + b'"}', status=413),
    case("oversized-5mb-not-json", b"x" * 5_000_000, status=413),
    case("truncated-object", b'{"model": "openai/gpt', status=400),
    case("truncated-brace", b"{", status=400),
    case("truncated-after-colon", b'{"expiresAfterSeconds":', status=400),
    case("nested-arrays-5000", nested(5000), status=400),
    case("nested-objects-in-session", '{"sessionConfig": ' + '{"a":' * 3000 + "1" + "}" * 3001),
    case("nested-and-oversized", nested(20000), status=413),
    # --- not JSON, not an object -----------------------------------------------
    case("form-encoded-body-json-type", b"model=openai%2Fgpt-realtime-2", status=400),
    case("plain-words", b"hello gateway", status=400),
    case("xml", b"<mint model='x'/>", status=400),
    case("single-quotes", b"{'model': 'x'}", status=400),
    case("nan", b'{"expiresAfterSeconds": NaN}', status=400),
    case("infinity", b'{"expiresAfterSeconds": Infinity}', status=400),
    case("trailing-comma", b'{"model": "openai/gpt-realtime-2",}', status=400),
    case("two-documents", b"{}{}", status=400),
    case("array", [], status=400),
    case("array-of-object", [{"model": GOOD_MODEL}], status=400),
    case("string", "just a string", status=400),
    case("number", 7, status=400),
    case("null", None, status=400),
    case("true", True, status=400),
    case("invalid-utf8", b'{"model": "\xff\xfe"}', status=400),
    case("utf16-bom", '{"model": "x"}'.encode("utf-16"), status=400),
    case("utf8-bom", b'\xef\xbb\xbf{"model": "x"}', status=400),
    case("nul-byte", b'{"model": "a"}\x00', status=400),
    # --- lifetimes ------------------------------------------------------------------
    case("lifetime-string", {"expiresAfterSeconds": "60"}, status=400),
    case("lifetime-float", {"expiresAfterSeconds": 60.5}, status=400),
    case("lifetime-float-whole", {"expiresAfterSeconds": 60.0}, status=400),
    case("lifetime-exponent", b'{"expiresAfterSeconds": 1e2}', status=400),
    case("lifetime-overflow-float", b'{"expiresAfterSeconds": 1e400}', status=400),
    case("lifetime-true", {"expiresAfterSeconds": True}, status=400),
    case("lifetime-false", {"expiresAfterSeconds": False}, status=400),
    case("lifetime-huge", {"expiresAfterSeconds": 10**30}, status=400),
    case("lifetime-over-max", {"expiresAfterSeconds": 601}, status=400),
    case("lifetime-zero", {"expiresAfterSeconds": 0}, status=400),
    case("lifetime-negative", {"expiresAfterSeconds": -60}, status=400),
    case("lifetime-list", {"expiresAfterSeconds": [60]}, status=400),
    case("lifetime-object", {"expiresAfterSeconds": {"seconds": 60}}, status=400),
    case("lifetime-hex-string", {"expiresAfterSeconds": "0x3c"}, status=400),
    # --- model ids --------------------------------------------------------------------
    case("model-newline", {"model": GOOD_MODEL + "\n"}, status=400),
    case("model-crlf-header-injection", {"model": GOOD_MODEL + "\r\nX-Evil: 1"}, status=400),
    case("model-nul", {"model": "openai/\x00gpt-realtime-2"}, status=400),
    case("model-escape-char", {"model": "\x1b[31mopenai/gpt-realtime-2"}, status=400),
    case("model-zero-width-space", {"model": "openai/gpt\u200b-realtime-2"}, status=400),
    case("model-cyrillic-o", {"model": "\u043epenai/gpt-realtime-2"}, status=400),
    case("model-fullwidth", {"model": "\uff4fpenai/gpt-realtime-2"}, status=400),
    case("model-rtl-override", {"model": "\u202eopenai/gpt-realtime-2"}, status=400),
    case("model-lone-surrogate", b'{"model": "\\ud800"}', status=400),
    case("model-query-injection", {"model": GOOD_MODEL + "?ai-model-id=evil"}, status=400),
    case("model-param-injection", {"model": GOOD_MODEL + "&x=1"}, status=400),
    case("model-percent-encoded", {"model": "openai%2Fgpt-realtime-2"}, status=400),
    case("model-path-traversal", {"model": "../../v1/realtime/client-secrets"}, status=400),
    case("model-upper-case", {"model": GOOD_MODEL.upper()}, status=400),
    case("model-leading-space", {"model": " " + GOOD_MODEL}, status=400),
    case("model-trailing-space", {"model": GOOD_MODEL + " "}, status=400),
    case("model-unlisted", {"model": "openai/gpt-realtime-unlisted"}, status=400),
    case("model-fault-injection", {"model": "emulator/rate-limited"}, status=400),
    case("model-other-kind", {"model": "elevenlabs/eleven-v3"}, status=400),
    case("model-long", {"model": "a/" + "b" * 10_000}, status=400),
    case("model-number", {"model": 42}, status=400),
    case("model-list", {"model": [GOOD_MODEL]}, status=400),
    case("model-object", {"model": {"id": GOOD_MODEL}}, status=400),
    case("model-bool", {"model": True}, status=400),
    case(
        "model-duplicate-key-last-wins",
        b'{"model": "openai/gpt-realtime-2", "model": "x"}',
        status=400,
    ),
    case("session-config-string", {"sessionConfig": "{}"}, status=400),
    case("session-config-list", {"sessionConfig": []}, status=400),
    # --- methods -------------------------------------------------------------------------
    case("method-get", b"", method="GET", status=405),
    case("method-put", {}, method="PUT", status=405),
    case("method-patch", {}, method="PATCH", status=405),
    case("method-delete", {}, method="DELETE", status=405),
    case("method-options", b"", method="OPTIONS", status=405),
    case("method-trace", b"", method="TRACE", status=405),
    # --- content types and charsets ---------------------------------------------------------
    case("text-plain", {"model": GOOD_MODEL}, content_type="text/plain", status=415),
    case("form-urlencoded", b"model=x", content_type="application/x-www-form-urlencoded"),
    case("multipart", b"--b\r\n\r\n--b--", content_type="multipart/form-data; boundary=b"),
    case("text-json", {}, content_type="text/json", status=415),
    case("json-suffix", {}, content_type="application/ld+json", status=415),
    case("json-latin1", {}, content_type="application/json; charset=latin-1", status=415),
    case("json-utf16", {}, content_type="application/json; charset=utf-16", status=415),
    case("no-content-type", {}, content_type="", status=415),
    # --- cross-origin variants ------------------------------------------------------------------
    case("origin-foreign", {}, headers={"HTTP_ORIGIN": "https://evil.example"}, status=403),
    case("origin-null", {}, headers={"HTTP_ORIGIN": "null"}, status=403),
    case("origin-other-port", {}, headers={"HTTP_ORIGIN": "http://testserver:8080"}, status=403),
    case("origin-other-scheme", {}, headers={"HTTP_ORIGIN": "https://testserver"}, status=403),
    case(
        "origin-suffix", {}, headers={"HTTP_ORIGIN": "http://testserver.evil.example"}, status=403
    ),
    case(
        "origin-list",
        {},
        headers={"HTTP_ORIGIN": "http://testserver, https://evil.example"},
        status=403,
    ),
    case("fetch-cross-site", {}, headers={"HTTP_SEC_FETCH_SITE": "cross-site"}, status=403),
    case("fetch-same-site", {}, headers={"HTTP_SEC_FETCH_SITE": "same-site"}, status=403),
    case("fetch-none", {}, headers={"HTTP_SEC_FETCH_SITE": "none"}, status=403),
    case(
        "fetch-same-origin-but-foreign-origin",
        {},
        headers={"HTTP_SEC_FETCH_SITE": "same-origin", "HTTP_ORIGIN": "https://evil.example"},
        status=403,
    ),
    case(
        "origin-ok-but-cross-site-fetch",
        {},
        headers={"HTTP_ORIGIN": "http://testserver", "HTTP_SEC_FETCH_SITE": "cross-site"},
        status=403,
    ),
    case("no-origin-headers", {}, headers={}, status=403),
    case("referer-only", {}, headers={"HTTP_REFERER": "http://testserver/page"}, status=403),
    case(
        "cross-site-text-plain",
        {},
        content_type="text/plain",
        headers={"HTTP_ORIGIN": "https://evil.example", "HTTP_SEC_FETCH_SITE": "cross-site"},
    ),
    case("anonymous", {}, login=False, status=403),
    case("anonymous-cross-site", {}, login=False, headers={"HTTP_ORIGIN": "https://evil.example"}),
]


def test_the_table_is_big_enough():
    assert len(CASES) >= 60


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "body", "content_type", "headers", "status", "login"), CASES)
def test_hostile_request(
    method, body, content_type, headers, status, login, gateway, user, same_origin_as
):
    client = same_origin_as(user if login else None)
    response = client(
        URL, body, method=method, content_type=content_type, origin_headers=False, **headers
    )
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:200])
    if status is not None:
        assert response.status_code == status, response.content[:200]
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store, private"
    error = response.json()["error"]
    assert isinstance(error["type"], str) and error["type"]
    assert isinstance(error["message"], str) and error["message"]
    assert len(gateway.calls) == 0
    assert ClientSecretIssuance.objects.count() == 0


@pytest.mark.django_db
def test_the_same_client_mints_with_a_good_request(gateway, same_origin):
    # The control: the table fails for its hostile part, not for its setup.
    response = same_origin(URL)
    assert response.status_code == 200
    assert len(gateway.calls) == 1


# --- property-based: any JSON body ------------------------------------------------


@pytest.mark.django_db
@given(value=json_values)
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_endpoint_never_500s_and_mints_only_for_valid_bodies(value, same_origin, gateway):
    # The fixture sends its own default body for None.
    assume(value is not None)
    before_calls = len(gateway.calls)
    before_rows = ClientSecretIssuance.objects.count()
    response = same_origin(URL, value)
    if response.status_code == 200:
        assert isinstance(value, dict)
        assert len(gateway.calls) == before_calls + 1
        assert ClientSecretIssuance.objects.count() == before_rows + 1
    else:
        assert 400 <= response.status_code < 500
        assert set(response.json()["error"]) >= {"type", "message"}
        assert len(gateway.calls) == before_calls
        assert ClientSecretIssuance.objects.count() == before_rows
