"""The browser side end to end: Django page -> JS helper -> Gateway emulator, in chromium."""

from __future__ import annotations

import json

import pytest
from django.core.cache import caches

from gateway_realtime.models import ClientSecretIssuance, Source
from tests.browser import setup_deps

CONNECT = """async (options) => {
  const GatewayRealtime = await import("/static/gateway_realtime/gateway-realtime.mjs");
  try {
    const ws = await GatewayRealtime.connect(options || {});
    const info = {ok: true, protocol: ws.protocol, url: ws.url};
    ws.close();
    return info;
  } catch (error) {
    return {ok: false, message: error.message, status: error.status, fatal: error.fatal};
  }
}"""


def block(page, kind="realtime"):
    return json.loads(page.text_content(f"#gateway-realtime-{kind}"))


def accepted(emulator):
    return [h for h in emulator.ws_handshakes if h.status == 101]


def mint_requests(emulator):
    return [r for r in emulator.requests if r.path.endswith("/v1/realtime/client-secrets")]


def test_page_socket_opens_through_the_emulator(context, site, emulator, login, user):
    login(user)
    page = context.new_page()
    response = page.goto(site + "/page/")
    config = block(page)
    assert config["token"].startswith("vcst_")
    assert config["refreshUrl"] == "/gateway/realtime/"
    assert "no-store" not in response.headers.get("cache-control", "")  # no middleware here

    result = page.evaluate(CONNECT)

    assert result["ok"], result
    assert result["protocol"] == "ai-gateway-realtime.v1"
    [handshake] = accepted(emulator)
    assert handshake.subprotocols == [
        "ai-gateway-realtime.v1",
        "ai-gateway-auth." + config["token"],
    ]
    assert emulator.issued[config["token"]].used
    # The page's own secret was enough: one mint, from the template.
    assert len(mint_requests(emulator)) == 1
    assert ClientSecretIssuance.objects.get().source == Source.TEMPLATE


def test_team_subprotocol_is_offered(context, site, login, user, settings):
    from gateway_realtime.emulator import GatewayEmulator
    from gateway_realtime.testing import emulated_gateway

    with (
        GatewayEmulator(api_keys=("k",), team="my-team") as emu,
        emulated_gateway(emu),
    ):
        login(user)
        page = context.new_page()
        page.goto(site + "/page/")
        config = block(page)
        emu.expire_token(config["token"])  # force a refresh: both paths carry the team

        result = page.evaluate(CONNECT)

        assert result["ok"], result
        team = "ai-gateway-team.bXktdGVhbQ"
        assert config["protocols"][-1] == team
        assert [h.subprotocols[-1] for h in emu.ws_handshakes] == [team, team]
        assert [h.status for h in emu.ws_handshakes] == [401, 101]


def test_es_module_twin_works(context, site, emulator, login, user):
    login(user)
    page = context.new_page()
    page.goto(site + "/module/")
    page.wait_for_function("typeof window.moduleConnect === 'function'")
    result = page.evaluate(
        "async () => { const ws = await window.moduleConnect(); ws.close(); return ws.protocol; }"
    )
    assert result == "ai-gateway-realtime.v1"


def test_secret_expired_at_the_gateway_is_replaced(context, site, emulator, login, user):
    login(user)
    page = context.new_page()
    page.goto(site + "/page/")
    old = block(page)["token"]
    emulator.expire_token(old)

    result = page.evaluate(CONNECT, {"backoffMs": 10})

    assert result["ok"], result
    refused, opened = emulator.ws_handshakes
    assert (refused.status, refused.error_type) == (401, "token_expired")
    assert refused.subprotocols[1] == "ai-gateway-auth." + old
    assert opened.status == 101
    new = opened.subprotocols[1].removeprefix("ai-gateway-auth.")
    assert new != old
    assert len(mint_requests(emulator)) == 2
    sources = sorted(ClientSecretIssuance.objects.values_list("source", flat=True))
    assert sources == [Source.ENDPOINT, Source.TEMPLATE]


def test_secret_expired_by_the_clock_is_never_offered(context, site, emulator, login, user):
    login(user)
    page = context.new_page()
    page.goto(site + "/page/")
    old = block(page)["token"]
    # Two hours later by the page's clock: expiresAt is in the past.
    page.evaluate("() => { const real = Date.now; Date.now = () => real() + 7200 * 1000; }")

    result = page.evaluate(CONNECT)

    assert result["ok"], result
    [handshake] = emulator.ws_handshakes
    assert handshake.status == 101
    assert handshake.subprotocols[1] != "ai-gateway-auth." + old
    assert not emulator.issued[old].used


def test_used_secret_is_replaced(context, site, emulator, login, user):
    login(user)
    page = context.new_page()
    page.goto(site + "/page/")
    first = block(page)["token"]

    assert page.evaluate(CONNECT)["ok"]
    again = page.evaluate(CONNECT)

    assert again["ok"], again
    offered = [h.subprotocols[1] for h in emulator.ws_handshakes]
    # The spent secret is not offered a second time: a new one is fetched.
    assert offered[0] == "ai-gateway-auth." + first
    assert len(offered) == 2
    assert offered[1] != offered[0]
    assert all(h.status == 101 for h in emulator.ws_handshakes)


def test_anonymous_page_has_no_secret_and_stops_on_403(context, site, emulator):
    page = context.new_page()
    fetches = []
    page.on(
        "request", lambda r: fetches.append(r.url) if r.url.endswith("/gateway/realtime/") else None
    )
    page.goto(site + "/page/")
    config = block(page)
    assert config["token"] is None
    assert config["reason"] == "anonymous"
    assert "vcst_" not in page.content()

    result = page.evaluate(CONNECT)

    assert result["ok"] is False
    assert result["status"] in (401, 403)
    assert result["fatal"] is True
    assert len(fetches) == 1  # no retries after 401/403
    assert emulator.requests == []
    assert emulator.ws_handshakes == []


def _tokens_of_two_users(context, browser, site, login, user, other_user, path):
    login(user)
    page = context.new_page()
    response = page.goto(site + path)
    a1 = block(page)["token"]
    page.reload()
    a2 = block(page)["token"]

    other = browser.new_context()
    try:
        from django.test import Client

        client = Client()
        client.force_login(other_user)
        other.add_cookies(
            [{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": site}]
        )
        other_page = other.new_page()
        other_page.goto(site + path)
        b = block(other_page)["token"]
        other_html = other_page.content()
    finally:
        other.close()
    return response, a1, a2, b, other_html


def _cache_holds_no_token(*tokens):
    from tests.test_middleware import assert_not_cached

    assert_not_cached(*tokens)


@pytest.mark.parametrize("path", ["/cached/", "/cached-template/"])
def test_cache_page_never_stores_a_secret(
    context, browser, site, emulator, login, user, other_user, path
):
    caches["default"].clear()
    _response, a1, a2, b, other_html = _tokens_of_two_users(
        context, browser, site, login, user, other_user, path
    )
    assert len({a1, a2, b}) == 3
    assert a1 not in other_html and a2 not in other_html
    _cache_holds_no_token(a1, a2, b)


@pytest.fixture
def site_wide_cache(site_settings):
    settings = site_settings
    settings.CACHE_MIDDLEWARE_SECONDS = 600
    settings.MIDDLEWARE = [
        "gateway_realtime.middleware.NoStoreSecretsMiddleware",
        "django.middleware.cache.UpdateCacheMiddleware",
        *settings.MIDDLEWARE,
        "django.middleware.cache.FetchFromCacheMiddleware",
    ]


def test_site_wide_cache_never_stores_a_secret(
    site_wide_cache, context, browser, site, emulator, login, user, other_user
):
    caches["default"].clear()
    response, a1, a2, b, other_html = _tokens_of_two_users(
        context, browser, site, login, user, other_user, "/page/"
    )
    assert len({a1, a2, b}) == 3
    assert a1 not in other_html
    assert response.headers["cache-control"] == "no-store, private"
    _cache_holds_no_token(a1, a2, b)


def test_protected_view_is_no_store(context, site, emulator, login, user):
    login(user)
    page = context.new_page()
    response = page.goto(site + "/protected/")
    assert block(page)["token"]
    assert response.headers["cache-control"] == "no-store, private"


AI_SDK_SESSION = """async ({setupUrl, model}) => {
  const GatewayRealtime = await import("/static/gateway_realtime/gateway-realtime.mjs");
  const { TestRealtimeSession, createGateway } = globalThis.AiSdkRealtime;
  const gateway = createGateway({});
  const errors = [];
  const session = new TestRealtimeSession({
    model: gateway.experimental_realtime(model),
    api: GatewayRealtime.aiSdkApi(setupUrl),
    onError: (error) => errors.push(String(error && error.message || error)),
  });
  const waitFor = (predicate, what) => new Promise((resolve, reject) => {
    const started = Date.now();
    const poll = () => {
      if (predicate()) return resolve();
      if (errors.length) return reject(new Error(what + ": " + errors.join("; ")));
      if (Date.now() - started > 10000) return reject(new Error("timed out waiting for " + what));
      setTimeout(poll, 20);
    };
    poll();
  });
  await session.connect({ capture: false });
  await waitFor(() => session.snapshot().status === "connected", "connected");
  session.sendTextMessage("hello from the AI SDK");
  await waitFor(
    () => session.snapshot().events.some((e) => e.type === "response-done"),
    "response-done",
  );
  const state = session.snapshot();
  const text = state.events.filter((e) => e.type === "text-delta").map((e) => e.delta).join("");
  return { status: state.status, text, roles: state.messages.map((m) => m.role) };
}"""


def test_ai_sdk_realtime_session_connects_through_our_endpoint(
    context, site, emulator, login, user
):
    problem = setup_deps.ai_bundle_problem()
    if problem:
        pytest.skip(problem)
    login(user)
    page = context.new_page()
    page.goto(site + "/blank/")
    page.add_script_tag(path=str(setup_deps.AI_BUNDLE))

    result = page.evaluate(
        AI_SDK_SESSION, {"setupUrl": "/gateway/realtime/", "model": "openai/gpt-realtime-2"}
    )

    assert result["status"] == "connected"
    assert "hello" in result["text"].lower()
    assert "user" in result["roles"] and "assistant" in result["roles"]
    [handshake] = accepted(emulator)
    assert handshake.subprotocols[0] == "ai-gateway-realtime.v1"
    assert handshake.subprotocols[1].startswith("ai-gateway-auth.vcst_")
    assert ClientSecretIssuance.objects.get().source == Source.ENDPOINT


FAILED_MINT = """async () => {
  const GatewayRealtime = await import("/static/gateway_realtime/gateway-realtime.mjs");
  const calls = [];
  const fetchStub = async (url, init) => {
    calls.push({url, method: init.method, credentials: init.credentials,
                contentType: init.headers["Content-Type"], body: init.body});
    return new Response(JSON.stringify({error: {type: "gateway_error", message: "down"}}),
                        {status: 502, headers: {"Content-Type": "application/json"}});
  };
  try {
    await GatewayRealtime.connect({fetch: fetchStub,
                                   config: {kind: "realtime", refreshUrl: "/gateway/realtime/"}});
    return {ok: true};
  } catch (error) {
    return {ok: false, status: error.status, type: error.type, calls};
  }
}"""


def test_a_failed_mint_is_not_asked_again(context, site):
    # Only a busy answer (503, 429) is waited out and asked again: one policy.
    page = context.new_page()
    page.goto(site + "/page/")
    result = page.evaluate(FAILED_MINT)
    assert result["ok"] is False
    assert (result["status"], result["type"]) == (502, "gateway_error")
    assert result["calls"] == [
        {
            "url": "/gateway/realtime/",
            "method": "POST",
            "credentials": "same-origin",
            "contentType": "application/json",
            "body": "{}",
        }
    ]
