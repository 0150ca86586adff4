"""The Flask example app's own tests pass, run as its README says, on a fresh database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "flask_orders"


def test_the_flask_orders_example_passes_its_tests(scratch_database_url: str) -> None:
    environment = {**os.environ, "DATABASE_URL": scratch_database_url}
    environment.pop("EVENTSTORE_TEST_DATABASE_URL", None)  # the example uses DATABASE_URL
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(EXAMPLE),
            "-q",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
        ],
        cwd=EXAMPLE.parent.parent,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout, result.stdout
    assert "skipped" not in result.stdout, result.stdout
