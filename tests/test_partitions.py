"""Monthly partitions of the audit table (PostgreSQL): the recipe, made ahead, dropped whole.

The recipe runs on a table of its own made like the audit table, so that the
test database's real table is left as the migration made it.
"""

from __future__ import annotations

import datetime as dt
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection

from gateway_realtime import partitions
from gateway_realtime.models import ClientSecretIssuance

PROBE = "gwrt_partition_probe"
AUDIT = ClientSecretIssuance._meta.db_table

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def probe() -> Any:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (GATEWAY_REALTIME_TEST_SERVICES=1): SQLite in memory")
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE TABLE "{PROBE}" (LIKE "{AUDIT}" INCLUDING ALL)')
        cursor.execute(partitions.partitioning_sql(PROBE))
    yield PROBE
    with connection.cursor() as cursor:
        cursor.execute(f'DROP TABLE IF EXISTS "{PROBE}" CASCADE')


def insert(table: str, created_at: dt.datetime) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            f'INSERT INTO "{table}" (created_at, source, auth_method, outcome, error_type, '
            "error_message, generation_id, token_fingerprint, token_hint, username, "
            "user_agent, kind, model) VALUES (%s, 'endpoint', '', 'issued', '', '', '', '', "
            "'', 'alice', '', 'realtime', 'openai/gpt-realtime-2') RETURNING id",
            [created_at],
        )
        return int(cursor.fetchone()[0])


def names(table: str) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(%s) ORDER BY 1",
            [table],
        )
        return [row[0] for row in cursor.fetchall()]


def at(year: int, month: int, day: int = 1) -> dt.datetime:
    return dt.datetime(year, month, day, tzinfo=dt.UTC)


def test_the_recipe_makes_a_partitioned_table_with_the_models_columns(probe: str) -> None:
    assert partitions.is_partitioned(probe)
    assert not partitions.is_partitioned(AUDIT)
    with connection.cursor() as cursor:
        columns = {c.name for c in connection.introspection.get_table_description(cursor, AUDIT)}
        probed = {c.name for c in connection.introspection.get_table_description(cursor, probe)}
    assert probed == columns


def test_partitions_are_made_ahead_once_and_rows_land_in_their_month(probe: str) -> None:
    made = partitions.create_month_partitions(probe, dt.date(2026, 11, 15), 3)
    assert made == [f"{probe}_y2026m11", f"{probe}_y2026m12", f"{probe}_y2027m01"]
    assert partitions.create_month_partitions(probe, dt.date(2026, 12, 1), 2) == []
    ids = [insert(probe, at(2026, 11, 30)), insert(probe, at(2026, 12, 1))]
    assert ids[1] > ids[0]  # one sequence across partitions
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT count(*) FROM "{probe}_y2026m12"')
        assert cursor.fetchone()[0] == 1
    # A month without a partition refuses the row: make them ahead.
    from django.db import DataError, IntegrityError, OperationalError

    with pytest.raises((DataError, IntegrityError, OperationalError)):
        insert(probe, at(2027, 3, 2))


def test_only_whole_months_older_than_the_cutoff_are_dropped(probe: str) -> None:
    partitions.create_month_partitions(probe, dt.date(2026, 8, 1), 5)
    for month in (8, 9, 10, 11, 12):
        insert(probe, at(2026, month, 10))
    dropped = partitions.drop_expired_partitions(probe, at(2026, 10, 15))
    assert dropped == [f"{probe}_y2026m08", f"{probe}_y2026m09"]
    # October ends after the cutoff: kept whole, with its row older than the cutoff.
    assert names(probe) == [f"{probe}_y2026m10", f"{probe}_y2026m11", f"{probe}_y2026m12"]
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT count(*) FROM "{probe}"')
        assert cursor.fetchone()[0] == 3


def test_the_prune_command_drops_and_creates_partitions_of_a_partitioned_audit_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (GATEWAY_REALTIME_TEST_SERVICES=1): SQLite in memory")
    calls: list[Any] = []
    monkeypatch.setattr(partitions, "is_partitioned", lambda table, using: table == AUDIT)
    monkeypatch.setattr(
        partitions,
        "drop_expired_partitions",
        lambda table, cutoff, using: calls.append(("drop", table, cutoff)) or [f"{table}_old"],
    )
    monkeypatch.setattr(
        partitions,
        "create_month_partitions",
        lambda table, first, months, using: calls.append(("create", table, months)) or [],
    )
    out = StringIO()
    call_command("gateway_realtime_prune", "--days", "30", stdout=out)
    assert [call[0] for call in calls] == ["drop", "create"]
    assert calls[1] == ("create", AUDIT, 3)
    assert f"Dropped 1 monthly partitions of {AUDIT} ({AUDIT}_old)" in out.getvalue()


def test_an_ordinary_table_is_pruned_row_by_row() -> None:
    assert not partitions.is_partitioned(AUDIT)
    out = StringIO()
    call_command("gateway_realtime_prune", "--days", "30", stdout=out)
    assert "partitions" not in out.getvalue()
