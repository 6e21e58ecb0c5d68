"""Retention: indexes by age for the batched pruning of ``processed_events``, sent
``outbox`` rows and ``event_log`` (``dropship retention run``, run as the owner:
the worker's role still deletes nothing).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision: str | None = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("processed_events_processed_at_idx", "processed_events", ["processed_at"])
    op.create_index("outbox_published_at_idx", "outbox", ["published_at"],
                    postgresql_where=sa.text("published_at IS NOT NULL"))
    op.create_index("event_log_recorded_at_idx", "event_log", ["recorded_at"])


def downgrade() -> None:
    op.drop_index("event_log_recorded_at_idx", table_name="event_log")
    op.drop_index("outbox_published_at_idx", table_name="outbox")
    op.drop_index("processed_events_processed_at_idx", table_name="processed_events")
