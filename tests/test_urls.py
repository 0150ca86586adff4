"""Database URLs: the forms people paste, and where DATABASE_URL is read from."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from eventstore.errors import ValidationError
from eventstore.urls import DATABASE_URL_VARIABLE, database_url_from_environment, normalize_url

QUERY = "sslmode=require&connect_timeout=10&application_name=my-app"


@pytest.mark.parametrize(
    "scheme", ["postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2"]
)
def test_every_postgresql_scheme_becomes_psycopg_3(scheme: str) -> None:
    url = normalize_url(f"{scheme}://app:secret@db.example:5433/orders")

    assert url.drivername == "postgresql+psycopg"
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "app",
        "secret",
        "db.example",
        5433,
        "orders",
    )


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+psycopg"])
def test_query_options_pass_through_unchanged(scheme: str) -> None:
    url = normalize_url(f"{scheme}://app@db.example/orders?{QUERY}")

    assert dict(url.query) == {
        "sslmode": "require",
        "connect_timeout": "10",
        "application_name": "my-app",
    }


def test_a_sqlalchemy_url_object_is_accepted() -> None:
    url = normalize_url(make_url("postgres://app@db.example/orders?sslmode=disable"))

    assert url.render_as_string(hide_password=False) == (
        "postgresql+psycopg://app@db.example/orders?sslmode=disable"
    )


def test_surrounding_whitespace_is_ignored() -> None:
    assert normalize_url("  postgres://app@db.example/orders\n").database == "orders"


def test_percent_encoded_passwords_are_decoded_once() -> None:
    url = normalize_url("postgres://app:p%40ss%25word@db.example/orders")

    assert url.password == "p@ss%word"
    assert "p%40ss%25word" in url.render_as_string(hide_password=False)


def test_a_url_without_host_keeps_the_local_socket_default() -> None:
    url = normalize_url("postgresql:///orders")

    assert url.host is None
    assert url.database == "orders"


@pytest.mark.parametrize(
    "url",
    [
        "mysql://app@db.example/orders",
        "mysql+pymysql://app@db.example/orders",
        "sqlite:///events.db",
        "oracle://app@db.example/orders",
    ],
)
def test_other_databases_are_a_validation_error(url: str) -> None:
    with pytest.raises(ValidationError, match="PostgreSQL"):
        normalize_url(url)


@pytest.mark.parametrize("url", ["", "   ", "\n"])
def test_an_empty_url_is_a_validation_error(url: str) -> None:
    with pytest.raises(ValidationError, match="empty"):
        normalize_url(url)


def test_an_unparseable_url_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="cannot parse"):
        normalize_url("not a url at all")


def test_a_non_numeric_port_is_a_validation_error_that_hides_the_password() -> None:
    with pytest.raises(ValidationError) as caught:
        normalize_url("postgresql://app:hunter2@db.example:fivefourthreetwo/orders")

    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("url", [None, 5432, b"postgres://app@db.example/orders"])
def test_a_url_that_is_not_a_str_is_a_validation_error(url: object) -> None:
    with pytest.raises(ValidationError):
        normalize_url(url)  # type: ignore[arg-type]


def test_validation_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="PostgreSQL"):
        normalize_url("mysql://app@db.example/orders")


# --- DATABASE_URL: environment, then .env --------------------------------------------


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No DATABASE_URL in the environment; the working directory is an empty tmp_path."""
    monkeypatch.delenv(DATABASE_URL_VARIABLE, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_database_url_variable_is_database_url() -> None:
    assert DATABASE_URL_VARIABLE == "DATABASE_URL"


def test_nothing_found_is_none(clean_environment: Path) -> None:
    assert database_url_from_environment() is None


def test_the_environment_is_read(clean_environment: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://env@db.example/orders")

    assert database_url_from_environment() == "postgres://env@db.example/orders"


def test_a_dotenv_file_in_the_working_directory_is_read(clean_environment: Path) -> None:
    (clean_environment / ".env").write_text(
        "# local settings\nOTHER=1\nDATABASE_URL=postgres://file@db.example/orders?" + QUERY + "\n",
        encoding="utf-8",
    )

    assert database_url_from_environment() == f"postgres://file@db.example/orders?{QUERY}"


def test_a_quoted_value_in_the_dotenv_file_is_unquoted(clean_environment: Path) -> None:
    (clean_environment / ".env").write_text(
        'DATABASE_URL="postgres://file@db.example/orders"\n', encoding="utf-8"
    )

    assert database_url_from_environment() == "postgres://file@db.example/orders"


def test_the_environment_wins_over_the_dotenv_file(
    clean_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean_environment / ".env").write_text(
        "DATABASE_URL=postgres://file@db.example/orders\n", encoding="utf-8"
    )
    monkeypatch.setenv("DATABASE_URL", "postgres://env@db.example/orders")

    assert database_url_from_environment() == "postgres://env@db.example/orders"


def test_an_empty_environment_variable_falls_back_to_the_dotenv_file(
    clean_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean_environment / ".env").write_text(
        "DATABASE_URL=postgres://file@db.example/orders\n", encoding="utf-8"
    )
    monkeypatch.setenv("DATABASE_URL", "")

    assert database_url_from_environment() == "postgres://file@db.example/orders"


def test_reading_the_dotenv_file_does_not_change_the_environment(
    clean_environment: Path,
) -> None:
    (clean_environment / ".env").write_text(
        "DATABASE_URL=postgres://file@db.example/orders\n", encoding="utf-8"
    )

    database_url_from_environment()

    assert "DATABASE_URL" not in os.environ


def test_a_dotenv_file_elsewhere_is_not_read(clean_environment: Path) -> None:
    elsewhere = clean_environment / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / ".env").write_text(
        "DATABASE_URL=postgres://file@db.example/orders\n", encoding="utf-8"
    )

    assert database_url_from_environment() is None


def test_an_explicit_env_file_and_variable_are_used(
    clean_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = clean_environment / "settings.env"
    settings.write_text("EVENTS_DB=postgres://file@db.example/events\n", encoding="utf-8")
    monkeypatch.setenv("DATABASE_URL", "postgres://env@db.example/orders")

    assert (
        database_url_from_environment("EVENTS_DB", env_file=settings)
        == "postgres://file@db.example/events"
    )


def test_env_file_none_reads_the_environment_only(clean_environment: Path) -> None:
    (clean_environment / ".env").write_text(
        "DATABASE_URL=postgres://file@db.example/orders\n", encoding="utf-8"
    )

    assert database_url_from_environment(env_file=None) is None
