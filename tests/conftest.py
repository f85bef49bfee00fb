import json
import logging

import pytest
import responses as responses_lib
from django.test import Client

from gateway_realtime.client import reset_clients

MINT_URL = "https://gateway.test/v1/realtime/client-secrets"
CREDENTIAL = "test-gateway-key"


@pytest.fixture(autouse=True)
def _fresh_clients(monkeypatch):
    # Each test starts with no pooled client and no ambient credentials.
    for name in ("AI_GATEWAY_API_KEY", "VERCEL_OIDC_TOKEN", "VERCEL"):
        monkeypatch.delenv(name, raising=False)
    reset_clients()
    yield
    reset_clients()


@pytest.fixture
def gateway():
    """``responses`` mock of the Gateway's mint route, answering a fresh token per call."""
    with responses_lib.RequestsMock(assert_all_requests_are_fired=False) as mock:
        counter = {"n": 0}

        def mint(request):
            counter["n"] += 1
            body = {
                "token": f"vcst_test{counter['n']:04d}abcdefghijklmnop",
                "expiresAt": 4102444800,
            }
            return 200, {"Content-Type": "application/json"}, json.dumps(body)

        mock.add_callback(responses_lib.POST, MINT_URL, callback=mint)
        yield mock


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user(username="alice", password="pw-alice")


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user(username="bob", password="pw-bob")


@pytest.fixture
def same_origin(user):
    """A logged-in test client whose POSTs look like the AI SDK's same-origin fetch.

    CSRF checks are enforced, as in a real browser, so every request goes
    through the same-origin check that replaces the CSRF token.
    """
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)

    def post(url, body=None, **headers):
        headers.setdefault("HTTP_ORIGIN", "http://testserver")
        headers.setdefault("HTTP_SEC_FETCH_SITE", "same-origin")
        data = json.dumps({"sessionConfig": {}} if body is None else body)
        return client.post(url, data=data, content_type="application/json", **headers)

    return post


class CapturingHandler(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    def text(self):
        parts = []
        for r in self.records:
            parts.append(r.getMessage())
            parts.append(repr(r.__dict__))
            if r.exc_info:
                parts.append(logging.Formatter().formatException(r.exc_info))
        return "\n".join(parts)


@pytest.fixture
def captured_logs():
    """Every log record from every logger, at every level, for leak checks."""
    handler = CapturingHandler()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


@pytest.fixture(scope="session")
def distributions(tmp_path_factory):
    """The sdist and wheel built from this checkout, once per session (tests/distributions.py)."""
    from tests.distributions import build

    return build(tmp_path_factory.mktemp("distributions"))
