"""``gateway_realtime.credentials``: which credential mints, in the contract's order."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import RequestFactory

from gateway_realtime.credentials import API_KEY, OIDC, Credential, resolve_credential
from gateway_realtime.exceptions import (
    GatewayAuthenticationError,
    GatewayConfigurationError,
    GatewayError,
)
from gateway_realtime.services import mint_client_secret
from tests.conftest import answer, gateway_error

SECRET = "sk-credentials-DISTINCTIVE-5b1e"
OIDC_HEADER_TOKEN = "oidc.header.jwt"
OIDC_ENV_TOKEN = "oidc.env.jwt"


@pytest.fixture
def no_key(settings: Any) -> Any:
    settings.GATEWAY_REALTIME_API_KEY = None
    settings.GATEWAY_REALTIME_TRUST_VERCEL_OIDC_HEADER = None
    return settings


def oidc_request() -> Any:
    return RequestFactory().post("/", HTTP_X_VERCEL_OIDC_TOKEN=OIDC_HEADER_TOKEN)


def test_explicit_string(settings: Any) -> None:
    settings.GATEWAY_REALTIME_API_KEY = f"  {SECRET}\n"
    credential = resolve_credential()
    assert credential == Credential(value=SECRET, method=API_KEY, source=credential.source)
    assert credential.source == "GATEWAY_REALTIME_API_KEY"


def test_explicit_string_wins_over_everything(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.GATEWAY_REALTIME_API_KEY = SECRET
    settings.GATEWAY_REALTIME_TRUST_VERCEL_OIDC_HEADER = True
    monkeypatch.setenv("AI_GATEWAY_API_KEY", "from-env")
    monkeypatch.setenv("VERCEL_OIDC_TOKEN", OIDC_ENV_TOKEN)
    credential = resolve_credential(oidc_request())
    assert credential.value == SECRET
    assert credential.method == API_KEY


def test_callable_is_called_per_mint(settings: Any) -> None:
    values = iter(["first-key", "second-key"])
    settings.GATEWAY_REALTIME_API_KEY = lambda: next(values)
    assert resolve_credential().value == "first-key"
    assert resolve_credential().value == "second-key"


@pytest.mark.parametrize("value", ["", "   ", None, 123, b"bytes-key", ["k"]])
def test_callable_without_a_key_is_an_error_not_a_fall_through(
    settings: Any, monkeypatch: pytest.MonkeyPatch, value: Any
) -> None:
    monkeypatch.setenv("AI_GATEWAY_API_KEY", "would-be-fallback")
    monkeypatch.setenv("VERCEL_OIDC_TOKEN", OIDC_ENV_TOKEN)
    settings.GATEWAY_REALTIME_API_KEY = lambda: value
    with pytest.raises(GatewayConfigurationError) as info:
        resolve_credential()
    assert "GATEWAY_REALTIME_API_KEY" in str(info.value)
    assert not isinstance(info.value, GatewayError)


def test_callable_that_raises_is_a_configuration_error(settings: Any) -> None:
    def broken() -> str:
        raise RuntimeError(f"vault said: {SECRET}")

    settings.GATEWAY_REALTIME_API_KEY = broken
    with pytest.raises(GatewayConfigurationError) as info:
        resolve_credential()
    error = info.value
    assert "RuntimeError" in str(error)
    assert SECRET not in str(error)
    assert "vault said" not in str(error)
    assert error.__cause__ is None
    assert error.__suppress_context__ is True


def test_empty_explicit_key_falls_through(no_key: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    no_key.GATEWAY_REALTIME_API_KEY = "  "
    monkeypatch.setenv("AI_GATEWAY_API_KEY", "from-env")
    assert resolve_credential().value == "from-env"


def test_environment_api_key(no_key: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AI_GATEWAY_API_KEY", " from-env ")
    monkeypatch.setenv("VERCEL_OIDC_TOKEN", OIDC_ENV_TOKEN)
    no_key.GATEWAY_REALTIME_TRUST_VERCEL_OIDC_HEADER = True
    credential = resolve_credential(oidc_request())
    assert credential.value == "from-env"
    assert credential.method == API_KEY
    assert credential.source == "AI_GATEWAY_API_KEY"


@pytest.mark.parametrize(
    ("trust", "vercel", "uses_header"),
    [
        (True, None, True),
        (True, "0", True),
        (None, "1", True),
        (None, None, False),
        (None, "0", False),
        (None, "true", False),
        (False, "1", False),
        (False, None, False),
    ],
)
def test_oidc_header_only_when_trusted(
    no_key: Any,
    monkeypatch: pytest.MonkeyPatch,
    trust: bool | None,
    vercel: str | None,
    uses_header: bool,
) -> None:
    no_key.GATEWAY_REALTIME_TRUST_VERCEL_OIDC_HEADER = trust
    if vercel is not None:
        monkeypatch.setenv("VERCEL", vercel)
    monkeypatch.setenv("VERCEL_OIDC_TOKEN", OIDC_ENV_TOKEN)
    credential = resolve_credential(oidc_request())
    assert credential.method == OIDC
    if uses_header:
        assert credential.value == OIDC_HEADER_TOKEN
        assert credential.source == "x-vercel-oidc-token header"
    else:
        assert credential.value == OIDC_ENV_TOKEN
        assert credential.source == "VERCEL_OIDC_TOKEN"


def test_trusted_header_needs_a_request(no_key: Any) -> None:
    no_key.GATEWAY_REALTIME_TRUST_VERCEL_OIDC_HEADER = True
    with pytest.raises(GatewayConfigurationError, match="No authentication provided"):
        resolve_credential(None)


def test_empty_oidc_header_is_ignored(no_key: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    no_key.GATEWAY_REALTIME_TRUST_VERCEL_OIDC_HEADER = True
    monkeypatch.setenv("VERCEL_OIDC_TOKEN", OIDC_ENV_TOKEN)
    request = RequestFactory().post("/", HTTP_X_VERCEL_OIDC_TOKEN="  ")
    assert resolve_credential(request).value == OIDC_ENV_TOKEN


def test_vercel_oidc_environment_token(no_key: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VERCEL_OIDC_TOKEN", OIDC_ENV_TOKEN)
    credential = resolve_credential()
    assert credential == Credential(value=OIDC_ENV_TOKEN, method=OIDC, source="VERCEL_OIDC_TOKEN")


def test_nothing_configured_is_a_configuration_error(no_key: Any) -> None:
    # Nothing reached the Gateway: a setup mistake, not the Gateway refusing a key.
    with pytest.raises(GatewayConfigurationError) as info:
        resolve_credential(oidc_request())
    assert str(info.value).startswith("No authentication provided")
    assert info.value.error_type == "configuration_error"
    assert not isinstance(info.value, GatewayError)


@pytest.mark.django_db
def test_nothing_configured_sends_nothing(no_key: Any, gateway: Any, user: Any) -> None:
    with pytest.raises(GatewayConfigurationError, match="No authentication provided"):
        mint_client_secret(user=user, kind="realtime")
    assert len(gateway.calls) == 0


@pytest.mark.parametrize("value", [123, b"bytes-key", ["k"], True])
def test_an_explicit_key_of_the_wrong_type_is_a_configuration_error(
    settings: Any, monkeypatch: pytest.MonkeyPatch, value: Any
) -> None:
    monkeypatch.setenv("AI_GATEWAY_API_KEY", "would-be-fallback")
    settings.GATEWAY_REALTIME_API_KEY = value
    with pytest.raises(GatewayConfigurationError, match="GATEWAY_REALTIME_API_KEY must be"):
        resolve_credential()


MALFORMED = [
    pytest.param(f"Bearer {SECRET}", id="bearer-prefix"),
    pytest.param(f"{SECRET}\r\nX-Injected: 1", id="crlf"),
    pytest.param(f"{SECRET[:6]} {SECRET[6:]}", id="inner-space"),
    pytest.param(f"{SECRET}\x00", id="nul"),
    pytest.param(f"{SECRET}\u00e9", id="non-ascii"),
]


@pytest.mark.parametrize("value", MALFORMED)
@pytest.mark.parametrize(
    ("where", "source"),
    [
        ("setting", "GATEWAY_REALTIME_API_KEY"),
        ("callable", "GATEWAY_REALTIME_API_KEY"),
        ("AI_GATEWAY_API_KEY", "AI_GATEWAY_API_KEY"),
        ("VERCEL_OIDC_TOKEN", "VERCEL_OIDC_TOKEN"),
        ("header", "x-vercel-oidc-token header"),
    ],
)
def test_a_malformed_credential_is_a_configuration_error(
    no_key: Any, monkeypatch: pytest.MonkeyPatch, value: str, where: str, source: str
) -> None:
    request = None
    if where == "setting":
        no_key.GATEWAY_REALTIME_API_KEY = value
    elif where == "callable":
        no_key.GATEWAY_REALTIME_API_KEY = lambda: value
    elif where == "header":
        no_key.GATEWAY_REALTIME_TRUST_VERCEL_OIDC_HEADER = True
        request = RequestFactory().post("/")
        request.META["HTTP_X_VERCEL_OIDC_TOKEN"] = value
    elif "\x00" in value:
        pytest.skip("an environment variable cannot hold NUL")
    else:
        monkeypatch.setenv(where, value)
    with pytest.raises(GatewayConfigurationError) as info:
        resolve_credential(request)
    assert str(info.value).startswith(f"{source} is malformed")
    assert SECRET not in str(info.value)
    assert SECRET[6:] not in str(info.value)


@pytest.mark.django_db
def test_a_malformed_credential_sends_nothing(settings: Any, gateway: Any, user: Any) -> None:
    settings.GATEWAY_REALTIME_API_KEY = f"Bearer {SECRET}"
    with pytest.raises(GatewayConfigurationError, match="malformed"):
        mint_client_secret(user=user, kind="realtime")
    assert len(gateway.calls) == 0


@pytest.mark.django_db
def test_rejected_key_is_not_replaced_by_oidc(
    settings: Any, monkeypatch: pytest.MonkeyPatch, user: Any, gateway_mock: Any
) -> None:
    settings.GATEWAY_REALTIME_API_KEY = SECRET
    settings.GATEWAY_REALTIME_TRUST_VERCEL_OIDC_HEADER = True
    monkeypatch.setenv("VERCEL_OIDC_TOKEN", OIDC_ENV_TOKEN)
    answer(gateway_mock, gateway_error("authentication_error", "bad key"), 401)
    for _ in range(2):
        with pytest.raises(GatewayAuthenticationError):
            mint_client_secret(user=user, kind="realtime", request=oidc_request())
    assert len(gateway_mock.calls) == 2
    for call in gateway_mock.calls:
        assert call.request.headers["Authorization"] == f"Bearer {SECRET}"
        assert call.request.headers["ai-gateway-auth-method"] == "api-key"


@pytest.mark.parametrize(
    "credential",
    [
        Credential(value=SECRET, method=API_KEY, source="GATEWAY_REALTIME_API_KEY"),
        Credential(value=SECRET, method=OIDC, source="VERCEL_OIDC_TOKEN"),
    ],
)
def test_credential_repr_and_str_hide_the_value(credential: Credential) -> None:
    assert SECRET not in repr(credential)
    assert SECRET not in str(credential)
    assert SECRET not in f"{credential}"
    assert SECRET not in f"{credential!r}"
    assert credential.method in str(credential)
