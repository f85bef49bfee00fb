from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from gateway_realtime.models import ClientSecretIssuance, QuotaCounter, token_fingerprint


@admin.register(ClientSecretIssuance)
class ClientSecretIssuanceAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Read-only: the audit trail is written by the app, never by hand.

    Searching for a whole token (``vcst_...``) finds its row by fingerprint.
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
    list_filter = ["outcome", "kind", "source", "auth_method", "error_type", "created_at"]
    search_fields = ["username", "model", "ip_address", "token_hint", "=token_fingerprint"]
    date_hierarchy = "created_at"
    list_select_related = False
    show_full_result_count = False
    readonly_fields = [f.name for f in ClientSecretIssuance._meta.fields]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[ClientSecretIssuance], search_term: str
    ) -> tuple[QuerySet[ClientSecretIssuance], bool]:
        term = search_term.strip()
        if term.startswith("vcst_") and "…" not in term:
            return queryset.filter(token_fingerprint=token_fingerprint(term)), False
        return super().get_search_results(request, queryset, search_term)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Rows leave only through the retention command, so the trail stays complete.
        return False


@admin.register(QuotaCounter)
class QuotaCounterAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
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

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
