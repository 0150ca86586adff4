"""Running another pytest session in a subprocess (an example app's tests, a README's
tests), the way its own instructions say, and checking that it passed."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path


def run_pytest(
    cwd: Path,
    environment: Mapping[str, str],
    *,
    without: Iterable[str] = (),
    args: Iterable[str] = (),
) -> subprocess.CompletedProcess[str]:
    """``python -m pytest -q`` in ``cwd`` with this environment plus ``environment``,
    less the variables named in ``without``; asserts it exited 0 (showing its output
    otherwise) and returns the finished process."""
    env = {**os.environ, **environment}
    for name in without:
        env.pop(name, None)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            *args,
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result
