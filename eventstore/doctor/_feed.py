"""The feed checks: the oldest transaction, the stored transaction ids, and the plan
of the store's stream load."""

from __future__ import annotations

import json
from typing import Any

from psycopg.types.numeric import Int8
from sqlalchemy import Connection

from eventstore import monitoring
from eventstore._catalog import relation_exists
from eventstore._sql import LOAD_STREAM
from eventstore.doctor._check import Check, Session

SMALL_TABLE_BYTES = 10 * 1024 * 1024
"""Below this, reading all of ``events`` for a stream load is cheap and not a fault."""

PLAN_STREAM_ID = "order-123"
"""The stream id the plan check explains when the store holds no events."""

_RESTORE_FIX = (
    "right after a logical restore (pg_dump / pg_restore into another cluster), before any "
    "writer starts, run once as the tables' owner: BEGIN; "
    "SET LOCAL eventstore.allow_rewrite = on; "
    "UPDATE events SET transaction_id = pg_current_xact_id(); "
    "UPDATE projection_checkpoints SET transaction_id = pg_current_xact_id()::text::bigint; "
    "COMMIT;"
)

_TRANSACTION_IDS = (
    "SELECT (SELECT transaction_id::text::bigint FROM events "
    "ORDER BY transaction_id DESC LIMIT 1), "
    "pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
)


def oldest_transaction(session: Session) -> Check:
    """No transaction in the cluster has been running longer than
    ``max_transaction_age`` seconds.

    Readers of the feed and projections wait for a transaction that holds the feed
    back, and any long one holds back vacuum. Warns with the statement that ends it
    and the setting that stops forgotten ones.
    """
    oldest = monitoring.oldest_transaction(session.connection)
    if oldest is None:
        return Check("oldest transaction", "pass", "no other transaction is running")
    where = f"pid {oldest.pid}" + (f" on {oldest.database}" if oldest.database else "")
    state = f", {oldest.state}" if oldest.state else ""
    summary = f"{oldest.age_seconds:.1f} s ({where}{state})"
    max_age = session.max_transaction_age
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


def transaction_ids(session: Session) -> Check:
    """Every stored transaction id (of events and of projection checkpoints) is below
    the server's next one (needs the feed's columns).

    One at or beyond it comes from a logical restore into another cluster: new events
    would sort before old ones in the feed. Fails with the SQL that repairs it, to run
    once before any writer starts.
    """
    connection = session.connection
    newest_event, next_id = connection.exec_driver_sql(_TRANSACTION_IDS).one()
    newest_checkpoint = None
    if relation_exists(connection, "projection_checkpoints"):
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


def stream_load_plan(session: Session) -> Check:
    """The plan of the store's stream load reads ``events_pkey`` (needs the feed's
    columns, which the load query reads).

    On a table under 10 MB the planner may rightly read the whole table; the check
    then verifies that the primary key would serve the load. Fails when it cannot
    (recreate the primary key), or when a larger table is read whole although it
    could (stale statistics: ``ANALYZE``).
    """
    connection = session.connection
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
