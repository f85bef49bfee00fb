import contextlib
import json
import logging
import threading
import types

import pytest
import responses as responses_lib
from django.core.cache import cache
from django.db import OperationalError, connections
from django.test import Client

from gateway_realtime.breaker import reset_circuit
from gateway_realtime.client import reset_clients
from gateway_realtime.signals import client_secret_failed, client_secret_issued

MINT_URL = "https://gateway.test/v1/realtime/client-secrets"
CREDENTIAL = "test-gateway-key"
TOKEN = "vcst_test_0123456789abcdefghijklmnop"
EXPIRES_AT = 4102444800  # 2100-01-01
JSON = {"Content-Type": "application/json"}
#: 30 s into a minute, an hour and a day: where ``limits_clock`` stands.
FROZEN_NOW = 1_800_000_030.0
#: The headers a browser's same-origin ``fetch`` sends with the AI SDK's POST.
SAME_ORIGIN = {"HTTP_ORIGIN": "http://testserver", "HTTP_SEC_FETCH_SITE": "same-origin"}


@pytest.fixture(autouse=True)
def _fresh_clients(monkeypatch):
    # Each test starts with no pooled client and no ambient credentials.
    for name in ("AI_GATEWAY_API_KEY", "VERCEL_OIDC_TOKEN", "VERCEL"):
        monkeypatch.delenv(name, raising=False)
    reset_clients()
    _close_circuit()
    yield
    reset_clients()
    _close_circuit()


def _close_circuit():
    # The breaker's state lives in the cache, which outlives a test: one
    # test's Gateway failures must not open the circuit on the next, nor its
    # time-outs or latency change the next test's deadlines (the bulkhead's
    # per-process memory).
    with contextlib.suppress(Exception):
        reset_circuit()
    from gateway_realtime import bulkhead

    bulkhead.reset()


# The Gateway, through ``responses`` ----------------------------------------------


@pytest.fixture
def gateway_mock():
    """An empty ``responses`` mock: the test registers the Gateway's answers (``answer``).

    Answers a test leaves unused are not an error: a test whose meaning needs
    the Gateway to be called says how often (``len(mock.calls)``).
    """
    with responses_lib.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def gateway(gateway_mock):
    """``gateway_mock`` answering every mint with a fresh token."""
    counter = {"n": 0}

    def mint(request):
        counter["n"] += 1
        body = {"token": f"vcst_test{counter['n']:04d}abcdefghijklmnop", "expiresAt": EXPIRES_AT}
        return 200, JSON, json.dumps(body)

    gateway_mock.add_callback(responses_lib.POST, MINT_URL, callback=mint)
    return gateway_mock


def gateway_error(
    error_type, message="upstream says no", *, param=None, code=None, generation_id="gen_123"
):
    """A failure body as the wire contract shapes it."""
    error = {"message": message, "type": error_type, "param": param, "code": code}
    return {"error": error, "generationId": generation_id}


def answer(mock, body=None, status=200, *, url=MINT_URL, **headers):
    """Register one answer of the Gateway's mint route on ``mock``.

    ``body``: a JSON value (default: a token expiring in 2100), ``bytes`` sent
    as they are, or an exception the request raises instead.
    Headers are ``Content-Type: application/json`` plus ``headers``.
    """
    if isinstance(body, BaseException):
        mock.add(responses_lib.POST, url, body=body)
        return
    if body is None:
        body = {"token": TOKEN, "expiresAt": EXPIRES_AT}
    content = body if isinstance(body, bytes) else json.dumps(body)
    mock.add(responses_lib.POST, url, body=content, status=status, headers={**JSON, **headers})


def sent_body(mock, index=0):
    """The JSON body of the ``index``-th request the Gateway received."""
    return json.loads(mock.calls[index].request.body)


# The browser -----------------------------------------------------------------------


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user(username="alice", password="pw-alice")


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user(username="bob", password="pw-bob")


class SameOriginClient(Client):
    """A test client that enforces CSRF, as a browser's requests are checked.

    Calling it sends what the AI SDK's same-origin ``fetch`` sends: a JSON body
    (any JSON value, default ``{"sessionConfig": {}}``; ``bytes`` go as they are)
    with ``Origin`` and ``Sec-Fetch-Site``, so every request goes through the
    same-origin check that replaces the CSRF token. Override a header by its
    META name, drop it with ``None``, or send none of the pair with
    ``origin_headers=False``. It is still a ``Client`` (``.post``, ``.cookies``).
    """

    def __init__(self, user=None):
        super().__init__(enforce_csrf_checks=True)
        if user is not None:
            self.force_login(user)

    def __call__(
        self,
        url,
        body=None,
        *,
        method="POST",
        content_type="application/json",
        origin_headers=True,
        **headers,
    ):
        if body is None:
            body = {"sessionConfig": {}}
        data = body if isinstance(body, bytes) else json.dumps(body)
        sent = {**(SAME_ORIGIN if origin_headers else {}), **headers}
        sent = {name: value for name, value in sent.items() if value is not None}
        return self.generic(method, url, data=data, content_type=content_type, **sent)


def assert_private(response):
    """The response may not be stored by any cache, nor shared between users."""
    assert response["Cache-Control"] == "no-store, private"
    vary = [v.strip().lower() for v in response["Vary"].split(",")]
    assert "cookie" in vary


def error_of(response):
    """The ``error`` object of an error answer, after checking the answer's shape."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"type", "message"} <= set(body["error"]), body
    return body["error"]


@pytest.fixture
def same_origin(user):
    """A ``SameOriginClient`` logged in as ``user``."""
    return SameOriginClient(user)


@pytest.fixture
def same_origin_as(db):
    """``SameOriginClient`` for someone else: ``same_origin_as(other_user)``, or ``(None)``."""
    return SameOriginClient


# Limits, signals, failures --------------------------------------------------------


@pytest.fixture
def limits_clock(monkeypatch):
    """The clock of the rate and quota windows, at ``FROZEN_NOW``; set ``.now`` to move it.

    Windows are clock-aligned: a test sets the time instead of straddling a
    boundary by chance.
    """
    clock = types.SimpleNamespace(now=FROZEN_NOW)
    frozen = types.SimpleNamespace(time=lambda: clock.now)
    monkeypatch.setattr("gateway_realtime.throttling.time", frozen)
    monkeypatch.setattr("gateway_realtime.limits.time", frozen)
    return clock


@pytest.fixture
def empty_cache():
    # Rate counters live in the cache, which outlives a test's database.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def mint_signals():
    """``("issued" | "failed", kwargs)`` for each mint signal sent during the test."""
    received = []

    def on_issued(**kwargs):
        received.append(("issued", kwargs))

    def on_failed(**kwargs):
        received.append(("failed", kwargs))

    client_secret_issued.connect(on_issued, weak=False)
    client_secret_failed.connect(on_failed, weak=False)
    yield received
    client_secret_issued.disconnect(on_issued)
    client_secret_failed.disconnect(on_failed)


def database_down(execute, sql, params, many, context):
    """An execute wrapper under which every query on this app's tables fails."""
    if "gateway_realtime_" in sql:
        raise OperationalError("could not connect to server: Connection refused")
    return execute(sql, params, many, context)


def failing_writes(table):
    """An execute wrapper under which every write to ``table`` fails."""

    def wrapper(execute, sql, params, many, context):
        if table in sql and sql.startswith(("INSERT", "UPDATE")):
            raise OperationalError("could not extend file: No space left on device")
        return execute(sql, params, many, context)

    return wrapper


def run_at_once(count, work):
    """Run ``work()`` in ``count`` threads released together; re-raise what any raised."""
    barrier = threading.Barrier(count)
    errors = []

    def run():
        try:
            barrier.wait()
            work()
        except BaseException as error:
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


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
def distributions():
    """The sdist and wheel `make dist-deps` built from this checkout (tests/distributions.py)."""
    from tests.distributions import prepared

    return prepared()
