"""The staff dashboard in the admin: usage and health at a glance (docs/dashboard.md).

``DashboardAdmin`` is registered for the ``Dashboard`` proxy model, so the
dashboard sits in the app's admin index at ``admin/gateway_realtime/dashboard/``
on whatever admin site the project uses, and the proxy's one permission,
``gateway_realtime.view_dashboard``, decides who sees it. Its pages:

- ``dashboard/``: for a period (``?since=&until=``, UTC days, both
  included; the last 30 by default, at most ``PeriodForm.MAX_DAYS``), mints
  per day by outcome, failures by type, relayed minutes and tokens per
  day, the top users by spend, and the circuit breaker's state now;
- ``dashboard/user/<pk>/``: one user's usage per day, their live relayed
  sessions (with a button that ends them, for staff who may change users)
  and their quota left per kind;
- ``dashboard/export.csv``: the ledger's rows for the period.

Everything read is the usage ledger, with aggregate queries: the site's
charts and totals its site-wide rows (``SiteDailyUsage``,
``SiteDailyFailure``: a few a day, whatever the number of users), a user's
page and the top users the per-user rows (``DailyUsage``,
``DailyFailure``), so a page costs what the days (and, for the top users,
the active users) cost, never what the mints do; the live sessions are the
``RelaySession`` rows with no end. Every page is sent with a strict
Content-Security-Policy of its own: the charts are server-rendered SVG
(``gateway_realtime.charts``) and the page runs no inline script or style.
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename, get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, F, QuerySet, Sum
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.safestring import SafeString
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from gateway_realtime import charts
from gateway_realtime.breaker import CircuitState, circuit_state
from gateway_realtime.conf import app_settings
from gateway_realtime.exceptions import GatewayConfigurationError, LimitsUnavailable
from gateway_realtime.limits import get_policy, quota_left
from gateway_realtime.models import (
    DailyFailure,
    DailyUsage,
    RelaySession,
    SiteDailyFailure,
    SiteDailyUsage,
)
from gateway_realtime.protocol import Kind

logger = logging.getLogger("gateway_realtime")

#: The ledger's counters, in the order of the CSV's columns.
COUNTERS = (
    "issued",
    "failed",
    "rejected",
    "relayed_sessions",
    "relay_refused",
    "relayed_seconds",
    "audio_seconds_in",
    "audio_seconds_out",
    "input_tokens",
    "output_tokens",
)
FLOAT_COUNTERS = frozenset({"relayed_seconds", "audio_seconds_in", "audio_seconds_out"})

#: Mints by outcome, as the per-day chart stacks them (and as CSS colours them).
MINT_SERIES = (
    charts.Series("issued", str(_("issued"))),
    charts.Series("failed", str(_("failed"))),
    charts.Series("rejected", str(_("rejected"))),
)
TOKEN_SERIES = (
    charts.Series("input", str(_("input tokens"))),
    charts.Series("output", str(_("output tokens"))),
)
MINUTE_SERIES = (charts.Series("relayed", str(_("relayed minutes"))),)

#: How many users the "top users by spend" table lists.
TOP_USERS = 20

#: Characters that make a spreadsheet read a cell as a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def utc_today() -> dt.date:
    return timezone.now().astimezone(dt.UTC).date()


# The period -------------------------------------------------------------------


class PeriodForm(forms.Form):
    """The dashboard's period: UTC days ``since`` to ``until``, both included.

    Either may be left out: ``until`` is then today (UTC), ``since`` 29 days
    before ``until``. Bound to the query string; an invalid period is shown
    with its errors and nothing is read.
    """

    #: The longest period one page sums (a year, a leap day included).
    MAX_DAYS = 366
    DEFAULT_DAYS = 30
    #: The earliest day that can be asked for: nothing was minted before.
    FIRST_DAY = dt.date(2000, 1, 1)

    since = forms.DateField(
        label=_("From"),
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
    )
    until = forms.DateField(
        label=_("To"),
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
    )

    def _in_range(self, day: dt.date | None) -> dt.date | None:
        last = utc_today() + dt.timedelta(days=self.MAX_DAYS)
        if day is not None and not self.FIRST_DAY <= day <= last:
            raise ValidationError(
                _("Choose a day from %(first)s to %(last)s."),
                code="out_of_range",
                params={"first": self.FIRST_DAY, "last": last},
            )
        return day

    def clean_since(self) -> dt.date | None:
        return self._in_range(self.cleaned_data.get("since"))

    def clean_until(self) -> dt.date | None:
        return self._in_range(self.cleaned_data.get("until"))

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.errors:
            return data
        until = data.get("until") or utc_today()
        since = data.get("since") or until - dt.timedelta(days=self.DEFAULT_DAYS - 1)
        if since > until:
            raise ValidationError(_("The period ends before it starts."), code="reversed")
        if (until - since).days + 1 > self.MAX_DAYS:
            raise ValidationError(
                _("Choose a period of at most %(days)d days."),
                code="too_long",
                params={"days": self.MAX_DAYS},
            )
        data["since"], data["until"] = since, until
        return data

    @property
    def period(self) -> tuple[dt.date, dt.date]:
        """The valid period (call ``is_valid()`` first)."""
        return self.cleaned_data["since"], self.cleaned_data["until"]


def days_of(since: dt.date, until: dt.date) -> list[dt.date]:
    return [since + dt.timedelta(days=n) for n in range((until - since).days + 1)]


# Reading the ledger -------------------------------------------------------------


def _ledger(since: dt.date, until: dt.date, user_id: Any = None) -> QuerySet[DailyUsage]:
    """The per-user ledger's rows of the period: every user's, or ``user_id``'s."""
    rows = DailyUsage.objects.using(app_settings.AUDIT_DATABASE).filter(
        day__gte=since, day__lte=until
    )
    return rows if user_id is None else rows.filter(user_id=user_id)


def _usage(since: dt.date, until: dt.date, user_id: Any) -> QuerySet[Any]:
    """The site's rows of the period (``user_id`` None: a few a day), or one user's."""
    if user_id is not None:
        return _ledger(since, until, user_id)
    return SiteDailyUsage.objects.using(app_settings.AUDIT_DATABASE).filter(
        day__gte=since, day__lte=until
    )


def _sums() -> dict[str, Sum]:
    # "n_" because an annotation may not take a field's own name.
    return {f"n_{name}": Sum(name) for name in COUNTERS}


def _counters(row: Mapping[str, Any]) -> dict[str, float]:
    return {name: row.get(f"n_{name}") or 0 for name in COUNTERS}


@dataclass
class Sums:
    """Sums of the ledger's counters (a day's, a period's)."""

    counts: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))

    @property
    def relayed_minutes(self) -> float:
        return self.counts["relayed_seconds"] / 60

    @property
    def audio_minutes_in(self) -> float:
        return self.counts["audio_seconds_in"] / 60

    @property
    def audio_minutes_out(self) -> float:
        return self.counts["audio_seconds_out"] / 60


@dataclass
class Day(Sums):
    """One UTC day's sums."""

    day: dt.date = dt.date.min


def per_day(since: dt.date, until: dt.date, user_id: Any = None) -> list[Day]:
    """Every day of the period with its sums (0 for a day without ledger rows): one query."""
    found = {
        row["day"]: _counters(row)
        for row in _usage(since, until, user_id).values("day").annotate(**_sums()).order_by()
    }
    return [Day(found[day], day) if day in found else Day(day=day) for day in days_of(since, until)]


def totals(since: dt.date, until: dt.date, user_id: Any = None) -> Sums:
    """The period's sums of every counter: one query."""
    return Sums(_counters(_usage(since, until, user_id).aggregate(**_sums())))


@dataclass(frozen=True)
class FailureCount:
    outcome: str
    error_type: str
    count: int

    @property
    def label(self) -> str:
        return f"{self.outcome}: {self.error_type or '-'}"


def failures(since: dt.date, until: dt.date, user_id: Any = None) -> list[FailureCount]:
    """What did not go through, by outcome and error type, most frequent first: one query."""
    rows: QuerySet[Any]
    if user_id is None:
        rows = SiteDailyFailure.objects.using(app_settings.AUDIT_DATABASE)
    else:
        rows = DailyFailure.objects.using(app_settings.AUDIT_DATABASE).filter(user_id=user_id)
    rows = rows.filter(day__gte=since, day__lte=until)
    grouped = (
        rows.values("outcome", "error_type")
        .annotate(n=Sum("count"))
        .order_by("-n", "outcome", "error_type")
    )
    return [FailureCount(row["outcome"], row["error_type"], int(row["n"])) for row in grouped]


@dataclass(frozen=True)
class Spender:
    """One user's sums in the period, with what ranks them (see ``top_users``)."""

    user_id: Any
    username: str
    counts: dict[str, float]

    @property
    def audio_minutes(self) -> float:
        return (self.counts["audio_seconds_in"] + self.counts["audio_seconds_out"]) / 60

    @property
    def tokens(self) -> float:
        return self.counts["input_tokens"] + self.counts["output_tokens"]

    @property
    def relayed_minutes(self) -> float:
        return self.counts["relayed_seconds"] / 60

    @property
    def not_through(self) -> float:
        return self.counts["failed"] + self.counts["rejected"] + self.counts["relay_refused"]


#: A period with at most this many attempts (from the site's rows) ranks its
#: users with one grouped query over their rows; a larger one from each
#: day's biggest rows first (``top_users``).
DIRECT_RANKING_ATTEMPTS = 200_000
#: The rows per day the first pass reads; each further pass reads four times as many.
FIRST_PASS_ROWS = 200
#: The most users a pass may gather as candidates (one ``IN`` list); beyond
#: it the users are ranked with the grouped query over all their rows.
MAX_CANDIDATES = 30_000


def _audio() -> Any:
    return F("audio_seconds_in") + F("audio_seconds_out")


def _tokens() -> Any:
    return F("input_tokens") + F("output_tokens")


def _spend_order() -> list[Any]:
    """A day's rows in spend order: the ``gwrt_usage_day_spend_idx`` index's own expressions."""
    return [_audio().desc(), _tokens().desc(), F("issued").desc()]


def _ranked(rows: QuerySet[DailyUsage], limit: int) -> list[dict[str, Any]]:
    """The users of ``rows`` by their sums, most spent first: one grouped query."""
    grouped = (
        rows.values("user_id")
        .annotate(**_sums(), audio=Sum(_audio()), tokens=Sum(_tokens()), secrets=Sum("issued"))
        .order_by("-audio", "-tokens", "-secrets", "user_id")[:limit]
    )
    return [dict(row) for row in grouped]


def _beats(row: Mapping[str, Any], bound: Sequence[float]) -> bool:
    """Whether a ranked user's sums come strictly before ``bound`` (audio, tokens, secrets).

    Audio is summed in floating point, so it decides only by a clear margin;
    within the margin only exact zeros (no relaying at all) pass on to the
    integer counts.
    """
    audio, margin = row["audio"] or 0.0, 1e-6 * max(1.0, bound[0])
    if audio > bound[0] + margin:
        return True
    if audio != 0 or bound[0] != 0:
        return False
    return ((row["tokens"] or 0), (row["secrets"] or 0)) > (bound[1], bound[2])


def _ranked_from_each_days_top(
    since: dt.date, until: dt.date, limit: int, per_day: int, combos: Mapping[dt.date, int]
) -> list[dict[str, Any]] | None:
    """The top ``limit`` users from the candidates among each day's ``per_day`` biggest rows.

    Each day's rows are read in spend order through the ``(day, spend)``
    index. A user with no row among them spent, that day, at most the last
    one read times the number of (kind, model) rows a user can have that
    day; summed over the days that is a bound on every other user's period.
    The candidates' exact sums are one grouped query; when the last of the
    ``limit`` is strictly above the bound nobody else can be in the list and
    it is exact. ``None`` when it is not, or the candidates are too many.
    """
    alias = app_settings.AUDIT_DATABASE
    candidates: set[Any] = set()
    bound = [0.0, 0, 0]
    full_days = 0
    for day in days_of(since, until):
        top = list(
            DailyUsage.objects.using(alias)
            .filter(day=day)
            .order_by(*_spend_order())
            .values_list("user_id", "kind", "model", "audio_seconds_in", "audio_seconds_out",
                         "input_tokens", "output_tokens", "issued")[:per_day]
        )  # fmt: skip
        candidates.update(row[0] for row in top)
        if len(candidates) > MAX_CANDIDATES:
            return None
        if len(top) == per_day:
            full_days += 1
            # A user has one row per kind and model a day: the site's rows
            # count the day's pairs (and the pairs read here, if the site's
            # rows missed a write).
            pairs = max(combos.get(day, 0), len({(row[1], row[2]) for row in top}))
            _, _, _, audio_in, audio_out, tokens_in, tokens_out, issued = top[-1]
            bound[0] += pairs * (audio_in + audio_out)
            bound[1] += pairs * (tokens_in + tokens_out)
            bound[2] += pairs * issued
    if not candidates:
        return []
    ranked = _ranked(_ledger(since, until).filter(user_id__in=candidates), limit)
    if not full_days:
        return ranked  # every row of the period was read: every user is a candidate
    if len(ranked) == limit and _beats(ranked[-1], bound):
        return ranked
    return None


def top_users(since: dt.date, until: dt.date, limit: int = TOP_USERS) -> list[Spender]:
    """The users who spent most in the period, by what the Gateway bills.

    Ranked by metered audio (relayed seconds in plus out), then tokens (in
    plus out), then client secrets issued, then user id: audio and tokens
    are what relayed sessions are billed by, and each issued secret opens a
    session the site cannot meter (the browser talks to the Gateway
    directly). The ledger holds no prices, so the units are not added up
    into money; on a site that does not relay, the ranking is by secrets
    issued.

    A period of up to ``DIRECT_RANKING_ATTEMPTS`` attempts is one grouped
    query over its users' rows. A larger one, whose rows grow with its
    active users, is ranked from each day's biggest rows first (a threshold
    search: ``_ranked_from_each_days_top``), which reads a few hundred rows
    a day while a few users spend well above the rest, as on most sites;
    when spend is too even for that to prove the list, it falls back to
    the grouped query. Either way the list is exact, and the same. Then one
    query for the listed users' names.
    """
    alias = app_settings.AUDIT_DATABASE
    site = SiteDailyUsage.objects.using(alias).filter(day__gte=since, day__lte=until)
    counted = F("issued") + F("failed") + F("rejected") + F("relayed_sessions") + F("relay_refused")
    attempts = site.aggregate(n=Sum(counted))["n"]
    rows = None
    if (attempts or 0) > DIRECT_RANKING_ATTEMPTS:
        combos = {row["day"]: row["n"] for row in site.values("day").annotate(n=Count("id"))}
        first = max(FIRST_PASS_ROWS, limit)
        for per_day in (first, first * 4, first * 16):
            rows = _ranked_from_each_days_top(since, until, limit, per_day, combos)
            if rows is not None:
                break
    if rows is None:
        rows = _ranked(_ledger(since, until), limit)
    user_model = get_user_model()
    users = user_model._default_manager.in_bulk([row["user_id"] for row in rows])
    return [
        Spender(
            row["user_id"],
            users[row["user_id"]].get_username() if row["user_id"] in users else "",
            _counters(row),
        )
        for row in rows
    ]


def live_sessions(user_id: Any, max_seconds: float) -> list[RelaySession]:
    """The user's relayed sessions with no end that started within ``max_seconds``.

    As the relay counts them (``relay.sessions``): a row older than the
    longest session is one whose process died before it could end it.
    """
    since = timezone.now() - dt.timedelta(seconds=max_seconds)
    return list(
        RelaySession.objects.using(app_settings.AUDIT_DATABASE)
        .filter(user_id=user_id, ended_at__isnull=True, started_at__gte=since)
        .order_by("-started_at")
    )


def live_session_count() -> int:
    """Live relayed sessions of every user, by the site's longest session: one indexed count."""
    since = timezone.now() - dt.timedelta(seconds=app_settings.RELAY_MAX_SESSION_SECONDS)
    return (
        RelaySession.objects.using(app_settings.AUDIT_DATABASE)
        .filter(ended_at__isnull=True, started_at__gte=since)
        .count()
    )


@dataclass(frozen=True)
class QuotaLeft:
    kind: str
    left: int | None
    #: Why no figure: "unavailable" (the quota store), "error" (the policy hook).
    problem: str = ""


def user_limits(user: Any) -> tuple[list[QuotaLeft], float]:
    """``quota_left`` per kind, and the longest relayed session the user's policies allow.

    The policy hook is called with ``request=None``: the request is the staff
    member's, not the user's.
    """
    quotas = []
    longest = app_settings.RELAY_MAX_SESSION_SECONDS
    for kind in Kind:
        try:
            longest = max(longest, get_policy(user, kind).max_session_seconds)
            quotas.append(QuotaLeft(kind.value, quota_left(user, kind)))
        except LimitsUnavailable:
            quotas.append(QuotaLeft(kind.value, None, "unavailable"))
        except GatewayConfigurationError:
            logger.exception("The dashboard could not read the policy of user %s", user.pk)
            quotas.append(QuotaLeft(kind.value, None, "error"))
    return quotas, longest


def breaker_state() -> CircuitState | None:
    """The circuit breaker now, or ``None`` when its cache cannot be read (logged)."""
    try:
        return circuit_state()
    except Exception:  # any cache backend's own errors
        logger.warning("The dashboard could not read the circuit breaker's cache", exc_info=True)
        return None


# Charts -----------------------------------------------------------------------------


def day_charts(days: Sequence[Day], prefix: str) -> dict[str, SafeString]:
    """The three per-day charts: mints by outcome, relayed minutes, tokens."""
    labels = [day.day.isoformat() for day in days]
    ticks = [day.day.strftime("%m-%d") for day in days]

    def minutes(value: float) -> str:
        return f"{value:.1f}" if value < 100 else charts.compact(value)

    def chart(
        name: str,
        title: str,
        series: Sequence[charts.Series],
        values: Sequence[Sequence[float]],
        **options: Any,
    ) -> SafeString:
        return charts.columns(
            chart_id=f"{prefix}-{name}",
            title=title,
            labels=labels,
            ticks=ticks,
            series=series,
            values=values,
            **options,
        )

    return {
        "mints": chart(
            "mints",
            gettext("Mints per day by outcome"),
            MINT_SERIES,
            [[day.counts[s.key] for s in MINT_SERIES] for day in days],
        ),
        "minutes": chart(
            "minutes",
            gettext("Relayed minutes per day"),
            MINUTE_SERIES,
            [[day.relayed_minutes] for day in days],
            fmt=minutes,
            integer=False,
        ),
        "tokens": chart(
            "tokens",
            gettext("Tokens per day"),
            TOKEN_SERIES,
            [[day.counts["input_tokens"], day.counts["output_tokens"]] for day in days],
        ),
    }


def failure_chart(rows: Sequence[FailureCount], prefix: str) -> SafeString:
    return charts.bars(
        chart_id=f"{prefix}-failures",
        title=gettext("Failures by type"),
        rows=[charts.Bar(row.label, row.count, row.outcome) for row in rows],
    )


# The CSV export -----------------------------------------------------------------------


def neutralise(value: Any) -> Any:
    """A cell a spreadsheet will show as text, never run as a formula (CSV injection).

    Usernames and models are chosen by users: a text cell that starts with
    ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading ``'``.
    """
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class _Lines:
    """A file-like ``csv.writer`` target that hands each written line back."""

    def write(self, line: str) -> str:
        return line


CSV_HEADER = ("day", "user_id", "username", "kind", "model", *COUNTERS)


def csv_lines(since: dt.date, until: dt.date) -> Iterator[str]:
    """The ledger's rows of the period as CSV lines, header first, read in chunks."""
    writer = csv.writer(_Lines())
    yield writer.writerow(CSV_HEADER)
    username = "user__" + get_user_model().USERNAME_FIELD
    rows = (
        _ledger(since, until)
        .order_by("day", "user_id", "kind", "model")
        .values_list("day", "user_id", username, "kind", "model", *COUNTERS)
    )
    for row in rows.iterator(chunk_size=2000):
        cells = [
            round(value, 3) if isinstance(value, float) else neutralise(value) for value in row
        ]
        cells[0] = row[0].isoformat()
        yield writer.writerow(cells)


# The admin ----------------------------------------------------------------------------


def content_security_policy() -> str:
    """The dashboard pages' policy: no inline script or style, nothing from elsewhere.

    The example project's policy without the Gateway's ``connect-src``. When
    ``STATIC_URL`` is on another origin (a CDN), that origin may serve the
    admin's and the dashboard's scripts and styles too.
    """
    static = urlsplit(str(settings.STATIC_URL or ""))
    extra = f" {static.scheme}://{static.netloc}" if static.scheme and static.netloc else ""
    return "; ".join(
        [
            f"default-src 'self'{extra}",
            f"script-src 'self'{extra}",
            f"style-src 'self'{extra}",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


Response = TypeVar("Response", bound=HttpResponseBase)


def _with_csp(response: Response) -> Response:
    response["Content-Security-Policy"] = content_security_policy()
    return response


def may_end_sessions(request: HttpRequest) -> bool:
    """Who may change users (and so deactivate them) may end their sessions."""
    opts = get_user_model()._meta
    return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('change', opts)}")


class DashboardAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """The dashboard's pages in place of a changelist (the module docstring lists them).

    Staff need ``gateway_realtime.view_dashboard`` (superusers have it); the
    button that ends a user's live sessions needs the change permission on
    the user model too. Nothing is added, changed or deleted here.
    """

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        # Only the dashboard's own pages: no add, change, delete or history views.
        wrap = self.admin_site.admin_view
        name = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("", wrap(self.changelist_view), name=f"{name}_changelist"),
            path("export.csv", wrap(self.export_view), name=f"{name}_export"),
            path("user/<str:pk>/", wrap(self.user_view), name=f"{name}_user"),
            path("user/<str:pk>/end/", wrap(self.end_sessions_view), name=f"{name}_end"),
        ]

    def _url(self, view: str, *args: Any) -> str:
        name = f"{self.opts.app_label}_{self.opts.model_name}_{view}"
        return reverse(f"{self.admin_site.name}:{name}", args=args)

    def _check(self, request: HttpRequest) -> None:
        if not self.has_view_permission(request):
            raise PermissionDenied

    def _context(self, request: HttpRequest, title: str, form: PeriodForm) -> dict[str, Any]:
        request.current_app = self.admin_site.name
        return {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "app_label": self.opts.app_label,
            "title": title,
            "form": form,
            "dashboard_url": self._url("changelist"),
            "max_days": PeriodForm.MAX_DAYS,
        }

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        self._check(request)
        form = PeriodForm(request.GET)
        context = self._context(request, gettext("Usage dashboard"), form)
        status = 200
        if form.is_valid():
            since, until = form.period
            days = per_day(since, until)
            failed = failures(since, until)
            spenders = top_users(since, until)
            context.update(
                since=since,
                until=until,
                days=days,
                totals=totals(since, until),
                failures=failed,
                spenders=[(spender, self._url("user", spender.user_id)) for spender in spenders],
                charts=day_charts(days, "site"),
                failure_chart=failure_chart(failed, "site") if failed else None,
                breaker=breaker_state(),
                live_sessions=live_session_count(),
                export_url=f"{self._url('export')}?since={since}&until={until}",
            )
        else:
            status = 400
        response = TemplateResponse(
            request, "admin/gateway_realtime/dashboard/dashboard.html", context, status=status
        )
        return _with_csp(response)

    def _user(self, pk: str) -> Any:
        user_model = get_user_model()
        try:
            key = user_model._meta.pk.to_python(pk)
            return user_model._default_manager.get(pk=key)
        except (ValidationError, ValueError, user_model.DoesNotExist):
            raise Http404(gettext("No such user.")) from None

    def user_view(self, request: HttpRequest, pk: str) -> HttpResponseBase:
        self._check(request)
        user = self._user(pk)
        form = PeriodForm(request.GET)
        context = self._context(
            request, gettext("Usage of %(user)s") % {"user": user.get_username()}, form
        )
        quotas, longest = user_limits(user)
        context.update(
            shown_user=user,
            quotas=quotas,
            live=live_sessions(user.pk, longest),
            may_end=may_end_sessions(request),
            end_url=self._url("end", user.pk),
        )
        status = 200
        if form.is_valid():
            since, until = form.period
            days = per_day(since, until, user.pk)
            failed = failures(since, until, user.pk)
            context.update(
                since=since,
                until=until,
                days=days,
                totals=totals(since, until, user.pk),
                failures=failed,
                charts=day_charts(days, "user"),
                failure_chart=failure_chart(failed, "user") if failed else None,
            )
        else:
            status = 400
        response = TemplateResponse(
            request, "admin/gateway_realtime/dashboard/user.html", context, status=status
        )
        return _with_csp(response)

    def end_sessions_view(self, request: HttpRequest, pk: str) -> HttpResponseBase:
        return _with_csp(require_POST(self._end_sessions)(request, pk))

    def _end_sessions(self, request: HttpRequest, pk: str) -> HttpResponseBase:
        self._check(request)
        if not may_end_sessions(request):
            raise PermissionDenied
        # Imported here: gateway_realtime.admin imports this module.
        from gateway_realtime.admin import ADMIN_REASON
        from gateway_realtime.relay.revocation import revoke_sessions

        user = self._user(pk)
        try:
            sent = revoke_sessions(user.pk, ADMIN_REASON)
        except Exception:
            logger.exception("The dashboard could not revoke relayed sessions")
            self.message_user(
                request,
                gettext("Could not reach the channel layer: no session was ended. See the log."),
                messages.ERROR,
            )
        else:
            if sent:
                self.message_user(
                    request,
                    gettext("Ending the live sessions of %(user)s.")
                    % {"user": user.get_username()},
                    messages.SUCCESS,
                )
            else:
                self.message_user(
                    request,
                    gettext(
                        "No channel layer is configured (CHANNEL_LAYERS): no session was ended."
                    ),
                    messages.ERROR,
                )
        query = request.GET.urlencode()
        return HttpResponseRedirect(self._url("user", user.pk) + (f"?{query}" if query else ""))

    def export_view(self, request: HttpRequest) -> HttpResponseBase:
        self._check(request)
        form = PeriodForm(request.GET)
        if not form.is_valid():
            problems = "\n".join(
                str(message) for errors in form.errors.values() for message in errors
            )
            response = HttpResponse(problems + "\n", status=400, content_type="text/plain")
            return _with_csp(response)
        since, until = form.period
        streamed = StreamingHttpResponse(
            csv_lines(since, until), content_type="text/csv; charset=utf-8"
        )
        streamed["Content-Disposition"] = (
            f'attachment; filename="gateway-realtime-usage-{since}-{until}.csv"'
        )
        return _with_csp(streamed)


__all__ = [
    "CSV_HEADER",
    "DashboardAdmin",
    "PeriodForm",
    "content_security_policy",
    "csv_lines",
    "failures",
    "neutralise",
    "per_day",
    "top_users",
    "totals",
]
