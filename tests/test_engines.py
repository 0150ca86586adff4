"""The store's one use of a private SQLAlchemy API: ``Pool._invalidate``, which
replaces every connection a pool opened before a dead one. These tests fail
loudly if a SQLAlchemy release changes it, and check the fallback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import Pool, QueuePool

from eventstore._engines import invalidate_generation
from eventstore.urls import normalize_url


@pytest.fixture
def engine(eventstore_database_url: str) -> Iterator[Engine]:
    engine = create_engine(normalize_url(eventstore_database_url), poolclass=QueuePool)
    try:
        yield engine
    finally:
        engine.dispose()


def _backend_pid(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())


def test_a_dead_connection_replaces_every_older_pooled_connection(engine: Engine) -> None:
    dead = engine.pool.connect()
    idle = engine.pool.connect()
    idle_pid = idle.driver_connection.info.backend_pid  # type: ignore[union-attr]
    idle.close()  # back in the pool, opened before the failure
    invalidate_generation(engine.pool, dead, ConnectionError("server closed the connection"))
    dead.close()
    assert not dead.is_valid
    assert _backend_pid(engine) != idle_pid, (
        "SQLAlchemy's Pool._invalidate no longer replaces the connections opened "
        "before a dead one: see eventstore._engines.invalidate_generation"
    )


def test_without_the_private_method_only_the_dead_connection_is_replaced(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(Pool, "_invalidate")
    dead = engine.pool.connect()
    idle = engine.pool.connect()
    idle_pid = idle.driver_connection.info.backend_pid  # type: ignore[union-attr]
    idle.close()
    invalidate_generation(engine.pool, dead, ConnectionError("server closed the connection"))
    assert not dead.is_valid
    dead.close()
    assert _backend_pid(engine) == idle_pid
