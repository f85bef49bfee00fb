"""docs/browser.md's page for the template tag and the browser module, run as written.

Its view, template and module (`myapp/views.py`, `myapp/chat.html`,
`myapp/static/myapp/chat.js`) are taken from the docs' code blocks; the
page is served by a live Django site in Chromium, against the emulator.
"""

from __future__ import annotations

import pytest

from tests.browser.docs_example_urls import example

pytestmark = pytest.mark.urls("tests.browser.docs_example_urls")


@pytest.fixture
def example_site(site_settings, tmp_path):
    templates = tmp_path / "templates" / "myapp"
    templates.mkdir(parents=True)
    template = example("{# myapp/templates/myapp/chat.html #}")
    (templates / "chat.html").write_text(template)
    static = tmp_path / "static" / "myapp"
    static.mkdir(parents=True)
    (static / "chat.js").write_text(
        example('// myapp/static/myapp/chat.js (<script type="module">)')
    )
    site_settings.TEMPLATES = [
        {**site_settings.TEMPLATES[0], "DIRS": [str(tmp_path / "templates")]}
    ]
    site_settings.STATICFILES_DIRS = [str(tmp_path / "static")]
    return site_settings


def test_the_template_tag_example_talks_to_the_gateway(
    example_site, context, site, emulator, login, user
):
    login(user)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    response = page.goto(site + "/chat/")
    assert response.status == 200, page.content()[:2000]
    # The module connects with the page's own secret, says hello, and the
    # reply streams into #log.
    page.wait_for_function(
        "() => document.getElementById('log').textContent.startsWith('Emulated reply')"
    )
    assert errors == []
    [handshake] = [h for h in emulator.ws_handshakes if h.status == 101]
    assert handshake.subprotocols[0] == "ai-gateway-realtime.v1"
    # One mint, the template's: the page's secret was used as it was.
    assert len([r for r in emulator.requests if r.method == "POST"]) == 1
