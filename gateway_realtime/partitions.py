"""Monthly partitions of an audit table on PostgreSQL (docs/scaling.md).

A site with tens of millions of mints a day partitions
``gateway_realtime_clientsecretissuance`` by month on ``created_at`` with the
recipe in docs/scaling.md. Then retention drops whole months instead of
deleting rows, and next months' partitions must exist before their first
mint. ``manage.py gateway_realtime_prune`` does both when it finds the table
partitioned (``drop_expired_partitions``, ``create_month_partitions``); on an
ordinary table nothing here is used.

Partitions are named ``<table>_yYYYYmMM`` and cover one UTC calendar month.
"""

from __future__ import annotations

import datetime as dt
import re

from django.db import connections

_BOUND = re.compile(r"TO \('([^']+)'\)")


def partitioning_sql(table: str = "gateway_realtime_clientsecretissuance") -> str:
    """The SQL that turns the migration's *empty* audit table into one partitioned by month.

    Run it once, in a migration of the site's own (docs/scaling.md), then
    ``manage.py gateway_realtime_prune`` (or ``create_month_partitions``)
    before the first mint: a row whose month has no partition is refused.
    The same columns and defaults; the primary key ``(id, created_at)``,
    since PostgreSQL's unique keys on a partitioned table must hold the
    partition key; ``id`` from a sequence of its own (identity columns are
    not supported on partitioned tables before PostgreSQL 17); the foreign
    key to the user and the model's indexes, made on every partition.
    """
    q = f'"{table}"'
    old = f'"{table}_unpartitioned"'
    sequence = f'"{table}_id_seq"'
    return f"""
ALTER TABLE {q} RENAME TO {old};
CREATE TABLE {q} (LIKE {old} INCLUDING DEFAULTS) PARTITION BY RANGE (created_at);
DROP TABLE {old};
CREATE SEQUENCE {sequence} OWNED BY {q}.id;
ALTER TABLE {q} ALTER COLUMN id SET DEFAULT nextval('{sequence}');
ALTER TABLE {q} ADD PRIMARY KEY (id, created_at);
ALTER TABLE {q} ADD CONSTRAINT "{table}_user_id_fk"
    FOREIGN KEY (user_id) REFERENCES auth_user (id) DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "{table}_user_created" ON {q} (user_id, created_at);
CREATE INDEX "{table}_outcome_created" ON {q} (outcome, created_at);
CREATE INDEX "{table}_token_fingerprint" ON {q} (token_fingerprint);
CREATE INDEX "{table}_created_at" ON {q} (created_at);
""".strip()


def is_partitioned(table: str, using: str = "default") -> bool:
    """Whether ``table`` is a partitioned table (PostgreSQL only; ``False`` elsewhere)."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(%s)", [table]
        )
        return cursor.fetchone() is not None


def month_start(day: dt.date) -> dt.date:
    return day.replace(day=1)


def next_month(month: dt.date) -> dt.date:
    return (month.replace(day=1) + dt.timedelta(days=32)).replace(day=1)


def partition_name(table: str, month: dt.date) -> str:
    return f"{table}_y{month:%Y}m{month:%m}"


def create_month_partitions(
    table: str, first: dt.date, months: int, using: str = "default"
) -> list[str]:
    """Create the partitions of ``months`` months from ``first``'s month that do not exist yet."""
    connection = connections[using]
    quote = connection.ops.quote_name
    created = []
    month = month_start(first)
    with connection.cursor() as cursor:
        for _ in range(months):
            name = partition_name(table, month)
            cursor.execute("SELECT to_regclass(%s)", [name])
            if cursor.fetchone()[0] is None:
                # Bounds are literals (no parameters in DDL), made from dates.
                cursor.execute(
                    f"CREATE TABLE {quote(name)} PARTITION OF {quote(table)} FOR VALUES "
                    f"FROM ('{month.isoformat()} 00:00+00') "
                    f"TO ('{next_month(month).isoformat()} 00:00+00')"
                )
                created.append(name)
            month = next_month(month)
    return created


def drop_expired_partitions(table: str, cutoff: dt.datetime, using: str = "default") -> list[str]:
    """Detach and drop every partition of ``table`` whose rows all precede ``cutoff``.

    A partition whose range ends after ``cutoff`` is kept whole (its older
    rows go with the month, one retention period later at most a month
    late); the prune command deletes such rows one by one only on an
    ordinary table.
    """
    connection = connections[using]
    quote = connection.ops.quote_name
    dropped = []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(%s)",
            [table],
        )
        for name, bound in cursor.fetchall():
            match = _BOUND.search(bound or "")
            if match is None:
                continue  # the DEFAULT partition
            end = dt.datetime.fromisoformat(match.group(1))
            if end.tzinfo is None:
                end = end.replace(tzinfo=dt.UTC)
            if end <= cutoff:
                cursor.execute(f"ALTER TABLE {quote(table)} DETACH PARTITION {quote(name)}")
                cursor.execute(f"DROP TABLE {quote(name)}")
                dropped.append(name)
    return sorted(dropped)


__all__ = [
    "create_month_partitions",
    "drop_expired_partitions",
    "is_partitioned",
    "month_start",
    "next_month",
    "partition_name",
    "partitioning_sql",
]
