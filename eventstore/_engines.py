"""Engines from what callers hand in: a URL (an engine of our own, disposed after
use) or an application's Engine (used as it is)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool, Pool, PoolProxiedConnection

from eventstore.errors import ValidationError
from eventstore.urls import normalize_url


def check_engine(engine: object, *, psycopg_driver: bool = True) -> Engine:
    """``engine`` if it is a SQLAlchemy Engine on PostgreSQL (and psycopg 3 when
    ``psycopg_driver``); ValidationError otherwise."""
    if not isinstance(engine, Engine):
        raise ValidationError(
            f"expected a SQLAlchemy Engine or a database URL, not {type(engine).__name__}"
        )
    dialect = engine.dialect
    if dialect.name != "postgresql" or (psycopg_driver and dialect.driver != "psycopg"):
        raise ValidationError(
            f"pg-eventstore needs a PostgreSQL engine on psycopg 3, not "
            f"{dialect.name}+{dialect.driver}: build it from a postgresql+psycopg:// URL"
        )
    return engine


@contextmanager
def engine_for(
    url_or_engine: str | URL | Engine, *, psycopg_driver: bool = True
) -> Iterator[Engine]:
    """The given Engine, or a connection-per-use engine for a URL, disposed on exit."""
    if isinstance(url_or_engine, Engine):
        yield check_engine(url_or_engine, psycopg_driver=psycopg_driver)
        return
    engine = create_engine(normalize_url(url_or_engine), poolclass=NullPool)
    try:
        yield engine
    finally:
        engine.dispose()


def invalidate_generation(pool: Pool, pooled: PoolProxiedConnection, error: BaseException) -> None:
    """After ``pooled`` was found dead: invalidate it and every connection the pool
    opened before it, as SQLAlchemy does on a disconnect it sees itself (a server
    restart ended them all, so callers meet one failed call, not one per idle
    connection).

    That is ``Pool._invalidate``, a private SQLAlchemy method; the store calls
    it directly because its fast path runs statements on the driver connection,
    where SQLAlchemy does not see the disconnect. Should a SQLAlchemy release
    drop the method, only ``pooled`` is invalidated (the others are then found
    dead at their next use and replaced one at a time), and
    tests/test_engines.py fails to say so.
    """
    invalidate_older = getattr(pool, "_invalidate", None)
    if callable(invalidate_older):
        invalidate_older(pooled, error)
    else:
        pooled.invalidate(error)


def connection_outside_pool(engine: Engine, *setup: str) -> psycopg.Connection[Any]:
    """A new psycopg connection in autocommit, built as ``engine`` builds its pooled
    ones (the same creator and connect events) but never part of a pool, with each
    statement of ``setup`` run on it once. The caller owns it and closes it.

    For the store's long-lived background connections (the listener's, the
    notifier's): they neither use up the pool nor leave a pooled connection in
    autocommit or listening. Raises what psycopg or SQLAlchemy raise.
    """
    pool = engine.pool.recreate()
    try:
        pooled = pool.connect()
        driver: psycopg.Connection[Any] = pooled.driver_connection  # type: ignore[assignment]
        pooled.detach()  # ours alone from now on; no pool ever sees it again
    finally:
        pool.dispose()
    try:
        driver.autocommit = True
        for statement in setup:
            driver.execute(statement)
    except BaseException:
        close_quietly(driver)
        raise
    return driver


def close_quietly(connection: psycopg.Connection[Any]) -> None:
    """Close ``connection``, ignoring the errors of one already broken."""
    with contextlib.suppress(psycopg.Error):
        connection.close()
