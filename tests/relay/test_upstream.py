"""Opening the Gateway socket: header auth against the emulator, failures without the credential."""

from __future__ import annotations

import pytest

from gateway_realtime.relay.upstream import UpstreamUnavailable, open_upstream

from .conftest import RELAY_KEY, run_async


def test_wrong_credential_is_refused_without_naming_it(relay_emulator, settings):
    settings.GATEWAY_REALTIME_API_KEY = "vck_wrong_key_1234"

    async def scenario():
        await open_upstream("openai/gpt-realtime-2", max_queue=4)

    with pytest.raises(UpstreamUnavailable) as caught:
        run_async(scenario)
    assert "vck_wrong_key_1234" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__context__ is not None
    assert relay_emulator.ws_handshakes[0].status == 401


def test_server_sockets_are_realtime_only(relay_emulator):
    import websockets.sync.client as sync_client

    url = relay_emulator.base_url.replace("http", "ws", 1) + "/speech-model?ai-model-id=m/x"
    headers = {
        "Authorization": f"Bearer {RELAY_KEY}",
        "ai-gateway-protocol-version": "0.0.1",
        "ai-gateway-auth-method": "api-key",
    }
    with pytest.raises(Exception, match="400"):
        sync_client.connect(url, additional_headers=headers, proxy=None)
