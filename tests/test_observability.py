"""Every mint outcome is observable, and nothing observable leaks a secret.

Captures every log record (all loggers, all levels), every signal Django
sends, the admin's pages and Django's error email (DEBUG=False), and looks
for the site's credential and every raw token minted during the test.
"""

import json
import logging

import django
import pytest
import responses as responses_lib
from django.contrib import admin
from django.core import mail
from django.dispatch import Signal
from django.http import JsonResponse
from django.test import Client, override_settings
from django.urls import include, path, reverse
from django.utils.log import AdminEmailHandler
from django.views.decorators.debug import sensitive_variables

from gateway_realtime.models import ClientSecretIssuance, Outcome
from gateway_realtime.services import mint_client_secret
from tests.conftest import CREDENTIAL, MINT_URL, database_down

REALTIME = "/gateway/realtime/"


# Django 6.0 deprecates (name, address) pairs in ADMINS for plain addresses.
ADMINS = ["ops@example.com"] if django.VERSION >= (6, 0) else [("Ops", "ops@example.com")]


# A tiny site for the error-email tests: views that mint and then fail.
def mint_then_crash(request):
    secret = mint_client_secret(user=request.user, kind="realtime", request=request)
    raise RuntimeError(f"crashed after minting for {secret.model}")


# docs/limits-and-security.md's advice for site code that holds the raw token in a variable.
@sensitive_variables("body")
def mint_build_body_then_crash(request):
    secret = mint_client_secret(user=request.user, kind="realtime", request=request)
    body = secret.as_setup_response()
    raise RuntimeError(f"crashed with a body of {len(body)} keys")


def mint_unhandled_gateway_error(request):
    # The Gateway's failure is not caught here, so it becomes a 500.
    mint_client_secret(user=request.user, kind="realtime", request=request)
    return JsonResponse({})


urlpatterns = [
    path("gateway/", include("gateway_realtime.urls")),
    path("crash/", mint_then_crash),
    path("crash-with-body/", mint_build_body_then_crash),
    path("unhandled/", mint_unhandled_gateway_error),
    path("admin/", admin.site.urls),
]


class Tokens:
    """A `responses` Gateway that remembers every token it handed out."""

    def __init__(self, mock):
        self.issued = []
        mock.add_callback(responses_lib.POST, MINT_URL, callback=self.mint)

    def mint(self, request):
        body = json.loads(request.body)
        if body["model"] == "openai/gpt-realtime-mini":
            # An error that echoes the credential: it must be scrubbed.
            error = {"message": f"bad key {CREDENTIAL}", "type": "authentication_error"}
            return 401, {}, json.dumps({"error": error})
        token = f"vcst_obs{len(self.issued):04d}Zq9xK2mPv7LrT4wY8nB3"
        self.issued.append(token)
        return 200, {}, json.dumps({"token": token, "expiresAt": 4102444800})

    def assert_absent(self, text, where):
        assert CREDENTIAL not in text, f"credential in {where}"
        for token in self.issued:
            assert token not in text, f"token in {where}"
            # Not even the secret middle part (the hint keeps 7 + 4 characters).
            assert token[7:-4] not in text, f"token fragment in {where}"


@pytest.fixture
def tokens(gateway_mock):
    return Tokens(gateway_mock)


@pytest.fixture
def every_signal(monkeypatch):
    """repr of every signal sent anywhere in Django while the test runs."""
    seen = []
    real_send, real_robust = Signal.send, Signal.send_robust

    def send(self, sender, **named):
        seen.append(repr(sender) + repr(named) + "".join(str(v) for v in named.values()))
        return real_send(self, sender, **named)

    def send_robust(self, sender, **named):
        seen.append(repr(sender) + repr(named))
        return real_robust(self, sender, **named)

    monkeypatch.setattr(Signal, "send", send)
    monkeypatch.setattr(Signal, "send_robust", send_robust)
    return seen


pytestmark = pytest.mark.usefixtures("limits_clock")


def fields_of(records):
    return [r.gateway_realtime for r in records if hasattr(r, "gateway_realtime")]


@pytest.mark.django_db
@override_settings(GATEWAY_REALTIME_QUOTA=3, GATEWAY_REALTIME_RATE="5/min")
def test_every_outcome_is_logged_with_structured_fields_and_no_secret(
    same_origin, tokens, captured_logs, every_signal, user
):
    from django.core.cache import cache

    cache.clear()
    responses = [
        same_origin(REALTIME),  # issued
        same_origin(REALTIME, {"model": "openai/gpt-realtime-mini"}),  # failed (401), released
        same_origin(REALTIME),  # issued
        same_origin(REALTIME),  # issued
        same_origin(REALTIME),  # rejected by the quota
        same_origin(REALTIME),  # rejected by the rate
    ]
    assert [r.status_code for r in responses] == [200, 502, 200, 200, 429, 429]
    cache.clear()

    fields = fields_of(captured_logs.records)
    outcomes = [(f["outcome"], f.get("error_type")) for f in fields]
    assert outcomes == [
        ("issued", None),
        ("failed", "authentication_error"),
        ("issued", None),
        ("issued", None),
        ("rejected", "quota_exceeded"),
        ("rejected", "rate_limited"),
    ]
    for f in fields:
        assert f["user_id"] == user.pk
        assert f["kind"] == "realtime"
    for f in fields[:5]:
        assert f["model"]
        assert f["latency_ms"] is not None
        assert f["issuance_id"] is not None
    for f in (fields[0], fields[2], fields[3]):
        assert f["token_hint"].startswith("vcst_ob") and "…" in f["token_hint"]
    assert fields[1]["upstream_status"] == 401

    # The browser got its tokens; nothing else did.
    assert len(tokens.issued) == 3
    tokens.assert_absent(captured_logs.text(), "log records")
    tokens.assert_absent("\n".join(every_signal), "signals")
    for row in ClientSecretIssuance.objects.values():
        tokens.assert_absent(repr(row), "audit rows")


@pytest.mark.django_db
def test_issued_and_failed_signals_carry_the_row_not_the_token(tokens, user, mint_signals):
    mint_client_secret(user=user, kind="realtime")
    with pytest.raises(Exception):  # noqa: B017 - any GatewayError
        mint_client_secret(user=user, kind="realtime", model="openai/gpt-realtime-mini")
    assert [name for name, _ in mint_signals] == ["issued", "failed"]
    assert [k["issuance"].outcome for _, k in mint_signals] == [Outcome.ISSUED, Outcome.FAILED]
    for _, kwargs in mint_signals:
        assert "token" not in kwargs
        text = repr(kwargs) + repr(vars(kwargs["issuance"])) + str(kwargs.get("error", ""))
        tokens.assert_absent(text, "signal arguments")


@pytest.mark.django_db
def test_admin_pages_show_hints_never_tokens(tokens, user, django_user_model):
    for _ in range(2):
        mint_client_secret(user=user, kind="realtime")
    with pytest.raises(Exception):  # noqa: B017
        mint_client_secret(user=user, kind="realtime", model="openai/gpt-realtime-mini")
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(admin)
    changelist = reverse("admin:gateway_realtime_clientsecretissuance_changelist")
    pages = [changelist, changelist + "?outcome__exact=failed", changelist + "?q=alice"]
    for row in ClientSecretIssuance.objects.all():
        pages.append(reverse("admin:gateway_realtime_clientsecretissuance_change", args=[row.pk]))
    for url in pages:
        response = client.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        tokens.assert_absent(html, url)
    # The hint is there for incident lookup.
    row = ClientSecretIssuance.objects.filter(outcome=Outcome.ISSUED).first()
    assert row.token_hint in client.get(changelist).content.decode()


# Django's error email, as a site in production sends it. No EMAIL_BACKEND: the
# test environment already delivers to mail.outbox (and Django 6.1 deprecates
# the setting in favour of MAILERS).
ERROR_EMAIL = override_settings(DEBUG=False, ADMINS=ADMINS, ROOT_URLCONF=__name__)


@pytest.mark.django_db
@ERROR_EMAIL
@pytest.mark.parametrize(
    ("url", "model"),
    [("/crash/", None), ("/unhandled/", "openai/gpt-realtime-mini")],
    ids=["crash-after-mint", "unhandled-gateway-error"],
)
def test_error_email_has_no_secret(url, model, tokens, user, captured_logs):
    if model:
        with override_settings(GATEWAY_REALTIME_DEFAULT_MODELS={"realtime": model}):
            response = _crash(url, user)
    else:
        response = _crash(url, user)
    assert response.status_code == 500
    assert len(mail.outbox) == 1
    email = mail.outbox[0]
    text = email.subject + email.body + "".join(str(a[1]) for a in email.alternatives)
    assert "Traceback" in text or "Exception" in text
    if model is None:
        assert len(tokens.issued) == 1
    tokens.assert_absent(text, "error email")
    tokens.assert_absent(captured_logs.text(), "log records")


def _crash(url, user):
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client.post(url, data="{}", content_type="application/json")


@pytest.mark.django_db
@ERROR_EMAIL
@pytest.mark.parametrize("url", ["/crash/", "/crash-with-body/"])
def test_error_email_with_html_has_no_secret(url, tokens, user):
    # The HTML report holds every frame's local variables and the settings.
    handler = AdminEmailHandler(include_html=True)
    logger = logging.getLogger("django.request")
    logger.addHandler(handler)
    try:
        _crash(url, user)
    finally:
        logger.removeHandler(handler)
    html = [str(body) for m in mail.outbox for body, _ in m.alternatives]
    assert html
    for body in html:
        assert "GATEWAY_REALTIME_API_KEY" in body  # the settings are listed, cleansed
        tokens.assert_absent(body, "HTML error email")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("quota", "error_type"), [(5, "limits_unavailable"), (None, "audit_unavailable")]
)
def test_fail_closed_outcomes_are_logged(quota, error_type, same_origin, tokens, captured_logs):
    from django.db import connection

    with (
        override_settings(GATEWAY_REALTIME_QUOTA=quota),
        connection.execute_wrapper(database_down),
    ):
        response = same_origin(REALTIME)
    assert response.status_code == 503
    assert response.json()["error"]["type"] == error_type
    errors = [r for r in captured_logs.records if r.name == "gateway_realtime"]
    assert errors and all(r.levelname == "ERROR" for r in errors)
    fields = fields_of(errors)
    assert fields[-1]["user_id"] is not None
    assert fields[-1]["kind"] == "realtime"
    if error_type == "limits_unavailable":
        assert fields[-1]["error_type"] == "limits_unavailable"
    tokens.assert_absent(captured_logs.text(), "log records")
    assert tokens.issued == []
