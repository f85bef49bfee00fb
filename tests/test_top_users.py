"""The dashboard's top users on a large site: each day's biggest rows first, the same list.

``dashboard.top_users`` ranks a period with more than
``DIRECT_RANKING_ATTEMPTS`` attempts from each day's biggest ledger rows (a
threshold search) and falls back to the grouped query over every row when
that cannot prove its list. Here the switch is set to 0 and the passes made
small, and each ledger below, even or skewed, with ties, with and without
relayed audio, must give exactly the grouped query's list.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import defaultdict
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from gateway_realtime import dashboard
from gateway_realtime.models import DailyUsage, SiteDailyUsage

pytestmark = pytest.mark.django_db

FIRST = dt.date(2026, 11, 1)
DAYS = 8
LAST = FIRST + dt.timedelta(days=DAYS - 1)
PAIRS = [
    ("realtime", "openai/gpt-realtime-2"),
    ("realtime", "openai/gpt-realtime-mini"),
    ("transcription", "openai/gpt-4o-transcribe"),
    ("speech", "elevenlabs/eleven-v3"),
]


def fill(rows: list[DailyUsage]) -> None:
    """The per-user rows, and the site's rows as their sums (as the ledger writes them)."""
    DailyUsage.objects.bulk_create(rows)
    site: dict[tuple[Any, ...], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for row in rows:
        for name in dashboard.COUNTERS:
            site[(row.day, row.kind, row.model)][name] += getattr(row, name)
    SiteDailyUsage.objects.bulk_create(
        SiteDailyUsage(
            day=day,
            kind=kind,
            model=model,
            **{k: v if k in dashboard.FLOAT_COUNTERS else int(v) for k, v in counts.items()},
        )
        for (day, kind, model), counts in site.items()
    )


def ledger(rng: random.Random, users: list[Any], shape: str) -> list[DailyUsage]:
    """A random ledger: ``even`` (small counts, many ties), ``skewed`` (a few heavy users),
    ``audio`` (skewed relayed audio in quarter seconds, exact in binary), ``tokens``."""
    rows = []
    for n in range(DAYS):
        day = FIRST + dt.timedelta(days=n)
        for rank, user in enumerate(users):
            if rng.random() < 0.3:
                continue
            weight = 1 if shape == "even" else max(1, int(len(users) / (rank + 1) ** 1.3))
            for kind, model in rng.sample(PAIRS, rng.randint(1, 3)):
                counts: dict[str, Any] = {"issued": rng.randint(0, 3) * weight}
                if shape == "audio" and rng.random() < 0.5:
                    counts["audio_seconds_in"] = rng.randint(0, 40) * weight * 0.25
                    counts["audio_seconds_out"] = rng.randint(0, 40) * weight * 0.25
                if shape in ("audio", "tokens") and rng.random() < 0.7:
                    counts["input_tokens"] = rng.randint(0, 5) * weight * 10
                    counts["output_tokens"] = rng.randint(0, 5) * 10
                rows.append(DailyUsage(day=day, user=user, kind=kind, model=model, **counts))
    return rows


def listed(spenders: list[dashboard.Spender]) -> list[tuple[Any, dict[str, float]]]:
    return [(spender.user_id, spender.counts) for spender in spenders]


def grouped(limit: int) -> list[tuple[Any, dict[str, float]]]:
    """What the grouped query over every row of the period says."""
    rows = dashboard._ranked(dashboard._ledger(FIRST, LAST), limit)
    return [(row["user_id"], dashboard._counters(row)) for row in rows]


@pytest.fixture
def users(django_user_model: Any) -> list[Any]:
    django_user_model.objects.bulk_create(
        django_user_model(username=f"spender{n}") for n in range(40)
    )
    return list(django_user_model.objects.order_by("?"))


@pytest.fixture
def searching(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every period searched from each day's top rows, in passes of 3, 12 and 48 rows."""
    monkeypatch.setattr(dashboard, "DIRECT_RANKING_ATTEMPTS", 0)
    monkeypatch.setattr(dashboard, "FIRST_PASS_ROWS", 3)


def searched(limit: int) -> tuple[list[dashboard.Spender], list[str]]:
    """``top_users`` and the SQL of its grouped queries (``IN``: the candidates')."""
    with CaptureQueriesContext(connection) as captured:
        spenders = dashboard.top_users(FIRST, LAST, limit=limit)
    ranked = [q["sql"] for q in captured.captured_queries if "GROUP BY" in q["sql"]]
    return spenders, [sql for sql in ranked if "gateway_realtime_dailyusage" in sql]


@pytest.mark.usefixtures("searching")
@pytest.mark.parametrize("shape", ["even", "skewed", "audio", "tokens"])
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("limit", [1, 3, 10])
def test_the_search_lists_what_the_grouped_query_lists(
    users: list[Any], shape: str, seed: int, limit: int
) -> None:
    fill(ledger(random.Random(f"{shape}{seed}"), users, shape))
    spenders, _ = searched(limit)
    assert listed(spenders) == grouped(limit)


@pytest.mark.usefixtures("searching")
def test_a_few_heavy_users_are_found_from_the_days_top_rows(users: list[Any]) -> None:
    fill(ledger(random.Random("heavy"), users, "audio"))
    spenders, ranked = searched(3)
    assert listed(spenders) == grouped(3)
    # Decided from the candidates alone: no grouped query over every row.
    assert ranked and all('"user_id" IN (' in sql for sql in ranked)


@pytest.mark.usefixtures("searching")
def test_even_spend_falls_back_to_the_grouped_query(users: list[Any]) -> None:
    # Every user spends the same on every pair every day: no top row proves
    # anything, and each day has more rows (160) than the largest pass (80).
    fill(
        [
            DailyUsage(day=FIRST + dt.timedelta(days=n), user=user, kind=kind, model=model,
                       issued=2)
            for n in range(DAYS)
            for user in users
            for kind, model in PAIRS
        ]
    )  # fmt: skip
    spenders, ranked = searched(5)
    assert listed(spenders) == grouped(5)
    assert '"user_id" IN (' not in ranked[-1]  # the last: every row, grouped
    # The ties go to the smallest user ids.
    assert [s.user_id for s in spenders] == sorted(user.pk for user in users)[:5]


@pytest.mark.usefixtures("searching")
def test_too_many_candidates_fall_back(users: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dashboard, "MAX_CANDIDATES", 4)
    fill(ledger(random.Random("many"), users, "skewed"))
    spenders, ranked = searched(3)
    assert listed(spenders) == grouped(3)
    assert ranked == [ranked[-1]] and '"user_id" IN (' not in ranked[-1]


@pytest.mark.usefixtures("searching")
def test_a_day_whose_rows_all_fit_in_a_pass_makes_every_user_a_candidate(
    users: list[Any],
) -> None:
    few = users[:2]
    fill(ledger(random.Random("few"), few, "even"))
    spenders, ranked = searched(10)
    assert listed(spenders) == grouped(10)
    assert ranked and all('"user_id" IN (' in sql for sql in ranked)


def test_a_small_period_is_one_grouped_query(users: list[Any]) -> None:
    fill(ledger(random.Random("small"), users, "skewed"))
    spenders, ranked = searched(3)
    assert listed(spenders) == grouped(3)
    assert len(ranked) == 1 and '"user_id" IN (' not in ranked[0]


def test_the_days_rows_are_read_in_the_spend_index_order() -> None:
    """The search's per-day query orders by the index's own expressions."""
    index = next(i for i in DailyUsage._meta.indexes if i.name == "gwrt_usage_day_spend_idx")
    assert [str(e) for e in index.expressions] == [
        "F(day)",
        *(str(e) for e in dashboard._spend_order()),
    ]
