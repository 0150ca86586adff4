"""The Django example app's own tests pass, run as its README says, on a fresh database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from eventstore.urls import normalize_url

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "django_orders"


def test_the_django_orders_example_passes_its_tests(scratch_database_url: str) -> None:
    libpq_url = (
        normalize_url(scratch_database_url)
        .set(drivername="postgresql")
        .render_as_string(hide_password=False)
    )
    environment = {**os.environ, "DATABASE_URL": libpq_url}
    environment.pop("EVENTSTORE_TEST_DATABASE_URL", None)  # the example uses DATABASE_URL
    environment.pop("DJANGO_SETTINGS_MODULE", None)  # the example's pytest.ini names its own
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"],
        cwd=EXAMPLE,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout, result.stdout
    assert "skipped" not in result.stdout, result.stdout
    assert "warning" not in result.stdout, result.stdout  # e.g. the test database not dropped
