"""A month of audit history, inserted by the database itself in one statement.

Rows are generated in SQL (``generate_series`` on PostgreSQL, a recursive CTE
on SQLite) so a million of them take seconds, not the minutes ``bulk_create``
would. Columns this module does not know (added by later migrations) get
their field's constant default, or NULL.
"""

from __future__ import annotations

from typing import Any

from django.db import connections, models

from gateway_realtime.models import ClientSecretIssuance

SPREAD_SECONDS = 30 * 24 * 3600


def _expressions(vendor: str, count: int, user_ids: list[int]) -> dict[str, str]:
    """SQL for each known column, in terms of ``g`` (1..count)."""
    step = SPREAD_SECONDS / count
    users = ",".join(str(pk) for pk in user_ids)
    if vendor == "postgresql":
        created = f"now() - g * interval '{step:.6f} seconds'"
        completed = f"now() - g * interval '{step:.6f} seconds' + interval '0.2 seconds'"
        expires = f"now() - g * interval '{step:.6f} seconds' + interval '600 seconds'"
        # Unique per row and cheap; md5() would double the time of the load.
        fingerprint = "repeat(lpad(to_hex(g), 8, '0'), 8)"
        user = f"(ARRAY[{users}])[1 + g % {max(len(user_ids), 1)}]"
        hint = "'vcst_' || lpad(to_hex(g % 256), 2, '0') || '…' || lpad(to_hex(g % 65536), 4, '0')"
        username = "'bench' || (g % 1000)::text"
    else:
        created = f"strftime('%Y-%m-%d %H:%M:%f', 'now', '-' || (g * {step:.6f}) || ' seconds')"
        completed = created
        expires = created
        fingerprint = "lower(hex(randomblob(32)))"
        user = f"json_extract('[{users}]', '$[' || (g % {max(len(user_ids), 1)}) || ']')"
        hint = "'vcst_' || lower(hex(randomblob(1))) || '…' || lower(hex(randomblob(2)))"
        username = "'bench' || (g % 1000)"
    if not user_ids:
        user = "NULL"
    # Mostly issued, a few failures, like a healthy site.
    failed = "(g % 50 = 0)"
    return {
        "created_at": created,
        "completed_at": completed,
        "user_id": user,
        "username": username,
        "ip_address": "'127.0.0.1'",
        "user_agent": "'Mozilla/5.0 (bench)'",
        "kind": "'realtime'",
        "model": "'openai/gpt-realtime-2'",
        "source": "'endpoint'",
        "requested_lifetime": "600",
        "effective_lifetime": "600",
        "auth_method": "'api-key'",
        "outcome": f"CASE WHEN {failed} THEN 'failed' ELSE 'issued' END",
        "error_type": f"CASE WHEN {failed} THEN 'rate_limit_exceeded' ELSE '' END",
        "error_message": "''",
        "upstream_status": f"CASE WHEN {failed} THEN 429 ELSE 200 END",
        "generation_id": "''",
        "latency_ms": "3",
        "expires_at": f"CASE WHEN {failed} THEN NULL ELSE {expires} END",
        "token_fingerprint": f"CASE WHEN {failed} THEN '' ELSE {fingerprint} END",
        "token_hint": f"CASE WHEN {failed} THEN '' ELSE {hint} END",
    }


def bulk_insert(count: int, user_ids: list[int], using: str = "default") -> None:
    """Insert ``count`` rows spread over the last 30 days across ``user_ids``."""
    connection = connections[using]
    vendor = connection.vendor
    known = _expressions(vendor, count, user_ids)
    columns: list[str] = []
    values: list[str] = []
    params: list[Any] = []
    for field in ClientSecretIssuance._meta.concrete_fields:
        if field.primary_key:
            continue
        column = field.column
        if column in known:
            values.append(known[column])
        elif field.has_default() and not callable(field.default):
            values.append("%s")
            params.append(field.get_db_prep_save(field.default, connection))
        elif field.null:
            continue
        elif isinstance(field, models.CharField | models.TextField):
            values.append("''")
        else:
            values.append("0")
        columns.append(connection.ops.quote_name(column))
    table = connection.ops.quote_name(ClientSecretIssuance._meta.db_table)
    select = ", ".join(values)
    if vendor == "postgresql":
        sql = (
            f"INSERT INTO {table} ({', '.join(columns)}) "
            f"SELECT {select} FROM generate_series(1, {int(count)}) AS g"
        )
    else:
        sql = (
            f"INSERT INTO {table} ({', '.join(columns)}) "
            f"WITH RECURSIVE seq(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM seq "
            f"WHERE g < {int(count)}) SELECT {select} FROM seq"
        )
    with connection.cursor() as cursor:
        # Like any bulk load: drop the secondary indexes, insert, build them again.
        indexes = _secondary_indexes(cursor, vendor)
        for name, _ in indexes:
            cursor.execute(f"DROP INDEX {connection.ops.quote_name(name)}")
        cursor.execute(sql, params or None)
        for _, create in indexes:
            cursor.execute(create)
    # Settle the database as it would be after a month of traffic, so the
    # measurement is not disturbed by the load itself.
    with connection.cursor() as cursor:
        if vendor == "postgresql":
            cursor.execute(f"VACUUM ANALYZE {table}")
            cursor.execute("CHECKPOINT")
        else:
            cursor.execute(f"ANALYZE {table}")
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _secondary_indexes(cursor: Any, vendor: str) -> list[tuple[str, str]]:
    """``(name, CREATE INDEX statement)`` of the audit table's non-unique indexes."""
    table = ClientSecretIssuance._meta.db_table
    if vendor == "postgresql":
        cursor.execute(
            "SELECT i.relname, pg_get_indexdef(x.indexrelid) FROM pg_index x "
            "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid "
            "WHERE t.relname = %s AND NOT x.indisunique AND NOT x.indisprimary",
            [table],
        )
    else:
        cursor.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = %s "
            "AND sql IS NOT NULL AND sql NOT LIKE 'CREATE UNIQUE%%'",
            [table],
        )
    return [(name, create) for name, create in cursor.fetchall()]
