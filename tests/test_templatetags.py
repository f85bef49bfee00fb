"""The ``gateway_realtime_config`` tag: what it mints, when it refuses, how it escapes."""

from __future__ import annotations

import json
import re

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.cache import caches
from django.http import HttpResponse
from django.template import Context, RequestContext, Template, TemplateSyntaxError, engines
from django.test import RequestFactory, override_settings

from gateway_realtime.exceptions import (
    GatewayAuthenticationError,
    GatewayConnectionError,
    GatewayRateLimitError,
    GatewayTimeoutError,
)
from gateway_realtime.middleware import response_carries_secret
from gateway_realtime.models import ClientSecretIssuance, Outcome, Source
from gateway_realtime.templatetags.gateway_realtime import (
    default_element_id,
    is_prefetch,
    json_config_block,
    secret_config,
)

BLOCK = re.compile(
    r'<script type="application/json" id="(?P<id>[^"]*)" '
    r'data-gateway-realtime="(?P<kind>[a-z]*)">(?P<json>.*?)</script>',
    re.S,
)


def render(source, request=None, context=None):
    template = Template("{% load gateway_realtime %}" + source)
    if request is None:
        return template.render(Context(context or {}))
    return template.render(RequestContext(request, context or {}))


def blocks(html):
    return [(m["id"], m["kind"], json.loads(m["json"])) for m in BLOCK.finditer(html)]


def only_config(html):
    [(_, _, config)] = blocks(html)
    return config


@pytest.fixture
def get(rf, user):
    def make(path="/", user_=user, method="get", **headers):
        request = getattr(rf, method)(path, **headers)
        request.user = user_
        return request

    return make


@pytest.fixture
def fake():
    from gateway_realtime.testing import fake_gateway

    with fake_gateway() as fake:
        yield fake


# Minting ------------------------------------------------------------------------


@pytest.mark.django_db
def test_logged_in_user_gets_a_fresh_secret_block(get, fake, user):
    request = get()
    html = render("{% gateway_realtime_config %}", request)

    [(element_id, kind, config)] = blocks(html)
    [call] = fake.calls
    assert element_id == "gateway-realtime-realtime" == default_element_id("realtime")
    assert kind == "realtime"
    assert config == {
        "token": call.token,
        "url": "wss://gateway.test/v4/ai/realtime-model?ai-model-id=openai%2Fgpt-realtime-2",
        "expiresAt": call.expires_at,
        "kind": "realtime",
        "protocols": ["ai-gateway-realtime.v1", "ai-gateway-auth." + call.token],
        "refreshUrl": "/gateway/realtime/",
        "error": None,
        "reason": None,
    }
    row = ClientSecretIssuance.objects.get()
    assert (row.source, row.outcome, row.user) == (Source.TEMPLATE, Outcome.ISSUED, user)
    assert response_carries_secret(request)
    assert request._cache_update_cache is False


@pytest.mark.django_db
def test_every_render_mints_a_new_secret(get, fake):
    template = Template("{% load gateway_realtime %}{% gateway_realtime_config %}")
    first = only_config(template.render(RequestContext(get())))
    second = only_config(template.render(RequestContext(get())))
    assert first["token"] != second["token"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kind", "model", "route"),
    [
        ("transcription", "openai/gpt-4o-transcribe", "transcription-model"),
        ("speech", "elevenlabs/eleven-v3", "speech-model"),
    ],
)
def test_kind_option(get, fake, kind, model, route):
    config = only_config(render(f'{{% gateway_realtime_config kind="{kind}" %}}', get()))
    assert config["kind"] == kind
    assert f"/{route}?ai-model-id=" in config["url"]
    assert config["protocols"][0] == f"ai-gateway-{kind}.v1"
    assert config["refreshUrl"] == f"/gateway/{kind}/"
    assert fake.calls[0].model == model


@pytest.mark.django_db
def test_options_from_variables(get, fake):
    html = render(
        "{% gateway_realtime_config kind=k model=m lifetime=t element_id=e %}",
        get(),
        {"k": "realtime", "m": "openai/gpt-realtime-mini", "t": "90", "e": "voice"},
    )
    [(element_id, _, config)] = blocks(html)
    assert element_id == "voice"
    assert fake.calls[0].model == "openai/gpt-realtime-mini"
    assert fake.calls[0].expires_in == 90
    assert config["token"]


@pytest.mark.django_db
def test_lifetime_literal(get, fake):
    render("{% gateway_realtime_config lifetime=120 %}", get())
    assert fake.calls[0].expires_in == 120


@pytest.mark.django_db
def test_team_subprotocol_is_in_the_block(get, fake):
    with override_settings(GATEWAY_REALTIME_TEAM="my-team"):
        config = only_config(render("{% gateway_realtime_config %}", get()))
    assert config["protocols"][2] == "ai-gateway-team.bXktdGVhbQ"


@pytest.mark.django_db
def test_two_kinds_on_one_page(get, fake):
    html = render('{% gateway_realtime_config %}{% gateway_realtime_config kind="speech" %}', get())
    assert [(i, k) for i, k, _ in blocks(html)] == [
        ("gateway-realtime-realtime", "realtime"),
        ("gateway-realtime-speech", "speech"),
    ]


# No mint ------------------------------------------------------------------------


def _assert_no_token(config, reason):
    assert config["token"] is None
    assert config["url"] is None
    assert config["expiresAt"] is None
    assert config["reason"] == reason
    assert config["refreshUrl"] == "/gateway/realtime/"
    assert config["protocols"] == ["ai-gateway-realtime.v1"]


PREFETCHES = [
    pytest.param({"HTTP_SEC_PURPOSE": "prefetch"}, id="sec-purpose"),
    pytest.param({"HTTP_SEC_PURPOSE": "prefetch;prerender"}, id="sec-purpose-prerender"),
    pytest.param({"HTTP_PURPOSE": "prefetch"}, id="purpose"),
    pytest.param({"HTTP_X_MOZ": "prefetch"}, id="x-moz"),
    pytest.param({"HTTP_X_PURPOSE": "preview"}, id="x-purpose"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("make_request", "reason"),
    [
        pytest.param(lambda get: get(user_=AnonymousUser()), "anonymous", id="anonymous"),
        pytest.param(lambda get: None, "no_request", id="no-request"),
        pytest.param(lambda get: RequestFactory().get("/"), "anonymous", id="no-auth-middleware"),
        pytest.param(lambda get: get(method="head"), "head_request", id="head"),
        *[
            pytest.param(lambda get, h=p.values[0]: get(**h), "prefetch", id=f"prefetch-{p.id}")
            for p in PREFETCHES
        ],
    ],
)
def test_no_secret_is_minted(get, fake, make_request, reason):
    request = make_request(get)
    config = only_config(render("{% gateway_realtime_config %}", request))
    _assert_no_token(config, reason)
    assert fake.calls == []
    assert not ClientSecretIssuance.objects.exists()
    if request is not None:
        assert not response_carries_secret(request)


@pytest.mark.parametrize(
    ("headers", "prefetch"),
    [
        *[pytest.param(*p.values, True, id=p.id) for p in PREFETCHES],
        pytest.param({"HTTP_SEC_PURPOSE": "", "HTTP_PURPOSE": "navigate"}, False, id="ordinary"),
    ],
)
def test_is_prefetch(rf, headers, prefetch):
    assert is_prefetch(rf.get("/", **headers)) is prefetch


# Failures -----------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("error", "error_type"),
    [
        (GatewayRateLimitError("slow down", status_code=429, retry_after=7), "gateway_rate_limit"),
        (GatewayTimeoutError("too slow"), "gateway_timeout"),
        (GatewayConnectionError("refused"), "gateway_connection_error"),
        (GatewayAuthenticationError("bad key", status_code=401), "gateway_authentication_error"),
    ],
)
def test_gateway_failure_renders_an_error_block(get, fake, error, error_type):
    fake.fail_with(error)
    request = get()
    html = render("<p>before</p>{% gateway_realtime_config %}<p>after</p>", request)

    assert "<p>before</p>" in html and "<p>after</p>" in html
    config = only_config(html)
    _assert_no_token(config, "error")
    assert config["error"]["type"].startswith(error_type)
    assert config["error"]["message"]
    assert "test-gateway-key" not in html
    assert not response_carries_secret(request)
    assert ClientSecretIssuance.objects.get().outcome == Outcome.FAILED


@pytest.mark.django_db
def test_missing_credential_is_a_configuration_error_block(get, fake, settings):
    settings.GATEWAY_REALTIME_API_KEY = None
    config = only_config(render("{% gateway_realtime_config %}", get()))
    _assert_no_token(config, "error")
    assert config["error"]["type"] == "configuration_error"
    assert config["error"]["message"].startswith("No authentication provided")
    assert fake.calls == []
    row = ClientSecretIssuance.objects.get()
    assert (row.outcome, row.error_type) == (Outcome.FAILED, "configuration_error")


@pytest.mark.django_db
def test_disallowed_model_is_an_error_block_not_a_mint(get, fake):
    config = only_config(render('{% gateway_realtime_config model="openai/gpt-4o" %}', get()))
    _assert_no_token(config, "error")
    assert config["error"]["type"] == "invalid_request"
    assert fake.calls == []


@pytest.mark.django_db
@pytest.mark.parametrize("lifetime", ["abc", "-5", "100000"])
def test_bad_lifetime_is_an_error_block(get, fake, lifetime):
    config = only_config(render(f'{{% gateway_realtime_config lifetime="{lifetime}" %}}', get()))
    _assert_no_token(config, "error")
    assert config["error"]["type"] == "invalid_request"
    assert fake.calls == []


@pytest.mark.django_db
def test_missing_model_setting_is_an_error_block(get, fake):
    with override_settings(GATEWAY_REALTIME_DEFAULT_MODELS={}):
        config = only_config(render("{% gateway_realtime_config %}", get()))
    assert config["error"]["type"] == "configuration_error"


# Escaping -----------------------------------------------------------------------


HOSTILE = "</script><script>alert(1)</script><!-- & \u2028\u2029 '\""


def test_block_is_inert_json_whatever_the_values():
    config = {"token": HOSTILE, "url": HOSTILE, "kind": "realtime", "refreshUrl": HOSTILE}
    html = str(json_config_block(config, 'x"><script>alert(1)</script>'))

    assert html.count("<script") == 1 and html.count("</script>") == 1
    assert "<!--" not in html
    assert "\u2028" not in html and "\u2029" not in html
    assert 'id="x&quot;&gt;&lt;script&gt;' in html
    body = html[html.index(">") + 1 : html.rindex("</script>")]
    assert json.loads(body)["token"] == HOSTILE


@pytest.mark.django_db
def test_hostile_model_id_from_settings_is_escaped(get, fake):
    model = "evil</script><!--\u2028"
    with override_settings(GATEWAY_REALTIME_DEFAULT_MODELS={"realtime": model}):
        html = render("{% gateway_realtime_config %}", get())
    assert html.count("</script>") == 1
    assert "<!--" not in html and "\u2028" not in html
    assert only_config(html)["token"]


def test_element_id_is_escaped(rf):
    html = render('{% gateway_realtime_config element_id="a&b" %}', rf.get("/"))
    assert 'id="a&amp;b"' in html


# Compile-time errors ------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "{% gateway_realtime_config realtime %}",
        '{% gateway_realtime_config colour="blue" %}',
    ],
)
def test_bad_options_are_template_syntax_errors(source):
    with pytest.raises(TemplateSyntaxError):
        Template("{% load gateway_realtime %}" + source)


def test_unknown_kind_is_a_template_syntax_error(rf, fake):
    with pytest.raises(TemplateSyntaxError, match="kind must be one of"):
        render('{% gateway_realtime_config kind="video" %}', rf.get("/"))
    assert fake.calls == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    "source",
    [
        "{% cache 60 page %}{% gateway_realtime_config %}{% endcache %}",
        "{% cache 60 page %}{% if x %}{% gateway_realtime_config %}{% endif %}{% endcache %}",
        "{% cache 60 page %}{% gateway_realtime_config as config %}{{ config }}{% endcache %}",
    ],
)
def test_inside_cache_is_a_template_syntax_error(get, fake, source):
    with pytest.raises(TemplateSyntaxError, match="cache"):
        render("{% load cache %}" + source, get(), {"x": True})
    assert fake.calls == []
    caches["default"].clear()


CHILD = (
    "{% extends other %}{% load gateway_realtime %}"
    "{% block body %}{% gateway_realtime_config %}{% endblock %}"
)
TAG = "{% load gateway_realtime %}{% gateway_realtime_config %}"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("source", "other"),
    [
        pytest.param(
            CHILD,
            "{% load cache %}{% cache 60 base %}{% block body %}{% endblock %}{% endcache %}",
            id="extended-into-a-cached-block",
        ),
        pytest.param(
            "{% load cache %}{% cache 60 included %}{% include other %}{% endcache %}",
            TAG,
            id="included-inside-cache",
        ),
    ],
)
def test_inside_cache_in_another_template_fails_at_render(get, fake, source, other):
    engine = engines["django"].engine
    template = engine.from_string(source)
    with pytest.raises(TemplateSyntaxError, match="cache"):
        template.render(RequestContext(get(), {"other": engine.from_string(other)}))
    assert fake.calls == []
    caches["default"].clear()


@pytest.mark.django_db
def test_extending_a_template_with_a_cache_elsewhere_is_fine(get, fake):
    engine = engines["django"].engine
    base = engine.from_string(
        "{% load cache %}{% cache 60 nav %}nav{% endcache %}{% block body %}{% endblock %}"
    )
    html = engine.from_string(CHILD).render(RequestContext(get(), {"other": base}))
    assert only_config(html)["token"]
    caches["default"].clear()


def test_tag_after_a_closed_cache_block_is_fine(rf):
    html = render(
        "{% load cache %}{% cache 60 other %}x{% endcache %}{% gateway_realtime_config %}",
        rf.get("/"),
    )
    assert only_config(html)["reason"] == "anonymous"
    caches["default"].clear()


# The plain function -------------------------------------------------------------


@pytest.mark.django_db
def test_secret_config_is_usable_without_templates(get, fake):
    config = secret_config(get(), kind="speech", lifetime=30)
    assert config["kind"] == "speech"
    assert fake.calls[0].expires_in == 30
    assert isinstance(HttpResponse(json.dumps(config)), HttpResponse)


# The tag's own deadline ---------------------------------------------------------


@pytest.mark.django_db
def test_the_tag_gives_the_gateway_its_own_deadline(get, fake, settings):
    settings.GATEWAY_REALTIME_TAG_TIMEOUT = 1.25
    only_config(render("{% gateway_realtime_config %}", get()))
    [call] = fake.calls
    assert call.timeout == 1.25


@pytest.mark.django_db
def test_a_stalled_gateway_delays_the_page_by_the_tag_timeout_only(get, settings):
    from gateway_realtime.testing import emulated_gateway

    settings.GATEWAY_REALTIME_TAG_TIMEOUT = 0.5
    settings.GATEWAY_REALTIME_DEFAULT_MODELS = {"realtime": "emulator/slow-headers-5"}
    with emulated_gateway():
        html = render("<p>before</p>{% gateway_realtime_config %}<p>after</p>", get())

    # The Gateway would answer after 5 s: an error instead of a token means
    # the tag's deadline, not the Gateway, ended the wait.
    assert "<p>before</p>" in html and "<p>after</p>" in html
    config = only_config(html)
    _assert_no_token(config, "error")
    assert config["error"]["type"] == "gateway_timeout"
    row = ClientSecretIssuance.objects.get()
    assert row.outcome == Outcome.FAILED
    assert row.error_type == "timeout"
    assert row.source == Source.TEMPLATE


@pytest.mark.django_db(transaction=True)
def test_the_tags_mint_runs_the_endpoints_five_statements(get, fake, user, settings):
    """Pinned like the endpoint's mint (tests/test_slow_call.py): with a quota, the
    claim and the pending row in one transaction, then the completion and the
    usage ledger's increments (the user's row, the site's), each on its own."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    settings.GATEWAY_REALTIME_QUOTA = 10
    render("{% gateway_realtime_config %}", get())  # the user's quota row exists
    with CaptureQueriesContext(connection) as queries:
        html = render("{% gateway_realtime_config %}", get())
    assert only_config(html)["token"].startswith("vcst_")
    statements = [q["sql"].split()[0].upper() for q in queries.captured_queries]
    assert [s for s in statements if s not in {"BEGIN", "COMMIT"}] == [
        "UPDATE",
        "INSERT",
        "UPDATE",
        "UPDATE",
        "UPDATE",
    ]
    assert statements.count("BEGIN") <= 1
    assert ClientSecretIssuance.objects.filter(source=Source.TEMPLATE).count() == 2
