"""``python -m bench.scale [--rows N] [--users N] [--days N]``: the audit trail at scale.

Fills two PostgreSQL databases with the same generated audit rows
(``ClientSecretIssuance``, ``--rows`` of them, 20 million by default, over
``--days`` days from ``--users`` users): one with the table as the migration
makes it, one with the table partitioned by month as docs/scaling.md's
recipe makes it (``gateway_realtime.partitions``). On each it measures what a site at that
scale runs: the admin changelist (as a logged-in superuser, through the
test client), its filters and a token search, the dashboard, a ledger
rebuild of 30 days, a mint's two writes, and the retention (the prune
command, or dropping a month's partition). Every figure is printed with the
load average it was measured under; the last line is one JSON object.
Needs PostgreSQL on 127.0.0.1:5432 (``BENCH_DATABASE_URL`` to point
elsewhere); it creates and drops its own databases.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.procs import PG_URL, database_url, drop_database, log, recreate_database
from bench.stats import load_average

TABLE = "gateway_realtime_clientsecretissuance"

ROWS_SQL = f"""
INSERT INTO {TABLE} (
    created_at, completed_at, source, requested_lifetime, effective_lifetime, auth_method,
    outcome, error_type, error_message, upstream_status, generation_id, latency_ms,
    expires_at, token_fingerprint, token_hint, user_id, username, ip_address, user_agent,
    kind, model
)
SELECT t, t + interval '80 milliseconds', 'endpoint', 600, 600, 'api-key',
    CASE WHEN g %% 50 = 0 THEN 'failed' WHEN g %% 97 = 0 THEN 'rejected' ELSE 'issued' END,
    CASE WHEN g %% 50 = 0 THEN 'gateway_timeout' WHEN g %% 97 = 0 THEN 'quota_exceeded'
         ELSE '' END,
    CASE WHEN g %% 50 = 0 THEN 'The AI Gateway did not answer in time.' ELSE '' END,
    CASE WHEN g %% 50 = 0 OR g %% 97 = 0 THEN NULL ELSE 200 END,
    '', 80, t + interval '600 seconds',
    CASE WHEN g %% 50 = 0 OR g %% 97 = 0 THEN '' ELSE md5(g::text) || md5((-g)::text) END,
    CASE WHEN g %% 50 = 0 OR g %% 97 = 0 THEN ''
         ELSE 'vcst_' || substr(md5(g::text), 1, 2) || '…' || substr(md5(g::text), 5, 4) END,
    u, 'user' || u, ('10.' || (u %% 250) || '.' || ((u / 250) %% 250) || '.1')::inet,
    'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) '
        || 'Chrome/131.0.0.0 Safari/537.36',
    CASE g %% 10 WHEN 0 THEN 'transcription' WHEN 1 THEN 'speech' ELSE 'realtime' END,
    CASE g %% 10 WHEN 0 THEN 'openai/gpt-4o-transcribe' WHEN 1 THEN 'elevenlabs/eleven-v3'
         ELSE 'openai/gpt-realtime-2' END
FROM (
    SELECT g, %(start)s::timestamptz + (g * %(step)s) * interval '1 second' AS t,
           1 + (g::bigint * 7919) %% %(users)s AS u
    FROM generate_series(%(low)s, %(high)s) AS g
) AS generated
"""

USERS_SQL = """
INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email,
                       is_staff, is_active, date_joined)
SELECT '!', false, 'user' || u, '', '', '', false, true, now()
FROM generate_series(1, %(users)s) AS u
"""


def timed(action: Callable[[], Any], repeat: int = 3) -> float:
    """The median wall time of ``action`` in ms, after one unmeasured run."""
    action()
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        action()
        times.append((time.perf_counter() - began) * 1000)
    return round(statistics.median(times), 1)


def set_up(database: str) -> str:
    """A new PostgreSQL database named ``database`` for the bench site, and Django set up
    on it (``bench.scale_settings``, no Redis); returns its URL."""
    url = database_url(os.environ.get("BENCH_DATABASE_URL", PG_URL), database)
    reason = recreate_database(url)
    if reason:
        raise SystemExit(reason)
    os.environ["BENCH_DATABASE_URL"] = url
    os.environ.pop("BENCH_REDIS_URL", None)
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.scale_settings"
    import django

    django.setup()
    return url


def variant(name: str, rows: int, users: int, days: int, ledger_days: int) -> dict[str, Any]:
    """Build one database (``plain`` or ``partitioned``) and measure it; runs in a process of
    its own, since Django's settings are the process's."""
    url = set_up(f"gateway_realtime_{name}")
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from gateway_realtime import dashboard, usage
    from gateway_realtime.models import (
        ClientSecretIssuance,
        DailyUsage,
        Outcome,
        SiteDailyUsage,
        token_fingerprint,
    )

    out: dict[str, Any] = {"variant": name, "rows": rows, "users": users, "days": days}
    call_command("migrate", verbosity=0)
    now = timezone.now()
    start = now - dt.timedelta(days=days)
    with connection.cursor() as cursor:
        if name == "partitioned":
            from gateway_realtime.partitions import partitioning_sql

            cursor.execute(partitioning_sql(TABLE))
        cursor.execute(USERS_SQL, {"users": users})
    if name == "partitioned":
        from gateway_realtime.partitions import create_month_partitions

        create_month_partitions(TABLE, start.date(), days // 28 + 2)
    began = time.perf_counter()
    chunk = 1_000_000
    for low in range(1, rows + 1, chunk):
        high = min(rows, low + chunk - 1)
        with connection.cursor() as cursor:
            cursor.execute(
                ROWS_SQL,
                {"start": start, "step": days * 86400 / rows, "users": users, "low": low,
                 "high": high},
            )  # fmt: skip
        log(f"{name}: {high:,} of {rows:,} rows")
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {TABLE}")
    out["fill_s"] = round(time.perf_counter() - began, 1)

    with connection.cursor() as cursor:
        # The table itself, or its partitions: the tables that hold rows.
        cursor.execute(
            "SELECT relid::oid FROM pg_partition_tree(%s::regclass) WHERE isleaf "
            "UNION SELECT %s::regclass::oid WHERE NOT EXISTS "
            "(SELECT 1 FROM pg_partitioned_table WHERE partrelid = %s::regclass)",
            [TABLE, TABLE, TABLE],
        )
        leaves = [row[0] for row in cursor.fetchall()]
        cursor.execute(
            "SELECT sum(pg_relation_size(oid)), sum(pg_indexes_size(oid)) "
            "FROM unnest(%s::oid[]) AS oid",
            [leaves],
        )
        table_bytes, index_bytes = cursor.fetchone()
        # Each index, by its columns (a partitioned table has one per partition).
        cursor.execute(
            "SELECT substring(pg_get_indexdef(indexrelid) from '\\((.*)\\)'), "
            "sum(pg_relation_size(indexrelid)) FROM pg_index WHERE indrelid = ANY(%s::oid[]) "
            "GROUP BY 1",
            [leaves],
        )
        per_index = dict(cursor.fetchall())
    out["table_bytes"], out["index_bytes"] = int(table_bytes), int(index_bytes)
    out["row_bytes"] = round(table_bytes / rows)
    out["index_bytes_per_row"] = round(index_bytes / rows)
    out["indexes"] = {key: int(value) for key, value in per_index.items()}

    # A mint's two writes, on the full table: the pending row, then its completion.
    def mint_writes() -> None:
        row = ClientSecretIssuance.objects.create(
            user_id=1, username="user1", kind="realtime", model="openai/gpt-realtime-2",
            requested_lifetime=600,
        )  # fmt: skip
        row.outcome, row.completed_at, row.latency_ms = Outcome.ISSUED, timezone.now(), 80
        row.save(update_fields=["outcome", "completed_at", "latency_ms"])

    mint_writes()
    began = time.perf_counter()
    for _ in range(500):
        mint_writes()
    out["mint_writes_ms"] = round((time.perf_counter() - began) * 1000 / 500, 3)

    token = "vcst_scale_simulation_token_0001"
    ClientSecretIssuance.objects.create(
        user_id=2, username="user2", kind="realtime", model="openai/gpt-realtime-2",
        outcome=Outcome.ISSUED, token_fingerprint=token_fingerprint(token),
    )  # fmt: skip

    from django.contrib.auth import get_user_model

    staff = get_user_model().objects.create_superuser("staff", password=None)
    client = Client()
    client.force_login(staff)
    changelist = f"/admin/gateway_realtime/{ClientSecretIssuance._meta.model_name}/"

    def get(path: str) -> Callable[[], None]:
        def request() -> None:
            response = client.get(path)
            assert response.status_code == 200, (path, response.status_code)

        return request

    out["admin_changelist_ms"] = timed(get(changelist))
    out["admin_failed_filter_ms"] = timed(get(changelist + "?outcome__exact=failed"))
    out["admin_token_search_ms"] = timed(get(changelist + "?q=" + token))
    probe = min(4242, users)  # one user's history and dashboard page
    out["admin_user_history_ms"] = timed(get(changelist + f"?q=user{probe}"))

    today = now.astimezone(dt.UTC).date()
    began = time.perf_counter()
    usage.rebuild(today - dt.timedelta(days=ledger_days - 1), today)
    out[f"ledger_rebuild_{ledger_days}d_s"] = round(time.perf_counter() - began, 2)
    out["ledger_rows"] = DailyUsage.objects.count()
    out["site_ledger_rows"] = SiteDailyUsage.objects.count()
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {DailyUsage._meta.db_table}")
        cursor.execute(f"ANALYZE {SiteDailyUsage._meta.db_table}")

    # The dashboard: its default period (the last 30 days), the whole page,
    # then its parts; and what its charts would cost summed from the
    # per-user rows instead of the site's.
    since, until = today - dt.timedelta(days=dashboard.PeriodForm.DEFAULT_DAYS - 1), today
    out["dashboard_ms"] = timed(get("/admin/gateway_realtime/dashboard/"))
    out["dashboard_charts_ms"] = timed(
        lambda: (
            dashboard.per_day(since, until),
            dashboard.totals(since, until),
            dashboard.failures(since, until),
        )
    )
    out["dashboard_top_users_ms"] = timed(lambda: dashboard.top_users(since, until))
    out["charts_from_user_rows_ms"] = timed(
        lambda: list(
            dashboard._ledger(since, until).values("day").annotate(**dashboard._sums()).order_by()
        )
    )
    out["dashboard_user_page_ms"] = timed(get(f"/admin/gateway_realtime/dashboard/user/{probe}/"))

    def export_one_day() -> None:
        response = client.get(
            "/admin/gateway_realtime/dashboard/export.csv",
            {"since": today.isoformat(), "until": today.isoformat()},
        )
        assert response.status_code == 200
        body = b"".join(response.streaming_content)  # type: ignore[attr-defined]
        out["export_1d_lines"] = body.count(b"\n") - 1  # the header is not a row

    out["export_1d_ms"] = timed(export_one_day, repeat=1)

    # Retention: the oldest month goes.
    cutoff_days = days - 30
    began = time.perf_counter()
    if name == "partitioned":
        from gateway_realtime.partitions import drop_expired_partitions

        dropped = drop_expired_partitions(TABLE, now - dt.timedelta(days=cutoff_days))
        out["retention"] = f"dropped {len(dropped)} partitions"
    else:
        call_command("gateway_realtime_prune", days=cutoff_days, verbosity=0, stdout=sys.stderr)
        out["retention"] = "gateway_realtime_prune"
    out["retention_s"] = round(time.perf_counter() - began, 2)
    out["rows_left"] = ClientSecretIssuance.objects.count()
    out["load_average"] = load_average()
    connection.close()
    drop_database(url)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument(
        "--ledger-days",
        type=int,
        default=30,
        help="days the ledger is rebuilt for (30: the dashboard's default period)",
    )
    parser.add_argument("--variant", choices=["plain", "partitioned"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.variant:
        print(json.dumps(variant(args.variant, args.rows, args.users, args.days, args.ledger_days)))
        return 0
    results = {}
    for name in ("plain", "partitioned"):
        log(f"{name}: {args.rows:,} rows from {args.users:,} users over {args.days} days")
        done = subprocess.run(
            [sys.executable, "-m", "bench.scale", "--variant", name, "--rows", str(args.rows),
             "--users", str(args.users), "--days", str(args.days),
             "--ledger-days", str(args.ledger_days)],
            check=True, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    names = [key for key in results["plain"] if key not in ("variant", "indexes")]
    print(f"{'':28} {'plain':>22} {'partitioned':>22}")
    for key in names:
        print(f"{key:28} {results['plain'][key]!s:>22} {results['partitioned'][key]!s:>22}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
