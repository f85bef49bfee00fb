"""Per-user limits: the quota, the policy hook, failing closed (the throttle: test_throttling)."""

import dataclasses

import pytest
import requests
import responses as responses_lib
from django.contrib.auth.models import AnonymousUser
from django.core.checks import run_checks
from django.db import connection
from django.test import override_settings
from django.urls import reverse

from gateway_realtime.exceptions import AuditUnavailable, LimitsUnavailable, QuotaExceeded
from gateway_realtime.limits import (
    Policy,
    claim_quota,
    get_policy,
    parse_rate,
    quota_left,
    quota_window,
)
from gateway_realtime.models import ClientSecretIssuance, Outcome, QuotaCounter, Source
from gateway_realtime.services import mint_client_secret
from tests.conftest import (
    MINT_URL,
    answer,
    database_down,
    error_of,
    failing_writes,
    gateway_error,
    run_at_once,
)

REALTIME = reverse("gateway_realtime:realtime")
SPEECH = reverse("gateway_realtime:speech")


pytestmark = pytest.mark.usefixtures("empty_cache", "limits_clock")


def staff_policy(*, user, kind, request, policy):
    if user.is_staff:
        return dataclasses.replace(
            policy,
            quota=5,
            max_lifetime=3600,
            allowed_models=(*policy.allowed_models, "openai/gpt-realtime-staff"),
        )
    return None


def broken_policy(*, user, kind, request, policy):
    return {"quota": 1}


def per_kind_policy(*, user, kind, request, policy):
    return dataclasses.replace(policy, quota=1 if kind == "speech" else 3)


# --- the hard quota --------------------------------------------------------


@pytest.mark.django_db
@override_settings(GATEWAY_REALTIME_QUOTA=3)
def test_quota_allows_exactly_n_then_429_without_calling_the_gateway(same_origin, gateway, user):
    for _ in range(3):
        assert same_origin(REALTIME).status_code == 200
    response = same_origin(REALTIME)
    assert response.status_code == 429
    assert error_of(response)["type"] == "quota_exceeded"
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= 86400
    assert response["Cache-Control"] == "no-store, private"
    assert len(gateway.calls) == 3
    rejected = ClientSecretIssuance.objects.get(outcome=Outcome.REJECTED)
    assert rejected.error_type == "quota_exceeded"
    assert rejected.user == user
    assert rejected.completed_at is not None
    assert rejected.token_fingerprint == ""
    assert QuotaCounter.objects.get(user=user).used == 3


@pytest.mark.django_db
@override_settings(GATEWAY_REALTIME_QUOTA=2)
def test_quota_is_per_user_and_shared_by_every_kind_and_the_template_path(
    same_origin, gateway, user, other_user
):
    assert same_origin(REALTIME).status_code == 200
    # The template tag and site code mint through the service: they count too.
    mint_client_secret(user=user, kind="speech", source=Source.TEMPLATE)
    with pytest.raises(QuotaExceeded) as caught:
        mint_client_secret(user=user, kind="transcription", source=Source.TEMPLATE)
    assert caught.value.retry_after >= 1
    assert same_origin(SPEECH).status_code == 429
    # Another user has a quota of their own.
    mint_client_secret(user=other_user, kind="realtime")
    assert len(gateway.calls) == 3


@pytest.mark.django_db
@override_settings(GATEWAY_REALTIME_QUOTA=0)
def test_a_zero_quota_mints_nothing(same_origin, gateway):
    response = same_origin(REALTIME)
    assert response.status_code == 429
    assert len(gateway.calls) == 0


@pytest.mark.django_db
@override_settings(GATEWAY_REALTIME_QUOTA=1)
def test_anonymous_service_mints_have_no_quota(gateway):
    # Quotas are per user; code that mints without a user answers for itself.
    for _ in range(3):
        mint_client_secret(user=None, kind="realtime")
    assert QuotaCounter.objects.count() == 0


@pytest.mark.django_db
@override_settings(GATEWAY_REALTIME_QUOTA=2)
def test_a_gateway_error_answer_gives_the_claim_back(same_origin, gateway_mock, user):
    answer(gateway_mock, gateway_error("internal_server_error"), 500)
    for _ in range(3):
        assert same_origin(REALTIME).status_code == 502
    assert len(gateway_mock.calls) == 3
    # The Gateway said no each time, so no secret exists: nothing is used up.
    assert QuotaCounter.objects.get(user=user).used == 0


@pytest.mark.django_db
@pytest.mark.parametrize("key", [None, "Bearer vck_pasted"], ids=["missing", "malformed"])
@override_settings(GATEWAY_REALTIME_QUOTA=2)
def test_a_credential_setup_mistake_gives_the_claim_back(same_origin, gateway, user, key):
    with override_settings(GATEWAY_REALTIME_API_KEY=key):
        for _ in range(3):
            response = same_origin(REALTIME)
            assert response.status_code == 502
            assert error_of(response)["type"] == "configuration_error"
    # Nothing was sent, so nothing is used up.
    assert len(gateway.calls) == 0
    assert QuotaCounter.objects.get(user=user).used == 0
    assert same_origin(REALTIME).status_code == 200


@pytest.mark.django_db
@override_settings(GATEWAY_REALTIME_QUOTA=2, GATEWAY_REALTIME_READ_TIMEOUT=0.5)
def test_a_timeout_keeps_the_claim_because_a_secret_may_exist(same_origin, gateway_mock, user):
    answer(gateway_mock, requests.exceptions.ReadTimeout("slow"))
    assert same_origin(REALTIME).status_code == 504
    assert same_origin(REALTIME).status_code == 504
    assert same_origin(REALTIME).status_code == 429
    assert len(gateway_mock.calls) == 2


@pytest.mark.django_db
@override_settings(GATEWAY_REALTIME_QUOTA=2, GATEWAY_REALTIME_QUOTA_PERIOD=3600)
def test_quota_windows_are_aligned_and_stored(same_origin, gateway, user):
    same_origin(REALTIME)
    counter = QuotaCounter.objects.get(user=user)
    assert counter.window_start.timestamp() % 3600 == 0
    assert (counter.window_end - counter.window_start).total_seconds() == 3600


def test_quota_window_arithmetic():
    start, retry_after = quota_window(60, now=1_000_000_030.5)
    assert start.timestamp() == 1_000_000_020
    assert retry_after == 50
    start, retry_after = quota_window(86400, now=86400 * 3)
    assert start.timestamp() == 86400 * 3
    assert retry_after == 86400


@pytest.mark.django_db
def test_claim_quota_inside_a_callers_transaction(user):
    from django.db import transaction

    policy = dataclasses.replace(get_policy(user, "realtime"), quota=2)
    with transaction.atomic():
        assert claim_quota(user.pk, policy) is not None
        assert claim_quota(user.pk, policy) is not None
        with pytest.raises(QuotaExceeded):
            claim_quota(user.pk, policy)
    assert QuotaCounter.objects.get(user=user).used == 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_never_pass_the_quota(django_user_model):
    if connection.vendor == "sqlite":
        pytest.skip("needs a server database (GATEWAY_REALTIME_TEST_SERVICES=1): SQLite in memory")
    user = django_user_model.objects.create_user(username="racer")
    policy = dataclasses.replace(get_policy(user, "realtime"), quota=7)
    granted, refused = [], []

    def claim():
        for _ in range(3):
            try:
                claim_quota(user.pk, policy)
                granted.append(1)
            except QuotaExceeded:
                refused.append(1)

    run_at_once(16, claim)
    assert len(granted) == 7
    assert len(refused) == 16 * 3 - 7
    assert QuotaCounter.objects.get(user=user).used == 7


@pytest.mark.django_db(transaction=True)
# The bulkhead is held from the claim to the Gateway's answer; this test is
# about the quota, so every thread gets a slot.
@override_settings(GATEWAY_REALTIME_QUOTA=7, GATEWAY_REALTIME_MAX_CONCURRENT_MINTS=12)
def test_concurrent_mints_never_pass_the_quota_and_each_claim_has_its_row(
    django_user_model, gateway
):
    if connection.vendor == "sqlite":
        pytest.skip("needs a server database (GATEWAY_REALTIME_TEST_SERVICES=1): SQLite in memory")
    user = django_user_model.objects.create_user(username="racer")
    outcomes = []

    def mint():
        for _ in range(2):
            try:
                mint_client_secret(user=user, kind="realtime")
                outcomes.append("issued")
            except QuotaExceeded:
                outcomes.append("rejected")

    run_at_once(12, mint)
    assert outcomes.count("issued") == 7
    assert outcomes.count("rejected") == 12 * 2 - 7
    assert QuotaCounter.objects.get(user=user).used == 7
    rows = ClientSecretIssuance.objects.filter(user=user)
    assert rows.filter(outcome=Outcome.ISSUED).count() == 7
    assert rows.filter(outcome=Outcome.REJECTED).count() == 12 * 2 - 7
    assert not rows.filter(outcome=Outcome.PENDING).exists()
    assert len(gateway.calls) == 7


# --- the policy hook ---------------------------------------------------------


@pytest.mark.django_db
@override_settings(
    GATEWAY_REALTIME_QUOTA=1, GATEWAY_REALTIME_POLICY="tests.test_limits.staff_policy"
)
def test_policy_gives_staff_more(same_origin, gateway, user, client):
    # Ordinary users keep the site's policy.
    assert same_origin(REALTIME).status_code == 200
    assert same_origin(REALTIME).status_code == 429
    response = same_origin(REALTIME, {"model": "openai/gpt-realtime-staff"})
    assert response.status_code == 400

    user.is_staff = True
    user.save()
    response = same_origin(
        REALTIME, {"model": "openai/gpt-realtime-staff", "expiresAfterSeconds": 3000}
    )
    assert response.status_code == 200, response.content
    assert gateway.calls[-1].request.body == (
        b'{"model":"openai/gpt-realtime-staff","expiresIn":3000}'
    )
    for _ in range(3):
        assert same_origin(REALTIME).status_code == 200
    assert same_origin(REALTIME).status_code == 429


@pytest.mark.django_db
@override_settings(GATEWAY_REALTIME_POLICY="tests.test_limits.staff_policy")
def test_policy_limits_lifetime_and_models_for_others(same_origin, gateway):
    response = same_origin(REALTIME, {"expiresAfterSeconds": 3000})
    assert response.status_code == 400
    response = same_origin(REALTIME, {"model": "openai/gpt-realtime-staff"})
    assert response.status_code == 400
    assert error_of(response)["type"] == "invalid_request"
    assert len(gateway.calls) == 0


@pytest.mark.django_db
@override_settings(GATEWAY_REALTIME_POLICY="tests.test_limits.per_kind_policy")
def test_policy_can_differ_per_kind(same_origin, gateway):
    assert same_origin(SPEECH).status_code == 200
    assert same_origin(SPEECH).status_code == 429
    assert same_origin(REALTIME).status_code == 200


@pytest.mark.django_db
@override_settings(GATEWAY_REALTIME_POLICY="tests.test_limits.broken_policy")
def test_a_policy_returning_junk_is_a_configuration_error(same_origin, gateway):
    response = same_origin(REALTIME)
    assert response.status_code == 502
    assert error_of(response)["type"] == "configuration_error"
    assert len(gateway.calls) == 0


@pytest.mark.django_db
def test_policy_is_resolved_once_per_request(rf, user):
    calls = []

    def hook(*, user, kind, request, policy):
        calls.append(kind)
        return policy

    request = rf.post("/")
    with override_settings(GATEWAY_REALTIME_POLICY=hook):
        first = get_policy(user, "realtime", request)
        assert get_policy(user, "realtime", request) is first
        get_policy(user, "speech", request)
    assert calls == ["realtime", "speech"]
    assert isinstance(first, Policy)


# --- parsing the burst rate (the throttle itself: tests/test_throttling.py) ----


@pytest.mark.parametrize(
    ("rate", "expected"),
    [
        ("10/min", (10, 60)),
        ("3/s", (3, 1)),
        ("100/hour", (100, 3600)),
        ("5/d", (5, 86400)),
        ("5/10s", (5, 10)),
        (" 7 / m ", (7, 60)),
    ],
)
def test_parse_rate(rate, expected):
    assert parse_rate(rate) == expected


@pytest.mark.parametrize("rate", ["", "10", "ten/min", "10/fortnight", "/min", "-1/min", "1/0s"])
def test_parse_rate_rejects(rate):
    with pytest.raises(ValueError):
        parse_rate(rate)


# --- what is left (quota_left) ------------------------------------------------


@pytest.mark.django_db
def test_quota_left_is_none_without_a_quota_or_a_user(user):
    assert quota_left(user, "realtime") is None  # GATEWAY_REALTIME_QUOTA is None by default
    with override_settings(GATEWAY_REALTIME_QUOTA=3):
        assert quota_left(None, "realtime") is None
        assert quota_left(AnonymousUser(), "realtime") is None


@pytest.mark.django_db
@override_settings(GATEWAY_REALTIME_QUOTA=3)
def test_quota_left_counts_down_per_user_across_kinds_and_claims_nothing(
    same_origin, gateway, user, other_user
):
    assert quota_left(user, "realtime") == 3
    assert QuotaCounter.objects.count() == 0  # reading claims nothing
    assert same_origin(REALTIME).status_code == 200
    assert quota_left(user, "realtime") == 2
    mint_client_secret(user=user, kind="speech")
    assert quota_left(user, "transcription") == 1  # one counter for every kind
    assert same_origin(REALTIME).status_code == 200
    assert same_origin(REALTIME).status_code == 429
    assert quota_left(user, "realtime") == 0
    assert quota_left(other_user, "realtime") == 3


@pytest.mark.django_db
@override_settings(GATEWAY_REALTIME_QUOTA=2, GATEWAY_REALTIME_QUOTA_PERIOD=3600)
def test_quota_left_is_full_again_in_the_next_window(same_origin, gateway, user, limits_clock):
    same_origin(REALTIME)
    assert quota_left(user, "realtime") == 1
    _, retry_after = quota_window(3600)
    limits_clock.now += retry_after
    assert quota_left(user, "realtime") == 2


@pytest.mark.django_db
@override_settings(GATEWAY_REALTIME_QUOTA=0)
def test_quota_left_of_a_zero_quota_is_zero(user):
    assert quota_left(user, "realtime") == 0


@pytest.mark.django_db
@override_settings(GATEWAY_REALTIME_POLICY="tests.test_limits.per_kind_policy")
def test_quota_left_follows_the_policy_per_kind(same_origin, gateway, user):
    assert quota_left(user, "speech") == 1
    assert quota_left(user, "realtime") == 3
    assert same_origin(REALTIME).status_code == 200
    assert quota_left(user, "speech") == 0
    assert quota_left(user, "realtime") == 2


@pytest.mark.django_db
@override_settings(
    GATEWAY_REALTIME_QUOTA=1, GATEWAY_REALTIME_POLICY="tests.test_limits.staff_policy"
)
def test_quota_left_asks_the_policy_once_per_request(rf, user):
    user.is_staff = True
    request = rf.get("/")
    first = get_policy(user, "realtime", request)
    assert quota_left(user, "realtime", request) == 5
    assert get_policy(user, "realtime", request) is first


@pytest.mark.django_db
@override_settings(GATEWAY_REALTIME_QUOTA=3)
def test_quota_left_fails_closed_when_the_store_is_down(user):
    with connection.execute_wrapper(database_down), pytest.raises(LimitsUnavailable):
        quota_left(user, "realtime")


# --- failing closed ------------------------------------------------------------


@pytest.mark.django_db
@override_settings(GATEWAY_REALTIME_QUOTA=5)
def test_quota_store_down_fails_closed(same_origin, gateway):
    with connection.execute_wrapper(database_down):
        response = same_origin(REALTIME)
    assert response.status_code == 503
    assert error_of(response)["type"] == "limits_unavailable"
    assert "Retry-After" in response
    assert "token" not in response.json()
    assert len(gateway.calls) == 0


@pytest.mark.django_db
def test_audit_database_down_fails_closed(same_origin, gateway):
    with connection.execute_wrapper(database_down):
        response = same_origin(REALTIME)
    assert response.status_code == 503
    assert error_of(response)["type"] == "audit_unavailable"
    assert len(gateway.calls) == 0


@pytest.mark.django_db
def test_audit_lost_after_the_gateway_answered_hands_out_nothing(same_origin, gateway_mock, user):
    # The pending row is written, then the database goes away mid-mint.
    def mint(request):
        connection.execute_wrappers.append(database_down)
        return 200, {}, '{"token": "vcst_lost0123456789abcdef", "expiresAt": 4102444800}'

    gateway_mock.add_callback(responses_lib.POST, MINT_URL, callback=mint)
    try:
        response = same_origin(REALTIME)
    finally:
        connection.execute_wrappers.clear()
    assert len(gateway_mock.calls) == 1
    assert response.status_code == 503
    assert error_of(response)["type"] == "audit_unavailable"
    assert b"vcst_lost" not in response.content
    row = ClientSecretIssuance.objects.get()
    assert row.outcome == Outcome.PENDING


@pytest.mark.django_db(transaction=True)
@override_settings(GATEWAY_REALTIME_QUOTA=5)
@pytest.mark.parametrize("earlier_mints", [0, 1], ids=["new-window", "counted-window"])
def test_audit_down_after_the_quota_claim_gives_the_claim_back(user, gateway, earlier_mints):
    for _ in range(earlier_mints):
        mint_client_secret(user=user, kind="realtime")
    audit_table = ClientSecretIssuance._meta.db_table
    with connection.execute_wrapper(failing_writes(audit_table)), pytest.raises(AuditUnavailable):
        mint_client_secret(user=user, kind="realtime")
    # The claim and the row are one transaction: the failed row took the claim with it.
    counters = QuotaCounter.objects.filter(user=user).values_list("used", flat=True)
    assert sum(counters) == earlier_mints
    assert ClientSecretIssuance.objects.count() == earlier_mints
    assert len(gateway.calls) == earlier_mints


# --- system checks -------------------------------------------------------------


def check_ids():
    return {m.id for m in run_checks() if m.id and m.id.startswith("gateway_realtime.")}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"GATEWAY_REALTIME_RATE": "often"}, "gateway_realtime.E012"),
        ({"GATEWAY_REALTIME_RATE": 10}, "gateway_realtime.E012"),
        ({"GATEWAY_REALTIME_QUOTA": -1}, "gateway_realtime.E013"),
        ({"GATEWAY_REALTIME_QUOTA": "100"}, "gateway_realtime.E013"),
        ({"GATEWAY_REALTIME_QUOTA_PERIOD": 0}, "gateway_realtime.E013"),
        ({"GATEWAY_REALTIME_POLICY": "tests.nowhere.policy"}, "gateway_realtime.E014"),
        ({"GATEWAY_REALTIME_POLICY": 42}, "gateway_realtime.E014"),
        ({"GATEWAY_REALTIME_RATE_CACHE": "nope"}, "gateway_realtime.E015"),
        ({"GATEWAY_REALTIME_AUDIT_RETENTION_DAYS": 0}, "gateway_realtime.E016"),
        (
            {
                "GATEWAY_REALTIME_RATE": "5/min",
                "CACHES": {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
            },
            "gateway_realtime.W004",
        ),
    ],
)
def test_limit_settings_are_checked(overrides, expected):
    with override_settings(**overrides):
        assert expected in check_ids()


@override_settings(
    GATEWAY_REALTIME_RATE="5/min",
    GATEWAY_REALTIME_QUOTA=100,
    GATEWAY_REALTIME_POLICY="tests.test_limits.staff_policy",
    CACHES={"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache"}},
)
def test_good_limit_settings_pass_the_checks():
    assert not check_ids() & {f"gateway_realtime.E01{n}" for n in range(2, 7)}
    assert "gateway_realtime.W004" not in check_ids()


SCRIPT_DATABASE_DOWN = r"""
import json, django, responses
django.setup()
from django.contrib.auth import get_user_model
from django.test import override_settings
from gateway_realtime.exceptions import MintRejected
from gateway_realtime.services import mint_client_secret

results = {}
with responses.RequestsMock(assert_all_requests_are_fired=False) as gateway:
    gateway.add(responses.POST, "https://gateway.test/v1/realtime/client-secrets",
                json={"token": "vcst_never0123456789", "expiresAt": 4102444800})
    user = get_user_model()(pk=1, username="offline")  # the session said who it is
    for name, who, quota in [("audit", None, None), ("quota", user, 5)]:
        with override_settings(GATEWAY_REALTIME_QUOTA=quota):
            try:
                mint_client_secret(user=who, kind="realtime")
                results[name] = "minted"
            except MintRejected as error:
                results[name] = error.error_type
    results["gateway_calls"] = len(gateway.calls)
print(json.dumps(results))
"""


def test_a_database_that_is_really_down_fails_closed():
    # A real PostgreSQL client connecting to a port nothing listens on: runs in
    # a child process because this process's connections are the test's own.
    import json as json_module
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="tests.settings",
        GATEWAY_REALTIME_TEST_SERVICES="1",
        TEST_DATABASE_URL=f"postgres://postgres@127.0.0.1:{port}/test",
        TEST_REDIS_URL="redis://127.0.0.1:9/0",
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT_DATABASE_DOWN],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json_module.loads(done.stdout.strip().splitlines()[-1])
    assert results == {
        "audit": "audit_unavailable",
        "quota": "limits_unavailable",
        "gateway_calls": 0,
    }
