"""Allocation state as rows: ``allocation_lines`` (one row per sku line) and
``allocation_state.rev`` (a stamp per write, for the worker's state cache).

The per-sku document used to hold every line the sku ever served and was
rewritten whole by every batch (issue 16: 65-82 % of the allocation worker's
time). Documents written before this revision (format 1 or 2, lines inside)
stay valid: the agent reads their lines from the document and, on its first
write of that sku, moves them to rows and drops them from the document
(format 3). Downgrading folds the rows back into the documents (format 2).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision: str | None = "0008"
branch_labels = None
depends_on = None

APP_ROLE = "dropship_app"


def upgrade() -> None:
    op.add_column("allocation_state", sa.Column("rev", sa.BigInteger(), nullable=True))
    op.create_table(
        "allocation_lines",
        sa.Column("sku", sa.Text(), primary_key=True),
        sa.Column("order_id", sa.Text(), primary_key=True),
        sa.Column("line_id", sa.Text(), primary_key=True),
        sa.Column("line", postgresql.JSONB(), nullable=False),
    )
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON public.allocation_lines TO {APP_ROLE}")


def downgrade() -> None:
    # Format-3 documents get their lines back, in arrival order, as format 2.
    op.execute("""
        UPDATE allocation_state s
           SET state = (s.state - 'lines') || jsonb_build_object(
                   'format', 2,
                   'lines', COALESCE((SELECT jsonb_agg(l.line ORDER BY (l.line->>'arrival')::bigint)
                                        FROM allocation_lines l WHERE l.sku = s.sku),
                                     '[]'::jsonb))
         WHERE (s.state->>'format')::int >= 3""")
    op.drop_table("allocation_lines")
    op.drop_column("allocation_state", "rev")
