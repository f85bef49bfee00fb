"""Every model change ships with its migration."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_no_missing_migrations() -> None:
    out = StringIO()
    try:
        call_command(
            "makemigrations", "gateway_realtime", "--check", "--dry-run", stdout=out, stderr=out
        )
    except SystemExit as exit_:  # --check exits 1 when a migration is missing
        pytest.fail(f"Missing migration (exit {exit_.code}):\n{out.getvalue()}")
    assert "No changes detected" in out.getvalue()


def test_one_initial_migration() -> None:
    # Nothing was released before it, so there is no history to keep.
    from django.db.migrations.loader import MigrationLoader

    loader = MigrationLoader(None, ignore_no_migrations=True)
    names = [name for app, name in loader.disk_migrations if app == "gateway_realtime"]
    assert names == ["0001_initial"]


@pytest.mark.django_db
@pytest.mark.parametrize("model_name", ["ClientSecretIssuance", "QuotaCounter"])
def test_no_index_duplicates_the_start_of_another(model_name: str) -> None:
    # Every index is written on each mint: one that only repeats the leading
    # columns of another serves no query the other cannot.
    from django.apps import apps
    from django.db import connection

    model = apps.get_model("gateway_realtime", model_name)
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, model._meta.db_table)
    indexed = [
        (name, tuple(info["columns"]))
        for name, info in constraints.items()
        if info["index"] and not info["primary_key"] and info["columns"]
    ]
    for name, columns in indexed:
        for other, other_columns in indexed:
            if other != name and other_columns[: len(columns)] == columns:
                assert constraints[name]["unique"], f"{name} {columns} duplicates {other}"
