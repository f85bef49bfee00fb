# ruff: noqa: F811 - test arguments are the imported fixtures, by design
"""``gateway_realtime.testing``: the fake client, the context managers and the pytest plugin."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from django.test import override_settings

from gateway_realtime.client import get_client
from gateway_realtime.exceptions import (
    GatewayForbiddenError,
    GatewayInternalServerError,
    GatewayRateLimitError,
)
from gateway_realtime.models import ClientSecretIssuance, Outcome
from gateway_realtime.protocol import Kind
from gateway_realtime.services import mint_client_secret
from gateway_realtime.testing import (
    FAKE_API_KEY,
    FakeGatewayClient,
    emulated_gateway,
    fake_gateway,
    fake_token,
    # The plugin's fixtures, imported so that pytest finds them here (a site
    # enables them with pytest_plugins instead; the last test below does that).
    gateway_realtime_emulator,  # noqa: F401
    gateway_realtime_emulator_server,  # noqa: F401
    gateway_realtime_fake,  # noqa: F401
)

pytest_plugins = ["pytester"]


@pytest.mark.django_db
def test_fake_selected_by_setting_mints_deterministic_tokens(user):
    FakeGatewayClient.reset()
    with override_settings(
        GATEWAY_REALTIME_CLIENT_CLASS="gateway_realtime.testing.FakeGatewayClient"
    ):
        assert isinstance(get_client(), FakeGatewayClient)
        first = mint_client_secret(user=user, kind="realtime")
        second = mint_client_secret(user=user, kind="speech", expires_in=30)
    assert first.token == fake_token(1, Kind.REALTIME, "openai/gpt-realtime-2")
    assert second.token == fake_token(2, Kind.SPEECH, "elevenlabs/eleven-v3")
    assert first.token.startswith("vcst_fake000001")
    assert (
        first.url == "wss://gateway.test/v4/ai/realtime-model?ai-model-id=openai%2Fgpt-realtime-2"
    )
    assert [c.kind for c in FakeGatewayClient.calls] == [Kind.REALTIME, Kind.SPEECH]
    assert FakeGatewayClient.calls[1].expires_in == 30
    assert FakeGatewayClient.tokens() == [first.token, second.token]
    FakeGatewayClient.reset()


def test_fake_tokens_are_the_same_in_every_run():
    assert fake_token(1, "realtime", "m") == fake_token(1, "realtime", "m")
    assert fake_token(1, "realtime", "m") != fake_token(2, "realtime", "m")
    assert fake_token(7, "realtime", "m").startswith("vcst_fake000007")


@pytest.mark.django_db
def test_fake_never_keeps_the_credential(user, gateway_realtime_fake):
    mint_client_secret(user=user, kind="realtime")
    [call] = gateway_realtime_fake.calls
    assert call.auth_method == "api-key"
    assert "test-gateway-key" not in repr(call)


@pytest.mark.django_db
def test_fixture_fail_with_any_gateway_error(user, gateway_realtime_fake):
    error = GatewayRateLimitError("slow down", status_code=429, retry_after=3)
    gateway_realtime_fake.fail_with(error)
    with pytest.raises(GatewayRateLimitError):
        mint_client_secret(user=user, kind="realtime")
    # Once by default: the next mint succeeds.
    assert mint_client_secret(user=user, kind="realtime").token
    outcomes = list(ClientSecretIssuance.objects.order_by("id").values_list("outcome", flat=True))
    assert outcomes == [Outcome.FAILED, Outcome.ISSUED]
    assert gateway_realtime_fake.calls[0].error is error


@pytest.mark.django_db
def test_fail_with_every_time_until_cleared(user, gateway_realtime_fake):
    gateway_realtime_fake.fail_with(GatewayForbiddenError("no", status_code=403), times=None)
    for _ in range(3):
        with pytest.raises(GatewayForbiddenError):
            mint_client_secret(user=user, kind="realtime")
    gateway_realtime_fake.fail_with(None, times=None)
    assert mint_client_secret(user=user, kind="realtime").token


@pytest.mark.django_db
def test_fail_with_a_number_of_times(user, gateway_realtime_fake):
    gateway_realtime_fake.fail_with(GatewayInternalServerError("boom", status_code=500), times=2)
    for _ in range(2):
        with pytest.raises(GatewayInternalServerError):
            mint_client_secret(user=user, kind="realtime")
    assert mint_client_secret(user=user, kind="realtime").token


@pytest.mark.django_db
def test_fake_gateway_supplies_a_credential_only_when_none_is_configured(user, settings):
    del settings.GATEWAY_REALTIME_API_KEY
    with fake_gateway() as fake:
        from django.conf import settings as live

        assert live.GATEWAY_REALTIME_API_KEY == FAKE_API_KEY
        assert mint_client_secret(user=user, kind="realtime").token
        assert fake.calls
    settings.GATEWAY_REALTIME_API_KEY = "site-key"
    with fake_gateway():
        from django.conf import settings as live

        assert live.GATEWAY_REALTIME_API_KEY == "site-key"


@pytest.mark.django_db
def test_emulator_fixture_mints_through_the_real_client(user, gateway_realtime_emulator):
    secret = mint_client_secret(user=user, kind="realtime", expires_in=60)
    assert secret.token.startswith("vcst_")
    assert secret.url.startswith(gateway_realtime_emulator.origin.replace("http", "ws", 1))
    [request] = gateway_realtime_emulator.requests
    assert request.json() == {"model": "openai/gpt-realtime-2", "expiresIn": 60}
    assert gateway_realtime_emulator.issued[secret.token].model == "openai/gpt-realtime-2"


@pytest.mark.django_db
def test_emulator_fixture_resets_between_tests(gateway_realtime_emulator):
    assert gateway_realtime_emulator.requests == []


@pytest.mark.django_db
def test_emulated_gateway_context_manager_starts_and_stops_its_own(user):
    with emulated_gateway() as emu:
        assert mint_client_secret(user=user, kind="transcription").token
        assert len(emu.requests) == 1
    with pytest.raises(OSError):
        import socket

        socket.create_connection(("127.0.0.1", emu.port), timeout=1).close()


def test_plugin_is_usable_from_a_users_conftest(pytester, monkeypatch):
    """What a site writes: ``pytest_plugins = ["gateway_realtime.testing"]``."""
    # SQLite in the child: on PostgreSQL it would want this run's test database.
    monkeypatch.delenv("GATEWAY_REALTIME_TEST_SERVICES", raising=False)
    root = str(Path(__file__).resolve().parents[1])
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    )
    pytester.makeconftest('pytest_plugins = ["gateway_realtime.testing"]\n')
    pytester.makepyfile(
        textwrap.dedent(
            """
            import pytest
            from gateway_realtime.services import mint_client_secret

            @pytest.mark.django_db
            def test_fake(gateway_realtime_fake, django_user_model):
                user = django_user_model.objects.create_user("carol")
                secret = mint_client_secret(user=user, kind="realtime")
                assert secret.token == gateway_realtime_fake.tokens()[0]

            @pytest.mark.django_db
            def test_emulator(gateway_realtime_emulator, django_user_model):
                user = django_user_model.objects.create_user("dave")
                secret = mint_client_secret(user=user, kind="realtime")
                assert secret.token in gateway_realtime_emulator.issued
            """
        )
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--ds=tests.settings")
    result.assert_outcomes(passed=2)
