"""Rebuild the daily usage ledger (``DailyUsage``, ``DailyFailure``) from the audit trails.

The ledger is written as mints and relayed sessions complete; this command
recomputes a range of UTC days from ``ClientSecretIssuance`` and
``RelaySession`` and replaces those days' ledger rows in one transaction, so
it can run any number of times with the same result. Use it after a
database restore, after the ledger missed a write (logged as a warning), or
once for the days before the ledger existed. Days whose audit rows were
pruned (``GATEWAY_REALTIME_AUDIT_RETENTION_DAYS``) cannot be rebuilt: the
command refuses a range that starts before the retention unless ``--force``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from gateway_realtime import usage
from gateway_realtime.conf import app_settings


def _day(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"{value!r} is not a day (YYYY-MM-DD).") from None


class Command(BaseCommand):
    help = (
        "Rebuild the daily usage ledger for a range of UTC days (--since, --until, both "
        "included; default: today) from the audit rows, replacing those days' ledger rows."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["rebuild"], help="What to do: rebuild.")
        parser.add_argument("--since", help="The first UTC day, YYYY-MM-DD (default: today).")
        parser.add_argument("--until", help="The last UTC day, YYYY-MM-DD (default: today).")
        parser.add_argument(
            "--force",
            action="store_true",
            help="Rebuild days older than the audit retention too (their pruned rows are lost).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        today = timezone.now().astimezone(dt.UTC).date()
        first = _day(options["since"]) if options["since"] else today
        last = _day(options["until"]) if options["until"] else today
        if last < first:
            raise CommandError("--until is before --since.")
        kept_since = today - dt.timedelta(days=app_settings.AUDIT_RETENTION_DAYS)
        if first < kept_since and not options["force"]:
            raise CommandError(
                f"The audit rows before {kept_since} are pruned "
                f"(GATEWAY_REALTIME_AUDIT_RETENTION_DAYS), so the ledger's days before it "
                "would be rebuilt short. Pass --force to do it anyway."
            )
        usage_rows, failure_rows = usage.rebuild(first, last)
        self.stdout.write(
            f"Rebuilt the ledger from {first} to {last}: "
            f"{usage_rows} usage rows, {failure_rows} failure rows."
        )
