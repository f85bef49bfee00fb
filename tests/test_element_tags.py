"""The element tags: what they write, and that rendering a page with them mints nothing."""

from __future__ import annotations

import re
from typing import Any

import pytest
import responses
from django.http import HttpRequest, HttpResponse
from django.template import Context, RequestContext, Template, TemplateSyntaxError
from django.test import override_settings
from django.urls import include, path
from django.views.decorators.cache import cache_page

from gateway_realtime.models import ClientSecretIssuance


def render(source: str, context: dict[str, Any] | None = None) -> str:
    return Template("{% load gateway_realtime %}" + source).render(Context(context or {}))


def attributes(html: str, element: str) -> dict[str, str]:
    match = re.search(rf"<{element}([^>]*)></{element}>", html)
    assert match, html
    return dict(re.findall(r'([a-z-]+)="([^"]*)"', match.group(1)))


@pytest.mark.django_db
def test_the_voice_tag_writes_the_module_and_the_element_and_mints_nothing(
    gateway_mock: responses.RequestsMock,
) -> None:
    html = render("{% gateway_realtime_voice %}")
    assert '<script type="module" src="/static/gateway_realtime/elements.mjs"></script>' in html
    assert attributes(html, "gateway-realtime-voice") == {
        "setup-url": "/gateway/realtime/",
        "api": "realtime",
        "max-seconds": "300",
    }
    assert len(gateway_mock.calls) == 0
    assert not ClientSecretIssuance.objects.exists()
    assert "vcst_" not in html


@pytest.mark.django_db
@pytest.mark.urls(__name__)
def test_a_page_with_elements_is_cached_like_any_other_page(
    client: Any, gateway_mock: responses.RequestsMock, django_user_model: Any
) -> None:
    # Unlike {% gateway_realtime_config %}, whose pages are kept out of every
    # cache, a page of elements holds no secret: cache_page may keep it.
    first = client.get("/cached-elements/")
    assert "no-store" not in first.get("Cache-Control", "")
    client.force_login(django_user_model.objects.create_user("another"))
    second = client.get("/cached-elements/")
    assert second.content == first.content
    assert second["Expires"] == first["Expires"]  # served from the cache
    assert len(gateway_mock.calls) == 0
    assert not ClientSecretIssuance.objects.exists()


def test_dictation_names_its_field_and_the_transcription_endpoint() -> None:
    html = render('{% gateway_realtime_dictation "note" %}')
    assert attributes(html, "gateway-realtime-dictation") == {
        "for": "note",
        "setup-url": "/gateway/transcription/",
        "max-seconds": "300",
    }


def test_speech_reads_an_element_or_a_text() -> None:
    by_id = attributes(render('{% gateway_realtime_speech "para" %}'), "gateway-realtime-speech")
    assert by_id == {"setup-url": "/gateway/speech/", "max-seconds": "300", "for": "para"}
    by_text = attributes(
        render('{% gateway_realtime_speech text="Hello there" %}'), "gateway-realtime-speech"
    )
    assert by_text["text"] == "Hello there"
    assert "for" not in by_text


@override_settings(GATEWAY_REALTIME_ELEMENT_MAX_SECONDS=90)
def test_max_seconds_defaults_to_the_setting_and_the_tag_overrides_it() -> None:
    assert (
        attributes(render("{% gateway_realtime_voice %}"), "gateway-realtime-voice")["max-seconds"]
        == "90"
    )
    html = render("{% gateway_realtime_voice max_seconds=2.5 %}")
    assert attributes(html, "gateway-realtime-voice")["max-seconds"] == "2.5"


def test_passed_attributes_are_escaped() -> None:
    html = render(
        '{% gateway_realtime_voice id="talk" class="big" label=label %}',
        {"label": '"><script>alert(1)</script>'},
    )
    assert "<script>alert" not in html
    found = attributes(html, "gateway-realtime-voice")
    assert found["id"] == "talk"
    assert found["class"] == "big"
    assert found["label"] == "&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"


def test_text_is_escaped() -> None:
    html = render("{% gateway_realtime_speech text=t %}", {"t": 'a" onclick="x'})
    assert 'onclick="x' not in html


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{% gateway_realtime_voice colour='red' %}", "unknown option colour"),
        ("{% gateway_realtime_voice max_seconds=0 %}", "max_seconds must be a positive"),
        ("{% gateway_realtime_voice max_seconds='soon' %}", "max_seconds must be a positive"),
        ('{% gateway_realtime_dictation "" %}', "needs the id of the input"),
        ("{% gateway_realtime_speech %}", "needs the id of an element to read"),
        ("{% gateway_realtime_voice model='' %}", "model must be a model id"),
        ("{% gateway_realtime_voice model=3 %}", "model must be a model id"),
        ('{% gateway_realtime_dictation "note" model="a/b" %}', "unknown option model"),
    ],
)
def test_bad_options_are_clear_template_errors(source: str, message: str) -> None:
    with pytest.raises(TemplateSyntaxError, match=message):
        render(source)


@cache_page(600)
def cached_elements(request: HttpRequest) -> HttpResponse:
    page = Template(
        "{% load gateway_realtime %}{% gateway_realtime_voice %}"
        '{% gateway_realtime_dictation "note" %}{% gateway_realtime_speech text="x" %}'
    )
    return HttpResponse(page.render(RequestContext(request)))


urlpatterns = [
    path("elsewhere/", include("gateway_realtime.urls")),
    path("cached-elements/", cached_elements),
]


@pytest.mark.urls(__name__)
def test_the_setup_url_follows_where_the_site_includes_the_urls() -> None:
    html = render("{% gateway_realtime_voice %}")
    assert attributes(html, "gateway-realtime-voice")["setup-url"] == "/elsewhere/realtime/"


@pytest.mark.urls("tests.test_element_tags_unrouted")
def test_an_unrouted_setup_endpoint_is_a_clear_error() -> None:
    with pytest.raises(TemplateSyntaxError, match=r'include\("gateway_realtime.urls"\)'):
        render("{% gateway_realtime_voice %}")


def test_a_site_can_override_the_element_template(settings: Any, tmp_path: Any) -> None:
    folder = tmp_path / "gateway_realtime" / "elements"
    folder.mkdir(parents=True)
    (folder / "voice.html").write_text(
        '<div class="wrap"><gateway-realtime-voice setup-url="{{ setup_url }}">'
        "</gateway-realtime-voice></div>"
    )
    settings.TEMPLATES = [
        {**settings.TEMPLATES[0], "DIRS": [str(tmp_path)], "APP_DIRS": True},
    ]
    html = render("{% gateway_realtime_voice %}")
    assert html.startswith('<div class="wrap">')


@pytest.mark.django_db
def test_relay_true_writes_the_relay_route_and_no_setup_url(
    gateway_mock: responses.RequestsMock,
) -> None:
    html = render("{% gateway_realtime_voice relay=True %}")
    assert attributes(html, "gateway-realtime-voice") == {
        "relay-url": "/ws/gateway-realtime/realtime/",
        "api": "realtime",
        "max-seconds": "300",
    }
    assert len(gateway_mock.calls) == 0
    assert not ClientSecretIssuance.objects.exists()


def test_relay_url_names_another_route_and_is_escaped() -> None:
    html = render('{% gateway_realtime_voice relay_url="/talk/?a=1&b=2" %}')
    found = attributes(html, "gateway-realtime-voice")
    assert found["relay-url"] == "/talk/?a=1&amp;b=2"
    assert "setup-url" not in found
    assert "setup-url" not in render("{% gateway_realtime_voice relay=True label='Relayed' %}")


def test_relay_false_keeps_the_setup_endpoint() -> None:
    found = attributes(render("{% gateway_realtime_voice relay=False %}"), "gateway-realtime-voice")
    assert found["setup-url"] == "/gateway/realtime/"
    assert "relay-url" not in found


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{% gateway_realtime_voice relay=True relay_url='/x/' %}", "not both"),
        ("{% gateway_realtime_voice relay_url='' %}", "relay_url must be"),
        ('{% gateway_realtime_dictation "note" relay=True %}', "unknown option relay"),
    ],
)
def test_bad_relay_options_are_clear_template_errors(source: str, message: str) -> None:
    with pytest.raises(TemplateSyntaxError, match=message):
        render(source)


@pytest.mark.urls("tests.test_element_tags_unrouted")
def test_a_relayed_voice_element_needs_no_setup_endpoint() -> None:
    html = render("{% gateway_realtime_voice relay=True %}")
    assert 'relay-url="/ws/gateway-realtime/realtime/"' in html


@pytest.mark.parametrize(
    ("source", "model", "api"),
    [
        # A Live model by the AI SDK's list: asked for, on the Live route.
        ('{% gateway_realtime_voice model="openai/gpt-live-1" %}', "openai/gpt-live-1", "live"),
        (
            '{% gateway_realtime_voice model="openai/gpt-live-1.1" relay=True %}',
            "openai/gpt-live-1.1",
            "live",
        ),
        # A realtime model the page names is asked for too.
        (
            '{% gateway_realtime_voice model="openai/gpt-realtime-mini" %}',
            "openai/gpt-realtime-mini",
            "realtime",
        ),
    ],
)
def test_the_voice_tag_asks_for_the_model_the_page_names_on_its_route(
    source: str, model: str, api: str
) -> None:
    written = attributes(render(source), "gateway-realtime-voice")
    assert (written["model"], written["api"]) == (model, api)


def test_the_route_follows_the_realtime_api_setting(settings: Any) -> None:
    settings.GATEWAY_REALTIME_REALTIME_API = {
        "openai/gpt-realtime-2": "live",
        "openai/gpt-live-1": "realtime",
    }
    # The default model, now Live, is asked for: a Live session-start names it.
    written = attributes(render("{% gateway_realtime_voice %}"), "gateway-realtime-voice")
    assert (written["model"], written["api"]) == ("openai/gpt-realtime-2", "live")
    source = '{% gateway_realtime_voice model="openai/gpt-live-1" %}'
    assert attributes(render(source), "gateway-realtime-voice")["api"] == "realtime"
