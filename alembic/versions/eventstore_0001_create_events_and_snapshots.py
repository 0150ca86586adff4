"""Create the events and snapshots tables.

Revision ID: eventstore_0001
Revises:
Create Date: 2025-11-23

The first revision of pg-eventstore's schema, and the root of the "eventstore"
branch. Revision ids are "eventstore_" plus a four-digit sequence number: readable,
ordered, and distinct from the ids of an application that merges this history into
its own.

Plain op.* calls only: never import eventstore.schema here, so this revision keeps
meaning what it meant when it was written.
"""

from __future__ import annotations

from collections.abc import Sequence

import alembic.op as op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "eventstore_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("eventstore",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``events`` (with its two indexes) and ``snapshots``."""
    op.create_table(
        "events",
        sa.Column("stream_id", sa.Text(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("event_data", postgresql.BYTEA(), nullable=False),
        sa.Column("metadata", postgresql.JSONB(), nullable=True),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("stream_id", "version", name="events_pkey"),
    )
    op.create_index("idx_events_created", "events", ["created_at"])
    op.create_index("idx_events_type", "events", ["event_type"])

    op.create_table(
        "snapshots",
        sa.Column("stream_id", sa.Text(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("state_data", postgresql.BYTEA(), nullable=False),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("stream_id", name="snapshots_pkey"),
    )


def downgrade() -> None:
    """Drop ``snapshots`` and ``events`` (their indexes go with them)."""
    op.drop_table("snapshots")
    op.drop_index("idx_events_type", table_name="events")
    op.drop_index("idx_events_created", table_name="events")
    op.drop_table("events")
