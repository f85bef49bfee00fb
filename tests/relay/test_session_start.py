"""The statements of a relayed session's start, pinned like a mint's (tests/test_slow_call.py).

A start that passes every limit writes its row first and counts the live
rows after (so two processes starting at once never both pass the cap, see
``relay.sessions``): the row must be committed before the count, so the
start is a few single statements in autocommit, never one transaction.
What is pinned is that there is nothing more: no transaction of its own, no
re-read of the row, no second look at the quota.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection, transaction
from django.db.models.signals import pre_save
from django.test.utils import CaptureQueriesContext

from gateway_realtime.limits import Policy
from gateway_realtime.models import CloseSide, QuotaCounter, RelaySession
from gateway_realtime.relay import ledger, sessions

pytestmark = pytest.mark.django_db(transaction=True)

# SQLite logs its BEGIN and COMMIT (and savepoints) as queries; PostgreSQL's are not.
CONTROL = {"BEGIN", "COMMIT", "SAVEPOINT", "RELEASE"}


def policy(**changes: Any) -> Policy:
    base = {
        "default_model": "openai/gpt-realtime-2",
        "allowed_models": ("openai/gpt-realtime-2",),
        "max_lifetime": 600,
        "quota": 10,
        "quota_period": 3600,
        "rate": None,
        "max_sessions": 2,
        "budget": None,
    }
    return Policy(**{**base, **changes})


def start(user: Any, limits: Policy) -> tuple[sessions.Session, list[str], list[bool]]:
    """Start a session; the statements it ran and, per row saved, whether in a transaction."""
    in_transaction: list[bool] = []

    def watch(sender: Any, instance: RelaySession, **kwargs: Any) -> None:
        in_transaction.append(transaction.get_connection().in_atomic_block)

    pre_save.connect(watch, sender=RelaySession)
    try:
        with CaptureQueriesContext(connection) as queries:
            session = sessions.start_session(user, "realtime", "openai/gpt-realtime-2", limits)
    finally:
        pre_save.disconnect(watch, sender=RelaySession)
    statements = [q["sql"].split()[0].upper() for q in queries.captured_queries]
    return session, statements, in_transaction


def end(session: sessions.Session) -> None:
    sessions.end_session(session, 1000, "", CloseSide.BROWSER)


def test_a_start_with_a_quota_and_a_cap_is_three_statements_outside_any_transaction(
    user: Any,
) -> None:
    limits = policy()
    end(sessions.start_session(user, "realtime", "openai/gpt-realtime-2", limits))  # quota row
    session, statements, in_transaction = start(user, limits)
    # The row, the live count, the quota claim: each commits on its own.
    assert [s for s in statements if s not in CONTROL] == ["INSERT", "SELECT", "UPDATE"]
    assert "BEGIN" not in statements
    assert in_transaction == [False]
    assert session.claim is not None
    assert QuotaCounter.objects.get(user=user).used == 2
    end(session)


def test_a_budget_adds_one_read_of_the_users_usage(user: Any) -> None:
    limits = policy(budget={"audio_seconds": 600})
    end(sessions.start_session(user, "realtime", "openai/gpt-realtime-2", limits))
    session, statements, _ = start(user, limits)
    assert [s for s in statements if s not in CONTROL] == ["SELECT", "INSERT", "SELECT", "UPDATE"]
    end(session)


def test_without_a_quota_or_a_cap_a_start_is_the_row_alone(user: Any) -> None:
    session, statements, _ = start(user, policy(quota=None, max_sessions=None))
    assert [s for s in statements if s not in CONTROL] == ["INSERT"]
    assert session.claim is None
    end(session)


def test_the_rate_is_taken_from_the_cache_not_the_database(user: Any) -> None:
    session, statements, _ = start(user, policy(quota=None, max_sessions=None, rate="100/m"))
    assert [s for s in statements if s not in CONTROL] == ["INSERT"]
    end(session)


def test_a_refusal_at_the_cap_deletes_its_row_and_claims_nothing(user: Any) -> None:
    limits = policy(max_sessions=1)
    first = sessions.start_session(user, "realtime", "openai/gpt-realtime-2", limits)
    with CaptureQueriesContext(connection) as queries, pytest.raises(sessions.Refused) as refused:
        sessions.start_session(user, "realtime", "openai/gpt-realtime-2", limits)
    assert (refused.value.code, refused.value.reason) == sessions.TOO_MANY_SESSIONS
    statements = [q["sql"].split()[0].upper() for q in queries.captured_queries]
    # The row and the count, the refusal's folded row (a lookup and an
    # insert), the usage ledger's four counters (the user's and the site's
    # usage and failure rows: an update, and an insert for the day's first),
    # then the row deleted; the quota is never asked.
    usage_ledger = ["UPDATE", "INSERT"] * 4
    assert [s for s in statements if s not in CONTROL] == [
        "INSERT",
        "SELECT",
        "SELECT",
        "INSERT",
        *usage_ledger,
        "DELETE",
    ]
    assert QuotaCounter.objects.get(user=user).used == 1
    assert ledger.Usage() == ledger.read_usage(user.pk, limits)
    end(first)
