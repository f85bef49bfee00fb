from __future__ import annotations

import datetime as dt
import logging
from typing import Any, cast

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from gateway_realtime.conf import app_settings
from gateway_realtime.dashboard import DashboardAdmin, may_end_sessions
from gateway_realtime.models import (
    ClientSecretIssuance,
    DailyFailure,
    DailyUsage,
    Dashboard,
    QuotaCounter,
    RelaySession,
    RelayUsage,
    SiteDailyFailure,
    token_fingerprint,
)

logger = logging.getLogger("gateway_realtime")

#: The close reason (with 4410) of sessions ended from the admin.
ADMIN_REASON = "ended by an administrator"


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Rows the app writes and nobody edits: no add, no change.

    ``deletable``: whether staff with the permission may delete rows (False
    for the audit trails, whose rows leave only through the retention
    command, so the trail stays complete).
    """

    deletable = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.deletable and super().has_delete_permission(request, obj)


class CappedPaginator(Paginator):  # type: ignore[type-arg]
    """Counts at most ``CAP`` rows: a count of tens of millions of audit rows
    is a scan of them all on every page load (docs/scaling.md). Beyond it,
    filters narrow the list; pages past the cap are not offered."""

    CAP = 10_000

    @cached_property
    def count(self) -> int:
        rows = cast(QuerySet[Any], self.object_list)
        return int(rows[: self.CAP].count())


class FieldValueFilter(admin.SimpleListFilter):
    """Rows whose ``field`` equals the chosen value; the choices come from ``lookups``."""

    field = ""

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(**{self.field: value}) if value else queryset


class ErrorTypeFilter(FieldValueFilter):
    """The error types the usage ledger saw in the last 90 days: choices read
    from the ledger (a few rows a day), not a ``DISTINCT`` over the audit table."""

    title = _("error type")
    field = "error_type"
    parameter_name = "error_type__exact"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        since = timezone.now().date() - dt.timedelta(days=90)
        types = (
            SiteDailyFailure.objects.using(app_settings.AUDIT_DATABASE)
            .filter(day__gte=since)
            .values_list("error_type", flat=True)
            .distinct()
            .order_by("error_type")
        )
        # The chosen one too, so that a link to a type no longer seen still filters.
        chosen = [value for value in [self.value()] if value]
        return [(value, value) for value in sorted({*types, *chosen}) if value]


class AuthMethodFilter(FieldValueFilter):
    """The two credentials a mint can use: no query for the choices."""

    title = _("auth method")
    field = "auth_method"
    parameter_name = "auth_method__exact"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [("api-key", _("API key")), ("oidc", _("Vercel OIDC token"))]


@admin.register(ClientSecretIssuance)
class ClientSecretIssuanceAdmin(ReadOnlyAdmin):
    """Read-only: the audit trail is written by the app, never by hand.

    Built to stay fast on a table of tens of millions of rows
    (docs/scaling.md): the list is ordered by the ``created_at`` index and
    counted up to ``CappedPaginator.CAP``; no filter reads the table for its
    choices (no ``date_hierarchy``, whose year and month links are a
    ``DISTINCT`` over every row). Searching for a whole token (``vcst_...``)
    finds its row by fingerprint, and an exact username the user's rows by
    the ``(user, created_at)`` index; any other term is a ``LIKE`` over the
    rows, which on a large table is a scan.
    """

    list_display = [
        "created_at",
        "username",
        "kind",
        "model",
        "source",
        "outcome",
        "error_type",
        "upstream_status",
        "latency_ms",
        "token_hint",
    ]
    list_filter = ["outcome", "kind", "source", AuthMethodFilter, ErrorTypeFilter, "created_at"]
    search_fields = ["username", "model", "ip_address", "token_hint", "=token_fingerprint"]
    list_select_related = False
    show_full_result_count = False
    paginator = CappedPaginator
    readonly_fields = [f.name for f in ClientSecretIssuance._meta.fields]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[ClientSecretIssuance], search_term: str
    ) -> tuple[QuerySet[ClientSecretIssuance], bool]:
        term = search_term.strip()
        if term.startswith("vcst_") and "…" not in term:
            return queryset.filter(token_fingerprint=token_fingerprint(term)), False
        users = get_user_model()._default_manager.filter(**{get_user_model().USERNAME_FIELD: term})
        user = users.values_list("pk", flat=True).first() if term else None
        if user is not None:
            return queryset.filter(user_id=user), False
        return super().get_search_results(request, queryset, search_term)

    deletable = False


@admin.register(QuotaCounter)
class QuotaCounterAdmin(ReadOnlyAdmin):
    """Read-only: answers "why is this user refused?" (``used`` in the current window).

    Deleting a counter gives the user their quota back for that window, so
    deletion stays allowed for staff with the permission.
    """

    list_display = ["user", "window_start", "window_end", "used"]
    list_filter = ["window_start"]
    search_fields = ["user__username"]
    date_hierarchy = "window_start"
    list_select_related = ["user"]
    readonly_fields = ["user", "window_start", "window_end", "used"]


@admin.register(RelayUsage)
class RelayUsageAdmin(ReadOnlyAdmin):
    """Read-only: what each user's relayed sessions spent per budget window.

    Deleting a row gives the user that window's budget back, so deletion
    stays allowed for staff with the permission, as for quota counters.
    """

    list_display = ["user", "window_start", "window_end", "audio_seconds", "tokens"]
    list_filter = ["window_start"]
    search_fields = ["user__username"]
    date_hierarchy = "window_start"
    list_select_related = ["user"]
    readonly_fields = ["user", "window_start", "window_end", "audio_seconds", "tokens"]


class RelaySessionStateFilter(admin.SimpleListFilter):
    title = _("state")
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [("live", _("Live")), ("ended", _("Ended"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "live":
            return queryset.filter(ended_at__isnull=True)
        if self.value() == "ended":
            return queryset.filter(ended_at__isnull=False)
        return queryset


def _seconds(total: float) -> str:
    minutes, seconds = divmod(int(total), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{seconds:02}" if hours else f"{minutes}:{seconds:02}"


@admin.register(RelaySession)
class RelaySessionAdmin(ReadOnlyAdmin):
    """Read-only: one row per relayed session, written by the relay.

    The action ends the live sessions of the selected rows' users everywhere
    (``revoke_sessions``): staff who may change users may use it.
    """

    list_display = [
        "started_at",
        "account",
        "kind",
        "model",
        "duration",
        "closed_by",
        "close_reason",
        "attempts",
        "usage",
    ]
    list_filter = [RelaySessionStateFilter, "kind", "closed_by", "model", "started_at"]
    search_fields = ["username", "user__username"]
    date_hierarchy = "started_at"
    list_select_related = ["user"]
    show_full_result_count = False
    readonly_fields = [f.name for f in RelaySession._meta.fields]
    actions = ["end_live_sessions"]

    @admin.display(description=_("user"), ordering="username")
    def account(self, row: RelaySession) -> str:
        if row.username:
            return row.username
        return str(row.user) if row.user_id else "-"

    @admin.display(description=_("duration"), ordering="duration_ms")
    def duration(self, row: RelaySession) -> str:
        if row.ended_at is None:
            return str(
                _("live, %(time)s")
                % {"time": _seconds((timezone.now() - row.started_at).total_seconds())}
            )
        if row.duration_ms is None:
            return "-"
        return _seconds(row.duration_ms / 1000)

    @admin.display(description=_("usage"))
    def usage(self, row: RelaySession) -> str:
        parts = []
        if row.audio_seconds_in or row.audio_seconds_out:
            parts.append(
                str(_("audio %(in)s in, %(out)s out"))
                % {"in": _seconds(row.audio_seconds_in), "out": _seconds(row.audio_seconds_out)}
            )
        if row.input_tokens or row.output_tokens:
            parts.append(
                str(_("tokens %(in)d in, %(out)d out"))
                % {"in": row.input_tokens, "out": row.output_tokens}
            )
        return "; ".join(parts) or "-"

    @admin.action(description=_("End the live sessions of these users"), permissions=["revoke"])
    def end_live_sessions(self, request: HttpRequest, queryset: QuerySet[RelaySession]) -> None:
        from gateway_realtime.relay.revocation import revoke_sessions

        user_ids = sorted(
            set(
                queryset.filter(ended_at__isnull=True, user__isnull=False).values_list(
                    "user_id", flat=True
                )
            )
        )
        if not user_ids:
            self.message_user(
                request, _("None of the selected sessions is live."), messages.WARNING
            )
            return
        try:
            sent = all([revoke_sessions(user_id, ADMIN_REASON) for user_id in user_ids])
        except Exception:
            logger.exception("The admin action could not revoke relayed sessions")
            self.message_user(
                request,
                _("Could not reach the channel layer: no session was ended. See the log."),
                messages.ERROR,
            )
            return
        if not sent:
            self.message_user(
                request,
                _("No channel layer is configured (CHANNEL_LAYERS): no session was ended."),
                messages.ERROR,
            )
            return
        self.message_user(
            request,
            ngettext(
                "Ending the live sessions of %(count)d user.",
                "Ending the live sessions of %(count)d users.",
                len(user_ids),
            )
            % {"count": len(user_ids)},
            messages.SUCCESS,
        )

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        """Who may change users (and so deactivate them) may end their sessions."""
        return may_end_sessions(request)

    deletable = False


class LedgerAdmin(ReadOnlyAdmin):
    """The usage ledger's per-user rows, written by the app (``gateway_realtime.usage``).

    Built like the audit admin for a table of millions of rows a day
    (docs/scaling.md): the count is capped, and days are filtered by ranges
    ("today", "past 7 days", "this month") rather than a ``date_hierarchy``,
    whose links are a ``DISTINCT`` over every row.
    """

    # Rows are rebuilt from the audit trail, never deleted by hand.
    deletable = False
    paginator = CappedPaginator
    show_full_result_count = False
    list_select_related = ["user"]


@admin.register(DailyUsage)
class DailyUsageAdmin(LedgerAdmin):
    list_display = [
        "day",
        "user",
        "kind",
        "model",
        "issued",
        "failed",
        "rejected",
        "relayed_sessions",
        "audio_seconds_in",
        "audio_seconds_out",
        "input_tokens",
        "output_tokens",
    ]
    list_filter = ["day", "kind"]
    search_fields = ["model"]


@admin.register(DailyFailure)
class DailyFailureAdmin(LedgerAdmin):
    list_display = ["day", "user", "kind", "model", "outcome", "error_type", "count"]
    list_filter = ["day", "outcome", "kind"]
    search_fields = ["error_type", "model"]


# The staff dashboard (gateway_realtime.dashboard), in the app's index.
admin.site.register(Dashboard, DashboardAdmin)
