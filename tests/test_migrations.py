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


def test_migrations_have_descriptive_names() -> None:
    from django.db.migrations.loader import MigrationLoader

    loader = MigrationLoader(None, ignore_no_migrations=True)
    names = [name for app, name in loader.disk_migrations if app == "gateway_realtime"]
    assert names
    for name in names:
        assert "auto_" not in name, name
