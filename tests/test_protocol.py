"""``gateway_realtime.protocol``: the wire format's names, URLs and subprotocols."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from gateway_realtime.client import GatewayClient, get_client
from gateway_realtime.protocol import (
    MAX_TOKEN_LENGTH,
    MINT_PATH,
    GatewayClientProtocol,
    Kind,
    MintedSecret,
    build_ws_url,
    form_encode,
    gateway_origin,
    is_usable_token,
    mint_url,
    websocket_protocols,
)
from gateway_realtime.testing import FakeGatewayClient

# Kinds -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "route_kind", "ws_path", "subprotocol"),
    [
        (Kind.REALTIME, None, "/realtime-model", "ai-gateway-realtime.v1"),
        (
            Kind.TRANSCRIPTION,
            "transcription",
            "/transcription-model",
            "ai-gateway-transcription.v1",
        ),
        (Kind.SPEECH, "speech", "/speech-model", "ai-gateway-speech.v1"),
    ],
)
def test_kind_names_on_the_wire(
    kind: Kind, route_kind: str | None, ws_path: str, subprotocol: str
) -> None:
    assert kind.route_kind == route_kind
    assert kind.ws_path == ws_path
    assert kind.subprotocol == subprotocol


def test_minted_secret_repr_hides_the_token() -> None:
    secret = MintedSecret(
        token="vcst_protocol_secret", expires_at=1, url="wss://g.test/", kind=Kind.SPEECH, model="m"
    )
    assert "vcst_protocol_secret" not in repr(secret)
    assert "token=<hidden>" in repr(secret)


# URLs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base_url", "origin"),
    [
        ("https://gateway.test/v4/ai", "https://gateway.test"),
        ("https://gateway.test/v4/ai/", "https://gateway.test"),
        ("https://gateway.test/", "https://gateway.test"),
        ("https://gateway.test", "https://gateway.test"),
        ("https://gateway.test/a/deep/path/?q=1", "https://gateway.test"),
        ("http://127.0.0.1:8765/v4/ai", "http://127.0.0.1:8765"),
        ("http://[::1]:8765/v4/ai", "http://[::1]:8765"),
        ("https://user:p%40ss@gateway.test/v4/ai", "https://gateway.test"),
    ],
)
def test_gateway_origin(base_url: str, origin: str) -> None:
    assert gateway_origin(base_url) == origin
    assert mint_url(base_url) == origin + MINT_PATH


def test_mint_url_of_the_default_base_url() -> None:
    assert mint_url("https://ai-gateway.vercel.sh/v4/ai") == (
        "https://ai-gateway.vercel.sh/v1/realtime/client-secrets"
    )


@pytest.mark.parametrize(
    ("base_url", "kind", "expected"),
    [
        (
            "https://ai-gateway.vercel.sh/v4/ai",
            Kind.REALTIME,
            "wss://ai-gateway.vercel.sh/v4/ai/realtime-model?ai-model-id=openai%2Fgpt-realtime-2",
        ),
        (
            "https://ai-gateway.vercel.sh/v4/ai/",
            Kind.TRANSCRIPTION,
            "wss://ai-gateway.vercel.sh/v4/ai/transcription-model"
            "?ai-model-id=openai%2Fgpt-realtime-2",
        ),
        (
            "http://127.0.0.1:8765/v4/ai",
            Kind.SPEECH,
            "ws://127.0.0.1:8765/v4/ai/speech-model?ai-model-id=openai%2Fgpt-realtime-2",
        ),
    ],
)
def test_ws_url(base_url: str, kind: Kind, expected: str) -> None:
    assert build_ws_url(base_url, kind, "openai/gpt-realtime-2") == expected


@pytest.mark.parametrize(
    ("model", "encoded"),
    [
        ("openai/gpt-realtime-2", "openai%2Fgpt-realtime-2"),
        ("a~b", "a%7Eb"),
        ("a*b", "a*b"),
        ("a b", "a+b"),
        ("-._", "-._"),
        ("a+b&c=d#e?f", "a%2Bb%26c%3Dd%23e%3Ff"),
        ("it's (new)!", "it%27s+%28new%29%21"),
        ("vendor/modèle-ü", "vendor%2Fmod%C3%A8le-%C3%BC"),
        ("日本", "%E6%97%A5%E6%9C%AC"),
        ("", ""),
        ("100%", "100%25"),
        ("a%2Fb", "a%252Fb"),
        ("a\r\nb", "a%0D%0Ab"),
        ("a;b,c:d@e$f", "a%3Bb%2Cc%3Ad%40e%24f"),
    ],
)
def test_form_encoding_matches_url_search_params(model: str, encoded: str) -> None:
    assert form_encode(model) == encoded
    assert build_ws_url("https://g.test/v4/ai", Kind.REALTIME, model).endswith(
        "?ai-model-id=" + encoded
    )


# Subprotocols ------------------------------------------------------------------

TEAM = "équipe/ü?"
TEAM_ENTRY = "ai-gateway-team." + base64.urlsafe_b64encode(TEAM.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("kind", "token", "team", "expected"),
    [
        (Kind.REALTIME, "vcst_a", None, ["ai-gateway-realtime.v1", "ai-gateway-auth.vcst_a"]),
        (Kind.REALTIME, "vcst_a", "", ["ai-gateway-realtime.v1", "ai-gateway-auth.vcst_a"]),
        (
            Kind.TRANSCRIPTION,
            "vcst_b",
            TEAM,
            ["ai-gateway-transcription.v1", "ai-gateway-auth.vcst_b", TEAM_ENTRY],
        ),
        (Kind.SPEECH, None, None, ["ai-gateway-speech.v1"]),
        (Kind.SPEECH, None, TEAM, ["ai-gateway-speech.v1", TEAM_ENTRY]),
        (Kind.REALTIME, None, "my-team", ["ai-gateway-realtime.v1", "ai-gateway-team.bXktdGVhbQ"]),
    ],
)
def test_websocket_protocols(
    kind: Kind, token: str | None, team: str | None, expected: list[str]
) -> None:
    assert websocket_protocols(kind, token, team=team) == expected


def test_team_entry_is_base64url_without_padding() -> None:
    entry = websocket_protocols(Kind.REALTIME, team=TEAM)[-1]
    assert "=" not in entry
    assert "+" not in entry
    assert "/" not in entry


@pytest.mark.parametrize(
    ("token", "usable"),
    [
        ("vcst_abc", True),
        ("vcst_a-b.c~d!#$%&'*+^_`|", True),
        ("a" * MAX_TOKEN_LENGTH, True),
        ("a" * (MAX_TOKEN_LENGTH + 1), False),
        ("", False),
        ("a b", False),
        ("a,b", False),
        ("a/b", False),
        ('a"b', False),
        ("vcst_a\r\nX-Evil: 1", False),
        ("vcst_é", False),
        (None, False),
        (b"vcst_abc", False),
        (12345, False),
    ],
)
def test_is_usable_token(token: object, usable: bool) -> None:
    assert is_usable_token(token) is usable


# The client protocol -----------------------------------------------------------


@pytest.mark.parametrize("client_class", [GatewayClient, FakeGatewayClient])
def test_both_clients_satisfy_the_protocol(client_class: type[Any]) -> None:
    client = client_class()
    try:
        assert isinstance(client, GatewayClientProtocol)
    finally:
        client.close()


def test_get_client_returns_the_protocol(settings: Any) -> None:
    assert isinstance(get_client(), GatewayClientProtocol)
    settings.GATEWAY_REALTIME_CLIENT_CLASS = "gateway_realtime.testing.FakeGatewayClient"
    assert isinstance(get_client(), GatewayClientProtocol)


def test_an_object_without_mint_is_not_a_client() -> None:
    class NotAClient:
        def close(self) -> None:
            pass

    assert not isinstance(NotAClient(), GatewayClientProtocol)


def test_the_live_route_is_the_providers_list_unless_the_site_names_one() -> None:
    from gateway_realtime.protocol import LIVE_MODEL_IDS, build_ws_url, is_live

    assert {"openai/gpt-live-1", "openai/gpt-live-1.1"} == LIVE_MODEL_IDS
    assert is_live(Kind.REALTIME, "openai/gpt-live-1")
    assert not is_live(Kind.REALTIME, "openai/gpt-realtime-2")
    # The official client's { api } option, per model.
    assert is_live(Kind.REALTIME, "acme/continuous", {"acme/continuous": "live"})
    assert not is_live(Kind.REALTIME, "openai/gpt-live-1", {"openai/gpt-live-1": "realtime"})
    # Only the realtime kind has two routes.
    assert not is_live(Kind.TRANSCRIPTION, "openai/gpt-live-1", {"openai/gpt-live-1": "live"})
    base = "https://ai-gateway.vercel.sh/v4/ai/"
    assert build_ws_url(base, Kind.REALTIME, "openai/gpt-live-1", live=True) == (
        "wss://ai-gateway.vercel.sh/v4/ai/live-model?ai-model-id=openai%2Fgpt-live-1"
    )
    assert build_ws_url(base, Kind.SPEECH, "m", live=True).endswith("/speech-model?ai-model-id=m")


def test_the_relay_opens_the_live_route_for_a_live_model(settings) -> None:
    pytest.importorskip("websockets")
    from gateway_realtime.relay.upstream import gateway_url

    settings.GATEWAY_REALTIME_BASE_URL = "http://127.0.0.1:9/v4/ai"
    assert gateway_url("openai/gpt-live-1.1") == (
        "ws://127.0.0.1:9/v4/ai/live-model?ai-model-id=openai%2Fgpt-live-1.1"
    )
    settings.GATEWAY_REALTIME_REALTIME_API = {"openai/gpt-live-1.1": "realtime"}
    assert "/realtime-model?" in gateway_url("openai/gpt-live-1.1")
