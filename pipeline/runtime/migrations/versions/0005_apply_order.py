"""processed_events.seq: the order in which each agent applied events.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("processed_events",
                  sa.Column("seq", sa.BigInteger(), sa.Identity(), nullable=False))


def downgrade() -> None:
    op.drop_column("processed_events", "seq")
