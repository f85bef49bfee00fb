"""The audit trail: one row per attempt to mint a client secret."""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.db import models
from django.db.models import F
from django.utils.translation import gettext_lazy as _

from gateway_realtime.protocol import KIND_CHOICES


def token_fingerprint(token: str) -> str:
    """SHA-256 of a token, hex. Tokens are long and random, so no key is needed."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_hint(token: str) -> str:
    """A short, non-secret reminder of a token for incident lookup: ``vcst_ab…wxyz``."""
    if len(token) <= 16:
        return token[:4] + "…"
    return f"{token[:7]}…{token[-4:]}"


class Source(models.TextChoices):
    ENDPOINT = "endpoint", _("Endpoint")
    TEMPLATE = "template", _("Template tag")
    OTHER = "other", _("Other code")


class Outcome(models.TextChoices):
    PENDING = "pending", _("Pending")
    ISSUED = "issued", _("Issued")
    FAILED = "failed", _("Failed")
    #: Refused by this site's quota before the Gateway was called.
    REJECTED = "rejected", _("Rejected by limits")


class AuditRecord(models.Model):
    """Who asked for what: the fields the two audit trails share (abstract).

    Never the token and never the site's credential.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("user"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        # Each model's (user, time) index serves lookups by user.
        db_index=False,
    )
    username = models.CharField(_("username"), max_length=150, blank=True)
    ip_address = models.GenericIPAddressField(_("IP address"), null=True, blank=True)
    user_agent = models.CharField(_("user agent"), max_length=512, blank=True)
    kind = models.CharField(_("kind"), max_length=16, choices=KIND_CHOICES)
    model = models.CharField(_("model"), max_length=200)

    class Meta:
        abstract = True

    @property
    def who(self) -> str:
        """The username, else the user's id, else "anonymous"."""
        return self.username or (f"user {self.user_id}" if self.user_id else "anonymous")


class ClientSecretIssuance(AuditRecord):
    """One attempt to mint a client secret, written before the Gateway is called.

    Holds who asked, for what, and what came of it; never the token (only its
    SHA-256 fingerprint and a short hint) and never the site's credential.
    """

    created_at = models.DateTimeField(_("requested at"), auto_now_add=True, db_index=True)
    completed_at = models.DateTimeField(_("completed at"), null=True, blank=True)
    source = models.CharField(
        _("source"), max_length=16, choices=Source.choices, default=Source.ENDPOINT
    )
    requested_lifetime = models.PositiveIntegerField(
        _("requested lifetime (s)"), null=True, blank=True
    )
    effective_lifetime = models.IntegerField(_("effective lifetime (s)"), null=True, blank=True)
    auth_method = models.CharField(_("auth method"), max_length=16, blank=True)

    outcome = models.CharField(
        _("outcome"), max_length=16, choices=Outcome.choices, default=Outcome.PENDING
    )
    error_type = models.CharField(_("error type"), max_length=64, blank=True)
    error_message = models.CharField(_("error message"), max_length=500, blank=True)
    upstream_status = models.PositiveSmallIntegerField(_("Gateway status"), null=True, blank=True)
    generation_id = models.CharField(_("Gateway generation id"), max_length=128, blank=True)
    latency_ms = models.PositiveIntegerField(_("latency (ms)"), null=True, blank=True)
    expires_at = models.DateTimeField(_("expires at"), null=True, blank=True)
    token_fingerprint = models.CharField(
        _("token fingerprint (SHA-256)"), max_length=64, blank=True
    )
    token_hint = models.CharField(_("token hint"), max_length=16, blank=True)

    class Meta:
        verbose_name = _("client secret issuance")
        verbose_name_plural = _("client secret issuances")
        ordering = ["-created_at", "-id"]
        indexes = [
            # Per-user history and quotas: "this user's mints since T".
            models.Index(fields=["user", "created_at"], name="gwrt_user_created_idx"),
            # The admin's outcome filter over a date range.
            models.Index(fields=["outcome", "created_at"], name="gwrt_outcome_created_idx"),
            # The admin's search by token. A plain index: db_index=True would
            # add a second, LIKE-only one on PostgreSQL, and every index is
            # paid for on each of a mint's two writes.
            models.Index(fields=["token_fingerprint"], name="gwrt_token_fingerprint_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.model} for {self.who}: {self.outcome}"


class UserWindow(models.Model):
    """A counter row's key: one user and one window of time (abstract)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("user"),
        on_delete=models.CASCADE,
        related_name="+",
        # The unique (user, window_start, window_end) constraint's index serves it.
        db_index=False,
    )
    window_start = models.DateTimeField(_("window start"))
    # Stored so that pruning needs no knowledge of each policy's period.
    window_end = models.DateTimeField(_("window end"))

    class Meta:
        abstract = True


class QuotaCounter(UserWindow):
    """How many mints a user has used in one quota window (``GATEWAY_REALTIME_QUOTA``).

    One row per (user, window). Each mint claims one unit with a single
    conditional ``UPDATE ... SET used = used + 1 WHERE used < limit``, which
    the database serialises per row, so concurrent workers on any number of
    hosts can never push a user past the limit.
    """

    used = models.PositiveIntegerField(_("mints used"), default=0)

    class Meta:
        verbose_name = _("quota counter")
        verbose_name_plural = _("quota counters")
        ordering = ["-window_start", "user"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "window_start", "window_end"], name="gwrt_quota_user_window"
            )
        ]
        indexes = [
            # The prune command deletes windows that have ended.
            models.Index(fields=["window_end"], name="gwrt_quota_window_end_idx"),
        ]

    def __str__(self) -> str:
        return f"user {self.user_id} from {self.window_start:%Y-%m-%d %H:%M}: {self.used}"


class CloseSide(models.TextChoices):
    """Who ended a relayed session."""

    BROWSER = "browser", _("The browser")
    GATEWAY = "gateway", _("The Gateway")
    LIMIT = "limit", _("A limit")
    REVOKED = "revoked", _("Revoked")
    RELAY = "relay", _("The relay (a fault)")
    SERVER = "server", _("The server (shutting down)")


class RelaySession(AuditRecord):
    """One session relayed between a browser and the Gateway (``gateway_realtime.relay``).

    Written when the relay accepts the browser's socket, completed when the
    session ends; holds who, what, how long, how it ended and the usage
    metered from the Gateway's events. Never a frame's content, never the
    site's credential.
    """

    started_at = models.DateTimeField(_("started at"), auto_now_add=True)
    ended_at = models.DateTimeField(_("ended at"), null=True, blank=True)
    duration_ms = models.PositiveIntegerField(_("duration (ms)"), null=True, blank=True)
    close_code = models.PositiveIntegerField(_("close code"), null=True, blank=True)
    # A WebSocket close reason is at most 123 bytes.
    close_reason = models.CharField(_("close reason"), max_length=123, blank=True)
    closed_by = models.CharField(
        _("closed by"), max_length=16, choices=CloseSide.choices, blank=True
    )
    frames_from_browser = models.PositiveBigIntegerField(_("frames from the browser"), default=0)
    frames_from_gateway = models.PositiveBigIntegerField(_("frames from the Gateway"), default=0)
    bytes_from_browser = models.PositiveBigIntegerField(_("bytes from the browser"), default=0)
    bytes_from_gateway = models.PositiveBigIntegerField(_("bytes from the Gateway"), default=0)
    audio_seconds_in = models.FloatField(_("audio in (s)"), default=0.0)
    audio_seconds_out = models.FloatField(_("audio out (s)"), default=0.0)
    input_tokens = models.PositiveBigIntegerField(_("input tokens"), default=0)
    output_tokens = models.PositiveBigIntegerField(_("output tokens"), default=0)
    attempts = models.PositiveIntegerField(
        _("attempts"),
        default=1,
        help_text=_(
            "Refused starts of the same user, close code and reason within a "
            "minute share one row; a started session is always 1."
        ),
    )

    class Meta:
        verbose_name = _("relayed session")
        verbose_name_plural = _("relayed sessions")
        ordering = ["-started_at", "-id"]
        indexes = [
            # Per-user history, live sessions and budgets: "this user's sessions since T".
            models.Index(fields=["user", "started_at"], name="gwrt_relay_user_started_idx"),
            # Retention: the prune command deletes by age.
            models.Index(fields=["started_at"], name="gwrt_relay_started_idx"),
        ]

    def __str__(self) -> str:
        state = "live" if self.ended_at is None else f"ended ({self.closed_by or '?'})"
        return f"{self.kind} {self.model} relayed for {self.who}: {state}"


class RelayUsage(UserWindow):
    """What a user's relayed sessions spent in one budget window (``RELAY_BUDGET``).

    One row per (user, window). Every session adds its metered usage with
    ``UPDATE ... SET audio_seconds = audio_seconds + delta``, which the
    database serialises per row, so the sessions of one user on any number
    of processes and hosts spend one budget and no update is lost.
    """

    audio_seconds = models.FloatField(_("audio (s)"), default=0.0)
    tokens = models.PositiveBigIntegerField(_("tokens"), default=0)

    class Meta:
        verbose_name = _("relay usage")
        verbose_name_plural = _("relay usage")
        ordering = ["-window_start", "user"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "window_start", "window_end"], name="gwrt_relay_usage_user_window"
            )
        ]
        indexes = [
            # The prune command deletes windows that have ended.
            models.Index(fields=["window_end"], name="gwrt_relay_usage_end_idx"),
        ]

    def __str__(self) -> str:
        return f"user {self.user_id} from {self.window_start:%Y-%m-%d %H:%M}"


class LedgerKey(models.Model):
    """A ledger row's key: one kind and model on one UTC day (abstract)."""

    day = models.DateField(_("day (UTC)"))
    kind = models.CharField(_("kind"), max_length=16, choices=KIND_CHOICES)
    model = models.CharField(_("model"), max_length=200)

    class Meta:
        abstract = True


class UsageKey(LedgerKey):
    """A per-user ledger row's key: one user, kind and model on one UTC day (abstract)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("user"),
        # The ledger is the user's usage: it leaves with the user, as the
        # quota counters do (the audit trails keep the deleted user's rows).
        on_delete=models.CASCADE,
        related_name="+",
        # The unique key's index serves lookups by day; (user, day) has its own.
        db_index=False,
    )

    class Meta:
        abstract = True


class UsageCounters(models.Model):
    """What the ledger counts for a key (abstract)."""

    issued = models.PositiveBigIntegerField(_("issued"), default=0)
    failed = models.PositiveBigIntegerField(_("failed"), default=0)
    rejected = models.PositiveBigIntegerField(_("rejected"), default=0)
    relayed_sessions = models.PositiveBigIntegerField(_("relayed sessions"), default=0)
    relay_refused = models.PositiveBigIntegerField(_("relayed starts refused"), default=0)
    relayed_seconds = models.FloatField(_("relayed time (s)"), default=0.0)
    audio_seconds_in = models.FloatField(_("audio in (s)"), default=0.0)
    audio_seconds_out = models.FloatField(_("audio out (s)"), default=0.0)
    input_tokens = models.PositiveBigIntegerField(_("input tokens"), default=0)
    output_tokens = models.PositiveBigIntegerField(_("output tokens"), default=0)

    class Meta:
        abstract = True


class DailyUsage(UsageKey, UsageCounters):
    """The usage ledger: what one user spent on one kind and model in one UTC day.

    Updated as each mint and relayed session completes, with conflict-safe
    increments (``UPDATE ... SET issued = issued + 1``, the row created
    first if missing), so concurrent workers on any number of hosts lose no
    update. What the dashboard and the CSV export read, so that their cost
    grows with days, not with mints. ``manage.py gateway_realtime_ledger
    rebuild`` recomputes any range of days from the audit trails.
    """

    class Meta:
        verbose_name = _("daily usage")
        verbose_name_plural = _("daily usage")
        ordering = ["-day", "user", "kind", "model"]
        constraints = [
            models.UniqueConstraint(
                fields=["day", "user", "kind", "model"], name="gwrt_usage_day_user_kind_model"
            )
        ]
        indexes = [
            # A user's page: their usage per day.
            models.Index(fields=["user", "day"], name="gwrt_usage_user_day_idx"),
            # The dashboard's top users on a large site: each day's rows in
            # spend order (audio, tokens, secrets issued; dashboard.top_users).
            models.Index(
                F("day"),
                (F("audio_seconds_in") + F("audio_seconds_out")).desc(),
                (F("input_tokens") + F("output_tokens")).desc(),
                F("issued").desc(),
                name="gwrt_usage_day_spend_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.day} user {self.user_id} {self.kind} {self.model}"


class Outcomes(models.TextChoices):
    """What a ``DailyFailure`` row counts."""

    FAILED = "failed", _("Mint failed")
    REJECTED = "rejected", _("Mint rejected by limits")
    RELAY_REFUSED = "relay_refused", _("Relayed start refused")


class FailureCounter(models.Model):
    """What a failure row of the ledger counts: attempts with one outcome and error type."""

    outcome = models.CharField(_("outcome"), max_length=16, choices=Outcomes.choices)
    error_type = models.CharField(_("error type"), max_length=64)
    count = models.PositiveBigIntegerField(_("count"), default=0)

    class Meta:
        abstract = True


class DailyFailure(UsageKey, FailureCounter):
    """The ledger's breakdown of what did not go through: one row per day,
    user, kind, model, outcome and error type, with its count."""

    class Meta:
        verbose_name = _("daily failure")
        verbose_name_plural = _("daily failures")
        ordering = ["-day", "user", "kind", "model", "outcome", "error_type"]
        constraints = [
            models.UniqueConstraint(
                fields=["day", "user", "kind", "model", "outcome", "error_type"],
                name="gwrt_failure_day_key",
            )
        ]
        indexes = [
            models.Index(fields=["user", "day"], name="gwrt_failure_user_day_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.day} user {self.user_id} {self.outcome} {self.error_type}: {self.count}"


class SiteDailyUsage(LedgerKey, UsageCounters):
    """The site's totals per UTC day, kind and model: the ledger summed over users.

    Written with the per-user rows, in the same flush, and rebuilt with them.
    It also counts the attempts that have no user (site code minting with
    ``user=None``, or a user deleted since: ``DailyUsage`` leaves with its
    user, the audit trail and these totals do not). What the dashboard's
    charts and totals read, so that they cost a few rows a day whatever the
    number of users (docs/scaling.md).
    """

    class Meta:
        verbose_name = _("site daily usage")
        verbose_name_plural = _("site daily usage")
        ordering = ["-day", "kind", "model"]
        constraints = [
            models.UniqueConstraint(fields=["day", "kind", "model"], name="gwrt_site_usage_key")
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.kind} {self.model}"


class SiteDailyFailure(LedgerKey, FailureCounter):
    """The site's failures per UTC day, kind, model, outcome and error type
    (``DailyFailure`` summed over users, with the attempts that have none)."""

    class Meta:
        verbose_name = _("site daily failure")
        verbose_name_plural = _("site daily failures")
        ordering = ["-day", "kind", "model", "outcome", "error_type"]
        constraints = [
            models.UniqueConstraint(
                fields=["day", "kind", "model", "outcome", "error_type"],
                name="gwrt_site_failure_key",
            )
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.outcome} {self.error_type}: {self.count}"


class Dashboard(DailyUsage):
    """The staff dashboard in the admin (``gateway_realtime.dashboard``): a proxy of the ledger.

    No table of its own. It exists so that the dashboard has a place in the
    admin's app index (``admin/gateway_realtime/dashboard/`` on whatever
    admin site the project uses) and one permission, ``view_dashboard``,
    that staff are given to see it.
    """

    class Meta:
        proxy = True
        verbose_name = _("usage dashboard")
        verbose_name_plural = _("usage dashboard")
        # Nothing here is added, changed or deleted: the one permission is to look.
        default_permissions = ("view",)
