"""Delete audit rows older than ``GATEWAY_REALTIME_AUDIT_RETENTION_DAYS``.

Safe to run from cron while the site mints: rows are deleted in short
transactions over primary-key ranges, each also filtered by age, so a batch
only ever locks old rows, and rows being written or completed right now are
never touched. Quota counters whose window has ended are deleted too.

Relayed session rows (``RelaySession``) started before the same cutoff go
the same way once they have ended. A row without ``ended_at`` is deleted
only when it started longer ago than the cutoff and than
``GATEWAY_REALTIME_RELAY_MAX_SESSION_SECONDS``: no relay lets a session run
that long, so its process died before it could complete the row.

When ``gateway_realtime_clientsecretissuance`` is partitioned by month
(PostgreSQL, the recipe in docs/scaling.md), the months wholly older than
the cutoff are detached and dropped first, and the partitions of this month
and the next two are created if missing; the row deletes then only see the
cutoff's own month.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.db.models import Max, Min, Model, Q, QuerySet
from django.utils import timezone

from gateway_realtime import partitions
from gateway_realtime.conf import app_settings
from gateway_realtime.models import ClientSecretIssuance, QuotaCounter, RelaySession, RelayUsage


class Command(BaseCommand):
    help = (
        "Delete client secret audit rows older than GATEWAY_REALTIME_AUDIT_RETENTION_DAYS "
        "(or --days), in batches, relayed session rows started before then (ended, or "
        "abandoned by a process that died), "
        "and quota counters whose window has ended."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--days",
            type=int,
            default=None,
            help="Keep this many days instead of GATEWAY_REALTIME_AUDIT_RETENTION_DAYS.",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=1000,
            help="Primary keys covered by each delete (default 1000).",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Count what would be deleted; delete nothing.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["days"] if options["days"] is not None else app_settings.AUDIT_RETENTION_DAYS
        batch_size = options["batch_size"]
        if isinstance(days, bool) or not isinstance(days, int) or days < 1:
            raise CommandError("--days (or GATEWAY_REALTIME_AUDIT_RETENTION_DAYS) must be >= 1.")
        if batch_size < 1:
            raise CommandError("--batch-size must be >= 1.")
        now = timezone.now()
        cutoff = now - dt.timedelta(days=days)
        alias = app_settings.AUDIT_DATABASE
        old_rows = ClientSecretIssuance.objects.using(alias).filter(created_at__lt=cutoff)
        # A row without ended_at is a live session, unless it is older than
        # any session may last: then its process died before completing it.
        longest = now - dt.timedelta(seconds=app_settings.RELAY_MAX_SESSION_SECONDS)
        old_relayed = RelaySession.objects.using(alias).filter(
            Q(ended_at__isnull=False) | Q(started_at__lt=longest), started_at__lt=cutoff
        )
        expired = QuotaCounter.objects.using(alias).filter(window_end__lt=now)
        expired_usage = RelayUsage.objects.using(alias).filter(window_end__lt=now)

        if options["dry_run"]:
            self.stdout.write(
                f"Would delete {old_rows.count()} audit rows created before "
                f"{cutoff:%Y-%m-%d %H:%M:%S} UTC, {old_relayed.count()} relayed "
                "sessions started before then (ended or abandoned), "
                f"and {expired.count()} expired quota counters "
                f"and {expired_usage.count()} expired relay usage counters."
            )
            return

        table = ClientSecretIssuance._meta.db_table
        if partitions.is_partitioned(table, alias):
            # Partitioned by month (docs/scaling.md): whole months go at once,
            # and the next months' partitions are made before their first mint.
            dropped = partitions.drop_expired_partitions(table, cutoff, alias)
            made = partitions.create_month_partitions(table, now.date(), 3, alias)
            self.stdout.write(
                f"Dropped {len(dropped)} monthly partitions of {table} "
                f"({', '.join(dropped) or 'none'}) and created {len(made)} "
                f"({', '.join(made) or 'none'})."
            )
        deleted, batches = delete_in_batches(old_rows, batch_size, alias)
        relayed, relayed_batches = delete_in_batches(old_relayed, batch_size, alias)
        counters, _ = expired.delete()
        usage_counters, _ = expired_usage.delete()
        self.stdout.write(
            f"Deleted {deleted} audit rows created before {cutoff:%Y-%m-%d %H:%M:%S} UTC "
            f"in {batches} batches, {relayed} relayed sessions started before then "
            "(ended or abandoned) "
            f"in {relayed_batches} batches, and {counters} expired quota counters "
            f"and {usage_counters} expired relay usage counters."
        )


def delete_in_batches(rows: QuerySet[Model], batch_size: int, alias: str) -> tuple[int, int]:
    """Delete ``rows`` in short transactions over primary-key ranges: (rows, batches)."""
    high = rows.aggregate(high=Max("pk"))["high"]
    low = rows.aggregate(low=Min("pk"))["low"]
    deleted = batches = 0
    while low is not None and low <= high:
        with transaction.atomic(using=alias):
            count, _ = rows.filter(pk__gte=low, pk__lt=low + batch_size).delete()
        deleted += count
        batches += 1
        # Jump over gaps in the keys instead of stepping through empty ranges.
        low = rows.filter(pk__gte=low + batch_size).aggregate(low=Min("pk"))["low"]
    return deleted, batches
