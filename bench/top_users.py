"""``python -m bench.top_users [--users N] [--days N]``: the dashboard's top users at scale.

Fills a PostgreSQL database with a generated usage ledger (``DailyUsage``,
one row per user and day, and the site's rows as their sums) for
``--users`` users over ``--days`` days, twice: once with spend spread
evenly (every user 1 to 3 secrets a day) and once skewed as on most sites (the
same, plus a few heavy users: user ``u`` adds about 2,000/u secrets a
day, and a tenth of the users relay audio in proportion). On each it times
``dashboard.top_users`` for the whole period as the dashboard runs it (from
each day's biggest rows first, falling back to the grouped query when that
cannot prove its list) against the grouped query over every row, checks
that both list the same users, and prints the per-day query's plan (the
``(day, spend)`` index). Every figure is printed with the load average it
was measured under; the last line is one JSON object. Needs PostgreSQL on
127.0.0.1:5432 (``BENCH_DATABASE_URL`` to point elsewhere); it creates and
drops its own database.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

from bench.procs import drop_database, log
from bench.scale import USERS_SQL, set_up, timed
from bench.stats import load_average

LEDGER_SQL = """
INSERT INTO gateway_realtime_dailyusage (
    day, user_id, kind, model, issued, failed, rejected, relayed_sessions, relay_refused,
    relayed_seconds, audio_seconds_in, audio_seconds_out, input_tokens, output_tokens
)
SELECT %(day)s::date, u, 'realtime', 'openai/gpt-realtime-2',
    1 + floor(random() * 3)::int + CASE WHEN %(skewed)s THEN floor(2000.0 / u)::int ELSE 0 END,
    0, 0, 0, 0, 0,
    CASE WHEN %(skewed)s AND u %% 10 = 0 THEN random() * 60000.0 / u ELSE 0 END,
    CASE WHEN %(skewed)s AND u %% 10 = 0 THEN random() * 60000.0 / u ELSE 0 END,
    0, 0
FROM generate_series(1, %(users)s) AS u
"""

SITE_SQL = """
INSERT INTO gateway_realtime_sitedailyusage (
    day, kind, model, issued, failed, rejected, relayed_sessions, relay_refused,
    relayed_seconds, audio_seconds_in, audio_seconds_out, input_tokens, output_tokens
)
SELECT day, kind, model, sum(issued), 0, 0, 0, 0, 0, sum(audio_seconds_in),
       sum(audio_seconds_out), 0, 0
FROM gateway_realtime_dailyusage GROUP BY day, kind, model
"""


def measure(users: int, days: int) -> dict[str, Any]:
    url = set_up("gateway_realtime_top")
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from gateway_realtime import dashboard
    from gateway_realtime.models import DailyUsage

    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute(USERS_SQL, {"users": users})
    until = dt.date(2026, 11, 30)
    since = until - dt.timedelta(days=days - 1)
    out: dict[str, Any] = {"users": users, "days": days}
    for shape in ("even", "skewed"):
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE gateway_realtime_dailyusage, gateway_realtime_sitedailyusage")
            cursor.execute("SELECT setseed(0.5)")
            for n in range(days):
                day = since + dt.timedelta(days=n)
                params = {"day": day, "users": users, "skewed": shape == "skewed"}
                cursor.execute(LEDGER_SQL, params)
            cursor.execute(SITE_SQL)
            cursor.execute("ANALYZE gateway_realtime_dailyusage")
            cursor.execute("ANALYZE gateway_realtime_sitedailyusage")
        log(f"{shape}: {users * days:,} ledger rows")
        with CaptureQueriesContext(connection) as captured:
            searched = [s.user_id for s in dashboard.top_users(since, until)]
        ranked = [q["sql"] for q in captured.captured_queries if "GROUP BY" in q["sql"]]
        out[f"{shape}_queries"] = len(captured.captured_queries)
        out[f"{shape}_decided_by"] = (
            "each day's top rows" if '"user_id" IN (' in ranked[-1] else "the grouped query"
        )
        grouped = [r["user_id"] for r in dashboard._ranked(dashboard._ledger(since, until), 20)]
        assert searched == grouped, (shape, searched, grouped)
        out[f"{shape}_top_users_ms"] = timed(lambda: dashboard.top_users(since, until))
        out[f"{shape}_grouped_query_ms"] = timed(
            lambda: dashboard._ranked(dashboard._ledger(since, until), 20)
        )
        out[f"{shape}_load_average"] = load_average()
    day_query = DailyUsage.objects.filter(day=until).order_by(*dashboard._spend_order())[:200]
    out["per_day_plan"] = day_query.explain().splitlines()[:3]
    connection.close()
    drop_database(url)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.top_users", description=__doc__)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    args = parser.parse_args(argv)
    log(f"{args.users:,} users over {args.days} days")
    out = measure(args.users, args.days)
    for key, value in out.items():
        print(f"{key:28} {value}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
