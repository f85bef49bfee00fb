"""``gateway_realtime.models``: the audit row keeps a digest and a hint, never a token."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from gateway_realtime.models import (
    ClientSecretIssuance,
    Outcome,
    Source,
    token_fingerprint,
    token_hint,
)


def test_fingerprint_is_sha256_hex() -> None:
    token = "vcst_abcdefghijklmnopqrstuvwxyz"
    assert token_fingerprint(token) == hashlib.sha256(token.encode()).hexdigest()
    assert len(token_fingerprint(token)) == 64
    assert token_fingerprint(token) != token_fingerprint(token + "x")


def test_hint_of_a_long_token() -> None:
    token = "vcst_0123456789abcdefghijklmnopqrstuvwxyz"
    hint = token_hint(token)
    assert hint == "vcst_01…wxyz"
    assert token not in hint
    assert len(hint) <= ClientSecretIssuance._meta.get_field("token_hint").max_length


@pytest.mark.parametrize("token", ["vcst_short", "vcst_0123456789a"])
def test_hint_of_a_short_token_reveals_little(token: str) -> None:
    hint = token_hint(token)
    assert hint == token[:4] + "…"
    assert hint.rstrip("…") != token


@pytest.mark.django_db
def test_str(user: Any) -> None:
    row = ClientSecretIssuance.objects.create(kind="speech", model="a/b", username="alice")
    assert str(row) == "speech a/b for alice: pending"
    row = ClientSecretIssuance.objects.create(kind="speech", model="a/b", user=user)
    assert str(row) == f"speech a/b for user {user.pk}: pending"
    row = ClientSecretIssuance.objects.create(kind="realtime", model="a/b", outcome=Outcome.FAILED)
    assert str(row) == "realtime a/b for anonymous: failed"


@pytest.mark.django_db
def test_defaults_and_ordering() -> None:
    first = ClientSecretIssuance.objects.create(kind="realtime", model="a/b")
    second = ClientSecretIssuance.objects.create(kind="realtime", model="a/b")
    assert first.outcome == Outcome.PENDING
    assert first.source == Source.ENDPOINT
    assert first.created_at is not None
    assert list(ClientSecretIssuance.objects.all()) == [second, first]


@pytest.mark.django_db
def test_user_deletion_keeps_the_row(user: Any) -> None:
    row = ClientSecretIssuance.objects.create(
        kind="realtime", model="a/b", user=user, username="alice"
    )
    user.delete()
    row.refresh_from_db()
    assert row.user is None
    assert row.username == "alice"


def test_indexes_for_the_queries_the_app_runs() -> None:
    indexed = {tuple(index.fields) for index in ClientSecretIssuance._meta.indexes}
    assert ("user", "created_at") in indexed
    assert ("outcome", "created_at") in indexed
    assert ("token_fingerprint",) in indexed
    assert ClientSecretIssuance._meta.get_field("created_at").db_index


def test_no_field_can_hold_a_secret_by_name() -> None:
    names = {field.name for field in ClientSecretIssuance._meta.get_fields()}
    assert "token" not in names
    assert not {n for n in names if "credential" in n or "api_key" in n or "secret" in n}


def test_verbose_names() -> None:
    meta = ClientSecretIssuance._meta
    assert str(meta.verbose_name) == "client secret issuance"
    assert str(meta.verbose_name_plural) == "client secret issuances"
    assert str(meta.get_field("upstream_status").verbose_name) == "Gateway status"
