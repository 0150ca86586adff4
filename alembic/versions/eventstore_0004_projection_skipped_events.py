"""Add projection_skipped_events: the events projections passed over.

Revision ID: eventstore_0004
Revises: eventstore_0003
Create Date: 2026-12-03

A projection built with ``on_undecodable="skip"`` records each event it cannot
decode here (its name, the event's feed position, stream, version and type, and
the error), in the transaction that moves its checkpoint past the event, and
goes on. Resetting the projection deletes its rows. The primary key is the
projection and the position, so an event is recorded once per projection.

Plain op.* calls only: never import eventstore here.
"""

from __future__ import annotations

from collections.abc import Sequence

import alembic.op as op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision: str = "eventstore_0004"
down_revision: str | Sequence[str] | None = "eventstore_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``projection_skipped_events``."""
    op.create_table(
        "projection_skipped_events",
        sa.Column("projection", sa.Text(), nullable=False),
        sa.Column("transaction_id", sa.BigInteger(), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("stream_id", sa.Text(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column(
            "skipped_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint(
            "projection", "transaction_id", "position", name="projection_skipped_events_pkey"
        ),
    )


def downgrade() -> None:
    """Drop ``projection_skipped_events`` (the records of skipped events go with it)."""
    op.drop_table("projection_skipped_events")
