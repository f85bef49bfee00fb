"""The staff dashboard in chromium, under its strict Content-Security-Policy.

A staff member (view_dashboard, and auth.change_user for the End button) is
logged in by cookie; the ledger holds a fixed November 2026 (written with the
ledger's own ``usage.increment``), so the pages and their screenshots are the
same on every run. The test checks that the SVG charts drew a bar per day
and one per failure type, that the stylesheet applied (the bars' colours
come from it), that the browser reported no CSP violation and no script
error, and ends a user's live relayed sessions with the End button.

``GATEWAY_REALTIME_UPDATE_SCREENSHOTS=1`` writes docs/images/dashboard.png and
docs/images/dashboard-user.png (commit them); otherwise the shots go to the
test's tmp_path and are only checked to be PNGs of a sensible size.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from gateway_realtime import usage
from gateway_realtime.models import DailyFailure, RelaySession
from tests.browser.test_demo_page import WATCH_CSP
from tests.browser.test_screenshots import png_size

pytestmark = pytest.mark.urls("tests.urls")

IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
PERIOD = "?since=2026-11-01&until=2026-11-30"
DAYS = 30
IP = "192.0.2.10"
IN_MEMORY = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
MODELS = {
    "realtime": "openai/gpt-realtime-2",
    "transcription": "openai/gpt-4o-transcribe",
    "speech": "elevenlabs/eleven-v3",
}
#: (outcome, error type): failures on some days of some users.
FAILURES = [
    ("failed", "gateway_timeout"),
    ("failed", "internal_server_error"),
    ("rejected", "quota_exceeded"),
    ("rejected", "gateway_busy"),
    ("relay_refused", "too_many_sessions"),
]


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    if os.environ.get("GATEWAY_REALTIME_UPDATE_SCREENSHOTS") == "1":
        IMAGES.mkdir(exist_ok=True)
        return IMAGES
    return tmp_path


def november(django_user_model: Any) -> dict[str, Any]:
    """Four users' November, the same on every run: weekdays busier, one user relaying."""
    users = {
        name: django_user_model.objects.create_user(username=name)
        for name in ("ada", "grace", "linus", "margaret")
    }
    for n in range(DAYS):
        day = dt.date(2026, 11, 1) + dt.timedelta(days=n)
        weekday = day.weekday() < 5
        for rank, (name, member) in enumerate(users.items()):
            kind = ("realtime", "transcription", "speech", "realtime")[rank]
            issued = (n * (rank + 3)) % 7 + (6 if weekday else 2) - rank
            if issued <= 0:
                continue
            key = {"day": day, "user_id": member.pk, "kind": kind, "model": MODELS[kind]}
            counts: dict[str, float] = {"issued": issued}
            if name == "ada":  # the relayed sessions of the month
                sessions = 2 + n % 3
                counts |= {
                    "relayed_sessions": sessions,
                    "relayed_seconds": 150.0 * sessions + 40 * (n % 5),
                    "audio_seconds_in": 55.0 * sessions,
                    "audio_seconds_out": 70.0 * sessions,
                    "input_tokens": 1800 * sessions + 90 * n,
                    "output_tokens": 2600 * sessions + 40 * n,
                }
            if (n + rank) % 4 == 0:
                outcome, error_type = FAILURES[(n + rank) % len(FAILURES)]
                for _ in range(1 + n % 2):
                    usage.add(key, {outcome: 1}, {"outcome": outcome, "error_type": error_type})
            usage.add(key, counts)
    return users


def watch(page: Any) -> list[str]:
    """Record script errors and console errors; the CSP violations go to window.cspViolations."""
    errors: list[str] = []

    def console(message: Any) -> None:
        # The browser asks for /favicon.ico on its own; the test site has none.
        if message.type == "error" and not message.location["url"].endswith("/favicon.ico"):
            errors.append(f"{message.text} ({message.location['url']})")

    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", console)
    page.add_init_script(WATCH_CSP)
    return errors


def bars(page: Any, chart_id: str) -> int:
    return int(page.locator(f"svg#{chart_id} g.gwrt-bar").count())


def shoot(page: Any, path: Path) -> None:
    page.screenshot(
        path=str(path),
        full_page=True,
        animations="disabled",
        caret="hide",
    )
    width, height = png_size(path.read_bytes())
    assert width == 1280, (path.name, width)
    assert 600 <= height <= 6000, (path.name, height)


def test_the_dashboard_and_a_users_page_in_chromium(
    site_settings: Any,
    context: Any,
    site: str,
    login: Any,
    django_user_model: Any,
    out_dir: Path,
) -> None:
    site_settings.CHANNEL_LAYERS = IN_MEMORY
    users = november(django_user_model)
    ada = users["ada"]
    site_settings.GATEWAY_REALTIME_QUOTA = 200
    for minutes in (4, 11):
        row = RelaySession.objects.create(
            user=ada, username="ada", kind="realtime", model=MODELS["realtime"], ip_address=IP
        )
        # Started a whole number of minutes ago, so the page says so on every run.
        started = timezone.now() - dt.timedelta(minutes=minutes, seconds=20)
        RelaySession.objects.filter(pk=row.pk).update(started_at=started)
    staff = django_user_model.objects.create_user(
        username="operator", password="pw-operator", is_staff=True
    )
    for codename in ("view_dashboard", "change_user"):
        staff.user_permissions.add(Permission.objects.get(codename=codename))
    login(staff)

    page = context.new_page()
    page.set_viewport_size({"width": 1280, "height": 900})
    page.emulate_media(color_scheme="light", reduced_motion="reduce")
    errors = watch(page)

    # The dashboard: from the app's admin index.
    page.goto(site + "/admin/gateway_realtime/")
    page.locator("#content-main").get_by_role("link", name="Usage dashboard").click()
    page.wait_for_url("**/admin/gateway_realtime/dashboard/")
    response = page.goto(site + "/admin/gateway_realtime/dashboard/" + PERIOD)
    assert response.status == 200
    assert "style-src 'self';" in response.headers["content-security-policy"]
    for chart in ("site-mints", "site-minutes", "site-tokens"):
        assert bars(page, chart) == DAYS, chart
    failure_types = DailyFailure.objects.values("outcome", "error_type").distinct().count()
    assert bars(page, "site-failures") == failure_types == len(FAILURES)
    # The stylesheet applied: the charts have their width, the bars their colours.
    assert page.locator("svg#site-mints").bounding_box()["width"] > 600
    fill = page.locator("svg#site-mints rect.gwrt-s-issued").first.evaluate(
        "(rect) => getComputedStyle(rect).fill"
    )
    assert fill == "rgb(61, 139, 95)"
    assert page.locator("[data-figure=breaker]").inner_text() == "closed"
    assert page.locator("[data-figure=live]").inner_text() == "2"
    # Top users by spend: ada relayed, so she leads.
    top = page.locator("#top-users tbody th a")
    assert top.count() == 4
    assert top.first.inner_text() == "ada"
    # A bar's tooltip is its <title>.
    tooltip = page.locator("svg#site-mints g.gwrt-bar title").first.text_content()
    assert tooltip.startswith("2026-11-01: issued ")
    shoot(page, out_dir / "dashboard.png")

    # Ada's page, through the top users' link.
    top.first.click()
    page.wait_for_url(f"**/dashboard/user/{ada.pk}/?since=2026-11-01&until=2026-11-30")
    for chart in ("user-mints", "user-minutes", "user-tokens"):
        assert bars(page, chart) == DAYS, chart
    assert page.locator("#live-sessions tbody tr").count() == 2
    assert page.locator("#live-sessions tbody td").first.inner_text() == "4\xa0minutes"
    assert page.locator("[data-quota=realtime]").inner_text() == "200"
    shoot(page, out_dir / "dashboard-user.png")

    # End her live sessions: a POST with the CSRF token, back to her page.
    page.get_by_role("button", name="End").click()
    page.wait_for_url(f"**/dashboard/user/{ada.pk}/?since=2026-11-01&until=2026-11-30")
    assert page.locator(".messagelist .success").inner_text() == "Ending the live sessions of ada."

    assert errors == []
    assert page.evaluate("window.cspViolations") == []
