"""The Django example app's own tests pass, run as its README says, on a fresh database."""

from __future__ import annotations

from pathlib import Path

from _subprocess_pytest import run_pytest

from eventstore.urls import normalize_url

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "django_orders"


def test_the_django_orders_example_passes_its_tests(scratch_database_url: str) -> None:
    libpq_url = (
        normalize_url(scratch_database_url)
        .set(drivername="postgresql")
        .render_as_string(hide_password=False)
    )
    result = run_pytest(
        EXAMPLE,
        {"DATABASE_URL": libpq_url},
        # the example uses DATABASE_URL, and its pytest.ini names its own settings
        without=["EVENTSTORE_TEST_DATABASE_URL", "DJANGO_SETTINGS_MODULE"],
    )
    assert " passed" in result.stdout, result.stdout
    assert "skipped" not in result.stdout, result.stdout
    assert "warning" not in result.stdout, result.stdout  # e.g. the test database not dropped
