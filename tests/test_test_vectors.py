"""The recorded requests and results of the official ``@ai-sdk/gateway`` provider.

Every line of ``test-vectors.jsonl`` and ``test-vectors-live.jsonl`` (the
wire contract's companions; the second recorded from 4.0.158, section 8) is
one test: our client must send the very same request and reach the same
result. The repository keeps a copy in ``tests/data`` so that a clone
without the shared reference directory still runs them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import responses

from gateway_realtime.client import GatewayClient
from gateway_realtime.credentials import resolve_credential
from gateway_realtime.exceptions import ERROR_TYPES, GatewayError
from gateway_realtime.protocol import Kind
from tests.conftest import EXPIRES_AT, answer, gateway_error

HOST = "gateway.vectors.test"
LOCAL_DIR = Path(__file__).resolve().parent / "data"
SHARED_DIR = Path(__file__).resolve().parents[2] / "shared/reference"
FILES = ("test-vectors.jsonl", "test-vectors-live.jsonl")


def load_vectors() -> list[Any]:
    params = []
    for name in FILES:
        path = LOCAL_DIR / name if (LOCAL_DIR / name).exists() else SHARED_DIR / name
        if not path.exists():
            reason = f"test vectors not found at {LOCAL_DIR / name} or {SHARED_DIR / name}"
            params.append(pytest.param(None, marks=pytest.mark.skip(reason=reason), id=name))
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        vectors = [json.loads(line) for line in lines if line.strip()]
        params += [pytest.param(v, id=v["case"]) for v in vectors]
    return params


def js_stringify(value: Any) -> bytes:
    """What ``JSON.stringify`` gives: compact, keys in insertion order, UTF-8."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def localize(text: str) -> str:
    return text.replace("GATEWAY", HOST)


def kind_of(body: dict[str, Any]) -> Kind:
    """The kind a vector mints: Live models are the realtime kind's (section 8)."""
    route = body.get("routeKind", "realtime")
    return Kind.REALTIME if route == "live" else Kind(route)


def gateway_answer(vector: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The body and status the Gateway answers ``vector`` with."""
    if vector["error"] is None:
        return {"token": vector["result"]["token"], "expiresAt": EXPIRES_AT}, 200
    error = vector["error"]
    param = (
        {"modelId": vector["request"]["body"]["model"]}
        if error["type"] == "model_not_found"
        else None
    )
    body = gateway_error(error["type"], "stand-in", param=param, generation_id=None)
    return body, error["statusCode"]


@pytest.mark.parametrize("name", FILES)
def test_local_copy_matches_the_shared_reference(name: str) -> None:
    shared = SHARED_DIR / name
    if not shared.exists():
        pytest.skip(f"the shared reference {shared} is not present (a plain clone)")
    assert (LOCAL_DIR / name).read_bytes() == shared.read_bytes()


@pytest.mark.parametrize("vector", load_vectors())
def test_vector(
    vector: dict[str, Any], settings: Any, gateway_mock: responses.RequestsMock
) -> None:
    settings.GATEWAY_REALTIME_BASE_URL = localize(vector["base_url"])
    settings.GATEWAY_REALTIME_API_KEY = vector["api_key"]
    settings.GATEWAY_REALTIME_TEAM = vector["team"]
    settings.GATEWAY_REALTIME_EXTRA_HEADERS = {}
    expected = vector["request"]
    body = expected["body"]
    url = f"http://{HOST}{expected['path']}"

    answer(gateway_mock, *gateway_answer(vector), url=url)
    client = GatewayClient()
    outcome: Any
    try:
        outcome = client.mint(
            kind=kind_of(body),
            model=body["model"],
            credential=resolve_credential(),
            expires_in=body.get("expiresIn"),
        )
    except GatewayError as error:
        outcome = error
    finally:
        client.close()
    assert len(gateway_mock.calls) == 1
    sent = gateway_mock.calls[0].request

    assert sent.method == expected["method"]
    assert sent.url == url
    for name, value in expected["headers"].items():
        assert sent.headers[name] == value, name
    # Nothing but the contract's headers (plus what HTTP itself needs).
    names = {name.lower() for name in sent.headers}
    assert names == set(expected["headers"]) | {"user-agent", "content-length"}
    assert sent.headers["User-Agent"].startswith("django-gateway-realtime/")
    assert sent.body == js_stringify(body)
    assert b"null" not in sent.body

    if vector["error"] is None:
        assert outcome.token == vector["result"]["token"]
        assert outcome.url == localize(vector["result"]["url"])
    else:
        assert isinstance(outcome, GatewayError)
        assert type(outcome) is ERROR_TYPES[vector["error"]["type"]]
        assert outcome.error_type == vector["error"]["type"]
        assert outcome.status_code == vector["error"]["statusCode"]
