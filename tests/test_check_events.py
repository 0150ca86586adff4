"""``eventstore check-events``: every stored event and snapshot decoded with an
application's registry before its code is deployed.

The 100,000-event stores are written as the tables' owner with INSERT ... SELECT
(the append-only log refuses updates and deletes, not inserts); the events the
check must find are appended through the store, as an application would. The
"know before you deploy" story runs as the README tells it: version-1 classes
write in one process, the changed classes are checked in others.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import tracemalloc
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
import psycopg
import pytest
from click.testing import CliRunner

from eventstore import (
    ANY,
    NO_STREAM,
    DeserializationError,
    EventRegistry,
    NewEvent,
    Position,
    PostgresEventStore,
    ValidationError,
)
from eventstore.cli import cli
from eventstore.migrations import upgrade
from eventstore.records import VersionedState
from eventstore.urls import normalize_url
from eventstore.verification import MAX_REASONS, CheckReport, check_events

EVENTSTORE_CLI = Path(sys.executable).with_name("eventstore")
README = Path(__file__).resolve().parent.parent / "README.md"
README_URL = "postgresql+psycopg://app@db.internal/app"
"""The database the README's example output names."""
TIMEOUT = 120
STORE_SIZE = 100_000
EVENTS_PER_STREAM = 10


@dataclass(frozen=True)
class Deposited:
    amount: int


@dataclass(frozen=True)
class Withdrawn:
    amount: int


@dataclass(frozen=True)
class Balance:
    cents: int


@dataclass(frozen=True)
class NewBalance:  # Balance with its field renamed
    amount_cents: int


def bank_registry() -> EventRegistry:
    registry = EventRegistry()
    registry.register(Deposited)
    registry.register(Withdrawn)
    return registry


def _libpq(url: str) -> str:
    return normalize_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _insert_events(url: str, first: int, last: int, event_data: str = "%(payload)s") -> None:
    """Events ``first..last`` of the bank's streams (``account-<n // 10>``, version
    ``n % 10 + 1``), Deposited and Withdrawn in turn, inserted as the tables' owner.
    ``event_data`` is the SQL expression of each payload (``n`` is the event's number)."""
    with psycopg.connect(_libpq(url)) as connection:
        connection.execute(
            f"""
            INSERT INTO events (stream_id, version, event_type, event_data)
            SELECT 'account-' || n / {EVENTS_PER_STREAM}, mod(n, {EVENTS_PER_STREAM}) + 1,
                   CASE WHEN mod(n, 2) = 0 THEN 'Deposited' ELSE 'Withdrawn' END, {event_data}
            FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS n
            ORDER BY n
            """,
            {"first": first, "last": last, "payload": cbor2.dumps({"amount": 5})},
        )


def _position_of(url: str, stream_id: str, version: int) -> Position:
    with psycopg.connect(_libpq(url)) as connection:
        row = connection.execute(
            "SELECT transaction_id::text::bigint, position FROM events "
            "WHERE stream_id = %s AND version = %s",
            (stream_id, version),
        ).fetchone()
    assert row is not None
    return Position(*row)


def _stream_of(n: int) -> tuple[str, int]:
    return f"account-{n // EVENTS_PER_STREAM}", n % EVENTS_PER_STREAM + 1


@pytest.fixture
def migrated_url(scratch_database_url: str) -> str:
    upgrade(scratch_database_url)
    return scratch_database_url


@pytest.fixture
def store(migrated_url: str) -> Iterator[PostgresEventStore]:
    with PostgresEventStore.from_url(migrated_url, registry=bank_registry()) as store:
        yield store


@pytest.fixture
def registry_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The name of an importable module holding ``registry`` (the bank's) and
    ``make_registry`` (returning it), in a working directory of its own."""
    name = f"bank_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            f"""
            from {__name__} import bank_registry

            registry = bank_registry()
            answer = 42


            def make_registry():
                return registry


            def broken():
                raise RuntimeError("no configuration")
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield name
    sys.modules.pop(name, None)


def _check(url: str, *arguments: str) -> Any:
    return CliRunner().invoke(cli, ["check-events", "--url", url, *arguments])


# -- the 100,000-event store ----------------------------------------------------------


def test_finds_the_one_undecodable_event_of_100000_and_exits_1(
    store: PostgresEventStore, migrated_url: str, registry_module: str
) -> None:
    middle = STORE_SIZE // 2
    _insert_events(migrated_url, 0, middle - 1)
    stream_id, version = _stream_of(middle)
    store.append_events(
        stream_id, [NewEvent("Deposited", {"amout": 5})], expected_version=NO_STREAM
    )
    _insert_events(migrated_url, middle + 1, STORE_SIZE - 1)
    bad = _position_of(migrated_url, stream_id, version)

    result = _check(migrated_url, "--registry", f"{registry_module}:registry")

    assert result.exit_code == 1, result.output
    with pytest.raises(DeserializationError) as raised:
        store.load_events(stream_id)
    reason = str(raised.value.__cause__)  # what the store says, without the event's name
    assert reason.startswith("stored fields ['amout'] do not fit Deposited: ")
    assert f"Deposited stored at version 1, 1 event failed: {reason}" in result.output
    assert f"stream {stream_id!r} version {version}, position {bad}" in result.output
    assert "FAIL: 1 of 100,000 events failed to decode" in result.output

    document = json.loads(
        _check(migrated_url, "--registry", f"{registry_module}:registry", "--json").output
    )
    assert document["ok"] is False
    assert document["events"]["checked"] == STORE_SIZE
    assert document["events"]["failed"] == 1
    deposited = next(t for t in document["events"]["types"] if t["event_type"] == "Deposited")
    assert deposited["decoded"] == STORE_SIZE // 2 - 1
    assert deposited["failures"] == [
        {
            "reason": reason,
            "count": 1,
            "first": [
                {
                    "stream_id": stream_id,
                    "version": version,
                    "event_type": "Deposited",
                    "position": str(bad),
                    "reason": reason,
                }
            ],
        }
    ]


def test_a_healthy_store_of_100000_events_exits_0(migrated_url: str, registry_module: str) -> None:
    _insert_events(migrated_url, 0, STORE_SIZE - 1)

    result = _check(migrated_url, "--registry", f"{registry_module}:make_registry")

    assert result.exit_code == 0, result.output
    assert "OK: 100,000 events checked, all decode" in result.output
    for row in ("Deposited", "Withdrawn"):
        assert row in result.output
    assert "50,000" in result.output


def _traced_growth(url: str, registry: EventRegistry) -> tuple[CheckReport, int, int]:
    """Check ``url`` under tracemalloc; return the report, how much the traced
    memory grew between the first tenth of the events and the end, and its peak
    above what was traced before the check (run once before, untraced, so that
    what the first run imports and caches is not counted)."""
    check_events(url, registry)
    samples: list[int] = []

    def sample(phase: str, done: int, total: int | None) -> None:
        if phase == "events":
            samples.append(tracemalloc.get_traced_memory()[0])

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        report = check_events(url, registry, progress=sample)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    tenth = len(samples) // 10
    return report, max(samples[tenth:]) - samples[tenth - 1], peak


def _memory_of_rows(url: str, count: int) -> int:
    """What holding ``count`` rows of the events table takes (traced), for scale."""
    with psycopg.connect(_libpq(url)) as connection:
        tracemalloc.start()
        try:
            rows = connection.execute(
                "SELECT stream_id, version, event_type, event_data FROM events LIMIT %s", (count,)
            ).fetchall()
            held = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
    assert len(rows) == count
    return held


def test_memory_stays_flat_over_100000_events(migrated_url: str) -> None:
    _insert_events(migrated_url, 0, STORE_SIZE - 1)

    report, growth, peak = _traced_growth(migrated_url, bank_registry())

    assert report.ok
    assert report.events_checked == STORE_SIZE
    whole_table = _memory_of_rows(migrated_url, STORE_SIZE)
    # Holding the table would take tens of megabytes: the check holds a page.
    assert whole_table > 10 * 2**20
    assert growth < 256 * 2**10, f"grew by {growth:,} bytes over 90,000 events"
    assert peak < whole_table / 10, f"peak {peak:,} bytes"


def test_memory_stays_flat_when_every_event_fails_for_a_reason_of_its_own(
    migrated_url: str,
) -> None:
    # Each payload is a map {"f<n>": 1}: its own field, so its own reason.
    _insert_events(
        migrated_url,
        0,
        STORE_SIZE - 1,
        event_data="'\\xa1'::bytea || set_byte('\\x00'::bytea, 0, 96 + length('f' || n)) "
        "|| convert_to('f' || n, 'UTF8') || '\\x01'::bytea",
    )

    report, growth, peak = _traced_growth(migrated_url, bank_registry())

    assert report.events_failed == STORE_SIZE
    assert growth < 256 * 2**10, f"grew by {growth:,} bytes over 90,000 events"
    assert peak < _memory_of_rows(migrated_url, STORE_SIZE) / 10, f"peak {peak:,} bytes"
    for tally in report.events:
        assert len(tally.failures) == MAX_REASONS
        assert all(kind.count == 1 and len(kind.first) == 1 for kind in tally.failures)
        assert tally.unlisted_failures == STORE_SIZE // 2 - MAX_REASONS


# -- know before you deploy (the README's story) -------------------------------------

LAST_YEAR = """
import enum
from dataclasses import dataclass

from eventstore import EventRegistry

registry = EventRegistry()


@registry.register
class Tier(enum.Enum):
    BASIC = "basic"
    GOLD = "gold"


@registry.register
@dataclass(frozen=True)
class Deposited:
    amount: int  # in units
    note: str


@registry.register
@dataclass(frozen=True)
class Withdrawn:
    amount: int


@registry.register
@dataclass(frozen=True)
class Upgraded:
    tier: Tier
"""


def today(*, version: str = "(version=2)", upcaster: bool = True, alias: bool = True) -> str:
    """The README's classes of today, as ``myapp/events.py``, or with one step forgotten:
    the version not raised, the upcaster not written, the old name not kept as an alias."""
    upcast = """

@registry.upcaster("Deposited", from_version=1)
def deposited_in_cents(fields: dict) -> dict:
    return {"amount_cents": fields["amount"] * 100}
"""
    return f"""
import enum
from dataclasses import dataclass

from eventstore import EventRegistry

registry = EventRegistry()


@registry.register{version}
@dataclass(frozen=True)
class Deposited:
    amount_cents: int
    currency: str = "EUR"
{upcast if upcaster else ""}

@registry.register{'(aliases=("Withdrawn",))' if alias else ""}
@dataclass(frozen=True)
class MoneyWithdrawn:
    amount: int


class Tier(enum.Enum):
    BASIC = "basic"
    PREMIUM = "premium"  # was GOLD = "gold"


registry.register(Tier, renamed_values={{"gold": Tier.PREMIUM}})


@registry.register
@dataclass(frozen=True)
class Upgraded:
    tier: Tier
"""


LAST_YEAR_WRITES = """
import sys

from eventstore import PostgresEventStore
from myapp.events import Deposited, Tier, Upgraded, Withdrawn, registry

with PostgresEventStore.from_url(sys.argv[1], registry=registry) as store:
    store.append_events(
        "account-7",
        [Deposited(12, "salary"), Withdrawn(2), Upgraded(Tier.GOLD)],
        expected_version=0,
    )
"""

TODAY_WRITES = """
import sys

from eventstore import PostgresEventStore
from myapp.events import Deposited, MoneyWithdrawn, registry

with PostgresEventStore.from_url(sys.argv[1], registry=registry) as store:
    store.append_events(
        "account-7", [Deposited(500, "USD"), MoneyWithdrawn(1)], expected_version=3
    )
"""


def _run(workdir: Path, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=workdir, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def _deploy(workdir: Path, events_module: str) -> None:
    (workdir / "myapp").mkdir(exist_ok=True)
    (workdir / "myapp" / "__init__.py").write_text("")
    (workdir / "myapp" / "events.py").write_text(events_module)


def test_know_before_you_deploy(migrated_url: str, tmp_path: Path) -> None:
    check = (str(EVENTSTORE_CLI), "check-events", "--registry", "myapp.events:registry")
    check_here = (*check, "--url", migrated_url)
    _deploy(tmp_path, LAST_YEAR)
    (tmp_path / "last_year.py").write_text(LAST_YEAR_WRITES)
    (tmp_path / "today.py").write_text(TODAY_WRITES)
    written = _run(tmp_path, sys.executable, "last_year.py", migrated_url)
    assert written.returncode == 0, written.stderr
    assert _run(tmp_path, *check_here).returncode == 0

    # Deposited changed, its version not raised: its old events no longer load.
    _deploy(tmp_path, today(version="", upcaster=False))
    forgot = _run(tmp_path, *check_here)
    assert forgot.returncode == 1, forgot.stdout + forgot.stderr
    shown = _readme_check_output().replace(README_URL, migrated_url)
    assert _without_positions(forgot.stdout) == _without_positions(shown)

    # The version raised, the upcaster forgotten: the registry says what is missing.
    _deploy(tmp_path, today(upcaster=False))
    unlinked = _run(tmp_path, *check_here)
    assert unlinked.returncode == 1
    assert unlinked.stderr.strip() == (
        "Error: Deposited (registered as 'Deposited') is at version 2 but has no upcaster "
        "from version 1: add @registry.upcaster('Deposited', from_version=1)"
    )

    # The old name not kept as an alias: no failure, but its events are plain data.
    _deploy(tmp_path, today(alias=False))
    unaliased = _run(tmp_path, *check_here)
    assert unaliased.returncode == 0, unaliased.stdout + unaliased.stderr
    assert re.search(r"Withdrawn +│ +1 │ plain data \(not registered\)", unaliased.stdout)

    # Today's code reads every old event: safe to deploy.
    _deploy(tmp_path, today())
    ready = _run(tmp_path, *check, "--url", migrated_url, "--json")
    assert ready.returncode == 0, ready.stdout + ready.stderr
    types = json.loads(ready.stdout)["events"]["types"]
    assert [(t["event_type"], t["stored_version"], t["loads_as"]) for t in types] == [
        ("Deposited", 1, "Deposited"),
        ("Upgraded", 1, "Upgraded"),
        ("Withdrawn", 1, "MoneyWithdrawn"),
    ]
    assert [t["registered_version"] for t in types] == [2, 1, 1]

    # Deployed: version-2 events join the version-1 ones, and both read.
    written = _run(tmp_path, sys.executable, "today.py", migrated_url)
    assert written.returncode == 0, written.stderr
    deployed = _run(tmp_path, *check_here)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert re.search(r"Deposited +│ +1 │ Deposited v2 \(upcast\)", deployed.stdout)
    assert re.search(r"Deposited +│ +2 │ Deposited v2 ", deployed.stdout)
    assert "OK: 5 events checked, all decode" in deployed.stdout

    # Rolling back to last year's code would not read what today's wrote.
    _deploy(tmp_path, LAST_YEAR)
    rollback = _run(tmp_path, *check_here)
    assert rollback.returncode == 1
    assert (
        "Deposited stored at version 2, 1 event failed: it was stored by version 2 of "
        "Deposited, but Deposited is registered at version 1"
    ) in rollback.stdout


def _readme_check_output() -> str:
    """The output the README's "Check before you deploy" shows, without its command line."""
    section = README.read_text(encoding="utf-8").split("### Check before you deploy", 1)[1]
    block = re.search(r"```text\n(.*?)```", section, flags=re.S)
    assert block is not None
    lines = block.group(1).splitlines()
    assert lines[0].startswith("$ eventstore check-events")
    return "\n".join(lines[1:]) + "\n"


def _without_positions(output: str) -> str:
    return re.sub(r"position \d+-\d+", "position P", output)


# -- what is reported ----------------------------------------------------------------


def test_aliases_unregistered_types_and_errors_of_the_application_s_classes(
    store: PostgresEventStore, migrated_url: str
) -> None:
    @dataclass(frozen=True)
    class MoneyDeposited:  # Deposited, renamed
        amount: int

        def __post_init__(self) -> None:
            if self.amount <= 0:
                raise ValueError(f"a deposit must be positive, not {self.amount}")

    store.append_events(
        "account-1",
        [Deposited(5), Deposited(-1), NewEvent("Noted", {"text": "hello"})],
        expected_version=NO_STREAM,
    )
    registry = EventRegistry()
    registry.register(MoneyDeposited, aliases=("Deposited",))

    report = check_events(migrated_url, registry)

    deposited, noted = report.events
    assert (deposited.event_type, deposited.loads_as, deposited.registered_version) == (
        "Deposited",
        "MoneyDeposited",
        1,
    )
    assert (deposited.decoded, deposited.failed) == (1, 1)
    (kind,) = deposited.failures
    assert kind.reason == "ValueError: a deposit must be positive, not -1"
    assert [(e.stream_id, e.version) for e in kind.first] == [("account-1", 2)]
    assert (noted.event_type, noted.loads_as, noted.registered_version) == ("Noted", None, None)
    assert (noted.decoded, noted.failed) == (1, 0)

    result = _check_with(migrated_url, registry)
    assert "MoneyDeposited v1" in result
    assert "plain data (not registered)" in result


def _check_with(url: str, registry: EventRegistry) -> str:
    """The command's text output for ``registry`` (set as a module attribute)."""
    module = type(sys)("check_events_registry")
    module.registry = registry  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    path = list(sys.path)
    try:
        return str(_check(url, "--registry", f"{module.__name__}:registry").output)
    finally:
        del sys.modules[module.__name__]
        sys.path[:] = path


def test_bytes_that_are_not_cbor_and_examples_per_reason(
    store: PostgresEventStore, migrated_url: str
) -> None:
    store.append_events("account-1", [Withdrawn(1)], expected_version=NO_STREAM)
    with psycopg.connect(_libpq(migrated_url)) as connection:
        for version in range(2, 10):
            connection.execute(
                "INSERT INTO events (stream_id, version, event_type, event_data) "
                "VALUES ('account-1', %s, 'Withdrawn', %s)",
                (version, b'{"amount": 5}'),
            )

    report = check_events(migrated_url, bank_registry(), examples=3)

    (withdrawn,) = report.events
    assert (withdrawn.decoded, withdrawn.failed) == (1, 8)
    (kind,) = withdrawn.failures
    assert kind.reason.startswith("invalid CBOR: ")
    assert kind.count == 8
    assert [e.version for e in kind.first] == [2, 3, 4]  # the oldest, in feed order
    assert not report.ok


def test_snapshots_per_snapshot_version(migrated_url: str) -> None:
    registry = bank_registry()
    registry.register(Balance)
    with PostgresEventStore.from_url(migrated_url, registry=registry) as writer:
        for n in range(1, 6):
            writer.append_events(f"account-{n}", [Deposited(n)], expected_version=NO_STREAM)
        writer.save_snapshot("account-1", 1, {"balance": 1})
        writer.save_snapshot("account-2", 1, VersionedState(2, Balance(200)))
        writer.save_snapshot("account-3", 1, VersionedState(2, Balance(300)))
    with psycopg.connect(_libpq(migrated_url)) as connection:
        connection.execute(
            "INSERT INTO snapshots (stream_id, version, state_data) VALUES (%s, 1, %s)",
            ("account-4", b"\xff\xff"),
        )
    # Balance's field renamed without an upcaster: the version-2 snapshots no longer load.
    changed = bank_registry()
    changed.register(NewBalance, name="Balance")

    report = check_events(migrated_url, changed)

    assert report.events_checked == 5
    assert report.events_failed == 0
    first, second = report.snapshots
    assert (first.snapshot_version, first.decoded, first.failed) == (1, 1, 1)
    assert first.failures[0].first[0].stream_id == "account-4"
    assert first.failures[0].reason.startswith("invalid CBOR")
    assert (second.snapshot_version, second.decoded, second.failed) == (2, 0, 2)
    (kind,) = second.failures
    assert kind.reason.startswith("stored fields ['cents'] do not fit NewBalance")
    assert [(s.stream_id, s.version) for s in kind.first] == [("account-2", 1), ("account-3", 1)]

    output = _check_with(migrated_url, changed)
    assert "snapshots at snapshot version 2, 2 snapshots failed: stored fields" in output
    assert "stream 'account-3' at version 1" in output
    assert "FAIL: 0 of 5 events and 3 of 4 snapshots failed to decode" in output

    assert check_events(migrated_url, registry).snapshots_failed == 1


def test_reads_one_snapshot_of_the_database(store: PostgresEventStore, migrated_url: str) -> None:
    _insert_events(migrated_url, 0, 2_999)
    appended: list[int] = []

    def append_while_checking(phase: str, done: int, total: int | None) -> None:
        if not appended:
            appended.append(store.append_events("late", [Deposited(1)], expected_version=ANY))

    report = check_events(migrated_url, bank_registry(), progress=append_while_checking)

    assert appended
    assert report.events_checked == 3_000
    assert check_events(migrated_url, bank_registry()).events_checked == 3_001
    # An application's engine is used as it is, and stays usable.
    assert check_events(store.engine, bank_registry()).events_checked == 3_001
    assert store.stream_version("late") == 1


def test_runs_as_the_application_role(
    event_store: PostgresEventStore, app_role_database_url: str, registry_module: str
) -> None:
    event_store.append_events(
        "account-1", [NewEvent("Deposited", {"amount": 1})] * 3, expected_version=NO_STREAM
    )
    event_store.save_snapshot("account-1", 3, {"balance": 3})

    result = _check(app_role_database_url, "--registry", f"{registry_module}:registry")

    assert result.exit_code == 0, result.output
    assert "OK: 3 events and 1 snapshot checked, all decode" in result.output
    password = normalize_url(app_role_database_url).password
    assert password
    assert str(password) not in result.output


# -- bad input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attribute", "message"),
    [
        ("registry", "'{m}' is not package.module:attribute (e.g. myapp.events:registry)"),
        ("nowhere_{m}:registry", "cannot import nowhere_{m}: ModuleNotFoundError: No module"),
        ("{m}:missing", "{m} has no attribute 'missing'"),
        ("{m}:registry.missing", "{m}.registry has no attribute 'missing'"),
        ("{m}:answer", "{m}:answer is a int, not an EventRegistry or a function returning one"),
        ("{m}:bank_registry.__class__", "is a class, not an EventRegistry"),
        ("{m}:broken", "calling {m}:broken() failed: RuntimeError: no configuration"),
        ("{m}:answer.__str__", "{m}:answer.__str__() returned a str, not an EventRegistry"),
    ],
)
def test_a_registry_that_cannot_be_loaded_is_a_usage_error(
    migrated_url: str, registry_module: str, attribute: str, message: str
) -> None:
    reference = attribute.format(m=registry_module)
    if reference == "registry":
        reference = registry_module
    result = _check(migrated_url, "--registry", reference)

    assert result.exit_code == 2
    error = result.output.strip().splitlines()[-1]
    assert error.startswith("Error: Invalid value for '--registry': ")
    assert message.format(m=registry_module) in error
    assert "Traceback" not in result.output


def test_a_module_that_fails_to_import_is_named(tmp_path: Path, migrated_url: str) -> None:
    (tmp_path / "broken_app.py").write_text("import not_installed_anywhere\n")

    result = _run(
        tmp_path,
        str(EVENTSTORE_CLI),
        "check-events",
        "--registry",
        "broken_app:registry",
        "--url",
        migrated_url,
    )

    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: Invalid value for '--registry': cannot import broken_app: "
        "ModuleNotFoundError: No module named 'not_installed_anywhere'"
    )


def test_a_database_without_the_tables_is_a_one_line_error(
    scratch_database_url: str, registry_module: str
) -> None:
    result = _check(scratch_database_url, "--registry", f"{registry_module}:registry")

    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: the database has no event store tables (or tables older than the global "
        "feed): run `eventstore migrate upgrade` on it first"
    )


def test_the_library_function_refuses_what_is_not_a_registry(migrated_url: str) -> None:
    with pytest.raises(ValidationError, match="expected an EventRegistry, not dict"):
        check_events(migrated_url, {})  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="examples"):
        check_events(migrated_url, EventRegistry(), examples=-1)
