"""SQLAlchemy Core definitions of the event store's tables.

These describe the schema that the Alembic revisions create; a test compares the
two so they cannot drift. The revisions never import this module.
"""

from __future__ import annotations

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
from sqlalchemy.dialects.postgresql.base import ischema_names
from sqlalchemy.types import UserDefinedType


class XID8(UserDefinedType[Any]):
    """PostgreSQL's 64-bit transaction id type (13+)."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "XID8"


# Let reflection (and so Alembic's autogenerate) recognise the type.
ischema_names.setdefault("xid8", XID8)

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
