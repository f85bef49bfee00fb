"""The writes every mint makes, as SQL built once instead of on every call.

A mint writes three times: the quota claim (a conditional ``UPDATE``), the
audit row before the Gateway call (``INSERT``) and after it (``UPDATE``).
Django's ORM compiles each of these afresh on every call, which on a small
server costs more CPU than the database needs to run them (about 1 ms a
statement on a 2-core VM, against 0.2 ms for the same SQL through the
cursor; see docs/performance.md). So on PostgreSQL and SQLite, the two
backends this app is tested on, the statements are built once per database
alias and model and run through the connection's cursor, with every value
prepared by its model field (``pre_save`` and ``get_db_prep_save``), as the
ORM itself would send it.

On PostgreSQL, outside a transaction the caller holds, the quota claim and
the audit ``INSERT`` go out as one statement (a data-modifying ``WITH``):
one round trip and one commit fewer per mint, and the two writes happen
together or not at all.

Everything else goes through the ORM: other database backends, and any
model with ``pre_save`` or ``post_save`` receivers, so that a site's signal
handlers still run for every row.

The SQL holds only quoted table and column names from the models' own
metadata; every value is a query parameter.

Each function returns ``False`` when it did not handle the write, and the
caller then makes it with the ORM. Database errors propagate as Django's
``django.db.Error`` subclasses, as they would from the ORM.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from django.db import DatabaseError, connections
from django.db.models import Model, signals

from gateway_realtime.models import ClientSecretIssuance, QuotaCounter

SUPPORTED_VENDORS = frozenset({"postgresql", "sqlite"})

_sql_cache: dict[tuple[Any, ...], str] = {}


def _usable(connection: Any, model: type[Model]) -> bool:
    return (
        connection.vendor in SUPPORTED_VENDORS
        and connection.features.can_return_columns_from_insert
        and not signals.pre_save.has_listeners(model)
        and not signals.post_save.has_listeners(model)
    )


def _quote(connection: Any, name: Any) -> str:
    return str(connection.ops.quote_name(name))


def insert_issuance(issuance: ClientSecretIssuance, using: str) -> bool:
    """``INSERT`` a new audit row and set its primary key."""
    connection = connections[using]
    if issuance.pk is not None or not _usable(connection, ClientSecretIssuance):
        return False
    key = ("insert", using, connection.vendor)
    sql = _sql(key, lambda: _insert_sql(connection, after_claim=False))
    return _insert(issuance, using, sql, [])


def _sql(key: tuple[Any, ...], build: Callable[[], str]) -> str:
    """The statement cached under ``key``, built the first time it is asked for."""
    sql = _sql_cache.get(key)
    if sql is None:
        sql = _sql_cache[key] = build()
    return sql


def _insert_fields() -> list[Any]:
    return [f for f in ClientSecretIssuance._meta.concrete_fields if not f.primary_key]


def _insert_sql(connection: Any, *, after_claim: bool) -> str:
    """The audit row's ``INSERT``; ``after_claim``: only if the quota claim before it succeeds."""
    meta, fields = ClientSecretIssuance._meta, _insert_fields()
    insert = (
        f"INSERT INTO {_quote(connection, meta.db_table)} "
        f"({', '.join(_quote(connection, f.column) for f in fields)})"
    )
    returning = f"RETURNING {_quote(connection, meta.pk.column)}"
    if not after_claim:
        return f"{insert} VALUES ({', '.join(['%s'] * len(fields))}) {returning}"
    values = ", ".join(_typed_placeholder(connection, f) for f in fields)
    claim = f"WITH claim AS ({_quota_update_sql(connection)} RETURNING 1)"
    return f"{claim} {insert} SELECT {values} FROM claim {returning}"  # noqa: S608


def _insert(issuance: ClientSecretIssuance, using: str, sql: str, params: list[Any]) -> bool:
    """Run an ``INSERT ... RETURNING`` pk with the row's values after ``params``."""
    connection = connections[using]
    params += [f.get_db_prep_save(f.pre_save(issuance, True), connection) for f in _insert_fields()]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return False
    issuance.pk = row[0]
    issuance._state.adding = False
    issuance._state.db = using
    return True


def claim_quota_and_insert_issuance(
    issuance: ClientSecretIssuance,
    user_id: int,
    window_start: dt.datetime,
    window_end: dt.datetime,
    limit: int,
    using: str,
) -> bool | None:
    """PostgreSQL only: the quota claim and the audit ``INSERT`` as one statement.

    A data-modifying ``WITH`` adds one to the (user, window) counter if it is
    below ``limit`` and inserts the audit row only if it did, so a mint's
    first two writes take one round trip and one commit instead of two, and
    either both happen or neither does.

    ``True``: claimed and inserted (``issuance.pk`` is set); ``False``:
    nothing written (no counter row for this window yet, or it is at the
    limit); ``None``: not handled here (another database, a transaction the
    caller holds, signal receivers, or a row that already has a key).
    """
    connection = connections[using]
    if (
        connection.vendor != "postgresql"
        or connection.in_atomic_block
        or issuance.pk is not None
        or not _usable(connection, ClientSecretIssuance)
        or not _usable(connection, QuotaCounter)
    ):
        return None
    key = ("claim+insert", using, connection.vendor)
    sql = _sql(key, lambda: _insert_sql(connection, after_claim=True))
    params = _quota_params(connection, user_id, window_start, window_end, limit)
    return _insert(issuance, using, sql, params)


def _typed_placeholder(connection: Any, field: Any) -> str:
    # In a SELECT list, PostgreSQL takes an untyped value for text; other
    # columns (inet, timestamptz, integers) get theirs spelled out.
    if field.get_internal_type() in {"CharField", "TextField"}:
        return "%s"
    return f"%s::{field.cast_db_type(connection)}"


def update_issuance(issuance: ClientSecretIssuance, field_names: list[str], using: str) -> bool:
    """``UPDATE`` the named fields of a saved audit row.

    Raises ``DatabaseError`` if the row is gone, like ``save(update_fields=...)``.
    """
    connection = connections[using]
    if issuance.pk is None or not _usable(connection, ClientSecretIssuance):
        return False
    meta = ClientSecretIssuance._meta
    fields: list[Any] = [meta.get_field(name) for name in field_names]
    key = ("update", using, connection.vendor, tuple(field_names))
    sql = _sql(
        key,
        lambda: (
            f"UPDATE {_quote(connection, meta.db_table)} SET "  # noqa: S608
            + ", ".join(f"{_quote(connection, f.column)} = %s" for f in fields)
            + f" WHERE {_quote(connection, meta.pk.column)} = %s"
        ),
    )
    params = [f.get_db_prep_save(f.pre_save(issuance, False), connection) for f in fields]
    params.append(meta.pk.get_db_prep_value(issuance.pk, connection))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        updated = cursor.rowcount
    if updated != 1:
        raise DatabaseError("Save with update_fields did not affect any rows.")
    return True


def increment_quota(
    user_id: int, window_start: dt.datetime, window_end: dt.datetime, limit: int, using: str
) -> bool | None:
    """Add one to the (user, window) counter if it is below ``limit``.

    ``True``: claimed; ``False``: no row, or the row is at the limit;
    ``None``: not handled here (use the ORM).
    """
    connection = connections[using]
    if not _usable(connection, QuotaCounter):
        return None
    sql = _sql(("quota", using, connection.vendor), lambda: _quota_update_sql(connection))
    params = _quota_params(connection, user_id, window_start, window_end, limit)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return bool(cursor.rowcount)


def _quota_update_sql(connection: Any) -> str:
    meta = QuotaCounter._meta
    column = {f.name: _quote(connection, f.column) for f in meta.concrete_fields}
    return (
        f"UPDATE {_quote(connection, meta.db_table)} "  # noqa: S608
        f"SET {column['used']} = {column['used']} + 1 "
        f"WHERE {column['user']} = %s AND {column['window_start']} = %s "
        f"AND {column['window_end']} = %s AND {column['used']} < %s"
    )


def _quota_params(
    connection: Any, user_id: int, window_start: dt.datetime, window_end: dt.datetime, limit: int
) -> list[Any]:
    meta = QuotaCounter._meta
    return [
        meta.get_field("user").get_db_prep_value(user_id, connection),
        meta.get_field("window_start").get_db_prep_value(window_start, connection),
        meta.get_field("window_end").get_db_prep_value(window_end, connection),
        limit,
    ]
