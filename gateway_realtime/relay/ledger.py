"""What relay mode keeps across processes: the shared budget, the start rate, refusals.

Synchronous Django ORM and cache code (the consumer calls it through
``database_sync_to_async``), all through public APIs:

- ``add_usage`` / ``read_usage``: one ``RelayUsage`` counter per user and
  budget window (the policy's ``quota_period``, aligned to the epoch as the
  quota is), to which every relayed session of the user, on any process or
  host, adds what it metered with an ``F()`` update. The database
  serialises the updates of one row, so none is lost and every session
  reads the total all of them spent;
- ``check_start_rate``: a start counts against the policy's burst ``rate``
  on the same cache counter as the user's mints (``throttling.take_rate``);
- ``record_refusal``: a refused start folded into one row per user, close
  code and reason and clock minute (``RelaySession.attempts``), so refusals
  cannot grow the audit table without bound.

``add_usage``, ``read_usage`` and ``check_start_rate`` raise
``LimitsUnavailable`` when their store cannot be reached, naming only the
error's type: a limit that cannot be read fails closed. ``record_refusal``
lets the database's own error through: the start is refused either way, and
the caller decides whether a lost audit row is worth more than a log line.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from django.db import Error as DatabaseError
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from gateway_realtime.conf import app_settings
from gateway_realtime.exceptions import LimitsUnavailable
from gateway_realtime.limits import Policy, quota_window
from gateway_realtime.models import RelaySession, RelayUsage
from gateway_realtime.throttling import take_rate


@dataclasses.dataclass(frozen=True)
class Usage:
    """Audio seconds and tokens spent (by one session, or by a user in a window)."""

    audio_seconds: float = 0.0
    tokens: int = 0


class RateLimited(Exception):
    """A start over the policy's burst rate; ``retry_after`` seconds until the next window."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"Relayed starts are rate limited for {retry_after} s.")
        self.retry_after = retry_after


def _window(policy: Policy) -> tuple[dt.datetime, dt.datetime]:
    start, _ = quota_window(policy.quota_period)
    return start, start + dt.timedelta(seconds=policy.quota_period)


def _unavailable(error: Exception) -> LimitsUnavailable:
    return LimitsUnavailable(
        f"The relay usage counter could not be reached ({type(error).__name__})."
    )


def add_usage(user_id: Any, policy: Policy, *, audio_seconds: float, tokens: int) -> Usage:
    """Add one session's new usage to the user's counter; the window's totals after it.

    One transaction: an ``UPDATE ... SET x = x + delta`` on the (user,
    window) row, created first if missing (in a savepoint: a concurrent
    creator wins and the update is tried again), then the row read back
    within the same transaction, so the total includes every add committed
    before ours.
    """
    alias = app_settings.AUDIT_DATABASE
    start, end = _window(policy)
    audio_seconds = max(0.0, float(audio_seconds))
    tokens = max(0, int(tokens))
    try:
        rows = RelayUsage.objects.using(alias).filter(
            user_id=user_id, window_start=start, window_end=end
        )
        with transaction.atomic(using=alias):
            changed = rows.update(
                audio_seconds=F("audio_seconds") + audio_seconds, tokens=F("tokens") + tokens
            )
            if not changed:
                try:
                    with transaction.atomic(using=alias):
                        RelayUsage.objects.using(alias).create(
                            user_id=user_id,
                            window_start=start,
                            window_end=end,
                            audio_seconds=audio_seconds,
                            tokens=tokens,
                        )
                except IntegrityError:
                    rows.update(
                        audio_seconds=F("audio_seconds") + audio_seconds,
                        tokens=F("tokens") + tokens,
                    )
            audio, spent_tokens = rows.values_list("audio_seconds", "tokens").get()
    except DatabaseError as error:
        raise _unavailable(error) from None
    return Usage(float(audio), int(spent_tokens))


def read_usage(user_id: Any, policy: Policy) -> Usage:
    """The user's usage in the current budget window (zero when nothing was spent)."""
    alias = app_settings.AUDIT_DATABASE
    start, end = _window(policy)
    try:
        row = (
            RelayUsage.objects.using(alias)
            .filter(user_id=user_id, window_start=start, window_end=end)
            .values_list("audio_seconds", "tokens")
            .first()
        )
    except DatabaseError as error:
        raise _unavailable(error) from None
    return Usage() if row is None else Usage(float(row[0]), int(row[1]))


def over_budget(usage: Usage, policy: Policy) -> bool:
    """Whether ``usage`` reaches either limit of ``policy.budget`` (``None``: never)."""
    budget = policy.budget
    if not budget:
        return False
    audio = budget.get("audio_seconds")
    if audio is not None and usage.audio_seconds >= float(audio):
        return True
    tokens = budget.get("tokens")
    return tokens is not None and usage.tokens >= float(tokens)


def check_start_rate(user_id: Any, policy: Policy) -> None:
    """Count a relayed start against the policy's burst rate; raise ``RateLimited`` over it.

    The counter is the mint endpoints' (``throttling.take_rate``): a user's
    mints and relayed starts share one rate, so pass the policy of the
    session's kind (a relayed ``realtime`` start then takes from the same
    counter as a ``realtime`` mint). Nothing is counted when the policy has
    no rate. Raises ``LimitsUnavailable`` when the cache cannot be reached
    and ``GatewayConfigurationError`` for a malformed rate.
    """
    if not policy.rate:
        return
    wait = take_rate(user_id, policy.rate)
    if wait is not None:
        raise RateLimited(wait)


def who_and_what(
    user: Any, kind: str, model: str, *, ip_address: str | None, user_agent: str
) -> dict[str, Any]:
    """A ``RelaySession`` row's who and what, cut to the columns' lengths."""
    return {
        "user": user,
        "username": str(user.get_username())[:150],
        "ip_address": ip_address,
        "user_agent": user_agent[:512],
        "kind": kind,
        "model": model[:200],
    }


def record_refusal(
    user: Any,
    kind: str,
    model: str,
    code: int,
    reason: str,
    closed_by: str,
    *,
    ip_address: str | None,
    user_agent: str,
    now: dt.datetime | None = None,
) -> RelaySession:
    """Record a refused start: one row per user, code, reason and clock minute.

    The first refusal of a minute writes an ended row (duration 0, the
    close code, reason and side); the next ones of that user, code and
    reason add one to its ``attempts`` with an ``F()`` update and move its
    ``ended_at`` to ``now``. Only an ended row of duration 0 started in the
    same clock minute is folded into, so a live session's row is never
    touched. ``now`` (default: ``timezone.now()``) sets the minute and the
    row's times, for callers and tests that keep their own clock.

    Not serialised on purpose, as a refusal costs a lookup and a write and
    no lock: two processes refusing the same user at once may each write a
    first row (an extra row, at most one per racing process a minute, so
    still bounded), and an increment racing the first insert may land on
    either row; no refusal goes uncounted in the total. Database errors are
    not caught (see the module docstring).
    """
    alias = app_settings.AUDIT_DATABASE
    now = now or timezone.now()
    minute = now.replace(second=0, microsecond=0)
    reason = reason.encode()[:123].decode(errors="ignore")
    same = RelaySession.objects.using(alias).filter(
        user=user,
        close_code=code,
        close_reason=reason,
        started_at__gte=minute,
        started_at__lt=minute + dt.timedelta(minutes=1),
        ended_at__isnull=False,
        duration_ms=0,
    )
    row = same.order_by("-id").first()
    if row is not None:
        same.filter(pk=row.pk).update(attempts=F("attempts") + 1, ended_at=now)
        # What the update did, without reading the row again (another
        # process's refusals since our read are in the database, not here).
        row.attempts += 1
        row.ended_at = now
        return row
    row = RelaySession.objects.using(alias).create(
        **who_and_what(user, kind, model, ip_address=ip_address, user_agent=user_agent),
        ended_at=now,
        duration_ms=0,
        close_code=code,
        close_reason=reason,
        closed_by=closed_by,
    )
    if row.started_at.replace(second=0, microsecond=0) != minute:
        # auto_now_add stamped its own clock; the minute is the caller's.
        RelaySession.objects.using(alias).filter(pk=row.pk).update(started_at=now)
        row.started_at = now
    return row


__all__ = [
    "RateLimited",
    "Usage",
    "add_usage",
    "check_start_rate",
    "over_budget",
    "read_usage",
    "record_refusal",
    "who_and_what",
]
