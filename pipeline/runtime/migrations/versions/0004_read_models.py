"""Read models: the ``read`` schema (tables and views ops query), the
``read_rebuild`` staging schema, and the read-only role ``dropship_ops``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision: str | None = "0003"
branch_labels = None
depends_on = None

#: The views, as of this revision (a later change is a new migration).
VIEWS = {
    "stuck_orders": """
SELECT o.order_id, o.shop_id, o.status, 'held_for_ops'::text AS problem,
       COALESCE(o.last_reason, 'held for ops') AS reason,
       o.status_since AS since, now() - o.status_since AS waiting
  FROM read.order_status o WHERE o.status = 'held_for_ops'
UNION ALL
SELECT o.order_id, o.shop_id, o.status, 'payment_held',
       COALESCE(o.last_reason, 'payment held'), o.status_since, now() - o.status_since
  FROM read.order_status o WHERE o.status = 'payment_held'
UNION ALL
SELECT so.order_id, o.shop_id, o.status, 'acknowledge_overdue',
       so.supplier_id || ' has not accepted supplier order ' || so.supplier_order_id,
       so.acknowledge_by, now() - so.acknowledge_by
  FROM read.supplier_orders so JOIN read.order_status o ON o.order_id = so.order_id
 WHERE so.requested_at IS NOT NULL AND so.accepted_at IS NULL AND so.rejected_at IS NULL
   AND so.cancelled_at IS NULL AND so.dispatched_at IS NULL AND so.acknowledge_by < now()
UNION ALL
SELECT so.order_id, o.shop_id, o.status, 'dispatch_overdue',
       so.supplier_id || ' has not dispatched supplier order ' || so.supplier_order_id,
       so.dispatch_by, now() - so.dispatch_by
  FROM read.supplier_orders so JOIN read.order_status o ON o.order_id = so.order_id
 WHERE so.requested_at IS NOT NULL AND so.rejected_at IS NULL AND so.cancelled_at IS NULL
   AND so.dispatched_at IS NULL AND so.dispatch_by < now()
   AND o.status NOT IN ('cancelled', 'dispatched', 'delivered', 'return_requested',
                        'returned', 'refunded')""",
    "backorders": """
SELECT l.order_id, o.shop_id, l.line_id, l.sku, l.quantity, l.allocated, l.backordered,
       l.backordered_since AS since, now() - l.backordered_since AS waiting
  FROM read.order_lines l JOIN read.order_status o ON o.order_id = l.order_id
 WHERE l.backordered > 0 AND o.status <> 'cancelled'""",
    "supplier_scorecard": """
WITH so AS (
    SELECT supplier_id,
           count(*) AS requested,
           count(accepted_at) AS accepted,
           count(rejected_at) AS rejected,
           count(*) FILTER (WHERE cancel_cause = 'acknowledge_sla_missed'
                            OR accepted_at > acknowledge_by) AS acknowledge_sla_misses,
           count(*) FILTER (WHERE cancel_cause = 'dispatch_sla_missed'
                            OR dispatched_at > dispatch_by) AS dispatch_sla_misses,
           count(dispatched_at) AS dispatched,
           count(*) FILTER (WHERE dispatched_at <= dispatch_by) AS dispatched_on_time,
           round((extract(epoch FROM avg(dispatched_at - requested_at)) / 3600)::numeric, 2)
               AS mean_hours_to_dispatch,
           count(*) FILTER (WHERE cancel_cause IN ('rejected', 'acknowledge_sla_missed',
                                                   'dispatch_sla_missed')) AS failovers_away
      FROM read.supplier_orders WHERE requested_at IS NOT NULL GROUP BY supplier_id),
r AS (
    SELECT s AS supplier_id, count(*) AS returns
      FROM read.returns, unnest(authorized_by) AS s GROUP BY s)
SELECT so.supplier_id, so.requested, so.accepted, so.rejected, so.acknowledge_sla_misses,
       so.dispatch_sla_misses, so.dispatched,
       round(so.dispatched_on_time::numeric / NULLIF(so.dispatched, 0), 4)
           AS on_time_dispatch_rate,
       so.mean_hours_to_dispatch, so.failovers_away, COALESCE(r.returns, 0) AS returns,
       round(COALESCE(r.returns, 0)::numeric / NULLIF(so.dispatched, 0), 4) AS returns_rate
  FROM so LEFT JOIN r ON r.supplier_id = so.supplier_id""",
}

OPS_ROLE = "dropship_ops"
TEXTS = postgresql.ARRAY(sa.Text())

RETURN_STATE = """CASE
    WHEN refunded_at IS NOT NULL THEN 'refunded'
    WHEN cardinality(received_by) > 0 AND authorized_by <@ received_by THEN 'received'
    WHEN cardinality(received_by) > 0 THEN 'partially_received'
    WHEN authorized_at IS NOT NULL THEN 'authorized'
    ELSE 'requested' END"""


def upgrade() -> None:
    op.execute("CREATE SCHEMA read")
    op.execute("CREATE SCHEMA read_rebuild")
    _tables()
    for name, sql in VIEWS.items():
        op.execute(f"CREATE VIEW read.{name} AS {sql}")
    _ops_role()


def _tables() -> None:
    op.create_table(
        "dead_letter_replays",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("dead_letter_id", sa.Text(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("replayed_by", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        schema="read",
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("consumer", sa.Text(), nullable=False),
        sa.Column("source_topic", sa.Text(), nullable=False),
        sa.Column("source_partition", sa.Integer(), nullable=False),
        sa.Column("source_offset", sa.BigInteger(), nullable=False),
        sa.Column("original_key", sa.Text(), nullable=False),
        sa.Column("rule", sa.Text(), nullable=False),
        sa.Column("field", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("payload_size", sa.Integer(), nullable=False),
        sa.Column("payload_sha256", sa.Text(), nullable=False),
        sa.Column("truncated", sa.Boolean(), nullable=False),
        sa.Column("dead_lettered_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        schema="read",
    )
    op.create_index(
        "dead_letters_source_idx",
        "dead_letters",
        ["source_topic", "source_partition", "source_offset"],
        unique=False,
        schema="read",
    )
    op.create_index(
        "dead_letters_time_idx", "dead_letters", ["dead_lettered_at"], unique=False, schema="read"
    )
    op.create_table(
        "order_lines",
        sa.Column("order_id", sa.Text(), nullable=False),
        sa.Column("line_id", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("sku", sa.Text(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("allocated", sa.Integer(), nullable=False),
        sa.Column("allocations", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("suppliers", TEXTS, server_default="{}", nullable=False),
        sa.Column("backordered", sa.Integer(), nullable=False),
        sa.Column("backordered_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("shipped", sa.Integer(), nullable=False),
        sa.Column("delivered", sa.Integer(), nullable=False),
        sa.Column("returned", sa.Integer(), nullable=False),
        sa.Column("reroutes", sa.Integer(), nullable=False),
        sa.Column("held_for_ops", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("order_id", "line_id", name="order_lines_pkey"),
        schema="read",
    )
    op.create_index(
        "order_lines_backordered_idx",
        "order_lines",
        ["sku"],
        unique=False,
        schema="read",
        postgresql_where=sa.text("backordered > 0"),
    )
    op.create_table(
        "order_status",
        sa.Column("order_id", sa.Text(), nullable=False),
        sa.Column("shop_id", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("previous_status", sa.Text(), nullable=True),
        sa.Column("status_since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_reason", sa.Text(), nullable=True),
        sa.Column("suppliers", TEXTS, server_default="{}", nullable=False),
        sa.Column("tracking_numbers", TEXTS, server_default="{}", nullable=False),
        sa.Column("total", sa.Numeric(), nullable=True),
        sa.Column("currency", sa.Text(), nullable=True),
        sa.Column("lines", sa.Integer(), nullable=False),
        sa.Column("units", sa.Integer(), nullable=False),
        sa.Column("placed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("allocated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("order_id"),
        schema="read",
    )
    op.create_index(
        "order_status_shop_idx",
        "order_status",
        ["shop_id", "placed_at"],
        unique=False,
        schema="read",
    )
    op.create_index(
        "order_status_status_idx",
        "order_status",
        ["status", "status_since"],
        unique=False,
        schema="read",
    )
    op.create_table(
        "order_timeline",
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("order_id", sa.Text(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("topic", "partition", "offset", name="order_timeline_pkey"),
        sa.UniqueConstraint("order_id", "source", "event_id", name="order_timeline_event_key"),
        schema="read",
    )
    op.create_index(
        "order_timeline_order_idx",
        "order_timeline",
        ["order_id", "time"],
        unique=False,
        schema="read",
    )
    op.create_table(
        "returns",
        sa.Column("order_id", sa.Text(), nullable=False),
        sa.Column("rma_id", sa.Text(), nullable=False),
        sa.Column(
            "state",
            sa.Text(),
            sa.Computed(
                RETURN_STATE,
                persisted=True,
            ),
            nullable=True,
        ),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("lines", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("authorized_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("authorized_by", TEXTS, server_default="{}", nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("received_by", TEXTS, server_default="{}", nullable=False),
        sa.Column("refund_amount", sa.Numeric(), nullable=True),
        sa.Column("refund_currency", sa.Text(), nullable=True),
        sa.Column("refunded_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("order_id", "rma_id", name="returns_pkey"),
        schema="read",
    )
    op.create_table(
        "shipments",
        sa.Column("supplier_id", sa.Text(), nullable=False),
        sa.Column("shipment_id", sa.Text(), nullable=False),
        sa.Column("order_id", sa.Text(), nullable=False),
        sa.Column("supplier_order_id", sa.Text(), nullable=True),
        sa.Column("carrier", sa.Text(), nullable=True),
        sa.Column("tracking_number", sa.Text(), nullable=True),
        sa.Column("lines", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("units", sa.Integer(), nullable=True),
        sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("order_id", "supplier_id", "shipment_id", name="shipments_pkey"),
        schema="read",
    )
    op.create_table(
        "supplier_orders",
        sa.Column("supplier_id", sa.Text(), nullable=False),
        sa.Column("supplier_order_id", sa.Text(), nullable=False),
        sa.Column("order_id", sa.Text(), nullable=False),
        sa.Column("units", sa.Integer(), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledge_by", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dispatch_by", sa.DateTime(timezone=True), nullable=True),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rejected_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reject_reason", sa.Text(), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancel_cause", sa.Text(), nullable=True),
        sa.Column("cancel_reason", sa.Text(), nullable=True),
        sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("supplier_id", "supplier_order_id", name="supplier_orders_pkey"),
        schema="read",
    )
    op.create_index(
        "supplier_orders_order_idx", "supplier_orders", ["order_id"], unique=False, schema="read"
    )
    op.create_table(
        "supplier_stock",
        sa.Column("supplier_id", sa.Text(), nullable=False),
        sa.Column("sku", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("reported_available", sa.Integer(), nullable=False),
        sa.Column("reserved", sa.Integer(), nullable=False),
        sa.Column("remaining", sa.Integer(), nullable=False),
        sa.Column("report_as_of", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("supplier_id", "sku", name="supplier_stock_pkey"),
        schema="read",
    )


def _ops_role() -> None:
    """Create the role if this cluster has none (roles are cluster-wide), then grant
    it SELECT on the read models of this database, and nothing else."""
    op.execute(f"""
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{OPS_ROLE}') THEN
        CREATE ROLE {OPS_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$""")
    op.execute("REVOKE ALL ON SCHEMA read_rebuild FROM PUBLIC")
    op.execute(f"GRANT USAGE ON SCHEMA read TO {OPS_ROLE}")
    op.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA read TO {OPS_ROLE}")
    op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA read GRANT SELECT ON TABLES TO {OPS_ROLE}")


def downgrade() -> None:
    op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA read REVOKE SELECT ON TABLES FROM {OPS_ROLE}")
    op.execute("DROP SCHEMA read_rebuild CASCADE")
    op.execute("DROP SCHEMA read CASCADE")  # the role stays: other databases may use it
