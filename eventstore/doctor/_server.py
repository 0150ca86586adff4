"""The server checks: ``max_connections`` and the tuning settings of the guide."""

from __future__ import annotations

from dataclasses import dataclass

from eventstore.doctor._check import Check, Session

_CONNECTIONS = (
    "SELECT current_setting('max_connections')::int, "
    "current_setting('superuser_reserved_connections')::int "
    "+ coalesce(current_setting('reserved_connections', true)::int, 0), "
    "(SELECT count(*) FROM pg_stat_activity "
    "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid())"
)

_SETTINGS_SQL = (
    "SELECT name, setting, unit, current_setting(name) FROM pg_settings "
    "WHERE name = ANY(%(names)s::text[])"
)


def max_connections(session: Session) -> Check:
    """The client connections already open plus the application's pool fit in
    ``max_connections`` minus the reserved slots.

    Warns when they do not: new connections would fail with "too many connections".
    Then size the pools, put a pooler in front, or raise the limit (a restart).
    """
    maximum, reserved, in_use = session.connection.exec_driver_sql(_CONNECTIONS).one()
    available = int(maximum) - int(reserved)
    needed = int(in_use) + session.pool
    summary = (
        f"{in_use} other client connections open + a pool of {session.pool} = {needed}; "
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


def settings(session: Session) -> list[Check]:
    """``shared_buffers``, ``work_mem``, ``wal_buffers``,
    ``checkpoint_completion_target`` and ``max_wal_size``, one finding each, shown with
    the guide's recommendation.

    Each warns below PostgreSQL's own default (which a stock server meets: 128MB, 4MB,
    4MB, 0.9 and 1GB), with the ``ALTER SYSTEM`` statement that sets the guide's value
    and whether it takes a reload or a restart.
    """
    rows = {
        name: (setting, unit, shown)
        for name, setting, unit, shown in session.connection.exec_driver_sql(
            _SETTINGS_SQL, {"names": [s.name for s in _SETTINGS]}
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


def _in_base_units(setting: str, unit: str | None) -> float:
    """pg_settings' ``setting`` times its ``unit`` ('8kB', 'MB', None...)."""
    value = float(setting)
    if not unit:
        return value
    digits = "".join(ch for ch in unit if ch.isdigit())
    suffix = unit[len(digits) :]
    return value * (int(digits) if digits else 1) * _UNITS.get(suffix, 1)
