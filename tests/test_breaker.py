"""The circuit breaker: its states, what counts, its cache, its signals and its command."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
from django.core.cache.backends.base import BaseCache
from django.core.management import call_command

from gateway_realtime import breaker
from gateway_realtime.checks import check_breaker_cache
from gateway_realtime.exceptions import (
    GatewayAuthenticationError,
    GatewayConfigurationError,
    GatewayConnectionError,
    GatewayError,
    GatewayInternalServerError,
    GatewayModelNotFoundError,
    GatewayRateLimitError,
    GatewayResponseError,
    GatewayTimeoutError,
    GatewayUnavailable,
)
from gateway_realtime.models import ClientSecretIssuance, Outcome, QuotaCounter
from gateway_realtime.services import mint_client_secret
from gateway_realtime.signals import circuit_closed, circuit_opened
from tests.conftest import (
    CREDENTIAL,
    EXPIRES_AT,
    JSON,
    MINT_URL,
    SameOriginClient,
    answer,
    error_of,
    gateway_error,
)

ROOT = Path(__file__).resolve().parent.parent
REALTIME = "/gateway/realtime/"
NOW = 1_800_000_010.0  # 10 s into a 30 s window


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.SimpleNamespace]:
    """The breaker's clock, frozen at ``NOW``; set ``.now`` to move it."""
    state = types.SimpleNamespace(now=NOW)
    monkeypatch.setattr(breaker, "time", types.SimpleNamespace(time=lambda: state.now))
    # The window's key is named after the frozen time: forget it on both sides.
    breaker.reset_circuit()
    yield state
    breaker.reset_circuit()


@pytest.fixture
def breaker_settings(settings: Any) -> Any:
    settings.GATEWAY_REALTIME_BREAKER_MIN_CALLS = 3
    settings.GATEWAY_REALTIME_BREAKER_WINDOW = 30
    settings.GATEWAY_REALTIME_BREAKER_COOLDOWN = 15
    # A mint inside another (the probe's callback): not the bulkhead's business.
    settings.GATEWAY_REALTIME_MAX_CONCURRENT_MINTS = 4
    return settings


@pytest.fixture
def transitions() -> Any:
    seen: list[tuple[str, dict[str, Any]]] = []

    def opened(**kwargs: Any) -> None:
        seen.append(("opened", kwargs))

    def closed(**kwargs: Any) -> None:
        seen.append(("closed", kwargs))

    circuit_opened.connect(opened, weak=False)
    circuit_closed.connect(closed, weak=False)
    yield seen
    circuit_opened.disconnect(opened)
    circuit_closed.disconnect(closed)


def fail_times(mock: responses.RequestsMock, count: int, user: Any) -> None:
    for _ in range(count):
        answer(mock, requests.ConnectionError("refused"))
    for _ in range(count):
        with pytest.raises(GatewayConnectionError):
            mint_client_secret(user=user, kind="realtime")


def succeed(mock: responses.RequestsMock) -> None:
    answer(mock, {"token": "vcst_probe0001abcdefghijklmnop", "expiresAt": EXPIRES_AT})


# What counts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "counts"),
    [
        (GatewayTimeoutError("slow"), True),
        (GatewayConnectionError("refused"), True),
        (GatewayInternalServerError("boom", status_code=500), True),
        (GatewayResponseError("not json", status_code=200), True),
        (GatewayError("bad gateway", status_code=502), True),
        (GatewayAuthenticationError("no", status_code=401), False),
        (GatewayModelNotFoundError("no", status_code=404), False),
        (GatewayRateLimitError("slow down", status_code=429), False),
        (GatewayConfigurationError("no key"), False),
        (RuntimeError("a bug"), False),
    ],
)
def test_what_counts_as_a_failure(error: Exception, counts: bool) -> None:
    assert breaker.counts_as_failure(error) is counts


# The states ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_opens_after_the_failures_and_fails_fast_without_calling_the_gateway(
    gateway_mock: responses.RequestsMock,
    user: Any,
    breaker_settings: Any,
    clock: Any,
    transitions: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    breaker_settings.GATEWAY_REALTIME_QUOTA = 10
    fail_times(gateway_mock, 2, user)
    assert breaker.circuit_state().state == breaker.CLOSED
    assert breaker.circuit_state().failures == 2
    with caplog.at_level(logging.INFO, logger="gateway_realtime"):
        fail_times(gateway_mock, 1, user)
    assert transitions == [
        ("opened", {"signal": circuit_opened, "sender": None, "failures": 3, "cooldown": 15})
    ]
    [opened_log] = [r for r in caplog.records if "opened" in r.getMessage()]
    assert opened_log.levelno == logging.WARNING
    assert CREDENTIAL not in caplog.text

    clock.now += 5
    succeed(gateway_mock)
    with pytest.raises(GatewayUnavailable) as caught:
        mint_client_secret(user=user, kind="realtime")
    assert caught.value.retry_after == 10
    assert CREDENTIAL not in str(caught.value)
    assert len(gateway_mock.calls) == 3
    row = ClientSecretIssuance.objects.latest("pk")
    assert (row.outcome, row.error_type) == (Outcome.REJECTED, "gateway_unavailable")
    # Three failed calls keep their claims (a time-out may have minted); the
    # refused one claimed nothing.
    assert QuotaCounter.objects.get(user=user).used == 3
    state = breaker.circuit_state()
    assert (state.state, state.seconds_left) == (breaker.OPEN, 10)


@pytest.mark.django_db
def test_the_endpoint_answers_503_with_the_seconds_left(
    gateway_mock: responses.RequestsMock,
    user: Any,
    same_origin: SameOriginClient,
    breaker_settings: Any,
    clock: Any,
) -> None:
    fail_times(gateway_mock, 3, user)
    clock.now += 11.5
    response = same_origin(REALTIME)
    assert response.status_code == 503, response.content
    assert response["Retry-After"] == "4"
    error = error_of(response)
    assert error["type"] == "gateway_unavailable"
    assert "4 seconds" in error["message"]
    assert CREDENTIAL not in response.content.decode()


@pytest.mark.django_db
def test_one_probe_after_the_cooldown_closes_it(
    gateway_mock: responses.RequestsMock,
    user: Any,
    breaker_settings: Any,
    clock: Any,
    transitions: Any,
) -> None:
    fail_times(gateway_mock, 3, user)
    clock.now += 15
    assert breaker.circuit_state().state == breaker.HALF_OPEN
    during_probe: list[Any] = []

    def probe(request: Any) -> tuple[int, dict[str, str], str]:
        # Another mint while the probe is in flight keeps failing fast.
        during_probe.append(breaker.circuit_state())
        with pytest.raises(GatewayUnavailable) as caught:
            mint_client_secret(user=user, kind="realtime")
        during_probe.append(caught.value.retry_after)
        body = {"token": "vcst_probe0001abcdefghijklmnop", "expiresAt": EXPIRES_AT}
        return 200, JSON, json.dumps(body)

    gateway_mock.add_callback(responses.POST, MINT_URL, callback=probe)
    assert mint_client_secret(user=user, kind="realtime").token
    assert during_probe[0].probing is True
    assert during_probe[1] == 1
    assert len(gateway_mock.calls) == 4
    assert [name for name, _ in transitions] == ["opened", "closed"]
    assert breaker.circuit_state() == breaker.CircuitState(breaker.CLOSED, 0, 0, False)
    # Closed: mints reach the Gateway again.
    succeed(gateway_mock)
    assert mint_client_secret(user=user, kind="realtime").token


@pytest.mark.django_db
def test_a_failed_probe_reopens_it(
    gateway_mock: responses.RequestsMock,
    user: Any,
    breaker_settings: Any,
    clock: Any,
    transitions: Any,
) -> None:
    fail_times(gateway_mock, 3, user)
    clock.now += 16
    answer(gateway_mock, gateway_error("internal_server_error"), 500)
    with pytest.raises(GatewayInternalServerError):
        mint_client_secret(user=user, kind="realtime")
    state = breaker.circuit_state()
    assert (state.state, state.seconds_left) == (breaker.OPEN, 15)
    with pytest.raises(GatewayUnavailable):
        mint_client_secret(user=user, kind="realtime")
    assert len(gateway_mock.calls) == 4
    # Still open, not opened again: receivers see opened/closed pairs.
    assert [name for name, _ in transitions] == ["opened"]
    clock.now += 15
    succeed(gateway_mock)
    assert mint_client_secret(user=user, kind="realtime").token
    assert [name for name, _ in transitions] == ["opened", "closed"]


@pytest.mark.django_db
def test_a_probe_answered_with_a_4xx_closes_it(
    gateway_mock: responses.RequestsMock, user: Any, breaker_settings: Any, clock: Any
) -> None:
    fail_times(gateway_mock, 3, user)
    clock.now += 15
    answer(gateway_mock, gateway_error("authentication_error"), 401)
    with pytest.raises(GatewayAuthenticationError):
        mint_client_secret(user=user, kind="realtime")
    assert breaker.circuit_state().state == breaker.CLOSED


@pytest.mark.django_db
def test_a_probe_that_never_reached_the_gateway_lets_another_probe(
    gateway_mock: responses.RequestsMock,
    user: Any,
    breaker_settings: Any,
    clock: Any,
    settings: Any,
) -> None:
    fail_times(gateway_mock, 3, user)
    clock.now += 15
    settings.GATEWAY_REALTIME_API_KEY = None
    with pytest.raises(GatewayConfigurationError):
        mint_client_secret(user=user, kind="realtime")
    settings.GATEWAY_REALTIME_API_KEY = CREDENTIAL
    succeed(gateway_mock)
    assert mint_client_secret(user=user, kind="realtime").token
    assert breaker.circuit_state().state == breaker.CLOSED


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "status"),
    [
        (gateway_error("authentication_error"), 401),
        (gateway_error("model_not_found"), 404),
        (gateway_error("rate_limit_exceeded"), 429),
    ],
    ids=["401", "404", "429"],
)
def test_4xx_answers_do_not_count(
    gateway_mock: responses.RequestsMock,
    user: Any,
    breaker_settings: Any,
    clock: Any,
    body: Any,
    status: int,
) -> None:
    for _ in range(5):
        answer(gateway_mock, body, status)
        with pytest.raises(GatewayError):
            mint_client_secret(user=user, kind="realtime")
    assert breaker.circuit_state().state == breaker.CLOSED
    assert breaker.circuit_state().failures == 0
    succeed(gateway_mock)
    assert mint_client_secret(user=user, kind="realtime").token


@pytest.mark.django_db
def test_configuration_errors_do_not_count(
    gateway_mock: responses.RequestsMock, user: Any, breaker_settings: Any, settings: Any
) -> None:
    settings.GATEWAY_REALTIME_API_KEY = None
    for _ in range(5):
        with pytest.raises(GatewayConfigurationError):
            mint_client_secret(user=user, kind="realtime")
    assert breaker.circuit_state().failures == 0
    assert len(gateway_mock.calls) == 0


@pytest.mark.django_db
def test_failures_in_different_windows_do_not_add_up(
    gateway_mock: responses.RequestsMock, user: Any, breaker_settings: Any, clock: Any
) -> None:
    fail_times(gateway_mock, 2, user)
    clock.now += 30
    fail_times(gateway_mock, 2, user)
    assert breaker.circuit_state().state == breaker.CLOSED
    fail_times(gateway_mock, 1, user)
    assert breaker.circuit_state().state == breaker.OPEN


@pytest.mark.django_db
def test_timeouts_and_5xx_count(
    gateway_mock: responses.RequestsMock, user: Any, breaker_settings: Any, clock: Any
) -> None:
    answer(gateway_mock, requests.Timeout("slow"))
    answer(gateway_mock, gateway_error("internal_server_error"), 500)
    answer(gateway_mock, b"<html>bad gateway</html>", 502)
    for _ in range(3):
        with pytest.raises(GatewayError):
            mint_client_secret(user=user, kind="realtime")
    assert breaker.circuit_state().state == breaker.OPEN


# Its cache failing --------------------------------------------------------------------


class BrokenCache(BaseCache):
    """A cache backend whose every operation fails, as an unreachable Redis does."""

    def __init__(self, location: str, params: dict[str, Any]) -> None:
        super().__init__(params)

    def _fail(self, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("cache down")

    add = get = set = touch = delete = clear = incr = get_many = delete_many = _fail  # type: ignore[assignment]


@pytest.mark.django_db
def test_a_failing_breaker_cache_does_not_block_minting(
    gateway_mock: responses.RequestsMock,
    user: Any,
    breaker_settings: Any,
    settings: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings.CACHES = {
        **settings.CACHES,
        "broken": {"BACKEND": "tests.test_breaker.BrokenCache"},
    }
    settings.GATEWAY_REALTIME_BREAKER_CACHE = "broken"
    with caplog.at_level(logging.WARNING, logger="gateway_realtime"):
        fail_times(gateway_mock, 4, user)
        succeed(gateway_mock)
        assert mint_client_secret(user=user, kind="realtime").token
    assert "circuit breaker's cache failed" in caplog.text
    assert len(gateway_mock.calls) == 5


# Staff visibility ----------------------------------------------------------------------


@pytest.mark.django_db
def test_the_management_command_shows_and_resets_the_circuit(
    gateway_mock: responses.RequestsMock,
    user: Any,
    breaker_settings: Any,
    clock: Any,
    transitions: Any,
) -> None:
    def run(*args: str) -> str:
        out = StringIO()
        call_command("gateway_realtime_circuit", *args, stdout=out)
        return out.getvalue()

    assert run().splitlines() == [
        "state: closed",
        "failed or slow in window: 0 of 0 calls within 30 s (opens at 50% of at least 3 calls)",
    ]
    fail_times(gateway_mock, 3, user)
    clock.now += 5
    assert run().splitlines()[0] == "state: open (10 s left)"
    clock.now += 10
    assert run().splitlines()[0] == "state: half-open"
    output = run("--reset")
    assert output.splitlines()[0] == "Circuit reset (it was open)."
    assert "state: closed" in output
    assert [name for name, _ in transitions] == ["opened", "closed"]
    assert run("--reset").splitlines()[0] == "Circuit reset."


def test_a_local_memory_breaker_cache_warns_under_check_deploy(settings: Any) -> None:
    from django.core import checks

    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "shared": {"BACKEND": "django.core.cache.backends.redis.RedisCache"},
    }
    (message,) = check_breaker_cache()
    assert message.id == "gateway_realtime.W006"
    assert message.level == checks.WARNING
    assert "each worker process" in message.msg
    assert "GATEWAY_REALTIME_BREAKER_CACHE" in (message.hint or "")
    deploy = checks.run_checks(include_deployment_checks=True, tags=["caches"])
    assert [m.id for m in deploy].count("gateway_realtime.W006") == 1
    # Not on every command: local memory is what development uses.
    assert "gateway_realtime.W006" not in [m.id for m in checks.run_checks(tags=["caches"])]
    settings.GATEWAY_REALTIME_BREAKER_CACHE = "shared"
    assert check_breaker_cache() == []
    settings.GATEWAY_REALTIME_BREAKER_CACHE = "nowhere"  # E019's business
    assert check_breaker_cache() == []


# Two processes, one circuit ------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import json, os, sys, time
    import django
    django.setup()
    from gateway_realtime import breaker

    # This process's clock for the breaker, moved by "advance SECONDS".
    offset = 0.0

    class Clock:
        @staticmethod
        def time():
            return time.time() + offset

    breaker.time = Clock
    from gateway_realtime.exceptions import GatewayConnectionError, GatewayUnavailable
    from gateway_realtime.signals import circuit_closed, circuit_opened

    sent = []
    circuit_opened.connect(lambda **kw: sent.append("opened"), weak=False)
    circuit_closed.connect(lambda **kw: sent.append("closed"), weak=False)
    print(json.dumps({"pid": os.getpid()}), flush=True)
    for line in sys.stdin:
        action, *count = line.split()
        result = {"pid": os.getpid()}
        sent.clear()
        if action == "fail":
            for _ in range(int(count[0])):
                try:
                    with breaker.guard():
                        raise GatewayConnectionError("refused")
                except GatewayConnectionError:
                    pass
        elif action == "reset":
            breaker.reset_circuit()
        elif action == "advance":
            offset += float(count[0])
        elif action == "call":
            try:
                with breaker.guard():
                    result["called"] = True
            except GatewayUnavailable as error:
                result["called"] = False
                result["retry_after"] = error.retry_after
        result["state"] = breaker.circuit_state().state
        result["signals"] = list(sent)
        print(json.dumps(result), flush=True)
    """
)


class Worker:
    """A Python process running ``WORKER``: one command a line, one JSON answer a line."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", WORKER],
            env=env,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.pid = self.read()["pid"]

    def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, "the worker died"
        return json.loads(line)  # type: ignore[no-any-return]

    def __call__(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.read()

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        finally:
            assert self.process.stdout is not None
            self.process.stdout.close()


@pytest.fixture
def shared_cache_settings(tmp_path: Path, settings: Any) -> str:
    """A settings module whose default cache two processes share; its name."""
    if settings.SERVICES:
        cache = repr(settings.CACHES["default"])
    else:
        cache = repr(
            {
                "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                "LOCATION": str(tmp_path / "cache"),
            }
        )
    (tmp_path / "two_process_settings.py").write_text(
        "from tests.settings import *  # noqa: F403\n"
        f"CACHES = {{'default': {cache}}}\n"
        "GATEWAY_REALTIME_BREAKER_MIN_CALLS = 3\n"
        "GATEWAY_REALTIME_BREAKER_COOLDOWN = 1\n"
        # Long, so the two processes' failures never straddle a window boundary.
        "GATEWAY_REALTIME_BREAKER_WINDOW = 3600\n"
    )
    return "two_process_settings"


def test_failures_in_one_process_open_the_circuit_in_another(
    tmp_path: Path, shared_cache_settings: str
) -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": shared_cache_settings,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
    }

    one, other = Worker(env), Worker(env)
    try:
        assert one.pid != other.pid
        one("reset")  # a shared cache may hold an earlier run's failures
        # Failures from both processes count together...
        assert one("fail 2")["state"] == "closed"
        opened = other("fail 1")
        assert opened["state"] == "open"
        assert opened["signals"] == ["opened"]
        # ...and the first process now fails fast, sending nothing.
        refused = one("call")
        assert refused["called"] is False
        assert refused["retry_after"] == 1
        assert refused["signals"] == []

        other("advance 1.5")  # past the 1 s cool-down, on this process's clock
        probe = other("call")  # the cool-down is over: this one probes, and succeeds
        assert probe["called"] is True
        assert probe["state"] == "closed"
        assert probe["signals"] == ["closed"]
        # Closed for both.
        again = one("call")
        assert again["called"] is True
        assert again["state"] == "closed"
        assert again["signals"] == []
    finally:
        with contextlib.suppress(Exception):
            one("reset")
        one.stop()
        other.stop()


# A rate, not a count ------------------------------------------------------------------


@pytest.mark.django_db
def test_a_gateway_failing_one_call_in_seven_never_opens_it(
    gateway_mock: responses.RequestsMock,
    user: Any,
    breaker_settings: Any,
    clock: Any,
    transitions: Any,
) -> None:
    # The default rate and minimum: a busy site, 70 calls in one window.
    breaker_settings.GATEWAY_REALTIME_BREAKER_MIN_CALLS = 10
    outcomes: list[str] = []
    for n in range(1, 71):
        if n % 7 == 0:
            answer(gateway_mock, gateway_error("internal_server_error"), 503)
        else:
            succeed(gateway_mock)
        try:
            mint_client_secret(user=user, kind="realtime")
            outcomes.append("issued")
        except GatewayError as error:
            outcomes.append(error.error_type)
    # Every answered 200 became a token; each failure kept its own type.
    assert outcomes.count("issued") == 60
    assert outcomes.count("internal_server_error") == 10
    state = breaker.circuit_state()
    assert (state.state, state.failures, state.calls) == (breaker.CLOSED, 10, 70)
    assert transitions == []


@pytest.mark.django_db
def test_it_opens_on_half_the_calls_once_there_are_enough(
    gateway_mock: responses.RequestsMock,
    user: Any,
    breaker_settings: Any,
    clock: Any,
    transitions: Any,
) -> None:
    breaker_settings.GATEWAY_REALTIME_BREAKER_MIN_CALLS = 10
    for _ in range(5):
        succeed(gateway_mock)
        mint_client_secret(user=user, kind="realtime")
    # A dead Gateway: every call refused, fast.
    fail_times(gateway_mock, 4, user)
    assert breaker.circuit_state().state == breaker.CLOSED  # 9 calls: too few to judge
    fail_times(gateway_mock, 1, user)
    assert breaker.circuit_state() == breaker.CircuitState(breaker.OPEN, 15, 5, False, 10)
    assert transitions[0][1]["failures"] == 5


@pytest.mark.django_db
def test_a_4xx_answer_is_a_call_that_went_well(
    gateway_mock: responses.RequestsMock, user: Any, breaker_settings: Any, clock: Any
) -> None:
    answer(gateway_mock, gateway_error("model_not_found"), 404)
    with pytest.raises(GatewayModelNotFoundError):
        mint_client_secret(user=user, kind="realtime")
    fail_times(gateway_mock, 1, user)
    state = breaker.circuit_state()
    assert (state.state, state.failures, state.calls) == (breaker.CLOSED, 1, 2)


def test_slow_successes_count_and_quick_ones_do_not(breaker_settings: Any, clock: Any) -> None:
    for answered_in in (0.4, 0.5):  # at the line: not slow
        with breaker.guard(slow_after=0.5) as call:
            call.answered_in = answered_in
    assert breaker.circuit_state().failures == 0
    with breaker.guard(slow_after=0.5) as call:
        call.answered_in = 2.0
    state = breaker.circuit_state()
    assert (state.state, state.failures, state.calls) == (breaker.CLOSED, 1, 3)
    with breaker.guard(slow_after=0.5) as call:
        call.answered_in = 2.0
    # 2 of 4 calls were slow, at the minimum of 3 calls: open.
    assert breaker.circuit_state().state == breaker.OPEN


@pytest.mark.django_db
def test_calls_slide_out_of_the_window(
    gateway_mock: responses.RequestsMock, user: Any, breaker_settings: Any, clock: Any
) -> None:
    fail_times(gateway_mock, 2, user)
    assert breaker.circuit_state().calls == 2
    clock.now += 12  # two of the five 6 s buckets later: still in the window
    assert breaker.circuit_state().calls == 2
    clock.now += 24  # past the 30 s window
    state = breaker.circuit_state()
    assert (state.failures, state.calls) == (0, 0)
