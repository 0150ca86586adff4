"""Every statement the store runs on its tables, in one place.

Statements are psycopg queries (``%(name)s`` parameters, ``%(name)b`` for
binary ones) unless their docstring says they are SQLAlchemy ``text()``
(``:name``). Table names come from the Core tables of :mod:`eventstore.schema`,
which the Alembic revisions are checked against; a test PREPAREs every
statement here against a database created from those tables
(:data:`STATEMENTS`), so the tables, the revisions and the SQL cannot drift
apart. What each statement is for is said where it is defined.
"""

from __future__ import annotations

from eventstore import schema

EVENTS = schema.events.name
SNAPSHOTS = schema.snapshots.name
CHECKPOINTS = schema.projection_checkpoints.name
SKIPPED_EVENTS = schema.projection_skipped_events.name

NOTIFY_CHANNEL = "eventstore_events"
"""The channel appends notify (after their commit) and subscriptions listen on."""

# -- appends, loads, snapshots and the feed ------------------------------------------

NOTIFY_IF_INSERTED = (
    f"CASE WHEN EXISTS (SELECT 1 FROM inserted) THEN pg_notify('{NOTIFY_CHANNEL}', '') END"
)

# The stream's head: its last version, and whether this transaction may write
# after it. Transaction ids must not decrease along a stream, or the feed (ordered
# by transaction id) would show a later version before an earlier one; checking
# the last row keeps that true by induction. An append in autocommit always
# passes (its id is drawn after the head's writer committed); a caller's
# transaction that began writing before the head's writer cannot append here.
HEAD_TEMPLATE = f"""head AS (
    SELECT coalesce(last.version, 0) AS version,
           coalesce(last.transaction_id <= pg_current_xact_id(), true) AS in_order
    FROM (SELECT 1) AS one
    LEFT JOIN LATERAL (
        SELECT version, transaction_id FROM {EVENTS} WHERE stream_id = %(stream_id)s
        ORDER BY version DESC LIMIT 1{{lock}}
    ) AS last ON true
)"""
HEAD = HEAD_TEMPLATE.format(lock="")

# Inside a caller's transaction at REPEATABLE READ or SERIALIZABLE the head row
# is locked (FOR KEY SHARE): the transaction's snapshot may predate an erase of
# the stream, and locking a row another transaction deleted fails with a
# serialization failure instead of appending after a head that is gone. At READ
# COMMITTED (and in autocommit) no row lock is needed: each statement's snapshot
# is taken after its table lock, so it sees an erase that made it wait. (Locking
# rows needs UPDATE on a column of the table: `eventstore grant` gives
# UPDATE (version), which the append-only triggers keep from changing anything.)
HEAD_LOCKED = HEAD_TEMPLATE.format(lock=" FOR KEY SHARE")

# Arrays go in binary (%b): text arrays would quote and escape every element in
# Python, which costs more than the whole server-side insert of a small event.
APPEND = f"""
WITH {HEAD}, inserted AS (
    INSERT INTO {EVENTS} (stream_id, version, event_type, event_data, metadata)
    SELECT %(stream_id)s, head.version + batch.ordinal,
           batch.event_type, batch.event_data, batch.metadata
    FROM head,
         unnest(%(types)b::text[], %(data)b::bytea[], %(metadata)b::text[]::jsonb[])
             WITH ORDINALITY AS batch(event_type, event_data, metadata, ordinal)
    WHERE head.version BETWEEN %(lowest)s::bigint AND %(highest)s::bigint AND head.in_order
    RETURNING version
)
SELECT (SELECT max(version) FROM inserted), head.version, head.in_order,
       {NOTIFY_IF_INSERTED}
FROM head
"""

# One event needs no unnest: about a third cheaper on the server.
APPEND_ONE = f"""
WITH {HEAD}, inserted AS (
    INSERT INTO {EVENTS} (stream_id, version, event_type, event_data, metadata)
    SELECT %(stream_id)s, head.version + 1, %(type)s, %(data)s, %(metadata)s::jsonb
    FROM head
    WHERE head.version BETWEEN %(lowest)s::bigint AND %(highest)s::bigint AND head.in_order
    RETURNING version
)
SELECT (SELECT version FROM inserted), head.version, head.in_order,
       {NOTIFY_IF_INSERTED}
FROM head
"""

# The same appends without the NOTIFY: what autocommit appends run (the store's
# notifier wakes subscribers after their commit, off the commit path) and what
# stores built with notify=False run everywhere.
APPEND_SILENT = APPEND.replace(NOTIFY_IF_INSERTED, "NULL")
APPEND_ONE_SILENT = APPEND_ONE.replace(NOTIFY_IF_INSERTED, "NULL")

# The four appends as run inside a caller's snapshot-isolated transaction: the head
# row locked.
IN_TRANSACTION = {
    statement: statement.replace(HEAD, HEAD_LOCKED)
    for statement in (APPEND, APPEND_ONE, APPEND_SILENT, APPEND_ONE_SILENT)
}

EVENT_COLUMNS = """stream_id, version, event_type, event_data, metadata::text, created_at,
       transaction_id::text::bigint, position"""

LOAD_STREAM = f"""
SELECT {EVENT_COLUMNS} FROM {EVENTS}
WHERE stream_id = %(stream_id)s AND version BETWEEN %(low)s::bigint AND %(high)s::bigint
ORDER BY version
LIMIT %(limit)s::bigint
"""

# The feed: only rows of transactions older than every running one are final, so
# reading below pg_snapshot_xmin in (transaction_id, position) order never skips.
READ_ALL = f"""
SELECT {EVENT_COLUMNS} FROM {EVENTS}
WHERE (transaction_id, position) > (%(after_xid)s::text::xid8, %(after_position)s::bigint)
  AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
  AND (%(types)s::text[] IS NULL OR event_type = ANY(%(types)s::text[]))
  AND (%(prefix)s::text IS NULL OR starts_with(stream_id, %(prefix)s::text))
ORDER BY events.transaction_id, events.position
LIMIT %(limit)s::bigint
"""

# The feed's last visible position: one backward probe of idx_events_feed, past
# the rows of transactions still running.
FEED_HEAD = f"""
    SELECT transaction_id::text::bigint AS end_transaction_id, position AS end_position
    FROM {EVENTS}
    WHERE transaction_id < pg_snapshot_xmin(pg_current_snapshot())
    ORDER BY transaction_id DESC, position DESC
    LIMIT 1
"""

# A filtered read also returns the feed's last visible position, from the same
# snapshot (one statement): when its page comes up short, the reader reads on
# from there instead of scanning the events it skips again on every read. An
# empty page gives one row of NULL event columns; an empty feed, no row.
READ_ALL_TO_END = f"""
WITH page AS ({READ_ALL}), visible_end AS ({FEED_HEAD})
SELECT page.*, visible_end.* FROM visible_end LEFT JOIN page ON true
ORDER BY page.transaction_id, page.position
"""

STREAM_VERSION = f"SELECT coalesce(max(version), 0) FROM {EVENTS} WHERE stream_id = %(stream_id)s"

SAVE_SNAPSHOT_TEMPLATE = f"""
WITH head AS (
    {{head}}
), saved AS (
    INSERT INTO {SNAPSHOTS} (stream_id, version, state_data)
    SELECT %(stream_id)s, %(version)s::bigint, %(state)s::bytea FROM head
    WHERE head.version >= %(version)s::bigint
    ON CONFLICT (stream_id) DO UPDATE
        SET version = EXCLUDED.version,
            state_data = EXCLUDED.state_data,
            created_at = EXCLUDED.created_at
        WHERE snapshots.version < EXCLUDED.version
    RETURNING 1
)
SELECT (SELECT count(*) FROM saved), (SELECT version FROM head)
"""
SAVE_SNAPSHOT = SAVE_SNAPSHOT_TEMPLATE.format(
    head=f"SELECT coalesce(max(version), 0) AS version FROM {EVENTS} "
    "WHERE stream_id = %(stream_id)s"
)

# Inside a caller's snapshot-isolated transaction the head row is locked, as for
# appends: a snapshot is never written for a head an erase removed after the
# transaction's snapshot was taken (a serialization failure instead).
SAVE_SNAPSHOT_IN_TRANSACTION = SAVE_SNAPSHOT_TEMPLATE.format(
    head=f"SELECT coalesce((SELECT version FROM {EVENTS} WHERE stream_id = %(stream_id)s\n"
    "                          ORDER BY version DESC LIMIT 1 FOR KEY SHARE), 0) AS version"
)

# Where a conflict inside the caller's transaction is read: the head it sees,
# and whether its snapshot is the transaction's (so possibly older than the head).
HEAD_IN_TRANSACTION = f"""
SELECT coalesce(max(version), 0), current_setting('transaction_isolation')
FROM {EVENTS} WHERE stream_id = %(stream_id)s
"""

LOAD_SNAPSHOT = (
    f"SELECT version, state_data, created_at FROM {SNAPSHOTS} WHERE stream_id = %(stream_id)s"
)

# delete_snapshot: one row back when there was a snapshot to delete.
DISCARD_SNAPSHOT = f"DELETE FROM {SNAPSHOTS} WHERE stream_id = %(stream_id)s RETURNING 1"

# -- projections -------------------------------------------------------------------

PROJECTION_LOCK_NAMESPACE = 0x4553
"""First key of the two-key advisory locks that guard projections ("ES")."""

LOCK_PROJECTION = "SELECT pg_advisory_lock(%(namespace)s, hashtext(%(name)s))"
UNLOCK_PROJECTION = "SELECT pg_advisory_unlock(%(namespace)s, hashtext(%(name)s))"

# Every transaction of the session takes the lock for itself as well, at once or
# not at all: granted straight away to the session holding it, and held to the
# transaction's end whatever happens to the session lock meanwhile. False means
# another session holds it, and this one must not go on.
LOCK_FOR_TRANSACTION = "SELECT pg_try_advisory_xact_lock(%(namespace)s, hashtext(%(name)s))"

LOAD_CHECKPOINT = f"SELECT transaction_id, position FROM {CHECKPOINTS} WHERE name = %(name)s"

# The checkpoint only moves forwards: a runner that lost the race (it should
# never have been running) writes nothing and learns it from the missing row.
SAVE_CHECKPOINT = f"""
INSERT INTO {CHECKPOINTS} (name, transaction_id, position)
VALUES (%(name)s, %(transaction_id)s, %(position)s)
ON CONFLICT (name) DO UPDATE
    SET transaction_id = EXCLUDED.transaction_id,
        position = EXCLUDED.position,
        updated_at = now()
    WHERE (projection_checkpoints.transaction_id, projection_checkpoints.position)
        < (EXCLUDED.transaction_id, EXCLUDED.position)
RETURNING 1
"""
TERMINATE = "SELECT pg_terminate_backend(%(pid)s)"
DELETE_CHECKPOINT = f"DELETE FROM {CHECKPOINTS} WHERE name = %(name)s"

# An event a projection with on_undecodable="skip" passed over, recorded in the
# batch's transaction (with the checkpoint that moves past it). Recorded again
# (a checkpoint deleted by hand, say), it keeps one row with the newer error.
RECORD_SKIPPED = f"""
INSERT INTO {SKIPPED_EVENTS}
    (projection, transaction_id, position, stream_id, version, event_type, error)
VALUES (%(name)s, %(transaction_id)s, %(position)s, %(stream_id)s, %(version)s,
        %(event_type)s, %(error)s)
ON CONFLICT (projection, transaction_id, position) DO UPDATE
    SET error = EXCLUDED.error, skipped_at = EXCLUDED.skipped_at
"""
LOAD_SKIPPED = f"""
SELECT transaction_id, position, stream_id, version, event_type, error, skipped_at
FROM {SKIPPED_EVENTS} WHERE projection = %(name)s
ORDER BY transaction_id, position
"""
# A reset forgets what the projection skipped along with its checkpoint.
DELETE_SKIPPED = f"DELETE FROM {SKIPPED_EVENTS} WHERE projection = %(name)s"

# -- erasure: SQLAlchemy text() statements (``:name`` parameters) ---------------------

ALLOW_REWRITE = "SET LOCAL eventstore.allow_rewrite = on"
"""The statement that lets the tables' owner change ``events`` until the transaction ends."""

# SHARE ROW EXCLUSIVE conflicts with the ROW EXCLUSIVE lock every INSERT, UPDATE
# and DELETE takes, and not with the ACCESS SHARE of reads. A statement blocked by
# it takes its snapshot once it gets its own lock, so it sees the erase.
LOCK_AGAINST_WRITERS = f"LOCK TABLE {EVENTS}, {SNAPSHOTS} IN SHARE ROW EXCLUSIVE MODE"
SET_LOCK_TIMEOUT = "SELECT set_config('lock_timeout', :lock_timeout, true)"
# Not a statement on the store's tables: what an erase that could not get its lock
# shows of the sessions in its way.
BUSY_QUERY = (
    "SELECT pid, state, xact_start, query FROM pg_stat_activity "
    "WHERE state = 'idle in transaction' OR wait_event_type = 'Lock';"
)

DELETE_EVENTS = f"DELETE FROM {EVENTS} WHERE stream_id = :stream_id"
DELETE_SNAPSHOT = f"DELETE FROM {SNAPSHOTS} WHERE stream_id = :stream_id"

LISTEN = f"LISTEN {NOTIFY_CHANNEL}"
"""What the store's listening connection runs once (see :mod:`eventstore._listen`)."""

NOTIFY = f"SELECT set_config('synchronous_commit', 'off', true), pg_notify('{NOTIFY_CHANNEL}', '')"
"""The wake-up the store's notifier sends, in autocommit, after appends committed
(see :mod:`eventstore._notifier`): the same channel and empty payload as the
in-transaction NOTIFY of :data:`APPEND`. A NOTIFY's transaction is given an id,
so its commit would wait for a WAL flush; a wake-up needs no durability (it is
delivered at commit either way), so this one transaction commits asynchronously
(``set_config(..., true)`` is ``SET LOCAL``: nothing outlives the statement,
even behind a pooler that hands the server connection to someone else)."""

PSYCOPG_STATEMENTS: dict[str, str] = {
    "APPEND": APPEND,
    "APPEND_ONE": APPEND_ONE,
    "APPEND_SILENT": APPEND_SILENT,
    "APPEND_ONE_SILENT": APPEND_ONE_SILENT,
    **{
        f"IN_TRANSACTION[{name}]": IN_TRANSACTION[sql]
        for name, sql in (
            ("APPEND", APPEND),
            ("APPEND_ONE", APPEND_ONE),
            ("APPEND_SILENT", APPEND_SILENT),
            ("APPEND_ONE_SILENT", APPEND_ONE_SILENT),
        )
    },
    "LOAD_STREAM": LOAD_STREAM,
    "READ_ALL": READ_ALL,
    "FEED_HEAD": FEED_HEAD,
    "READ_ALL_TO_END": READ_ALL_TO_END,
    "STREAM_VERSION": STREAM_VERSION,
    "SAVE_SNAPSHOT": SAVE_SNAPSHOT,
    "SAVE_SNAPSHOT_IN_TRANSACTION": SAVE_SNAPSHOT_IN_TRANSACTION,
    "HEAD_IN_TRANSACTION": HEAD_IN_TRANSACTION,
    "LOAD_SNAPSHOT": LOAD_SNAPSHOT,
    "DISCARD_SNAPSHOT": DISCARD_SNAPSHOT,
    "LOCK_PROJECTION": LOCK_PROJECTION,
    "UNLOCK_PROJECTION": UNLOCK_PROJECTION,
    "LOCK_FOR_TRANSACTION": LOCK_FOR_TRANSACTION,
    "LOAD_CHECKPOINT": LOAD_CHECKPOINT,
    "SAVE_CHECKPOINT": SAVE_CHECKPOINT,
    "DELETE_CHECKPOINT": DELETE_CHECKPOINT,
    "RECORD_SKIPPED": RECORD_SKIPPED,
    "LOAD_SKIPPED": LOAD_SKIPPED,
    "DELETE_SKIPPED": DELETE_SKIPPED,
    "TERMINATE": TERMINATE,
    "BUSY_QUERY": BUSY_QUERY,
    "LISTEN": LISTEN,
    "NOTIFY": NOTIFY,
}
"""Every complete psycopg statement here, by name (for the test that PREPAREs them)."""

TEXT_STATEMENTS = {
    "ALLOW_REWRITE": ALLOW_REWRITE,
    "LOCK_AGAINST_WRITERS": LOCK_AGAINST_WRITERS,
    "SET_LOCK_TIMEOUT": SET_LOCK_TIMEOUT,
    "DELETE_EVENTS": DELETE_EVENTS,
    "DELETE_SNAPSHOT": DELETE_SNAPSHOT,
}
"""Every SQLAlchemy ``text()`` statement here, by name."""
