"""Per-user limits: the policy hook and the hard quota.

Two limits protect the Gateway bill from one user (or one stolen session):

- a burst **rate** (``GATEWAY_REALTIME_RATE``, e.g. ``"10/min"``), a DRF
  throttle on a shared cache (see ``gateway_realtime.throttling``), checked by
  the endpoints before anything else;
- a hard **quota** (``GATEWAY_REALTIME_QUOTA`` mints per
  ``GATEWAY_REALTIME_QUOTA_PERIOD`` seconds), claimed in the database inside
  ``services.mint_client_secret`` before the Gateway is called, so every mint
  path (endpoint, template tag, site code) counts, and no number of
  concurrent workers on any number of hosts can exceed it.

Both fail closed: if their store cannot be reached, ``LimitsUnavailable`` is
raised and nothing is minted.

``GATEWAY_REALTIME_POLICY`` (a dotted path or a callable) may change any of
this per user; see ``Policy`` and ``get_policy``. ``quota_left`` tells a page
how many mints a user has left.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from django.db import Error as DatabaseError
from django.db import IntegrityError, transaction
from django.db.models import F, QuerySet

from gateway_realtime.conf import app_settings, resolve_callable
from gateway_realtime.exceptions import (
    GatewayConfigurationError,
    GatewayError,
    LimitsUnavailable,
    QuotaExceeded,
)
from gateway_realtime.models import QuotaCounter
from gateway_realtime.protocol import Kind

if TYPE_CHECKING:
    from django.http import HttpRequest

RATE_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

_POLICY_CACHE_ATTR = "_gateway_realtime_policies"


@dataclasses.dataclass(frozen=True)
class Policy:
    """What one user may mint for one kind.

    - ``default_model``: minted when the caller names no model (``None``: none).
    - ``allowed_models``: every model the caller may name (the default included).
    - ``max_lifetime``: the longest lifetime, in seconds, the caller may ask for.
    - ``quota``: mints per ``quota_period`` seconds (``None``: no quota).
    - ``rate``: burst rate like ``"10/min"`` (``None``: no burst limit).

    Relay mode (``gateway_realtime.relay``) reads three more; the quota counts
    a relayed session's start as one mint:

    - ``max_sessions``: relayed sessions a user may have open at once (``None``: any).
    - ``max_session_seconds``: how long one relayed session may last.
    - ``budget``: usage a user may spend per ``quota_period`` in relayed
      sessions, metered from the Gateway's events: ``{"audio_seconds": 600,
      "tokens": 200000}``, either key optional (``None``: no budget).

    Build a changed copy with ``dataclasses.replace(policy, quota=1000)``.
    """

    default_model: str | None
    allowed_models: tuple[str, ...]
    max_lifetime: int
    quota: int | None
    quota_period: int
    rate: str | None
    max_sessions: int | None = None
    max_session_seconds: float = 900.0
    budget: Mapping[str, float] | None = None


def site_policy(kind: Kind) -> Policy:
    """The policy the ``GATEWAY_REALTIME_*`` settings describe for ``kind``."""
    return Policy(
        default_model=app_settings.default_model(kind),
        allowed_models=tuple(app_settings.allowed_models(kind)),
        max_lifetime=app_settings.MAX_LIFETIME,
        quota=app_settings.QUOTA,
        quota_period=app_settings.QUOTA_PERIOD,
        rate=app_settings.RATE,
        max_sessions=app_settings.RELAY_MAX_SESSIONS,
        max_session_seconds=app_settings.RELAY_MAX_SESSION_SECONDS,
        budget=app_settings.RELAY_BUDGET,
    )


def get_policy(user: Any, kind: Kind | str, request: HttpRequest | None = None) -> Policy:
    """The policy for ``user`` and ``kind``: the site's, as ``GATEWAY_REALTIME_POLICY`` adjusts it.

    The hook is called as ``hook(user=, kind=, request=, policy=)`` with the
    site's policy and must return a ``Policy`` (``None`` keeps the site's). It
    runs once per request and kind: the result is remembered on ``request``.
    """
    kind = Kind(kind)
    memo: dict[Kind, Policy] | None = None
    if request is not None:
        memo = request.__dict__.setdefault(_POLICY_CACHE_ATTR, {})
        if kind in memo:
            return memo[kind]
    policy = site_policy(kind)
    hook = app_settings.POLICY
    if hook:
        func = resolve_callable(hook)
        result = func(user=user, kind=kind.value, request=request, policy=policy)
        if result is not None:
            if not isinstance(result, Policy):
                raise GatewayConfigurationError(
                    "GATEWAY_REALTIME_POLICY must return a gateway_realtime.limits.Policy or None."
                )
            policy = result
    if memo is not None:
        memo[kind] = policy
    return policy


def parse_rate(rate: str) -> tuple[int, int]:
    """``"10/min"`` -> ``(10, 60)``: requests per period in seconds.

    The period is ``s``, ``m``, ``h`` or ``d``, optionally with a count and a
    longer spelling (``"5/10s"``, ``"100/hour"``), like DRF's rates.
    """
    number, _, period = rate.strip().partition("/")
    period = period.strip().lower()
    digits = ""
    while period[:1].isdigit():
        digits, period = digits + period[0], period[1:]
    if not number.strip().isdigit() or period[:1] not in RATE_PERIODS:
        raise ValueError(f"{rate!r} is not a rate like '10/min'")
    seconds = RATE_PERIODS[period[0]] * (int(digits) if digits else 1)
    if seconds < 1:
        raise ValueError(f"{rate!r} has an empty period")
    return int(number), seconds


def quota_window(period: int, now: float | None = None) -> tuple[dt.datetime, int]:
    """The current fixed window's start and the whole seconds until it ends.

    Windows are aligned to the Unix epoch, so every host agrees on them
    without talking to each other.
    """
    now = time.time() if now is None else now
    start = math.floor(now / period) * period
    retry_after = max(1, math.ceil(start + period - now))
    return dt.datetime.fromtimestamp(start, tz=dt.UTC), retry_after


@dataclasses.dataclass(frozen=True)
class QuotaClaim:
    """One mint taken from a user's quota window."""

    user_id: int
    window_start: dt.datetime
    window_end: dt.datetime

    def _counter(self, alias: str) -> QuerySet[QuotaCounter]:
        return QuotaCounter.objects.using(alias).filter(
            user_id=self.user_id, window_start=self.window_start, window_end=self.window_end
        )

    def _take(self, quota: int, alias: str) -> bool:
        """Add one to the counter if it is below ``quota``; ``False``: no row yet, or full."""
        return bool(self._counter(alias).filter(used__lt=quota).update(used=F("used") + 1))

    def release(self) -> None:
        """Give the mint back, for one that certainly issued nothing (best effort)."""
        alias = app_settings.AUDIT_DATABASE
        # Keeping the claim when the database is gone only errs on the quota's side.
        # The savepoint keeps a caller's transaction usable if the write fails.
        with contextlib.suppress(DatabaseError), transaction.atomic(using=alias):
            self._counter(alias).filter(used__gt=0).update(used=F("used") - 1)


def claim_quota(user_id: int, policy: Policy) -> QuotaClaim | None:
    """Claim one mint from the user's quota (``None`` when the policy has no quota).

    Raises ``QuotaExceeded`` (with ``retry_after``) when the window is used
    up, and ``LimitsUnavailable`` when the database cannot be reached.

    The claim is one conditional ``UPDATE ... SET used = used + 1 WHERE used
    < quota`` on the (user, window) row, which the database serialises per
    row, so concurrent workers on any number of hosts cannot pass the quota.
    A missing row is created (in a savepoint); if a concurrent mint created
    it first (the unique constraint), the ``UPDATE`` is tried again.

    ``services.mint_client_secret`` calls this inside the transaction that
    also writes the pending audit row, so the claim and the row are made
    together or not at all.
    """
    if policy.quota is None:
        return None
    window, retry_after = quota_window(policy.quota_period)
    if policy.quota >= 1:
        alias = app_settings.AUDIT_DATABASE
        window_end = window + dt.timedelta(seconds=policy.quota_period)
        claim = QuotaClaim(user_id, window, window_end)
        try:
            if claim._take(policy.quota, alias):
                return claim
            try:
                # A savepoint, so a lost insert race leaves the transaction usable.
                with transaction.atomic(using=alias):
                    QuotaCounter.objects.using(alias).create(
                        user_id=user_id, window_start=window, window_end=window_end, used=1
                    )
                return claim
            except IntegrityError:
                pass
            if claim._take(policy.quota, alias):
                return claim
        except DatabaseError as error:
            raise LimitsUnavailable(
                f"The quota store could not be reached ({type(error).__name__})."
            ) from None
    raise QuotaExceeded(
        f"The quota of {policy.quota} client secrets per {policy.quota_period} s is used up.",
        retry_after=retry_after,
    )


def quota_left(user: Any, kind: Kind | str, request: HttpRequest | None = None) -> int | None:
    """How many more client secrets ``user`` may mint for ``kind`` in the current quota window.

    ``None`` when no quota applies: the user's policy (``get_policy``) has
    none, or there is no logged-in user (quotas are per user). Otherwise the
    policy's ``quota`` less what the user has used in the current window
    (``QuotaCounter``), never below 0. The counter is shared by every kind,
    so a mint of any kind lowers it. Reads only, claims nothing; pass the
    request so a policy hook that looks at it sees it (and runs once).

    The window ends in ``quota_window(policy.quota_period)[1]`` seconds.
    Raises ``LimitsUnavailable`` when the quota store cannot be read.
    """
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    policy = get_policy(user, kind, request)
    if policy.quota is None:
        return None
    if policy.quota < 1:
        return 0
    window, _ = quota_window(policy.quota_period)
    window_end = window + dt.timedelta(seconds=policy.quota_period)
    alias = app_settings.AUDIT_DATABASE
    try:
        used = (
            QuotaCounter.objects.using(alias)
            .filter(user_id=user.pk, window_start=window, window_end=window_end)
            .values_list("used", flat=True)
            .first()
        )
    except DatabaseError as error:
        raise LimitsUnavailable(
            f"The quota store could not be reached ({type(error).__name__})."
        ) from None
    return max(0, policy.quota - (used or 0))


def certainly_not_issued(error: Exception) -> bool:
    """Whether a failed mint cannot have created a secret on the Gateway.

    True when the request was never sent (a configuration error, a missing or
    malformed credential included) or the Gateway answered with an error
    status. Not for time-outs, dropped connections or unusable 2xx answers: a
    secret may exist there, so the quota keeps the claim.
    """
    if isinstance(error, GatewayConfigurationError):
        return True
    if isinstance(error, GatewayError):
        return error.status_code is not None and error.status_code >= 400
    return False
