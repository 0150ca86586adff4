"""Health checks for a database holding an event store: the problems of the
operations guide's troubleshooting section, found and explained (``eventstore doctor``).

:func:`run_checks` connects and returns what the checks found, one :class:`Check`
(pass, warn or fail, with advice) per finding. It runs two ordered lists; each check is
a function whose docstring says what it checks, why, and what to do when it fails:

- :data:`CONNECTION_CHECKS`: server reachable, authentication, database exists. When
  the connection fails, they find out from the outside which step failed, and the
  first failure ends the run: nothing else can be checked.
- :data:`DATABASE_CHECKS`, on the open connection, each when its condition holds (the
  append-only log and the skipped events at the newest revision only, the feed's
  checks when the feed's columns exist). A query the database refuses (a missing
  privilege, say) fails its check instead of stopping the others.

:func:`overall` gives the worst status and :data:`EXIT_CODES` the command's exit code
for it. No message contains the password.
"""

from __future__ import annotations

import sqlalchemy.exc
from sqlalchemy.engine import URL

from eventstore._translate import first_line
from eventstore._validation import check_int
from eventstore.doctor._check import (
    EXIT_CODES,
    Check,
    DatabaseCheck,
    Session,
    Status,
    overall,
)
from eventstore.doctor._connection import (
    Attempt,
    authentication,
    database_exists,
    engine,
    server_reachable,
)
from eventstore.doctor._feed import oldest_transaction, stream_load_plan, transaction_ids
from eventstore.doctor._projections import skipped_events
from eventstore.doctor._schema import (
    append_only_log,
    indexes,
    migration,
    privileges,
    tables,
)
from eventstore.doctor._server import max_connections, settings
from eventstore.errors import ValidationError
from eventstore.postgres import POOL_DEFAULTS
from eventstore.urls import normalize_url

__all__ = [
    "DEFAULT_MAX_TRANSACTION_AGE",
    "DEFAULT_POOL_CONNECTIONS",
    "EXIT_CODES",
    "Check",
    "Status",
    "overall",
    "run_checks",
]

DEFAULT_POOL_CONNECTIONS = int(POOL_DEFAULTS["pool_size"]) + int(POOL_DEFAULTS["max_overflow"])
"""The most connections ``PostgresEventStore.from_url`` opens with its defaults (5 + 15)."""

DEFAULT_MAX_TRANSACTION_AGE = 60.0
"""Seconds a transaction may run before ``oldest transaction`` warns."""

LOCK_TIMEOUT = "5s"
STATEMENT_TIMEOUT = "60s"
"""Limits on each of the checks' queries."""

CONNECTION_CHECKS = (server_reachable, authentication, database_exists)
"""In order; the first that does not pass ends the run."""

DATABASE_CHECKS = (
    DatabaseCheck("migration", migration),
    DatabaseCheck("tables", tables),
    DatabaseCheck("indexes", indexes),
    DatabaseCheck("append-only log", append_only_log, applies=lambda s: s.at_head),
    DatabaseCheck("privileges", privileges),
    DatabaseCheck("max_connections", max_connections),
    DatabaseCheck("settings", settings),
    DatabaseCheck("oldest transaction", oldest_transaction),
    DatabaseCheck("feed transaction ids", transaction_ids, applies=lambda s: s.has_feed),
    DatabaseCheck("stream load plan", stream_load_plan, applies=lambda s: s.has_feed),
    DatabaseCheck("skipped events", skipped_events, applies=lambda s: s.at_head),
)
"""In order, after the connection checks passed."""


def run_checks(
    url: str | URL,
    *,
    pool_size: int | None = None,
    max_transaction_age: float = DEFAULT_MAX_TRANSACTION_AGE,
) -> list[Check]:
    """Check the database at ``url``; return the findings in the checks' order.

    ``pool_size`` is the most connections the application opens (default
    :data:`DEFAULT_POOL_CONNECTIONS`, the store's ``from_url`` defaults).
    ``max_transaction_age`` is in seconds. Connection problems are reported as
    checks, never raised; raises :class:`ValidationError` only for a bad URL or
    argument.
    """
    target = normalize_url(url)
    pool = (
        DEFAULT_POOL_CONNECTIONS
        if pool_size is None
        else check_int(pool_size, "pool_size", minimum=1)
    )
    if isinstance(max_transaction_age, bool) or not isinstance(max_transaction_age, (int, float)):
        raise ValidationError(
            f"max_transaction_age must be a number, not {type(max_transaction_age).__name__}"
        )
    if max_transaction_age < 0:
        raise ValidationError(f"max_transaction_age must be >= 0, got {max_transaction_age}")

    database_engine = engine(target)
    try:
        try:
            connection = database_engine.connect()
        except sqlalchemy.exc.DBAPIError as error:
            message = first_line(error).removeprefix("connection failed: ")
            return _connection_checks(Attempt(target, error=message))
        with connection:
            # Catalog reads only, but a table locked by a running migration must not hang us.
            connection.exec_driver_sql(
                f"SET lock_timeout = '{LOCK_TIMEOUT}'; "
                f"SET statement_timeout = '{STATEMENT_TIMEOUT}'"
            )
            user, database = connection.exec_driver_sql(
                "SELECT current_user, current_database()"
            ).one()
            checks = _connection_checks(Attempt(target, user=str(user), database=str(database)))
            session = Session(connection, pool, float(max_transaction_age))
            for check in DATABASE_CHECKS:
                session.findings.extend(check(session))
            return checks + session.findings
    finally:
        database_engine.dispose()


def _connection_checks(attempt: Attempt) -> list[Check]:
    checks: list[Check] = []
    for check in CONNECTION_CHECKS:
        checks.append(check(attempt))
        if checks[-1].status != "pass":
            break
    return checks
