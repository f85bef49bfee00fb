"""Starting, metering and ending relayed sessions: the limits and the audit row.

Everything here is synchronous Django ORM code; the consumer calls it through
``channels.db.database_sync_to_async``. Nothing here sees a frame's content
beyond the few fields metering needs, and nothing is logged from a frame.

Limits, all from the user's ``limits.Policy`` (``get_policy``), checked at the
start in this order:

- ``rate``: a start counts against the user's burst rate like a mint does
  (``ledger.check_start_rate``), so a stolen cookie cannot open hundreds of
  Gateway sessions a minute;
- ``budget``: ``{"audio_seconds": x, "tokens": y}`` per ``quota_period``,
  read from the user's shared usage counter (``ledger.RelayUsage``);
- ``max_sessions``: the live ``RelaySession`` rows of the user (``ended_at``
  null and started less than ``max_session_seconds`` ago, so a row left live
  by a crashed process stops counting once it could no longer be running).
  The new row is written first and the live rows counted after, so two
  processes starting at once can both refuse but never both pass the cap;
- ``quota``: a relayed session's start claims one unit of the user's quota,
  like one mint (``limits.claim_quota``), after the other checks passed.

A refused start keeps no row of its own: ``ledger.record_refusal`` folds
refusals of one user, code and reason within a minute into one row, so no
number of refused attempts grows the audit table without bound. A started
session has one row, completed by ``end_session``.

While a session runs, its usage is added to the user's shared counter
(``add_usage``) every ``RELAY_METER_INTERVAL`` seconds and at each usage
event, so concurrent sessions on any number of processes spend one budget:
together they pass it by at most what they metered in one interval.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from typing import Any

from django.db import Error as DatabaseError
from django.utils import timezone

from gateway_realtime import metrics, usage
from gateway_realtime.conf import app_settings
from gateway_realtime.exceptions import LimitsUnavailable, QuotaExceeded
from gateway_realtime.limits import Policy, QuotaClaim, claim_quota
from gateway_realtime.models import CloseSide, RelaySession
from gateway_realtime.relay import ledger
from gateway_realtime.relay.metering import Meter

logger = logging.getLogger("gateway_realtime.relay")


class Refused(Exception):
    """A session that may not start: the close code and reason to send."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


# The limit refusals; the consumer's table of close codes names the same pairs.
TOO_MANY_SESSIONS = (4429, "too many sessions")
QUOTA_EXCEEDED = (4429, "quota exceeded")
BUDGET_EXCEEDED = (4429, "budget exceeded")
RATE_LIMITED = (4429, "rate limited")
LIMITS_UNAVAILABLE = (1011, "limits unavailable")


@dataclasses.dataclass
class Session:
    """One relayed session being run: its row, limits and meter."""

    row: RelaySession
    policy: Policy
    started: float  # time.monotonic()
    meter: Meter = dataclasses.field(default_factory=Meter)
    claim: QuotaClaim | None = None
    #: The user's usage in the window as last read from the shared counter,
    #: this session's added part included.
    spent: ledger.Usage = dataclasses.field(default_factory=lambda: ledger.Usage(0.0, 0))
    #: The meter's usage already added to the shared counter.
    added_audio: float = 0.0
    added_tokens: int = 0

    @property
    def seconds_left(self) -> float:
        return max(0.0, self.policy.max_session_seconds - (time.monotonic() - self.started))

    @property
    def budget_limited(self) -> bool:
        return bool(self.policy.budget)

    def unadded(self) -> tuple[float, int]:
        """The usage metered since the last ``add_usage``."""
        return (
            max(0.0, self.meter.audio_seconds - self.added_audio),
            max(0, self.meter.tokens - self.added_tokens),
        )

    def over_budget(self) -> bool:
        """Whether the user's spent usage plus this session's unadded usage reaches the budget."""
        if not self.budget_limited:
            return False
        audio, tokens = self.unadded()
        usage = ledger.Usage(self.spent.audio_seconds + audio, self.spent.tokens + tokens)
        return ledger.over_budget(usage, self.policy)


def _live(user_id: Any, policy: Policy) -> Any:
    alias = app_settings.AUDIT_DATABASE
    since = timezone.now() - dt.timedelta(seconds=policy.max_session_seconds)
    return RelaySession.objects.using(alias).filter(
        user_id=user_id, ended_at__isnull=True, started_at__gte=since
    )


def start_session(
    user: Any,
    kind: str,
    model: str,
    policy: Policy,
    *,
    ip_address: str | None = None,
    user_agent: str = "",
) -> Session:
    """Apply the start limits and write the live row; raise ``Refused`` when one is hit.

    A refusal is recorded by ``ledger.record_refusal`` (folded with the same
    user's same refusals of the last minute). A store that cannot be reached
    refuses with 1011 ``limits unavailable``.
    """

    def refuse(code: int, reason: str, closed_by: str) -> Refused:
        try:
            refusal = ledger.record_refusal(
                user,
                kind,
                model,
                code,
                reason,
                closed_by,
                ip_address=ip_address,
                user_agent=user_agent,
            )
        except DatabaseError as error:
            logger.warning("A relay refusal was not recorded (%s)", type(error).__name__)
        else:
            usage.record_relay_refusal(refusal)
        return Refused(code, reason)

    alias = app_settings.AUDIT_DATABASE
    row: RelaySession | None = None
    try:
        try:
            ledger.check_start_rate(user.pk, policy)
        except ledger.RateLimited:
            raise refuse(*RATE_LIMITED, CloseSide.LIMIT) from None
        spent = ledger.Usage(0.0, 0)
        if policy.budget:
            spent = ledger.read_usage(user.pk, policy)
            if ledger.over_budget(spent, policy):
                raise refuse(*BUDGET_EXCEEDED, CloseSide.LIMIT)
        row = RelaySession.objects.using(alias).create(
            **ledger.who_and_what(user, kind, model, ip_address=ip_address, user_agent=user_agent)
        )
        # Counted after our own row is written (see the module docstring).
        cap = policy.max_sessions
        if cap is not None and _live(user.pk, policy).count() > cap:
            raise refuse(*TOO_MANY_SESSIONS, CloseSide.LIMIT)
        try:
            claim = claim_quota(user.pk, policy)
        except QuotaExceeded:
            raise refuse(*QUOTA_EXCEEDED, CloseSide.LIMIT) from None
    except Refused:
        _forget(row)
        raise
    except (LimitsUnavailable, DatabaseError) as error:
        logger.warning("Relay refused: the limits could not be read (%s)", type(error).__name__)
        _forget(row)
        raise refuse(*LIMITS_UNAVAILABLE, CloseSide.RELAY) from None
    metrics.relay_started(kind)
    return Session(row=row, policy=policy, started=time.monotonic(), claim=claim, spent=spent)


def _forget(row: RelaySession | None) -> None:
    """Delete the row of a start that was refused after it was written (best effort)."""
    if row is None or row.pk is None:
        return
    try:
        RelaySession.objects.using(app_settings.AUDIT_DATABASE).filter(pk=row.pk).delete()
    except DatabaseError as error:
        logger.warning("A refused relay row was not deleted (%s)", type(error).__name__)


def add_usage(session: Session) -> bool:
    """Add the session's unadded usage to the user's shared counter; ``True``: over budget.

    Called every ``RELAY_METER_INTERVAL`` seconds and at each usage event
    while a budget applies. Raises ``LimitsUnavailable`` when the counter
    cannot be reached (the relay then fails closed).
    """
    if not session.budget_limited:
        return False
    audio, tokens = session.unadded()
    user_id = session.row.user_id
    if audio or tokens:
        session.spent = ledger.add_usage(
            user_id, session.policy, audio_seconds=audio, tokens=tokens
        )
    else:
        # Nothing new of ours: only read what the user's other sessions spent.
        session.spent = ledger.read_usage(user_id, session.policy)
    session.added_audio += audio
    session.added_tokens += tokens
    return ledger.over_budget(session.spent, session.policy)


def end_session(
    session: Session, code: int, reason: str, closed_by: str, *, gateway_opened: bool = True
) -> None:
    """Complete the row and add the last usage; give the quota back if no Gateway socket opened.

    The row is completed first, so a usage counter that cannot be reached
    costs only the last interval's usage (logged), never the row.
    """
    row = session.row
    row.ended_at = timezone.now()
    row.duration_ms = max(0, round((time.monotonic() - session.started) * 1000))
    row.close_code = code
    row.close_reason = reason.encode()[:123].decode(errors="ignore")
    row.closed_by = closed_by
    fields = session.meter.fields()
    for name, value in fields.items():
        setattr(row, name, value)
    metrics.relay_ended(row)  # first: a row that cannot be saved still ends the live count
    row.save(
        using=app_settings.AUDIT_DATABASE,
        update_fields=[
            "ended_at",
            "duration_ms",
            "close_code",
            "close_reason",
            "closed_by",
            *fields,
        ],
    )
    usage.record_relay_session(row)
    if not gateway_opened and session.claim is not None:
        # Nothing reached the Gateway: the start's quota unit is given back.
        session.claim.release()
        session.claim = None
    audio, tokens = session.unadded()
    if audio or tokens:
        try:
            session.spent = ledger.add_usage(
                row.user_id, session.policy, audio_seconds=audio, tokens=tokens
            )
        except LimitsUnavailable as error:
            logger.warning(
                "Relay session %s: its last usage was not added to the counter (%s)",
                row.pk,
                error,
            )
        else:
            session.added_audio += audio
            session.added_tokens += tokens


__all__ = [
    "BUDGET_EXCEEDED",
    "LIMITS_UNAVAILABLE",
    "QUOTA_EXCEEDED",
    "RATE_LIMITED",
    "TOO_MANY_SESSIONS",
    "Refused",
    "Session",
    "add_usage",
    "end_session",
    "start_session",
]
