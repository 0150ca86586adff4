"""SQLAlchemy Core definitions of the event store's tables.

These describe the schema that the Alembic revisions create; a test compares the
two so they cannot drift. The revisions never import this module. Importing it
changes nothing in SQLAlchemy: reflection learns the one type its PostgreSQL
dialect does not know through :func:`recognise_types`, one engine at a time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Identity,
    Index,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeEngine, UserDefinedType


class XID8(UserDefinedType[Any]):
    """PostgreSQL's 64-bit transaction id type (13+)."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "XID8"


RECOGNISED_TYPES: dict[str, type[TypeEngine[Any]]] = {"xid8": XID8}
"""Column types of these tables that SQLAlchemy's PostgreSQL dialect does not
reflect: it warns "Did not recognize type 'xid8'" and reads the column as
``NullType``, whose type Alembic's comparison then skips."""


def recognise_types(dialect: Dialect) -> None:
    """Let reflection through ``dialect`` read :data:`RECOGNISED_TYPES`, so that
    Alembic's autogenerate (``alembic check``, ``alembic revision --autogenerate``)
    and the drift test compare ``events.transaction_id`` as ``XID8``.

    Only this dialect object, which belongs to one engine, learns them: the
    dialect class's table (``sqlalchemy.dialects.postgresql.base.ischema_names``,
    shared by every PostgreSQL engine in the process) is left as it was.
    """
    known: dict[str, Any] = getattr(dialect, "ischema_names", {})
    dialect.ischema_names = {**known, **RECOGNISED_TYPES}  # type: ignore[attr-defined]


metadata = MetaData()

events = Table(
    "events",
    metadata,
    Column("stream_id", Text, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("event_data", LargeBinary, nullable=False),
    Column("metadata", JSONB, nullable=True),
    Column("created_at", TIMESTAMP(timezone=True), nullable=False, server_default=func.now()),
    # The global feed: readers follow (transaction_id, position).
    Column("position", BigInteger, Identity(always=False), nullable=False),
    Column("transaction_id", XID8, nullable=False, server_default=func.pg_current_xact_id()),
    PrimaryKeyConstraint("stream_id", "version", name="events_pkey"),
    Index("idx_events_created", "created_at"),
    Index("idx_events_type", "event_type"),
    Index("idx_events_feed", "transaction_id", "position"),
)

snapshots = Table(
    "snapshots",
    metadata,
    Column("stream_id", Text, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("state_data", LargeBinary, nullable=False),
    Column("created_at", TIMESTAMP(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("stream_id", name="snapshots_pkey"),
)

projection_checkpoints = Table(
    "projection_checkpoints",
    metadata,
    Column("name", Text, nullable=False),
    Column("transaction_id", BigInteger, nullable=False),
    Column("position", BigInteger, nullable=False),
    Column("updated_at", TIMESTAMP(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("name", name="projection_checkpoints_pkey"),
)

projection_skipped_events = Table(
    "projection_skipped_events",
    metadata,
    # The events a projection with on_undecodable="skip" passed over.
    Column("projection", Text, nullable=False),
    Column("transaction_id", BigInteger, nullable=False),
    Column("position", BigInteger, nullable=False),
    Column("stream_id", Text, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("error", Text, nullable=False),
    Column("skipped_at", TIMESTAMP(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint(
        "projection", "transaction_id", "position", name="projection_skipped_events_pkey"
    ),
)

FUNCTIONS: frozenset[str] = frozenset({"eventstore_refuse_rewrite"})
"""The functions the revisions create (``eventstore_0003``); a test compares them
with a migrated database."""

TRIGGERS: Mapping[str, str] = {
    "events_refuse_update_delete": "events",
    "events_refuse_truncate": "events",
}
"""The triggers the revisions create, each with its table (``eventstore_0003``); a
test compares them with a migrated database."""
