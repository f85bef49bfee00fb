"""The mint path's writes as prebuilt SQL: same rows as the ORM, ORM where it must be."""

import datetime as dt

import pytest
from django.core.cache import cache, caches
from django.db import DatabaseError, connection
from django.db.models.signals import post_save, pre_save
from django.forms.models import model_to_dict
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from gateway_realtime import statements
from gateway_realtime.limits import Policy, claim_quota
from gateway_realtime.models import ClientSecretIssuance, Outcome, QuotaCounter, Source
from gateway_realtime.services import mint_client_secret
from gateway_realtime.throttling import _redis_client

TABLE = ClientSecretIssuance._meta.db_table


def _row(**overrides):
    values = {
        "username": "alice",
        "ip_address": "2001:db8::1",
        "user_agent": "Mozilla/5.0 (é)",
        "kind": "realtime",
        "model": "openai/gpt-realtime-2",
        "source": Source.TEMPLATE,
        "requested_lifetime": 600,
    }
    values.update(overrides)
    return ClientSecretIssuance(**values)


def _comparable(issuance):
    values = model_to_dict(issuance)
    values.pop("id")
    return values


@pytest.mark.django_db
def test_insert_and_update_store_what_the_orm_stores(user):
    fast, orm = _row(user=user), _row(user=user)
    assert statements.insert_issuance(fast, "default")
    orm.save()
    assert fast.pk is not None and fast.pk != orm.pk
    assert not fast._state.adding

    completion = ["completed_at", "outcome", "expires_at", "effective_lifetime", "token_hint"]
    for issuance in (fast, orm):
        issuance.completed_at = dt.datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC)
        issuance.outcome = Outcome.ISSUED
        issuance.expires_at = dt.datetime(2030, 1, 2, 3, 14, 5, tzinfo=dt.UTC)
        issuance.effective_lifetime = -(2**31)
        issuance.token_hint = "vcst_ab…wxyz"
    assert statements.update_issuance(fast, completion, "default")
    orm.save(update_fields=completion)

    stored_fast = ClientSecretIssuance.objects.get(pk=fast.pk)
    stored_orm = ClientSecretIssuance.objects.get(pk=orm.pk)
    assert _comparable(stored_fast) == _comparable(stored_orm)
    # auto_now_add was applied, and comes back as an aware datetime.
    assert stored_fast.created_at.tzinfo is not None
    assert abs(stored_fast.created_at - stored_orm.created_at) < dt.timedelta(minutes=1)


@pytest.mark.django_db
def test_the_mint_path_uses_one_statement_per_write(user, gateway):
    with CaptureQueriesContext(connection) as queries:
        mint_client_secret(user=user, kind="realtime")
    writes = [q["sql"] for q in queries.captured_queries if TABLE in q["sql"]]
    assert len(writes) == 2
    assert writes[0].startswith(f'INSERT INTO "{TABLE}"')
    assert writes[1].startswith(f'UPDATE "{TABLE}" SET "completed_at" = ')


@pytest.mark.django_db
def test_updating_a_vanished_row_is_a_database_error(user):
    issuance = _row(user=user)
    assert statements.insert_issuance(issuance, "default")
    ClientSecretIssuance.objects.filter(pk=issuance.pk).delete()
    with pytest.raises(DatabaseError):
        statements.update_issuance(issuance, ["outcome"], "default")


@pytest.mark.django_db
@pytest.mark.parametrize("signal", [pre_save, post_save])
def test_save_receivers_still_run_for_every_audit_write(signal, user, gateway):
    seen = []

    def receiver(sender, instance, **kwargs):
        seen.append((instance.outcome, kwargs.get("update_fields")))

    signal.connect(receiver, sender=ClientSecretIssuance)
    try:
        mint_client_secret(user=user, kind="realtime")
    finally:
        signal.disconnect(receiver, sender=ClientSecretIssuance)
    assert [outcome for outcome, _ in seen] == [Outcome.PENDING, Outcome.ISSUED]
    assert seen[1][1] is not None and "token_fingerprint" in seen[1][1]
    assert ClientSecretIssuance.objects.get().outcome == Outcome.ISSUED


@pytest.mark.django_db
@override_settings(GATEWAY_REALTIME_QUOTA=2)
def test_other_database_backends_go_through_the_orm(user, gateway, monkeypatch):
    monkeypatch.setattr(statements, "SUPPORTED_VENDORS", frozenset())
    assert not statements.insert_issuance(_row(user=user), "default")
    mint_client_secret(user=user, kind="realtime")
    mint_client_secret(user=user, kind="realtime")
    with pytest.raises(Exception, match="quota"):
        mint_client_secret(user=user, kind="realtime")
    assert QuotaCounter.objects.get(user=user).used == 2
    assert list(ClientSecretIssuance.objects.values_list("outcome", flat=True)) == [
        Outcome.REJECTED,
        Outcome.ISSUED,
        Outcome.ISSUED,
    ]


@pytest.mark.django_db
def test_increment_quota_stops_at_the_limit(user):
    start = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    end = start + dt.timedelta(hours=1)
    assert statements.increment_quota(user.pk, start, end, 2, "default") is False
    QuotaCounter.objects.create(user=user, window_start=start, window_end=end, used=0)
    assert statements.increment_quota(user.pk, start, end, 2, "default") is True
    assert statements.increment_quota(user.pk, start, end, 2, "default") is True
    assert statements.increment_quota(user.pk, start, end, 2, "default") is False
    # Another window of the same user is another row.
    assert statements.increment_quota(user.pk, end, end + (end - start), 2, "default") is False
    assert QuotaCounter.objects.get(user=user).used == 2


@pytest.mark.django_db
def test_claim_quota_creates_the_row_then_increments_it(user):
    policy = Policy(
        default_model="m", allowed_models=(), max_lifetime=60, quota=3, quota_period=60, rate=None
    )
    for _ in range(3):
        assert claim_quota(user.pk, policy) is not None
    counter = QuotaCounter.objects.get(user=user)
    assert counter.used == 3
    assert counter.window_end - counter.window_start == dt.timedelta(seconds=60)


@pytest.mark.django_db
@override_settings(GATEWAY_REALTIME_RATE="3/min")
def test_the_rate_counter_is_one_redis_round_trip_with_an_expiry(same_origin, gateway, user):
    redis = _redis_client(caches["default"])
    if redis is None:
        pytest.skip("needs Django's RedisCache (GATEWAY_REALTIME_TEST_SERVICES=1)")
    cache.clear()
    try:
        for _ in range(3):
            assert same_origin(reverse("gateway_realtime:realtime")).status_code == 200
        assert same_origin(reverse("gateway_realtime:realtime")).status_code == 429
        keys = [k.decode() for k in redis.keys("*gateway_realtime:rate:*")]
        assert len(keys) == 1
        assert 0 < redis.ttl(keys[0]) <= 61
        # Stored as a plain integer, so Django's cache API reads it too.
        key = keys[0].split(":", 2)[2]
        assert cache.get(key) == 4
    finally:
        cache.clear()


@pytest.mark.django_db(transaction=True)
def test_a_failed_write_inside_a_callers_transaction_leaves_it_usable(user, gateway):
    from django.contrib.auth import get_user_model
    from django.db import OperationalError, transaction

    from gateway_realtime.exceptions import AuditUnavailable

    def audit_insert_fails(execute, sql, params, many, context):
        if sql.startswith(f'INSERT INTO "{TABLE}"'):
            raise OperationalError("disk full")
        return execute(sql, params, many, context)

    with transaction.atomic():
        get_user_model().objects.create_user(username="made-in-the-same-transaction")
        with connection.execute_wrapper(audit_insert_fails), pytest.raises(AuditUnavailable):
            mint_client_secret(user=user, kind="realtime")
        # The savepoint rolled back only the audit write.
        issued = mint_client_secret(user=user, kind="realtime")
    assert get_user_model().objects.filter(username="made-in-the-same-transaction").exists()
    assert ClientSecretIssuance.objects.get().pk == issued.issuance.pk
    assert len(gateway.calls) == 1


# The quota claim and the audit INSERT as one statement: PostgreSQL, autocommit.

needs_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="a data-modifying WITH is PostgreSQL's (GATEWAY_REALTIME_TEST_SERVICES=1)",
)
QUOTA_TABLE = QuotaCounter._meta.db_table


def _writes(queries):
    return [q["sql"] for q in queries.captured_queries if "gateway_realtime_" in q["sql"]]


@needs_postgresql
@pytest.mark.django_db(transaction=True)
@override_settings(GATEWAY_REALTIME_QUOTA=2)
def test_the_quota_claim_and_the_audit_insert_are_one_statement(user, gateway):
    # The first mint of a window creates the counter row: three statements then.
    mint_client_secret(user=user, kind="realtime")
    with CaptureQueriesContext(connection) as queries:
        issued = mint_client_secret(user=user, kind="realtime", source=Source.TEMPLATE)
    writes = _writes(queries)
    assert len(writes) == 2
    assert writes[0].startswith(f'WITH claim AS (UPDATE "{QUOTA_TABLE}" SET "used" = ')
    assert f'INSERT INTO "{TABLE}"' in writes[0]
    assert writes[1].startswith(f'UPDATE "{TABLE}" SET "completed_at" = ')
    assert QuotaCounter.objects.get(user=user).used == 2
    stored = ClientSecretIssuance.objects.get(pk=issued.issuance.pk)
    assert stored.outcome == Outcome.ISSUED
    assert stored.source == Source.TEMPLATE
    assert stored.created_at.tzinfo is not None

    # At the limit: nothing written by the fused statement, a rejected row after it.
    with pytest.raises(Exception, match="quota"):
        mint_client_secret(user=user, kind="realtime")
    assert QuotaCounter.objects.get(user=user).used == 2
    assert ClientSecretIssuance.objects.filter(outcome=Outcome.REJECTED).count() == 1
    assert len(gateway.calls) == 2


@needs_postgresql
@pytest.mark.django_db(transaction=True)
def test_the_fused_statement_stores_what_the_orm_stores(user):
    start = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    end = start + dt.timedelta(hours=1)

    def claim_and_insert(issuance):
        return statements.claim_quota_and_insert_issuance(
            issuance, user.pk, start, end, 1, "default"
        )

    fast, orm = _row(user=user), _row(user=user)
    # No counter row for the window: nothing is written.
    assert claim_and_insert(fast) is False
    assert fast.pk is None and not ClientSecretIssuance.objects.exists()
    QuotaCounter.objects.create(user=user, window_start=start, window_end=end, used=0)
    assert claim_and_insert(fast) is True
    orm.save()
    assert fast.pk is not None and not fast._state.adding
    stored_fast = ClientSecretIssuance.objects.get(pk=fast.pk)
    stored_orm = ClientSecretIssuance.objects.get(pk=orm.pk)
    assert _comparable(stored_fast) == _comparable(stored_orm)
    assert abs(stored_fast.created_at - stored_orm.created_at) < dt.timedelta(minutes=1)
    # At the limit: neither the claim nor the row.
    late = _row(user=user)
    assert claim_and_insert(late) is False
    assert late.pk is None
    assert ClientSecretIssuance.objects.count() == 2
    assert QuotaCounter.objects.get(user=user).used == 1


@needs_postgresql
@pytest.mark.django_db(transaction=True)
@override_settings(GATEWAY_REALTIME_QUOTA=5)
def test_a_failed_fused_statement_writes_nothing_and_fails_closed(user, gateway):
    from django.db import OperationalError

    from gateway_realtime.exceptions import LimitsUnavailable

    mint_client_secret(user=user, kind="realtime")

    def fused_fails(execute, sql, params, many, context):
        if sql.startswith("WITH claim AS"):
            raise OperationalError("server closed the connection unexpectedly")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(fused_fails), pytest.raises(LimitsUnavailable):
        mint_client_secret(user=user, kind="realtime")
    assert QuotaCounter.objects.get(user=user).used == 1
    assert ClientSecretIssuance.objects.count() == 1
    assert len(gateway.calls) == 1


@needs_postgresql
@pytest.mark.django_db(transaction=True)
@override_settings(GATEWAY_REALTIME_QUOTA=5)
def test_inside_a_callers_transaction_the_writes_stay_apart(user, gateway):
    from django.db import transaction

    mint_client_secret(user=user, kind="realtime")
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        mint_client_secret(user=user, kind="realtime")
    writes = [w for w in _writes(queries) if not w.startswith(("SAVEPOINT", "RELEASE"))]
    assert not any(w.startswith("WITH") for w in writes)
    assert QuotaCounter.objects.get(user=user).used == 2
    assert ClientSecretIssuance.objects.count() == 2


@needs_postgresql
@pytest.mark.django_db(transaction=True)
@override_settings(GATEWAY_REALTIME_QUOTA=5)
def test_the_fused_statement_works_with_server_side_binding(user, gateway):
    # OPTIONS={"server_side_binding": True}: the values travel as typed
    # parameters, not literals, and PostgreSQL must still accept them.
    from django.db.backends.postgresql.base import ServerBindingCursor

    mint_client_secret(user=user, kind="realtime")
    connection.ensure_connection()
    raw = connection.connection
    previous = raw.cursor_factory
    raw.cursor_factory = ServerBindingCursor
    try:
        with CaptureQueriesContext(connection) as queries:
            issued = mint_client_secret(user=user, kind="realtime")
    finally:
        raw.cursor_factory = previous
    assert _writes(queries)[0].startswith("WITH claim AS")
    stored = ClientSecretIssuance.objects.get(pk=issued.issuance.pk)
    assert stored.outcome == Outcome.ISSUED
    assert QuotaCounter.objects.get(user=user).used == 2
