"""SQLAlchemy Core definitions of the ``events`` and ``snapshots`` tables.

These describe the schema that the Alembic revisions create; a test compares the
two so they cannot drift. The revisions never import this module.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP

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
    PrimaryKeyConstraint("stream_id", "version", name="events_pkey"),
    Index("idx_events_created", "created_at"),
    Index("idx_events_type", "event_type"),
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
