"""The README's "Using it with Flask" section runs as written: its first two blocks
are ``myapp.py``, its third the app's tests, run by pytest against a fresh database.

Its blocks are fenced ```py (not ```python): they are a Flask application and its
tests, not code for the shared namespace of tests/test_readme.py."""

from __future__ import annotations

import re
from pathlib import Path

from _subprocess_pytest import run_pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def flask_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Using it with Flask\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```py\n(.*?)```", section, flags=re.S)


def test_the_flask_section_has_the_app_the_projection_and_the_tests() -> None:
    app, projection, tests = flask_blocks()
    assert "EventStoreExtension(db=db" in app
    assert "ProjectionRunner(events.unbound_store" in projection
    assert "eventstore_connection" in tests


def test_the_flask_section_runs_as_written(scratch_database_url: str, tmp_path: Path) -> None:
    app, projection, tests = flask_blocks()
    (tmp_path / "myapp.py").write_text(app + "\n\n" + projection, encoding="utf-8")
    (tmp_path / "test_myapp.py").write_text(tests, encoding="utf-8")
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    result = run_pytest(
        tmp_path,
        {"EVENTSTORE_TEST_DATABASE_URL": scratch_database_url},
        without=["DATABASE_URL"],  # the tests set it from the plugin's database
        args=["-p", "no:django"],
    )
    assert "2 passed" in result.stdout, result.stdout
