"""Starting, metering and ending relayed sessions: the limits and the audit row.

Everything here is synchronous Django ORM code; the consumer calls it through
``channels.db.database_sync_to_async``. Nothing here sees a frame's content
beyond the few fields metering needs, and nothing is logged from a frame.

Limits, all from the user's ``limits.Policy`` (``get_policy``):

- ``max_sessions``: the live ``RelaySession`` rows of the user (``ended_at``
  null and started less than ``max_session_seconds`` ago, so a row left live
  by a crashed process stops counting once it could no longer be running).
  The new row is written first and the live rows counted after, so two
  processes starting at once can both refuse but never both pass the cap.
- ``quota``: a relayed session's start claims one unit of the user's quota,
  like one mint (``limits.claim_quota``), after the other checks passed.
- ``budget``: ``{"audio_seconds": x, "tokens": y}`` per ``quota_period``,
  spent by the user's relayed sessions started in the current window (ended
  and live rows; a live row's counters are written at each ``response-done``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from django.db.models import Sum
from django.utils import timezone

from gateway_realtime.conf import app_settings
from gateway_realtime.exceptions import LimitsUnavailable, QuotaExceeded
from gateway_realtime.limits import Policy, QuotaClaim, claim_quota, quota_window
from gateway_realtime.models import CloseSide, RelaySession

logger = logging.getLogger("gateway_realtime.relay")

#: The PCM16 sample rate assumed when the session names none (the AI SDK's).
DEFAULT_RATE = 24000

# Cheap tests before a text frame is parsed at all: only these events are read.
_GATEWAY_MARKERS = ('"response-done"', '"audio-delta"')
_BROWSER_MARKERS = ('"input-audio-append"', '"session-update"')


class Refused(Exception):
    """A session that may not start (or go on): the close code and reason to send."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


# The limit refusals; the consumer's table of close codes names the same pairs.
TOO_MANY_SESSIONS = (4429, "too many sessions")
QUOTA_EXCEEDED = (4429, "quota exceeded")
BUDGET_EXCEEDED = (4429, "budget exceeded")
LIMITS_UNAVAILABLE = (1011, "limits unavailable")


def _rate(audio_format: object) -> int | None:
    if isinstance(audio_format, Mapping):
        rate = audio_format.get("rate")
        if isinstance(rate, int | float) and not isinstance(rate, bool) and 8000 <= rate <= 96000:
            return int(rate)
    return None


def _base64_length(data: str) -> int:
    """Bytes a base64 string decodes to, from its length (without decoding it)."""
    size = len(data)
    if size == 0:
        return 0
    padding = (data[-1] == "=") + (size > 1 and data[-2] == "=")
    return max(0, size * 3 // 4 - padding)


@dataclasses.dataclass
class Meter:
    """Counters of one session: frames, bytes, audio seconds and tokens.

    ``observe_browser`` and ``observe_gateway`` see every frame; they parse a
    text frame only when it may be one of the few events metered (a substring
    test first), and read only its ``type`` and usage fields.
    """

    frames_from_browser: int = 0
    frames_from_gateway: int = 0
    bytes_from_browser: int = 0
    bytes_from_gateway: int = 0
    audio_seconds_in: float = 0.0
    audio_seconds_out: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    input_rate: int = DEFAULT_RATE
    output_rate: int = DEFAULT_RATE

    def observe_browser(self, frame: str | bytes) -> None:
        self.frames_from_browser += 1
        if isinstance(frame, bytes):
            self.bytes_from_browser += len(frame)
            return
        self.bytes_from_browser += len(frame.encode())
        # A JSON escape (``"input\\u002daudio-append"``) would hide an event
        # from the markers but not from the Gateway: such frames are parsed.
        if not any(marker in frame for marker in _BROWSER_MARKERS) and "\\u" not in frame:
            return
        event = _parse(frame)
        kind = event.get("type")
        if kind == "input-audio-append":
            audio = event.get("audio")
            if isinstance(audio, str):
                self.audio_seconds_in += _base64_length(audio) / (2 * self.input_rate)
        elif kind == "session-update":
            config = event.get("config")
            if isinstance(config, Mapping):
                self.input_rate = _rate(config.get("inputAudioFormat")) or self.input_rate
                self.output_rate = _rate(config.get("outputAudioFormat")) or self.output_rate

    def observe_gateway(self, frame: str | bytes) -> bool:
        """Count one Gateway frame; ``True`` when it ended a response (usage to check)."""
        self.frames_from_gateway += 1
        if isinstance(frame, bytes):
            self.bytes_from_gateway += len(frame)
            return False
        self.bytes_from_gateway += len(frame.encode())
        if not any(marker in frame for marker in _GATEWAY_MARKERS):
            return False
        event = _parse(frame)
        kind = event.get("type")
        if kind == "audio-delta":
            delta = event.get("delta")
            if isinstance(delta, str):
                self.audio_seconds_out += _base64_length(delta) / (2 * self.output_rate)
            return False
        if kind == "response-done":
            usage = event.get("usage")
            if isinstance(usage, Mapping):
                self.input_tokens += _count(usage.get("inputTokens"))
                self.output_tokens += _count(usage.get("outputTokens"))
            return True
        return False

    @property
    def audio_seconds(self) -> float:
        return self.audio_seconds_in + self.audio_seconds_out

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def fields(self) -> dict[str, Any]:
        """The row's counter fields."""
        return {
            "frames_from_browser": self.frames_from_browser,
            "frames_from_gateway": self.frames_from_gateway,
            "bytes_from_browser": self.bytes_from_browser,
            "bytes_from_gateway": self.bytes_from_gateway,
            "audio_seconds_in": self.audio_seconds_in,
            "audio_seconds_out": self.audio_seconds_out,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
        }


def _parse(frame: str) -> dict[str, Any]:
    try:
        event = json.loads(frame)
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}


def _count(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return 0


@dataclasses.dataclass
class Budget:
    """What the user had spent in the window when last read, and the limits."""

    audio_seconds: float | None
    tokens: float | None
    spent_audio: float = 0.0
    spent_tokens: float = 0.0

    @classmethod
    def from_policy(cls, policy: Policy) -> Budget | None:
        if not policy.budget:
            return None
        audio = policy.budget.get("audio_seconds")
        tokens = policy.budget.get("tokens")
        if audio is None and tokens is None:
            return None
        return cls(
            None if audio is None else float(audio), None if tokens is None else float(tokens)
        )

    def exceeded(self, extra_audio: float = 0.0, extra_tokens: float = 0.0) -> bool:
        """Whether the spent usage plus ``extra`` reaches a limit."""
        if self.audio_seconds is not None and self.spent_audio + extra_audio >= self.audio_seconds:
            return True
        return self.tokens is not None and self.spent_tokens + extra_tokens >= self.tokens


@dataclasses.dataclass
class Session:
    """One relayed session being run: its row, limits and meter."""

    row: RelaySession
    policy: Policy
    started: float  # time.monotonic()
    meter: Meter = dataclasses.field(default_factory=Meter)
    budget: Budget | None = None
    claim: QuotaClaim | None = None
    # The meter's usage already counted in budget.spent_* (read back from the row).
    synced_audio: float = 0.0
    synced_tokens: float = 0.0

    @property
    def seconds_left(self) -> float:
        return max(0.0, self.policy.max_session_seconds - (time.monotonic() - self.started))

    def over_budget(self) -> bool:
        """Whether this session's unsynced usage takes the user past the budget."""
        if self.budget is None:
            return False
        return self.budget.exceeded(
            self.meter.audio_seconds - self.synced_audio, self.meter.tokens - self.synced_tokens
        )


def _window_start(policy: Policy) -> dt.datetime:
    return quota_window(policy.quota_period)[0]


def _live(user_id: Any, policy: Policy) -> Any:
    alias = app_settings.AUDIT_DATABASE
    since = timezone.now() - dt.timedelta(seconds=policy.max_session_seconds)
    return RelaySession.objects.using(alias).filter(
        user_id=user_id, ended_at__isnull=True, started_at__gte=since
    )


def read_spent(user_id: Any, budget: Budget, policy: Policy) -> None:
    """Read the user's usage in the current window into ``budget``."""
    alias = app_settings.AUDIT_DATABASE
    totals = (
        RelaySession.objects.using(alias)
        .filter(user_id=user_id, started_at__gte=_window_start(policy))
        .aggregate(
            audio_in=Sum("audio_seconds_in"),
            audio_out=Sum("audio_seconds_out"),
            tokens_in=Sum("input_tokens"),
            tokens_out=Sum("output_tokens"),
        )
    )
    budget.spent_audio = float(totals["audio_in"] or 0) + float(totals["audio_out"] or 0)
    budget.spent_tokens = float(totals["tokens_in"] or 0) + float(totals["tokens_out"] or 0)


def start_session(
    user: Any,
    kind: str,
    model: str,
    policy: Policy,
    *,
    ip_address: str | None = None,
    user_agent: str = "",
) -> Session:
    """Write the live row and apply the start limits; raise ``Refused`` when one is hit.

    A refused start keeps its row, ended at once and closed by the limit, so
    the audit shows refused attempts too.
    """
    alias = app_settings.AUDIT_DATABASE
    row = RelaySession.objects.using(alias).create(
        user=user,
        username=str(user.get_username())[:150],
        ip_address=ip_address,
        user_agent=user_agent[:512],
        kind=kind,
        model=model[:200],
    )
    session = Session(row=row, policy=policy, started=time.monotonic())
    try:
        # Counted after our own row is written (see the module docstring).
        cap = policy.max_sessions
        if cap is not None and _live(user.pk, policy).count() > cap:
            raise Refused(*TOO_MANY_SESSIONS)
        session.budget = Budget.from_policy(policy)
        if session.budget is not None:
            read_spent(user.pk, session.budget, policy)
            if session.budget.exceeded():
                raise Refused(*BUDGET_EXCEEDED)
        try:
            session.claim = claim_quota(user.pk, policy)
        except QuotaExceeded:
            raise Refused(*QUOTA_EXCEEDED) from None
    except LimitsUnavailable:
        end_session(session, *LIMITS_UNAVAILABLE, CloseSide.RELAY)
        raise Refused(*LIMITS_UNAVAILABLE) from None
    except Refused as refused:
        end_session(session, refused.code, refused.reason, CloseSide.LIMIT)
        raise
    return session


def sync_usage(session: Session) -> None:
    """Write the live row's counters and re-read the user's budget (at ``response-done``)."""
    alias = app_settings.AUDIT_DATABASE
    RelaySession.objects.using(alias).filter(pk=session.row.pk).update(**session.meter.fields())
    if session.budget is not None:
        read_spent(session.row.user_id, session.budget, session.policy)
        session.synced_audio = session.meter.audio_seconds
        session.synced_tokens = session.meter.tokens


def end_session(session: Session, code: int, reason: str, closed_by: str) -> None:
    """Complete the row: end time, duration, how it ended and the counters."""
    row = session.row
    row.ended_at = timezone.now()
    row.duration_ms = max(0, round((time.monotonic() - session.started) * 1000))
    row.close_code = code
    row.close_reason = reason.encode()[:123].decode(errors="ignore")
    row.closed_by = closed_by
    for name, value in session.meter.fields().items():
        setattr(row, name, value)
    row.save(
        using=app_settings.AUDIT_DATABASE,
        update_fields=[
            "ended_at",
            "duration_ms",
            "close_code",
            "close_reason",
            "closed_by",
            *session.meter.fields(),
        ],
    )


def release_quota(session: Session) -> None:
    """Give the start's quota back (the Gateway socket never opened)."""
    if session.claim is not None:
        session.claim.release()
        session.claim = None


__all__ = [
    "DEFAULT_RATE",
    "Budget",
    "Meter",
    "Refused",
    "Session",
    "end_session",
    "read_spent",
    "release_quota",
    "start_session",
    "sync_usage",
]
