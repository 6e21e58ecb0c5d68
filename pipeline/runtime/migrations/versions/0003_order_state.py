"""order_state: the order agent's per-order documents and deadlines.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision: str | None = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "order_state",
        sa.Column("order_id", sa.Text(), primary_key=True),
        sa.Column("partition", sa.Integer(), nullable=False),
        # json keeps key order (lines, shipments in shipping order); jsonb does not
        sa.Column("state", postgresql.JSON(), nullable=False),
        sa.Column("next_deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
    )
    op.create_index("order_state_deadline_idx", "order_state", ["partition", "next_deadline"],
                    postgresql_where=sa.text("next_deadline IS NOT NULL"))


def downgrade() -> None:
    op.drop_table("order_state")
