"""A password in the database URL never shows: not in ``repr``, the engine's URL,
exception messages and tracebacks of failed connections, DEBUG log records of
eventstore, SQLAlchemy and psycopg, nor the ``eventstore`` command's output."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest
from _staging import closed_port, execute, require_password
from click.testing import CliRunner
from sqlalchemy.engine import URL

from eventstore import NO_STREAM, NewEvent, PostgresEventStore
from eventstore.cli import cli
from eventstore.errors import AuthenticationError, DatabaseUnavailableError, EventStoreError

ROLE = "secrets_app"
PASSWORD = "Pa55-right-kestrel"
WRONG_PASSWORD = "Pa55-wrong-plover"
UNREACHABLE_PASSWORD = "Pa55-closed-heron"

LOGGERS = ("eventstore", "sqlalchemy", "psycopg")

Call = Callable[[PostgresEventStore], object]

CALLS: dict[str, Call] = {
    "append_events": lambda store: store.append_events(
        "order-1", [NewEvent("OrderPlaced", {})], expected_version=NO_STREAM
    ),
    "load_events": lambda store: store.load_events("order-1"),
    "stream_version": lambda store: store.stream_version("order-1"),
    "read_all": lambda store: store.read_all(),
    "load_snapshot": lambda store: store.load_snapshot("order-1"),
}


@pytest.fixture(scope="module")
def password_role(own_server: str) -> URL:
    """The URL of a role that logs in with ``PASSWORD`` (scram-sha-256)."""
    url = require_password(own_server, ROLE, PASSWORD, wrong=WRONG_PASSWORD)
    execute(own_server, f"GRANT SELECT, INSERT ON events TO {ROLE}")
    return url


@pytest.fixture(scope="module")
def failing_urls(password_role: URL) -> dict[str, tuple[str, str]]:
    """Each way to fail a login, as ``(url with the password, the password)``."""
    unreachable = f"postgresql://{ROLE}:{UNREACHABLE_PASSWORD}@127.0.0.1:{closed_port()}/app"
    return {
        "unreachable": (f"{unreachable}?connect_timeout=3", UNREACHABLE_PASSWORD),
        "wrong password": (
            password_role.set(password=WRONG_PASSWORD).render_as_string(hide_password=False),
            WRONG_PASSWORD,
        ),
    }


def _everything_said_about(error: BaseException) -> str:
    """The messages and reprs of ``error`` and its whole chain, and its traceback."""
    parts = ["".join(traceback.format_exception(error))]
    seen: BaseException | None = error
    while seen is not None:
        parts += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


def test_repr_and_engine_url_hide_the_password() -> None:
    url = f"postgresql://{ROLE}:{PASSWORD}@127.0.0.1:{closed_port()}/app"

    with PostgresEventStore.from_url(url, statement_timeout=1, lock_timeout=1) as store:
        shown = [repr(store), str(store.engine.url), repr(store.engine.url), repr(store.engine)]

    for text in shown:
        assert PASSWORD not in text
    assert "***" in repr(store)
    assert "***" in str(store.engine.url)
    assert store.engine.url.password == PASSWORD  # it is there, only hidden


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize("failure", ["unreachable", "wrong password"])
def test_failed_connection_errors_never_show_the_password(
    failing_urls: dict[str, tuple[str, str]], failure: str, call: str
) -> None:
    url, password = failing_urls[failure]
    expected = DatabaseUnavailableError if failure == "unreachable" else AuthenticationError

    with PostgresEventStore.from_url(url) as store, pytest.raises(expected) as raised:
        CALLS[call](store)

    said = _everything_said_about(raised.value)
    assert "connection failed" in said  # psycopg's own message is in there
    assert password not in said


def test_debug_logs_of_failing_and_working_calls_never_show_the_password(
    failing_urls: dict[str, tuple[str, str]],
    password_role: URL,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)

    for url, _ in failing_urls.values():
        with (
            PostgresEventStore.from_url(url, pool_pre_ping=True, echo="debug") as store,
            pytest.raises(EventStoreError),
        ):
            CALLS["append_events"](store)
    with PostgresEventStore.from_url(password_role, echo="debug", lock_timeout=1) as store:
        CALLS["append_events"](store)
        assert len(store.load_events("order-1")) == 1

    logged = {record.name.split(".")[0] for record in caplog.records}
    assert {"sqlalchemy", "psycopg"} <= logged  # DEBUG logging really was on
    assert "connection failed" in caplog.text
    for password in (PASSWORD, WRONG_PASSWORD, UNREACHABLE_PASSWORD):
        assert password not in caplog.text
        assert all(password not in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    "command",
    [["stats"], ["doctor"], ["migrate", "upgrade"], ["migrate", "current"], ["export", "FILE"]],
    ids=lambda command: " ".join(command),
)
@pytest.mark.parametrize("failure", ["unreachable", "wrong password"])
def test_cli_output_never_shows_the_password(
    failing_urls: dict[str, tuple[str, str]], failure: str, command: list[str], tmp_path: Path
) -> None:
    url, password = failing_urls[failure]
    args = [str(tmp_path / "backup.cbor") if arg == "FILE" else arg for arg in command]

    result = CliRunner().invoke(cli, [*args, "--url", url])

    shown = result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        shown += _everything_said_about(result.exception)
    assert result.exit_code != 0, shown
    assert shown.strip()
    assert password not in shown
