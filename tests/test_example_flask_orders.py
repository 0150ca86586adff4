"""The Flask example app's own tests pass, run as its README says, on a fresh database."""

from __future__ import annotations

from pathlib import Path

from _subprocess_pytest import run_pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "flask_orders"


def test_the_flask_orders_example_passes_its_tests(scratch_database_url: str) -> None:
    result = run_pytest(
        EXAMPLE.parent.parent,
        {"DATABASE_URL": scratch_database_url},
        without=["EVENTSTORE_TEST_DATABASE_URL"],  # the example uses DATABASE_URL
        args=[str(EXAMPLE)],
    )
    assert " passed" in result.stdout, result.stdout
    assert "skipped" not in result.stdout, result.stdout
