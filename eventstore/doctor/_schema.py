"""The schema checks: migration, tables, indexes, append-only log, privileges."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import AddConstraint, CreateIndex

from eventstore import schema
from eventstore._catalog import present_relations, relation_exists
from eventstore.doctor._check import Check, Session
from eventstore.migrations import UPGRADE_ADVICE, VERSION_TABLE, schema_state
from eventstore.roles import STORE_COLUMN_PRIVILEGES, STORE_PRIVILEGES

APPEND_ONLY_TRIGGERS = ("events_refuse_update_delete", "events_refuse_truncate")
"""The triggers on ``events`` of revision eventstore_0003 (named there too)."""

_INDEXES = (
    "SELECT i.relname, x.indisvalid FROM pg_index AS x "
    "JOIN pg_class AS i ON i.oid = x.indexrelid "
    "WHERE x.indrelid = ANY(ARRAY(SELECT to_regclass(name) FROM unnest(%(tables)s::text[]) "
    "AS name))"
)

_TRIGGERS = (
    "SELECT tgname, tgenabled <> 'D' FROM pg_trigger "
    "WHERE tgrelid = to_regclass('events') AND tgname = ANY(%(names)s)"
)


def migration(session: Session) -> Check:
    """The schema is at the newest revision this version of pg-eventstore knows.

    The store refuses a schema that is not. Fails when the database is not migrated
    (run ``eventstore migrate upgrade``), behind (the same), at a revision this
    version does not know (upgrade pg-eventstore), or has the tables but no recorded
    revision (drop them, or ``alembic stamp`` the revision they match).
    """
    state = schema_state(session.connection)
    current, head = state.revision, state.head
    if current is None and not relation_exists(session.connection, "events"):
        return Check("migration", "fail", "not migrated: no revision applied", UPGRADE_ADVICE)
    if current is None:
        return Check(
            "migration",
            "fail",
            "the tables exist but no revision is recorded, so `eventstore migrate upgrade` "
            'would stop at "relation already exists"',
            "if the tables hold nothing you need, drop them and run `eventstore migrate upgrade`; "
            "otherwise record the revision they match: `alembic stamp <revision>` with "
            f"version_table = {VERSION_TABLE}",
        )
    if state.at_head:
        return Check("migration", "pass", f"at {current} (head)")
    if not state.unknown:
        return Check("migration", "fail", f"at {current}, behind head {head}", UPGRADE_ADVICE)
    return Check(
        "migration",
        "fail",
        f"at {current}, a revision this version of pg-eventstore does not know "
        f"(its head is {head})",
        "upgrade pg-eventstore to the version that migrated this database",
    )


def tables(session: Session) -> Check:
    """``events``, ``snapshots`` and ``projection_checkpoints`` exist.

    When one is missing: ``eventstore migrate upgrade``.
    """
    names = _schema_tables()
    present = present_relations(session.connection, names)
    missing = [name for name in names if name not in present]
    if missing:
        return Check("tables", "fail", "missing: " + ", ".join(missing), UPGRADE_ADVICE)
    return Check("tables", "pass", ", ".join(names))


def indexes(session: Session) -> Check:
    """Every index of :mod:`eventstore.schema` (the primary keys included) exists and
    is valid: without them loads, the feed and projections read whole tables.

    At the newest revision the advice is the statements that recreate what is missing
    (``REINDEX`` for an invalid index, left by a failed ``CREATE INDEX
    CONCURRENTLY``); below it, the upgrade, which creates them (and would fail if
    they existed).
    """
    found = {
        name: valid
        for name, valid in session.connection.exec_driver_sql(
            _INDEXES, {"tables": _schema_tables()}
        )
    }
    expected = list(_expected_indexes())
    missing: list[str] = []
    invalid: list[str] = []
    fixes: list[str] = []
    for name, statement in expected:
        if name not in found:
            missing.append(name)
            fixes.append(statement + ";")
        elif not found[name]:
            invalid.append(name)
            fixes.append(f"REINDEX INDEX {name};")
    if not missing and not invalid:
        return Check("indexes", "pass", ", ".join(name for name, _ in expected))
    problems = []
    if missing:
        problems.append("missing: " + ", ".join(missing))
    if invalid:
        problems.append("invalid (a failed CREATE INDEX CONCURRENTLY?): " + ", ".join(invalid))
    advice = "recreate: " + " ".join(fixes) if session.at_head else UPGRADE_ADVICE
    return Check("indexes", "fail", "; ".join(problems), advice)


def append_only_log(session: Session) -> Check:
    """The triggers of revision eventstore_0003 that refuse ``UPDATE``, ``DELETE``
    and ``TRUNCATE`` on ``events`` exist and are enabled (checked at the newest
    revision only).

    Without them an event, once written, can be changed or lost. When they are
    disabled: the ``ALTER TABLE ... ENABLE TRIGGER`` statements; when missing:
    downgrade to eventstore_0002 and upgrade again, which recreates them.
    """
    enabled = {
        str(name): bool(on)
        for name, on in session.connection.exec_driver_sql(
            _TRIGGERS, {"names": list(APPEND_ONLY_TRIGGERS)}
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


def privileges(session: Session) -> Check:
    """The user may do with each of the tables there what the store does
    (:data:`eventstore.roles.STORE_PRIVILEGES` and the column privileges).

    When it may not: the ``GRANT`` statements to run as the tables' owner. The
    identity column's sequence needs no grant of its own: INSERT on events suffices.
    """
    connection = session.connection
    user = str(connection.exec_driver_sql("SELECT current_user").scalar())
    present = present_relations(connection, {*STORE_PRIVILEGES, *STORE_COLUMN_PRIVILEGES})
    missing: list[str] = []
    grants: list[str] = []
    for table, rights in STORE_PRIVILEGES.items():
        if table not in present:
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
            table in present
            and not connection.exec_driver_sql(
                "SELECT has_column_privilege(%(table)s, %(column)s, %(right)s)",
                {"table": table, "column": column, "right": right},
            ).scalar()
        ):
            missing.append(f"{right} ({column}) on {table}")
            grants.append(f'GRANT {right} ({column}) ON {table} TO "{user}";')
    if not missing:
        return Check("privileges", "pass", f"{user} may read and write the store's tables")
    return Check(
        "privileges",
        "fail",
        f"{user} lacks " + "; ".join(missing),
        "as the tables' owner: " + " ".join(grants),
    )


def _schema_tables() -> list[str]:
    return [table.name for table in schema.metadata.sorted_tables]


def _expected_indexes() -> Iterator[tuple[str, str]]:
    """(index name, the statement that creates it) for every index of the schema."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    for table in schema.metadata.sorted_tables:
        key = table.primary_key
        if key.name:
            yield str(key.name), str(AddConstraint(key).compile(dialect=dialect))
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            yield str(index.name), str(CreateIndex(index).compile(dialect=dialect))
