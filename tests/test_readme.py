"""The README's Python examples run as written, in order, against a migrated database."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest
from _store_helpers import wait_for_feed_horizon

from eventstore import PostgresEventStore, migrations

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_examples() -> None:
    assert len(python_blocks()) >= 4


def test_readme_examples_run_as_written(
    scratch_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrations.upgrade(scratch_database_url)
    monkeypatch.setenv("DATABASE_URL", scratch_database_url)
    horizon_probe = PostgresEventStore.from_url(scratch_database_url)
    module = types.ModuleType("readme_examples")
    monkeypatch.setitem(sys.modules, module.__name__, module)  # dataclasses look it up
    try:
        for number, block in enumerate(python_blocks(), start=1):
            code = compile(block, f"README.md python block {number}", "exec", dont_inherit=True)
            # The feed shows an event once every older transaction on the server has
            # ended; other sessions' transactions must not make the examples flaky.
            wait_for_feed_horizon(horizon_probe)
            exec(code, module.__dict__)
    finally:
        horizon_probe.close()
