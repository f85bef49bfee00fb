"""The daily usage ledger: what each user spent, one row per user, kind, model and day.

The audit trails (``ClientSecretIssuance``, ``RelaySession``) hold one row per
attempt; the ledger (``DailyUsage``, with its breakdown ``DailyFailure``) holds
their sums per UTC day, so that the dashboard, the CSV export and anything
else that asks "how much" reads a few rows per user and day, however many
mints there were.

It is written as the attempts complete:

- ``record_mint``: a mint that was issued, failed or rejected (a pending
  one is not counted until it completes);
- ``record_relay_session``: a relayed session that ended, with its metered
  usage;
- ``record_relay_refusal``: a relayed start refused by a limit.

Each is a conflict-safe increment through the ORM (``increment``): an
``UPDATE ... SET n = n + delta`` on the row's key, which the database
serialises per row, and when no row exists yet an insert in a savepoint (a
concurrent insert of the same key wins, and the update is tried again). No
increment is lost, with any number of workers and hosts.

A process gathers its increments for ``GATEWAY_REALTIME_LEDGER_FLUSH_INTERVAL``
seconds (1.0) and then writes them, summed per row, from a thread of its own
(``flush``; also at exit): a user minting ten times a second costs the
database one ledger update a second per process, not ten, and no mint waits
for the ledger. The ledger is that interval behind the audit trail; a
process killed before it flushed loses its last interval of increments,
which ``rebuild`` recounts. With the interval at 0 each increment is written
as the mint or session completes. A failure to write the ledger is logged
and never fails the mint or the session: the audit row is the record, and
``manage.py gateway_realtime_ledger rebuild`` recomputes any range of days
from the audit rows (``rebuild``), replacing what is there.

Every write goes to two rows: the user's (``DailyUsage``, ``DailyFailure``)
and the site's for the day, kind and model (``SiteDailyUsage``,
``SiteDailyFailure``), which the dashboard's charts and totals read so that
they cost a few rows a day however many users there are. Attempts without a
user (site code minting with ``user=None``) are counted in the site's rows
only.
"""

from __future__ import annotations

import atexit
import datetime as dt
import functools
import logging
import operator
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from django.db import DatabaseError, IntegrityError, connections, models, transaction
from django.db.models import Count, F, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from gateway_realtime.conf import app_settings
from gateway_realtime.models import (
    ClientSecretIssuance,
    DailyFailure,
    DailyUsage,
    Outcome,
    Outcomes,
    RelaySession,
    SiteDailyFailure,
    SiteDailyUsage,
)

logger = logging.getLogger("gateway_realtime")

#: The relayed starts a limit refused (``relay.sessions``), as (code, reason):
#: the rows ``ledger.record_refusal`` writes for them, told apart from a
#: session that ended at once by these pairs and a duration of 0.
RELAY_REFUSALS = {
    (4429, "too many sessions"),
    (4429, "quota exceeded"),
    (4429, "budget exceeded"),
    (4429, "rate limited"),
    (1011, "limits unavailable"),
}


def utc_day(value: dt.datetime) -> dt.date:
    """The UTC calendar day of a stored time (naive times are taken as they are)."""
    if timezone.is_aware(value):
        return value.astimezone(dt.UTC).date()
    return value.date()


def increment(
    model: type[models.Model], key: Mapping[str, Any], deltas: Mapping[str, float], alias: str
) -> None:
    """Add ``deltas`` to the counters of the ``model`` row with ``key``, creating it if missing.

    Conflict-safe without a lock: the ``UPDATE`` adds in the database; a
    missing row is inserted in a savepoint, and if a concurrent insert of
    the same key won (the unique constraint), the ``UPDATE`` runs again.
    """
    manager = model._default_manager.using(alias)
    rows = manager.filter(**key)
    changes = {name: F(name) + value for name, value in deltas.items()}
    if rows.update(**changes):
        return
    try:
        with transaction.atomic(using=alias):
            manager.create(**key, **deltas)
        return
    except IntegrityError:
        pass
    rows.update(**changes)


def _key(record: Any, day: dt.date) -> dict[str, Any]:
    return {"day": day, "user_id": record.user_id, "kind": record.kind, "model": record.model}


Write = tuple[type[models.Model], dict[str, Any], dict[str, Any]]


def ledger_writes(
    key: Mapping[str, Any], deltas: Mapping[str, float], failure: Mapping[str, str] | None = None
) -> list[Write]:
    """The increments one count makes: the user's row and the site's, for usage and failure.

    ``key`` is a ``DailyUsage`` key (``day``, ``user_id``, ``kind``,
    ``model``; a ``user_id`` of ``None`` counts in the site's rows only),
    ``deltas`` what to add to its counters, and ``failure`` (``outcome``,
    ``error_type``) a ``DailyFailure`` to count once. The user's rows come
    first, so that writers in transactions take the site's row last.
    """
    site = {name: value for name, value in key.items() if name != "user_id"}
    writes: list[Write] = []
    if key["user_id"] is not None:
        writes.append((DailyUsage, dict(key), dict(deltas)))
        if failure is not None:
            writes.append((DailyFailure, {**key, **failure}, {"count": 1}))
    writes.append((SiteDailyUsage, site, dict(deltas)))
    if failure is not None:
        writes.append((SiteDailyFailure, {**site, **failure}, {"count": 1}))
    return writes


def add(
    key: Mapping[str, Any], deltas: Mapping[str, float], failure: Mapping[str, str] | None = None
) -> None:
    """Count ``deltas`` (and ``failure``) in the ledger now, as the recorders do when not gathering.

    For tools and tests that fill the ledger; see ``ledger_writes`` for the
    arguments. Raises the database's error, unlike the recorders.
    """
    alias = app_settings.AUDIT_DATABASE
    with transaction.atomic(using=alias):
        for model, row_key, row_deltas in ledger_writes(key, deltas, failure):
            increment(model, row_key, row_deltas, alias)


def _write(what: str, writes: Iterable[Write]) -> None:
    """Add ``writes`` to the ledger now, or to this process's pending increments."""
    if app_settings.LEDGER_FLUSH_INTERVAL > 0:
        _pending.add(writes)
    else:
        _write_now(what, list(writes))


def _write_now(what: str, writes: list[Write]) -> bool:
    """Write ``writes`` at once; ``False`` (logged) when the database refused."""
    alias = app_settings.AUDIT_DATABASE
    try:
        if transaction.get_connection(alias).in_atomic_block:
            # A savepoint, so that a failed write leaves the caller's transaction usable.
            with transaction.atomic(using=alias):
                for model, key, deltas in writes:
                    increment(model, key, deltas, alias)
        else:
            # Each increment commits on its own: no BEGIN/COMMIT around it.
            for model, key, deltas in writes:
                increment(model, key, deltas, alias)
    except DatabaseError as error:
        # The audit row is the record; the ledger can be rebuilt from it.
        logger.warning(
            "The usage ledger missed %s (%s); `manage.py gateway_realtime_ledger rebuild` "
            "recounts the day from the audit trail",
            what,
            type(error).__name__,
        )
        return False
    return True


class _Pending:
    """One process's ledger increments not written yet, summed per ledger row."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rows: dict[tuple[type[models.Model], tuple[Any, ...]], dict[str, float]] = {}
        self.timer: threading.Timer | None = None

    def add(self, writes: Iterable[Write]) -> None:
        with self.lock:
            for model, key, deltas in writes:
                row = self.rows.setdefault((model, tuple(sorted(key.items()))), {})
                for name, value in deltas.items():
                    row[name] = row.get(name, 0) + value
            if self.timer is None:
                self.timer = threading.Timer(app_settings.LEDGER_FLUSH_INTERVAL, self.flush)
                self.timer.daemon = True
                self.timer.start()

    def take(self) -> list[Write]:
        with self.lock:
            rows, self.rows = self.rows, {}
            if self.timer is not None:
                self.timer.cancel()  # a no-op from the timer's own thread
                self.timer = None
        return [(model, dict(key), deltas) for (model, key), deltas in rows.items()]

    def flush(self) -> None:
        writes = self.take()
        if not writes:
            return
        in_timer = isinstance(threading.current_thread(), threading.Timer)
        try:
            _write_now(f"{len(writes)} gathered increments", writes)
        finally:
            if in_timer:
                # The timer's thread is done with its database connections.
                connections.close_all()


_pending = _Pending()


def flush() -> None:
    """Write this process's gathered ledger increments now (tests, shutdown)."""
    _pending.flush()


atexit.register(flush)


def record_mint(issuance: ClientSecretIssuance) -> None:
    """Count a completed mint (issued, failed or rejected) in its user's day."""
    if issuance.outcome == Outcome.PENDING:
        return
    failure = None
    if issuance.outcome != Outcome.ISSUED:
        failure = {"outcome": str(issuance.outcome), "error_type": issuance.error_type}
    key = _key(issuance, utc_day(issuance.created_at))
    _write(f"a {issuance.outcome} mint", ledger_writes(key, {str(issuance.outcome): 1}, failure))


def record_relay_session(row: RelaySession) -> None:
    """Count an ended relayed session and its metered usage in its user's start day."""
    deltas = {
        "relayed_sessions": 1,
        "relayed_seconds": (row.duration_ms or 0) / 1000,
        "audio_seconds_in": row.audio_seconds_in,
        "audio_seconds_out": row.audio_seconds_out,
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
    }
    _write("a relayed session", ledger_writes(_key(row, utc_day(row.started_at)), deltas))


def refusal_type(reason: str) -> str:
    """A refused start's error type: its close reason as a slug (``too_many_sessions``)."""
    return reason.replace(" ", "_")


def record_relay_refusal(row: RelaySession) -> None:
    """Count one refused relayed start (``row`` is the refusal's folded audit row)."""
    failure = {"outcome": Outcomes.RELAY_REFUSED, "error_type": refusal_type(row.close_reason)}
    key = _key(row, utc_day(row.started_at))
    _write("a refused relayed start", ledger_writes(key, {"relay_refused": 1}, failure))


# Rebuilding ------------------------------------------------------------------


def _day_range(field: str, first: dt.date, last: dt.date) -> dict[str, Any]:
    """Filters for ``field`` within the UTC days ``first`` to ``last``, both included."""
    start = dt.datetime.combine(first, dt.time(), tzinfo=dt.UTC)
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    if not timezone.is_aware(timezone.now()):
        start, end = start.replace(tzinfo=None), end.replace(tzinfo=None)
    return {f"{field}__gte": start, f"{field}__lt": end}


def rebuild(first: dt.date, last: dt.date) -> tuple[int, int]:
    """Recompute the ledger's days ``first`` to ``last`` (UTC, both included) from the audit rows.

    One transaction: the range's ledger rows are deleted and written again
    from ``ClientSecretIssuance`` (completed mints) and ``RelaySession``
    (ended sessions and refused starts), so running it twice gives the same
    rows; the site's rows (``SiteDailyUsage``, ``SiteDailyFailure``) are
    their sums, with the attempts that have no user. Audit rows already
    pruned are not in it: rebuild only the days the retention keeps.
    Returns the numbers of ``DailyUsage`` and ``DailyFailure`` rows written.
    """
    if last < first:
        raise ValueError("the range ends before it starts")
    alias = app_settings.AUDIT_DATABASE
    usage: dict[tuple[Any, ...], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    failures: dict[tuple[Any, ...], int] = defaultdict(int)
    utc = dt.UTC if timezone.is_aware(timezone.now()) else None

    mints = (
        ClientSecretIssuance.objects.using(alias)
        .filter(**_day_range("created_at", first, last))
        .exclude(outcome=Outcome.PENDING)
        .annotate(day=TruncDate("created_at", tzinfo=utc))
        .values("day", "user_id", "kind", "model", "outcome", "error_type")
        .annotate(n=Count("id"))
        .order_by()
    )
    for row in mints:
        key = (row["day"], row["user_id"], row["kind"], row["model"])
        usage[key][row["outcome"]] += row["n"]
        if row["outcome"] != Outcome.ISSUED:
            failures[(*key, row["outcome"], row["error_type"])] += row["n"]

    ended = RelaySession.objects.using(alias).filter(
        ended_at__isnull=False, **_day_range("started_at", first, last)
    )
    refused = Q(duration_ms=0) & functools.reduce(
        operator.or_, (Q(close_code=code, close_reason=reason) for code, reason in RELAY_REFUSALS)
    )
    by_key = ("day", "user_id", "kind", "model")
    for row in (
        ended.filter(refused)
        .annotate(day=TruncDate("started_at", tzinfo=utc))
        .values(*by_key, "close_reason")
        .annotate(attempts=Sum("attempts"))
        .order_by()
    ):
        key = (row["day"], row["user_id"], row["kind"], row["model"])
        usage[key]["relay_refused"] += row["attempts"]
        failure = (*key, Outcomes.RELAY_REFUSED, refusal_type(row["close_reason"]))
        failures[failure] += row["attempts"]
    for row in (
        ended.exclude(refused)
        .annotate(day=TruncDate("started_at", tzinfo=utc))
        .values(*by_key)
        .annotate(
            sessions=Count("id"),
            seconds=Sum("duration_ms"),
            audio_in=Sum("audio_seconds_in"),
            audio_out=Sum("audio_seconds_out"),
            tokens_in=Sum("input_tokens"),
            tokens_out=Sum("output_tokens"),
        )
        .order_by()
    ):
        counts = usage[(row["day"], row["user_id"], row["kind"], row["model"])]
        counts["relayed_sessions"] += row["sessions"]
        counts["relayed_seconds"] += (row["seconds"] or 0) / 1000
        counts["audio_seconds_in"] += row["audio_in"] or 0.0
        counts["audio_seconds_out"] += row["audio_out"] or 0.0
        counts["input_tokens"] += row["tokens_in"] or 0
        counts["output_tokens"] += row["tokens_out"] or 0

    # The site's rows: the same sums without the user (key[1]), the user-less included.
    site_usage: dict[tuple[Any, ...], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for key, counts in usage.items():
        for name, value in counts.items():
            site_usage[(key[0], *key[2:])][name] += value
    site_failures: dict[tuple[Any, ...], int] = defaultdict(int)
    for key, count in failures.items():
        site_failures[(key[0], *key[2:])] += count
    usage = {key: counts for key, counts in usage.items() if key[1] is not None}
    failures = {key: count for key, count in failures.items() if key[1] is not None}

    def user_key(key: tuple[Any, ...]) -> dict[str, Any]:
        return {"day": key[0], "user_id": key[1], "kind": key[2], "model": key[3]}

    def site_key(key: tuple[Any, ...]) -> dict[str, Any]:
        return {"day": key[0], "kind": key[1], "model": key[2]}

    integers = {
        f.name for f in DailyUsage._meta.get_fields() if isinstance(f, models.BigIntegerField)
    }

    def counters(counts: Mapping[str, float]) -> dict[str, float]:
        return {k: int(v) if k in integers else v for k, v in counts.items()}

    in_range = {"day__gte": first, "day__lte": last}
    with transaction.atomic(using=alias):
        for model in (DailyUsage, DailyFailure, SiteDailyUsage, SiteDailyFailure):
            model._default_manager.using(alias).filter(**in_range).delete()
        batches: tuple[tuple[type[models.Model], Iterable[models.Model]], ...] = (
            (DailyUsage, (DailyUsage(**user_key(k), **counters(c)) for k, c in usage.items())),
            (
                DailyFailure,
                (
                    DailyFailure(**user_key(k), outcome=k[4], error_type=k[5], count=n)
                    for k, n in failures.items()
                ),
            ),
            (
                SiteDailyUsage,
                (SiteDailyUsage(**site_key(k), **counters(c)) for k, c in site_usage.items()),
            ),
            (
                SiteDailyFailure,
                (
                    SiteDailyFailure(**site_key(k), outcome=k[3], error_type=k[4], count=n)
                    for k, n in site_failures.items()
                ),
            ),
        )
        for ledger, rows in batches:
            ledger._default_manager.using(alias).bulk_create(rows, batch_size=1000)
    return len(usage), len(failures)


__all__ = [
    "RELAY_REFUSALS",
    "add",
    "flush",
    "increment",
    "ledger_writes",
    "rebuild",
    "record_mint",
    "record_relay_refusal",
    "record_relay_session",
    "refusal_type",
    "utc_day",
]
