"""The OpenAPI schema of the mint endpoints (drf-spectacular), validated, held to real answers."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
from django.test import override_settings
from django.urls import reverse

from gateway_realtime.api_errors import (
    RETRY_AFTER_STATUSES,
    VIEW_REFUSALS,
    _status_and_type,
    endpoint_errors,
    example_failures,
)
from gateway_realtime.views import ClientSecretView

from .conftest import SameOriginClient
from .test_docs import provoke_view_refusals

pytest.importorskip(
    "drf_spectacular", reason="drf-spectacular is not installed (the openapi extra)"
)
jsonschema = pytest.importorskip("jsonschema", reason="jsonschema comes with drf-spectacular")

SPECTACULAR = {"DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema"}
PATHS = {
    kind: reverse(f"gateway_realtime:{kind}") for kind in ("realtime", "transcription", "speech")
}


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.validation import validate_schema

    with override_settings(REST_FRAMEWORK=SPECTACULAR):
        generated = SchemaGenerator().get_schema(request=None, public=True)
    validate_schema(generated)  # OpenAPI 3's own JSON schema
    return generated


def resolved(node: Any, schema: dict[str, Any]) -> Any:
    """``node`` with every ``$ref`` to a component replaced by the component."""
    if isinstance(node, dict):
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[1]
            return resolved(schema["components"]["schemas"][name], schema)
        return {key: resolved(value, schema) for key, value in node.items()}
    if isinstance(node, list):
        return [resolved(value, schema) for value in node]
    return node


def body_schema(schema: dict[str, Any], status: int, kind: str = "realtime") -> dict[str, Any]:
    answer = schema["paths"][PATHS[kind]]["post"]["responses"][str(status)]
    return resolved(answer["content"]["application/json"]["schema"], schema)


def test_the_three_endpoints_are_described(schema):
    for path in PATHS.values():
        operation = schema["paths"][path]["post"]
        assert set(schema["paths"][path]) == {"post"}
        body = resolved(operation["requestBody"]["content"]["application/json"]["schema"], schema)
        assert set(body["properties"]) == {"sessionConfig", "model", "expiresAfterSeconds"}
        assert not body.get("required")
        statuses = {int(status) for status in operation["responses"]}
        assert statuses == {200, *endpoint_errors()}


def test_every_error_type_is_declared_under_its_status(schema):
    for status, types in endpoint_errors().items():
        declared = body_schema(schema, status)["properties"]["error"]["properties"]["type"]
        enum = declared["allOf"][0]["enum"] if "allOf" in declared else declared["enum"]
        assert sorted(enum) == sorted(types)


def test_retry_after_is_declared_where_it_is_sent(schema):
    responses = schema["paths"][PATHS["realtime"]]["post"]["responses"]
    for status in endpoint_errors():
        headers = responses[str(status)].get("headers", {})
        assert ("Retry-After" in headers) == (status in RETRY_AFTER_STATUSES), status


def test_the_schema_names_no_secret(schema, settings):
    text = str(schema)
    assert settings.GATEWAY_REALTIME_API_KEY not in text


# Real answers ---------------------------------------------------------------------


def check(response: Any, schema: dict[str, Any], kind: str = "realtime") -> None:
    """The answer's status is declared, its body matches exactly, Retry-After as declared."""
    status = response.status_code
    assert str(status) in schema["paths"][PATHS[kind]]["post"]["responses"], status
    body, shape = response.json(), body_schema(schema, status, kind)
    jsonschema.validate(body, shape)
    # Nothing the schema leaves out (its objects are open, as drf-spectacular writes them).
    assert set(body) <= set(shape["properties"]), body
    if "error" in body:
        assert set(body["error"]) <= set(shape["properties"]["error"]["properties"]), body
    assert ("Retry-After" in response) == (status in RETRY_AFTER_STATUSES), status
    if "Retry-After" in response:
        assert int(response["Retry-After"]) >= 1


def tools_hook(**kwargs: Any) -> list[dict[str, Any]]:
    return [
        {"type": "function", "name": "get_weather", "description": "The weather in a city."}
        | {"parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
        {"type": "function", "name": "noop", "parameters": {}},
    ]


@pytest.mark.django_db
@pytest.mark.parametrize("kind", PATHS)
def test_a_real_secret_matches_the_200_schema(schema, user, gateway, kind):
    response = SameOriginClient(user)(PATHS[kind])
    assert response.status_code == 200
    assert set(response.json()) == {"token", "url", "expiresAt"}
    check(response, schema, kind)


@pytest.mark.django_db
def test_a_real_secret_with_tools_matches_the_200_schema(schema, user, gateway, settings):
    settings.GATEWAY_REALTIME_TOOLS_FUNCTION = "tests.test_openapi.tools_hook"
    response = SameOriginClient(user)(PATHS["realtime"])
    assert response.status_code == 200
    assert response.json()["tools"] == tools_hook()
    check(response, schema)
    for bad in ({"name": "x", "parameters": {}}, {"type": "function", "parameters": {}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**response.json(), "tools": [bad]}, body_schema(schema, 200))


@pytest.mark.django_db
@pytest.mark.parametrize("failure", example_failures(), ids=lambda f: type(f).__name__)
def test_each_failures_real_answer_matches_the_schema(schema, user, failure):
    status, error_type = _status_and_type(failure)
    with mock.patch.object(ClientSecretView, "mint", side_effect=failure):
        response = SameOriginClient(user)(reverse("gateway_realtime:realtime"))
    assert (response.status_code, response.json()["error"]["type"]) == (status, error_type)
    check(response, schema)


@pytest.mark.django_db
@pytest.mark.usefixtures("empty_cache")
def test_the_views_own_refusals_match_the_schema(schema, user, other_user, gateway, settings):
    seen = set()
    for response in provoke_view_refusals(user, other_user, settings):
        check(response, schema)
        seen.add((response.status_code, response.json()["error"]["type"]))
    assert seen == set(VIEW_REFUSALS)


# The example project serves it --------------------------------------------------------


@pytest.fixture
def example_site(settings):
    settings.INSTALLED_APPS = [*settings.INSTALLED_APPS, "example_project", "drf_spectacular"]
    settings.REST_FRAMEWORK = SPECTACULAR


@pytest.mark.django_db
@pytest.mark.urls("example_project.urls")
def test_the_example_serves_the_schema(example_site, client):
    response = client.get("/api/schema/?format=json")
    assert response.status_code == 200
    served = response.json()
    assert served["openapi"].startswith("3.")
    assert "/api/realtime-token/realtime/" in served["paths"]


@pytest.mark.django_db
@pytest.mark.urls("example_project.urls")
def test_the_example_schema_page_lists_every_answer_under_the_strict_csp(example_site, client):
    from .test_demo import _script_and_style_problems

    response = client.get("/api/schema/page/")
    assert response.status_code == 200
    assert "script-src 'self'" in response["Content-Security-Policy"]
    html = response.content.decode()
    assert _script_and_style_problems(html) == []
    for path in ("realtime", "transcription", "speech"):
        assert f"<code>POST /api/realtime-token/{path}/</code>" in html
    for types in endpoint_errors().values():
        for name in types:
            assert f"<code>{name}</code>" in html
