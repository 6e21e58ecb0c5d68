"""Money and time in the read models: each order's ledger, ship-to address and customer
reference; every refund (``read.refunds``); the timeline's causal order; and the
pipeline's clock (``read.pipeline_clock``, ``read.pipeline_now()``), by which the ops
views measure waiting time.

- ``order_status`` gains the ledger (subtotal, shipping, tax, discount, credited,
  written_off, due, paid, refunded, outstanding), ``customer_ref`` and ``ship_to``;
- ``order_lines`` gains ``cancelled``, ``value`` and ``credited``;
- ``returns`` loses ``refund_amount`` / ``refund_currency`` (a return can be refunded in
  parts, one per supplier that receives its part): refunds are rows of ``read.refunds``;
- ``order_timeline`` gains ``seq`` / ``sub`` (the order agent's step and the event's place
  in it) and ``cause`` (``<source>/<id>`` of the event that caused it);
- ``read.pipeline_clock`` holds the workers' clock (written every deadline check);
  ``read.pipeline_now()`` extrapolates it by the database's clock since it was written
  (the database's clock if no worker wrote one), and the views ``stuck_orders`` and
  ``backorders`` measure waiting by it, so a worker on a test or simulated clock and
  the views agree.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision: str | None = "0006"
branch_labels = None
depends_on = None

APP_ROLE = "dropship_app"
LEDGER = ("subtotal", "shipping", "tax", "discount", "credited", "written_off", "due", "paid",
          "refunded", "outstanding")

PIPELINE_NOW = """
CREATE FUNCTION read.pipeline_now() RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT COALESCE((SELECT at + (now() - written_at) FROM read.pipeline_clock WHERE id = 1),
                    now())
$$"""

#: The views, as of this revision (a later change is a new migration).
VIEWS = {
    "stuck_orders": """
SELECT o.order_id, o.shop_id, o.status, 'held_for_ops'::text AS problem,
       COALESCE(o.last_reason, 'held for ops') AS reason,
       o.status_since AS since, read.pipeline_now() - o.status_since AS waiting
  FROM read.order_status o WHERE o.status = 'held_for_ops'
UNION ALL
SELECT o.order_id, o.shop_id, o.status, 'payment_held',
       COALESCE(o.last_reason, 'payment held'), o.status_since,
       read.pipeline_now() - o.status_since
  FROM read.order_status o WHERE o.status = 'payment_held'
UNION ALL
SELECT so.order_id, o.shop_id, o.status, 'acknowledge_overdue',
       so.supplier_id || ' has not accepted supplier order ' || so.supplier_order_id,
       so.acknowledge_by, read.pipeline_now() - so.acknowledge_by
  FROM read.supplier_orders so JOIN read.order_status o ON o.order_id = so.order_id
 WHERE so.requested_at IS NOT NULL AND so.accepted_at IS NULL AND so.rejected_at IS NULL
   AND so.cancelled_at IS NULL AND so.dispatched_at IS NULL
   AND so.acknowledge_by < read.pipeline_now()
UNION ALL
SELECT so.order_id, o.shop_id, o.status, 'dispatch_overdue',
       so.supplier_id || ' has not dispatched supplier order ' || so.supplier_order_id,
       so.dispatch_by, read.pipeline_now() - so.dispatch_by
  FROM read.supplier_orders so JOIN read.order_status o ON o.order_id = so.order_id
 WHERE so.requested_at IS NOT NULL AND so.rejected_at IS NULL AND so.cancelled_at IS NULL
   AND so.dispatched_at IS NULL AND so.dispatch_by < read.pipeline_now()
   AND o.status NOT IN ('cancelled', 'dispatched', 'delivered', 'return_requested',
                        'returned', 'partially_refunded', 'refunded')""",
    "backorders": """
SELECT l.order_id, o.shop_id, l.line_id, l.sku, l.quantity, l.allocated, l.backordered,
       l.backordered_since AS since, read.pipeline_now() - l.backordered_since AS waiting
  FROM read.order_lines l JOIN read.order_status o ON o.order_id = l.order_id
 WHERE l.backordered > 0 AND o.status <> 'cancelled'""",
}

#: The views as revision 0006 left them (0004's definitions with ``now()``).
OLD_VIEWS = {name: sql.replace("read.pipeline_now()", "now()").replace(
    ", 'partially_refunded'", "") for name, sql in VIEWS.items()}


def upgrade() -> None:
    for column in LEDGER:
        op.add_column("order_status", sa.Column(column, sa.Numeric(), nullable=True),
                      schema="read")
    op.add_column("order_status", sa.Column("customer_ref", sa.Text(), nullable=True),
                  schema="read")
    op.add_column("order_status", sa.Column("ship_to", postgresql.JSONB(), nullable=True),
                  schema="read")
    op.add_column("order_lines", sa.Column("cancelled", sa.Integer(), nullable=False,
                                           server_default="0"), schema="read")
    op.add_column("order_lines", sa.Column("value", sa.Numeric(), nullable=True), schema="read")
    op.add_column("order_lines", sa.Column("credited", sa.Numeric(), nullable=True),
                  schema="read")
    op.drop_column("returns", "refund_amount", schema="read")
    op.drop_column("returns", "refund_currency", schema="read")
    for col in (sa.Column("seq", sa.BigInteger(), nullable=True),
                sa.Column("sub", sa.Integer(), nullable=True),
                sa.Column("cause", sa.Text(), nullable=True)):
        op.add_column("order_timeline", col, schema="read")
    op.create_table(
        "refunds",
        sa.Column("order_id", sa.Text(), nullable=False),
        sa.Column("refund_id", sa.Text(), nullable=False),
        sa.Column("shop_id", sa.Text(), nullable=False),
        sa.Column("cause", sa.Text(), nullable=False),
        sa.Column("amount", sa.Numeric(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("lines", postgresql.JSONB(), nullable=True),
        sa.Column("rma_id", sa.Text(), nullable=True),
        sa.Column("payment_ref", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("order_id", "refund_id", name="refunds_pkey"),
        schema="read",
    )
    op.create_table(
        "pipeline_clock",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.text("now()")),
        sa.PrimaryKeyConstraint("id", name="pipeline_clock_pkey"),
        sa.CheckConstraint("id = 1", name="pipeline_clock_one_row"),
        schema="read",
    )
    op.execute(PIPELINE_NOW)
    _views(VIEWS)
    # default privileges gave the new tables SELECT, INSERT, UPDATE: refunds are written once
    op.execute(f"REVOKE UPDATE ON read.refunds FROM {APP_ROLE}")


def _views(views: dict[str, str]) -> None:
    for name, sql in views.items():
        op.execute(f"CREATE OR REPLACE VIEW read.{name} AS {sql}")
        # a view needs SELECT only (the owner's default privileges give more)
        op.execute(f"REVOKE ALL ON read.{name} FROM {APP_ROLE}")
        op.execute(f"GRANT SELECT ON read.{name} TO {APP_ROLE}")


def downgrade() -> None:
    _views(OLD_VIEWS)
    op.execute("DROP FUNCTION read.pipeline_now()")
    op.drop_table("pipeline_clock", schema="read")
    op.drop_table("refunds", schema="read")
    for column in ("seq", "sub", "cause"):
        op.drop_column("order_timeline", column, schema="read")
    op.add_column("returns", sa.Column("refund_amount", sa.Numeric(), nullable=True),
                  schema="read")
    op.add_column("returns", sa.Column("refund_currency", sa.Text(), nullable=True),
                  schema="read")
    for column in ("cancelled", "value", "credited"):
        op.drop_column("order_lines", column, schema="read")
    for column in (*LEDGER, "customer_ref", "ship_to"):
        op.drop_column("order_status", column, schema="read")
