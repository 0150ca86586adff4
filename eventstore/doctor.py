"""Health checks for a database holding an event store: each problem of the
operations guide's troubleshooting section, found and explained.

:func:`run_checks` connects and returns one :class:`Check` per item, in this
order; a check that cannot run because an earlier one failed is left out:

``server reachable``
    the host resolves and accepts connections on the port (or the unix socket
    answers). Fail otherwise; nothing else is checked.
``authentication``
    the server accepts the user and password. Fail otherwise, with the guide's
    ``pg_hba.conf`` advice. A login refused for lack of connection slots ("too
    many connections") is reported as a failed ``max_connections`` instead.
``database exists``
    Fail when it does not (advice: ``CREATE DATABASE``).
``migration``
    the schema is at the newest revision this library knows. Fail when not
    migrated, behind, or at a revision this version does not know.
``tables``, ``indexes``
    ``events``, ``snapshots``, ``projection_checkpoints`` and every index of
    :mod:`eventstore.schema` exist (and are valid). Fail otherwise; at head the
    advice is the statements that recreate what is missing, below head the upgrade.
``append-only log``
    at head: the triggers that refuse ``UPDATE``, ``DELETE`` and ``TRUNCATE``
    on ``events`` exist and are enabled. Fail otherwise, with the statements
    that switch them back on.
``privileges``
    the user may do what the store does with each table. Fail otherwise, with
    the ``GRANT`` statements.
``max_connections``
    Warn when the other client connections already open plus the application's
    pool would exceed ``max_connections`` minus the reserved slots.
``shared_buffers``, ``work_mem``, ``wal_buffers``, ``checkpoint_completion_target``,
``max_wal_size``
    each shown with the guide's recommendation. Warn below PostgreSQL's own
    defaults, which a stock server meets: 128MB, 4MB, 4MB, 0.9 and 1GB.
``oldest transaction``
    Warn when a transaction in the cluster has been running longer than
    ``max_transaction_age`` seconds (readers of the feed wait for it).
``feed transaction ids``
    Fail when a stored transaction id is at or beyond the server's next one
    (a logical restore into another cluster), with the SQL that repairs it.
``stream load plan``
    EXPLAIN of the store's stream load query: pass when it reads
    ``events_pkey``. On a table under 10 MB the planner may rightly read the
    whole table; the check then verifies that the primary key would serve the
    load. Fail when it cannot, or when a larger table is read whole.

The last two need the feed's columns (revision eventstore_0002). A query the
database refuses (a missing privilege, say) fails its check instead of
stopping the others. :func:`overall` gives the worst status and
:data:`EXIT_CODES` the command's exit code for it. No message contains the
password.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
import psycopg.errors
import sqlalchemy.exc
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from psycopg.types.numeric import Int8
from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import AddConstraint, CreateIndex

from eventstore import migrations, schema
from eventstore._sql import LOAD_STREAM
from eventstore._validation import check_int
from eventstore.errors import ValidationError
from eventstore.monitoring import oldest_transaction
from eventstore.postgres import POOL_DEFAULTS
from eventstore.roles import STORE_COLUMN_PRIVILEGES, STORE_PRIVILEGES
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

Status = Literal["pass", "warn", "fail"]

EXIT_CODES: dict[Status, int] = {"pass": 0, "warn": 1, "fail": 2}
"""The ``eventstore doctor`` exit code for each overall status."""

DEFAULT_POOL_CONNECTIONS = int(POOL_DEFAULTS["pool_size"]) + int(POOL_DEFAULTS["max_overflow"])
"""The most connections ``PostgresEventStore.from_url`` opens with its defaults (5 + 15)."""

DEFAULT_MAX_TRANSACTION_AGE = 60.0
"""Seconds a transaction may run before ``oldest transaction`` warns."""

DEFAULT_CONNECT_TIMEOUT = 5
"""Seconds to wait for the server when the URL sets no ``connect_timeout``."""

LOCK_TIMEOUT = "5s"
STATEMENT_TIMEOUT = "60s"
"""Limits on each of the checks' queries."""

SMALL_TABLE_BYTES = 10 * 1024 * 1024
"""Below this, reading all of ``events`` for a stream load is cheap and not a fault."""

PLAN_STREAM_ID = "order-123"
"""The stream id the plan check explains when the store holds no events."""

_RANK: dict[Status, int] = {"pass": 0, "warn": 1, "fail": 2}

_MAINTENANCE_DATABASES = ("postgres", "template1")

_RESTORE_FIX = (
    "right after a logical restore (pg_dump / pg_restore into another cluster), before any "
    "writer starts, run once as the tables' owner: BEGIN; "
    "SET LOCAL eventstore.allow_rewrite = on; "
    "UPDATE events SET transaction_id = pg_current_xact_id(); "
    "UPDATE projection_checkpoints SET transaction_id = pg_current_xact_id()::text::bigint; "
    "COMMIT;"
)


# What the store does with each object (migrations need the owner's rights instead).
_PRIVILEGES = STORE_PRIVILEGES

_GRANT_ADVICE = (
    "as the tables' owner, grant the application's user what the store needs: "
    + " ".join(f"GRANT {rights} ON {table} TO <user>;" for table, rights in _PRIVILEGES.items())
    + " "
    + " ".join(
        f"GRANT {right} ({column}) ON {table} TO <user>;"
        for table, (right, column) in STORE_COLUMN_PRIVILEGES.items()
    )
    + " and, for `eventstore doctor` and `migrate current`: GRANT SELECT ON "
    + f"{migrations.VERSION_TABLE} TO <user>;"
)


@dataclass(frozen=True)
class Check:
    """One finding: ``status`` is ``"pass"``, ``"warn"`` or ``"fail"``; ``message``
    says what was found, ``advice`` what to do about it (empty when nothing)."""

    name: str
    status: Status
    message: str
    advice: str = ""

    def to_dict(self) -> dict[str, str]:
        """The check as JSON-ready data: ``name``, ``status``, ``message``, ``advice``."""
        return {
            "name": self.name,
            "status": self.status,
            "message": self.message,
            "advice": self.advice,
        }


def overall(checks: Sequence[Check]) -> Status:
    """The worst status among ``checks`` (``"pass"`` for none)."""
    worst: Status = "pass"
    for check in checks:
        if _RANK[check.status] > _RANK[worst]:
            worst = check.status
    return worst


def run_checks(
    url: str | URL,
    *,
    pool_size: int | None = None,
    max_transaction_age: float = DEFAULT_MAX_TRANSACTION_AGE,
) -> list[Check]:
    """Check the database at ``url``; return the checks in the module docstring's order.

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

    checks: list[Check] = []
    engine = _engine(target)
    try:
        try:
            connection = engine.connect()
        except sqlalchemy.exc.DBAPIError as error:
            checks.extend(_diagnose_connection(target, _first_line(error)))
            return checks
        with connection:
            # Catalog reads only, but a table locked by a running migration must not hang us.
            connection.exec_driver_sql(
                f"SET lock_timeout = '{LOCK_TIMEOUT}'; "
                f"SET statement_timeout = '{STATEMENT_TIMEOUT}'"
            )
            user, database = connection.exec_driver_sql(
                "SELECT current_user, current_database()"
            ).one()
            checks.append(
                Check("server reachable", "pass", f"{_where(target)} accepts connections")
            )
            checks.append(Check("authentication", "pass", f"logged in as {user}"))
            checks.append(Check("database exists", "pass", f"connected to {database}"))
            age = float(max_transaction_age)
            migration = _guarded("migration", lambda: [_migration_check(connection)])
            at_head = migration[0].status == "pass"
            checks.extend(migration)
            checks.extend(_guarded("tables", lambda: _object_checks(connection, at_head)))
            if at_head:
                checks.extend(_guarded("append-only log", lambda: [_append_only_check(connection)]))
            checks.extend(_guarded("privileges", lambda: [_privileges_check(connection)]))
            checks.extend(
                _guarded("max_connections", lambda: [_connections_check(connection, pool)])
            )
            checks.extend(_guarded("settings", lambda: _tuning_checks(connection)))
            checks.extend(
                _guarded("oldest transaction", lambda: [_transaction_check(connection, age)])
            )
            if _has_column(connection, "events", "transaction_id"):
                checks.extend(
                    _guarded("feed transaction ids", lambda: [_transaction_ids_check(connection)])
                )
                # The store's load query reads the feed's columns too.
                checks.extend(_guarded("stream load plan", lambda: [_plan_check(connection)]))
    finally:
        engine.dispose()
    return checks


def _guarded(name: str, run: Callable[[], list[Check]]) -> list[Check]:
    """``run()``, or one failed check named ``name`` when the database refuses a query."""
    try:
        return run()
    except sqlalchemy.exc.DBAPIError as error:
        message = _first_line(error)
        if isinstance(error.orig, psycopg.errors.InsufficientPrivilege):
            return [Check(name, "fail", message, _GRANT_ADVICE)]
        return [Check(name, "fail", f"the check's query failed: {message}")]


# -- connecting ------------------------------------------------------------------------


def _engine(url: URL) -> Engine:
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = DEFAULT_CONNECT_TIMEOUT
    return create_engine(
        url, poolclass=NullPool, isolation_level="AUTOCOMMIT", connect_args=connect_args
    )


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return line.removeprefix("connection failed: ")


def _query_value(url: URL, key: str) -> str | None:
    value = url.query.get(key)
    if isinstance(value, tuple):
        return value[0] if value else None
    return value


def _hosts(url: URL) -> list[str]:
    hosts = url.host or _query_value(url, "host") or os.environ.get("PGHOST")
    if hosts:
        return [host for host in hosts.split(",") if host]
    return ["/var/run/postgresql", "/tmp"]


def _port(url: URL) -> int:
    port = url.port or _query_value(url, "port") or os.environ.get("PGPORT") or 5432
    try:
        return int(str(port).split(",")[0])
    except ValueError:
        return 5432


def _where(url: URL) -> str:
    port = _port(url)
    return ", ".join(
        f"socket {host}/.s.PGSQL.{port}" if host.startswith("/") else f"{host}:{port}"
        for host in _hosts(url)
    )


def _probe(url: URL, timeout: float) -> tuple[bool, str]:
    """(reachable, what was found): a TCP connection or a unix socket, no PostgreSQL login."""
    port = _port(url)
    problems: list[str] = []
    for host in _hosts(url):
        if host.startswith("/"):
            path = f"{host}/.s.PGSQL.{port}"
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                try:
                    sock.connect(path)
                except OSError as exc:
                    problems.append(f"socket {path}: {exc.strerror or exc}")
                    continue
            return True, f"socket {path} accepts connections"
        try:
            addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            problems.append(f"host {host!r} is unknown ({exc.strerror})")
            continue
        for family, kind, proto, _, address in addresses:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(timeout)
                try:
                    sock.connect(address)
                except OSError as exc:
                    reason = "timed out" if isinstance(exc, TimeoutError) else exc.strerror or exc
                    problems.append(f"{host}:{port}: {reason}")
                    continue
            return True, f"{host}:{port} accepts connections"
    return False, "; ".join(problems)


def _diagnose_connection(target: URL, message: str) -> list[Check]:
    """Which of reachable / authentication / database failed, from the outside."""
    timeout = float(_query_value(target, "connect_timeout") or DEFAULT_CONNECT_TIMEOUT)
    reachable, found = _probe(target, timeout)
    if not reachable:
        unknown_host = "is unknown" in found
        advice = (
            "check the host name in the URL (DNS, /etc/hosts, a typo)"
            if unknown_host
            else "start the server (`sudo systemctl start postgresql`, "
            "`brew services start postgresql@16`, or the guide's `docker run` line); "
            "check the host and port in the URL, that the server listens there "
            "(listen_addresses and port in postgresql.conf) and that no firewall blocks it"
        )
        return [Check("server reachable", "fail", found or message, advice)]
    checks = [Check("server reachable", "pass", found)]

    database = target.database or target.username or ""
    exists: bool | None = None
    for maintenance in _MAINTENANCE_DATABASES:
        if maintenance == database:
            continue
        engine = _engine(target.set(database=maintenance))
        try:
            with engine.connect() as connection:
                exists = bool(
                    connection.exec_driver_sql(
                        "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = %(name)s)",
                        {"name": database},
                    ).scalar()
                )
            break
        except (sqlalchemy.exc.DBAPIError, psycopg.Error):
            continue
        finally:
            engine.dispose()

    if exists is None and _is_out_of_slots(message):
        checks.append(Check("max_connections", "fail", message, _SLOTS_ADVICE))
        return checks
    if exists is None:
        checks.append(Check("authentication", "fail", message, _login_advice(target, message)))
        return checks
    checks.append(
        Check("authentication", "pass", f"the server accepts {target.username or 'the user'}")
    )
    if not exists:
        checks.append(
            Check(
                "database exists",
                "fail",
                f'database "{database}" does not exist',
                f"create it: psql -c 'CREATE DATABASE \"{database}\"' (connected as a user "
                "allowed to create databases), then `eventstore migrate upgrade`",
            )
        )
    else:
        checks.append(
            Check(
                "database exists",
                "fail",
                f'database "{database}" exists but refused the connection: {message}',
                f'allow the user in: GRANT CONNECT ON DATABASE "{database}" TO '
                f'"{target.username}"; and a pg_hba.conf line for this database '
                "(find the file with SHOW hba_file;)",
            )
        )
    return checks


_SLOTS_ADVICE = (
    "no connection slot is left (the server's max_connections, or a CONNECTION LIMIT on the "
    "database or the role): see who holds them, as a superuser: SELECT usename, datname, "
    "state, count(*) FROM pg_stat_activity GROUP BY 1, 2, 3; close idle connections or shrink "
    "the pools, or raise the limit: ALTER SYSTEM SET max_connections = 200; then restart "
    "PostgreSQL (or ALTER ROLE / ALTER DATABASE ... CONNECTION LIMIT n)"
)


def _is_out_of_slots(message: str) -> bool:
    # libpq gives no SQLSTATE for a refused login, only the server's text.
    return "too many" in message or "connection slots are reserved" in message


def _login_advice(target: URL, message: str) -> str:
    if "role" in message and "does not exist" in message:
        return (
            f"create the user: CREATE ROLE \"{target.username}\" LOGIN PASSWORD '...'; "
            "or fix the user name in the URL"
        )
    return (
        "check the user and password in the URL; if they are right, the server's "
        "pg_hba.conf must allow password authentication for this user, database and host: "
        "find the file with SHOW hba_file; (for example /etc/postgresql/16/main/pg_hba.conf), "
        'change "peer" or "ident" to "scram-sha-256" (or "md5") on the matching line, '
        "then reload: SELECT pg_reload_conf();"
    )


# -- schema ----------------------------------------------------------------------------


def _table_exists(connection: Connection, name: str) -> bool:
    return bool(
        connection.exec_driver_sql(
            "SELECT to_regclass(%(name)s) IS NOT NULL", {"name": name}
        ).scalar()
    )


def _has_column(connection: Connection, table: str, column: str) -> bool:
    return bool(
        connection.exec_driver_sql(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%(table)s) "
            "AND attname = %(column)s AND NOT attisdropped)",
            {"table": table, "column": column},
        ).scalar()
    )


def _expected_indexes() -> Iterator[tuple[str, str]]:
    """(index name, the statement that creates it) for every index of the schema."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    for table in schema.metadata.sorted_tables:
        key = table.primary_key
        if key.name:
            yield str(key.name), str(AddConstraint(key).compile(dialect=dialect))
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            yield str(index.name), str(CreateIndex(index).compile(dialect=dialect))


_UPGRADE = "run `eventstore migrate upgrade` (or `alembic upgrade head`)"

APPEND_ONLY_TRIGGERS = ("events_refuse_update_delete", "events_refuse_truncate")
"""The triggers on ``events`` of revision eventstore_0003 (named there too)."""


def _schema_tables() -> list[str]:
    return [table.name for table in schema.metadata.sorted_tables]


def _migration_check(connection: Connection) -> Check:
    script = ScriptDirectory.from_config(migrations.alembic_config())
    heads = set(script.get_heads())
    head = ", ".join(sorted(heads))
    known = {revision.revision for revision in script.walk_revisions()}
    context = MigrationContext.configure(
        connection, opts={"version_table": migrations.VERSION_TABLE}
    )
    current = context.get_current_revision()
    if current is None and not _table_exists(connection, "events"):
        return Check("migration", "fail", "not migrated: no revision applied", _UPGRADE)
    if current is None:
        return Check(
            "migration",
            "fail",
            "the tables exist but no revision is recorded, so `eventstore migrate upgrade` "
            'would stop at "relation already exists"',
            "if the tables hold nothing you need, drop them and run `eventstore migrate upgrade`; "
            "otherwise record the revision they match: `alembic stamp <revision>` with "
            f"version_table = {migrations.VERSION_TABLE}",
        )
    if current in heads:
        return Check("migration", "pass", f"at {current} (head)")
    if current in known:
        return Check("migration", "fail", f"at {current}, behind head {head}", _UPGRADE)
    return Check(
        "migration",
        "fail",
        f"at {current}, a revision this version of pg-eventstore does not know "
        f"(its head is {head})",
        "upgrade pg-eventstore to the version that migrated this database",
    )


def _object_checks(connection: Connection, at_head: bool) -> list[Check]:
    """Tables and indexes. Statements that recreate an index are advised only at
    head: below it, the migration creates them (and would fail if they existed)."""
    tables = _schema_tables()
    missing_tables = [name for name in tables if not _table_exists(connection, name)]
    upgrade = _UPGRADE
    if missing_tables:
        table_check = Check("tables", "fail", "missing: " + ", ".join(missing_tables), upgrade)
    else:
        table_check = Check("tables", "pass", ", ".join(tables))

    found = {
        name: valid
        for name, valid in connection.exec_driver_sql(
            "SELECT i.relname, x.indisvalid FROM pg_index AS x "
            "JOIN pg_class AS i ON i.oid = x.indexrelid "
            "WHERE x.indrelid = ANY(ARRAY(SELECT to_regclass(name) FROM unnest(%(tables)s::text[]) "
            "AS name))",
            {"tables": tables},
        )
    }
    missing: list[str] = []
    invalid: list[str] = []
    fixes: list[str] = []
    for name, statement in _expected_indexes():
        if name not in found:
            missing.append(name)
            fixes.append(statement + ";")
        elif not found[name]:
            invalid.append(name)
            fixes.append(f"REINDEX INDEX {name};")
    expected_names = [name for name, _ in _expected_indexes()]
    if not missing and not invalid:
        index_check = Check("indexes", "pass", ", ".join(expected_names))
    else:
        problems = []
        if missing:
            problems.append("missing: " + ", ".join(missing))
        if invalid:
            problems.append("invalid (a failed CREATE INDEX CONCURRENTLY?): " + ", ".join(invalid))
        advice = "recreate: " + " ".join(fixes) if at_head else upgrade
        index_check = Check("indexes", "fail", "; ".join(problems), advice)
    return [table_check, index_check]


def _append_only_check(connection: Connection) -> Check:
    """The triggers of revision eventstore_0003 are there and fire."""
    enabled = {
        str(name): bool(on)
        for name, on in connection.exec_driver_sql(
            "SELECT tgname, tgenabled <> 'D' FROM pg_trigger "
            "WHERE tgrelid = to_regclass('events') AND tgname = ANY(%(names)s)",
            {"names": list(APPEND_ONLY_TRIGGERS)},
        )
    }
    missing = [name for name in APPEND_ONLY_TRIGGERS if name not in enabled]
    disabled = [name for name in APPEND_ONLY_TRIGGERS if enabled.get(name) is False]
    if not missing and not disabled:
        return Check("append-only log", "pass", "UPDATE, DELETE and TRUNCATE on events are refused")
    problems = []
    if disabled:
        problems.append("disabled: " + ", ".join(disabled))
    if missing:
        problems.append("missing: " + ", ".join(missing))
    advice = (
        " ".join(f"ALTER TABLE events ENABLE TRIGGER {name};" for name in disabled)
        if not missing
        else "recreate them: `eventstore migrate downgrade eventstore_0002` then "
        "`eventstore migrate upgrade`"
    )
    return Check(
        "append-only log",
        "fail",
        "events can be rewritten, triggers " + "; ".join(problems),
        advice,
    )


def _privileges_check(connection: Connection) -> Check:
    user = str(connection.exec_driver_sql("SELECT current_user").scalar())
    missing: list[str] = []
    grants: list[str] = []
    for table, rights in _PRIVILEGES.items():
        if not _table_exists(connection, table):
            continue
        lacking = [
            right
            for right in rights.split(", ")
            if not connection.exec_driver_sql(
                "SELECT has_table_privilege(%(table)s, %(right)s)",
                {"table": table, "right": right},
            ).scalar()
        ]
        if lacking:
            missing.append(f"{', '.join(lacking)} on {table}")
            grants.append(f'GRANT {", ".join(lacking)} ON {table} TO "{user}";')
    for table, (right, column) in STORE_COLUMN_PRIVILEGES.items():
        if (
            _table_exists(connection, table)
            and not connection.exec_driver_sql(
                "SELECT has_column_privilege(%(table)s, %(column)s, %(right)s)",
                {"table": table, "column": column, "right": right},
            ).scalar()
        ):
            missing.append(f"{right} ({column}) on {table}")
            grants.append(f'GRANT {right} ({column}) ON {table} TO "{user}";')
    # The identity column's sequence needs no grant of its own: INSERT on events suffices.
    if not missing:
        return Check("privileges", "pass", f"{user} may read and write the store's tables")
    return Check(
        "privileges",
        "fail",
        f"{user} lacks " + "; ".join(missing),
        "as the tables' owner: " + " ".join(grants),
    )


# -- server settings ---------------------------------------------------------------------


def _connections_check(connection: Connection, pool: int) -> Check:
    maximum, reserved, in_use = connection.exec_driver_sql(
        "SELECT current_setting('max_connections')::int, "
        "current_setting('superuser_reserved_connections')::int "
        "+ coalesce(current_setting('reserved_connections', true)::int, 0), "
        "(SELECT count(*) FROM pg_stat_activity "
        "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid())"
    ).one()
    available = int(maximum) - int(reserved)
    needed = int(in_use) + pool
    summary = (
        f"{in_use} other client connections open + a pool of {pool} = {needed}; "
        f"max_connections {maximum} leaves {available} (after {reserved} reserved)"
    )
    if needed <= available:
        return Check("max_connections", "pass", summary)
    return Check(
        "max_connections",
        "warn",
        summary + ': new connections will fail with "too many connections"',
        "size the pools so that all application instances together stay below the limit "
        "(pool_size + max_overflow per instance), put a pooler such as PgBouncer in front, "
        "or raise the limit: ALTER SYSTEM SET max_connections = 200; then restart PostgreSQL "
        "(max_connections needs a restart; SELECT pg_reload_conf(); is not enough). "
        "See who is connected: SELECT count(*) FROM pg_stat_activity;",
    )


@dataclass(frozen=True)
class _Setting:
    name: str
    floor: float
    floor_text: str
    guide: str
    note: str
    restart: bool


_SETTINGS = (
    _Setting("shared_buffers", 128 * 2**20, "128MB", "256MB", ", about 25% of RAM", True),
    _Setting("work_mem", 4 * 2**20, "4MB", "16MB", " per sort or hash", False),
    _Setting("wal_buffers", 4 * 2**20, "4MB", "16MB", "", True),
    _Setting("checkpoint_completion_target", 0.9, "0.9", "0.9", "", False),
    _Setting("max_wal_size", 2**30, "1GB", "1GB", "", False),
)

_UNITS = {"B": 1, "kB": 2**10, "MB": 2**20, "GB": 2**30, "TB": 2**40}


def _in_base_units(setting: str, unit: str | None) -> float:
    """pg_settings' ``setting`` times its ``unit`` ('8kB', 'MB', None...)."""
    value = float(setting)
    if not unit:
        return value
    digits = "".join(ch for ch in unit if ch.isdigit())
    suffix = unit[len(digits) :]
    return value * (int(digits) if digits else 1) * _UNITS.get(suffix, 1)


def _tuning_checks(connection: Connection) -> list[Check]:
    rows = {
        name: (setting, unit, shown)
        for name, setting, unit, shown in connection.exec_driver_sql(
            "SELECT name, setting, unit, current_setting(name) FROM pg_settings "
            "WHERE name = ANY(%(names)s::text[])",
            {"names": [s.name for s in _SETTINGS]},
        )
    }
    checks = []
    for rule in _SETTINGS:
        if rule.name not in rows:
            continue
        setting, unit, shown = rows[rule.name]
        value = _in_base_units(setting, unit)
        if value >= rule.floor:
            checks.append(Check(rule.name, "pass", f"{shown} (guide: {rule.guide}{rule.note})"))
            continue
        apply = "then restart PostgreSQL" if rule.restart else "then SELECT pg_reload_conf();"
        checks.append(
            Check(
                rule.name,
                "warn",
                f"{shown}, below {rule.floor_text} (PostgreSQL's default); "
                f"guide: {rule.guide}{rule.note}",
                f"ALTER SYSTEM SET {rule.name} = '{rule.guide}'; {apply} "
                "(or set it in postgresql.conf)",
            )
        )
    return checks


# -- the feed ----------------------------------------------------------------------------


def _transaction_check(connection: Connection, max_age: float) -> Check:
    oldest = oldest_transaction(connection)
    if oldest is None:
        return Check("oldest transaction", "pass", "no other transaction is running")
    where = f"pid {oldest.pid}" + (f" on {oldest.database}" if oldest.database else "")
    state = f", {oldest.state}" if oldest.state else ""
    summary = f"{oldest.age_seconds:.1f} s ({where}{state})"
    if oldest.age_seconds <= max_age:
        return Check("oldest transaction", "pass", summary)
    effect = (
        "readers of the feed and projections wait for it to end"
        if oldest.holds_feed
        else "it holds back vacuum (and the feed, once it writes)"
    )
    return Check(
        "oldest transaction",
        "warn",
        f"running for {summary}, longer than {max_age:g} s: {effect}",
        f"end it (commit or roll back in that session, or SELECT pg_terminate_backend"
        f"({oldest.pid});); keep transactions short and stop forgotten ones: "
        "ALTER SYSTEM SET idle_in_transaction_session_timeout = '5min'; SELECT pg_reload_conf();",
    )


def _transaction_ids_check(connection: Connection) -> Check:
    newest_event, next_id = connection.exec_driver_sql(
        "SELECT (SELECT transaction_id::text::bigint FROM events "
        "ORDER BY transaction_id DESC LIMIT 1), "
        "pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
    ).one()
    newest_checkpoint = None
    if _table_exists(connection, "projection_checkpoints"):
        newest_checkpoint = connection.exec_driver_sql(
            "SELECT max(transaction_id) FROM projection_checkpoints"
        ).scalar()
    ahead = [
        f"{what} {value}"
        for what, value in (
            ("events up to", newest_event),
            ("checkpoints up to", newest_checkpoint),
        )
        if value is not None and int(value) >= int(next_id)
    ]
    if not ahead:
        return Check(
            "feed transaction ids",
            "pass",
            f"all below the server's next transaction id {next_id}",
        )
    return Check(
        "feed transaction ids",
        "fail",
        f"stored transaction ids are in the future ({', '.join(ahead)}; the server's next is "
        f"{next_id}): new events would sort before old ones in the feed",
        _RESTORE_FIX,
    )


# -- query plan --------------------------------------------------------------------------


def _plan_check(connection: Connection) -> Check:
    stream_id = connection.exec_driver_sql("SELECT stream_id FROM events LIMIT 1").scalar()
    stream_id = stream_id if stream_id is not None else PLAN_STREAM_ID
    size = int(connection.exec_driver_sql("SELECT pg_relation_size('events')").scalar() or 0)
    nodes = _plan_nodes(connection, stream_id, force_index=False)
    if _uses_primary_key(nodes):
        return Check("stream load plan", "pass", f"{_describe(nodes)} for stream {stream_id!r}")
    forced = _plan_nodes(connection, stream_id, force_index=True)
    explain = (
        f"EXPLAIN ANALYZE SELECT * FROM events WHERE stream_id = '{stream_id}' ORDER BY version;"
    )
    if not _uses_primary_key(forced):
        return Check(
            "stream load plan",
            "fail",
            f"loading stream {stream_id!r} cannot use events_pkey ({_describe(nodes)}): "
            "every load reads the whole table",
            "recreate the primary key: ALTER TABLE events ADD CONSTRAINT events_pkey "
            f"PRIMARY KEY (stream_id, version); then check: {explain}",
        )
    if size < SMALL_TABLE_BYTES:
        return Check(
            "stream load plan",
            "pass",
            f"events is small ({size // 1024} kB): the planner reads it whole for now "
            "and events_pkey serves loads as it grows",
        )
    return Check(
        "stream load plan",
        "fail",
        f"loading stream {stream_id!r} reads the whole table ({_describe(nodes)}) although "
        "events_pkey could serve it: the planner's statistics are probably stale",
        f"ANALYZE events; ANALYZE snapshots; then check: {explain}",
    )


def _plan_nodes(
    connection: Connection, stream_id: str, *, force_index: bool
) -> list[dict[str, Any]]:
    params = {"stream_id": stream_id, "low": Int8(1), "high": Int8(2**62), "limit": None}
    if force_index:
        connection.exec_driver_sql("SET enable_seqscan = off")
    try:
        document = connection.exec_driver_sql(
            "EXPLAIN (FORMAT JSON) " + LOAD_STREAM, params
        ).scalar()
    finally:
        if force_index:
            connection.exec_driver_sql("RESET enable_seqscan")
    plan: Any = json.loads(document) if isinstance(document, str) else document
    nodes: list[dict[str, Any]] = []
    pending = [plan[0]["Plan"]]
    while pending:
        node = pending.pop()
        nodes.append(node)
        pending.extend(node.get("Plans", []))
    return nodes


def _uses_primary_key(nodes: list[dict[str, Any]]) -> bool:
    return any(
        node.get("Index Name") == "events_pkey"
        and node.get("Node Type") in ("Index Scan", "Index Only Scan", "Bitmap Index Scan")
        for node in nodes
    )


def _describe(nodes: list[dict[str, Any]]) -> str:
    scans = [
        node["Node Type"] + (f" on {node['Index Name']}" if "Index Name" in node else "")
        for node in nodes
        if "Scan" in node.get("Node Type", "")
    ]
    return ", ".join(scans) or "no scan"
