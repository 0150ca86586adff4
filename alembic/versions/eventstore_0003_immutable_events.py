"""Make the event log append-only: refuse UPDATE, DELETE and TRUNCATE on events.

Revision ID: eventstore_0003
Revises: eventstore_0002
Create Date: 2026-11-23

Statement-level triggers call ``eventstore_refuse_rewrite()``, which raises
(SQLSTATE 42501) unless both hold: the transaction has set
``eventstore.allow_rewrite`` to ``on`` (``SET LOCAL``), and the current role is
a member of the role that owns ``events`` (the one that runs the migrations).
That pair is the one supported way to remove data, used by
``eventstore erase`` and by the pytest fixtures; an application role can set
the variable but does not own the table, so it stays refused. Appends are not
touched: there is no trigger on INSERT.

Plain op.* calls only: never import eventstore here.
"""

from __future__ import annotations

from collections.abc import Sequence

import alembic.op as op

revision: str = "eventstore_0003"
down_revision: str | Sequence[str] | None = "eventstore_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_REFUSE_REWRITE = """
CREATE FUNCTION eventstore_refuse_rewrite() RETURNS trigger
LANGUAGE plpgsql AS $function$
BEGIN
    IF current_setting('eventstore.allow_rewrite', true) = 'on'
       AND pg_has_role(
           current_user,
           (SELECT relowner FROM pg_catalog.pg_class WHERE oid = TG_RELID),
           'MEMBER'
       ) THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION '% on % refused: the event log is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege',
              DETAIL = 'Events are history: they are never updated or deleted.',
              HINT = 'To erase a stream (for example on a legal erasure request), '
                     'run "eventstore erase STREAM_ID" as the role that owns the '
                     'table, or as that role, inside one transaction: '
                     'SET LOCAL eventstore.allow_rewrite = on; then the statement.';
END
$function$
"""

_TRIGGERS = {
    "events_refuse_update_delete": "BEFORE UPDATE OR DELETE",
    "events_refuse_truncate": "BEFORE TRUNCATE",
}


def upgrade() -> None:
    """Add ``eventstore_refuse_rewrite()`` and its triggers on ``events``."""
    op.execute(_REFUSE_REWRITE)
    for name, timing in _TRIGGERS.items():
        op.execute(
            f"CREATE TRIGGER {name} {timing} ON events "
            "FOR EACH STATEMENT EXECUTE FUNCTION eventstore_refuse_rewrite()"
        )


def downgrade() -> None:
    """Drop the triggers and their function: events become rewritable again."""
    for name in _TRIGGERS:
        op.execute(f"DROP TRIGGER {name} ON events")
    op.execute("DROP FUNCTION eventstore_refuse_rewrite()")
