"""Read models of what the order agent accepted from suppliers: shipment state and
deadlines, late orders, backorder queue places; late shipments and delivery figures.

- ``shipments`` gains ``state`` (in_transit, late, delivered, lost, damaged,
  returned_to_sender), ``expected_by``, ``deliver_by``, ``exception``, ``flagged``,
  ``reason`` and ``updated_at``: it is built from the order agent's
  ``ShipmentUpdated`` only (the newest update wins). Existing rows, built from raw
  supplier events, get ``state`` delivered or in_transit and no deadline (they are
  never listed late), ``updated_at`` their latest time;
- ``order_status`` gains ``late`` (a shipment is past its delivery deadline);
- ``order_lines`` gains ``queued_at`` (the line's place in its sku's backorder queue);
- new view ``late_shipments``: shipments past ``deliver_by`` by the pipeline's clock
  (``read.pipeline_now()``) and neither delivered nor failed, or in state late;
- ``backorders`` gains ``queued_at`` and ``place`` (1 = served first for its sku);
- ``supplier_scorecard`` gains delivery figures: shipments, delivered,
  on_time_delivery_rate, mean_transit_days, delivery_exceptions, flagged_shipments.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision: str | None = "0007"
branch_labels = None
depends_on = None

APP_ROLE = "dropship_app"  # ops' role reads new views by 0004's default privileges

#: 0007's backorders view (this revision appends columns to it).
OLD_BACKORDERS = """
SELECT l.order_id, o.shop_id, l.line_id, l.sku, l.quantity, l.allocated, l.backordered,
       l.backordered_since AS since, read.pipeline_now() - l.backordered_since AS waiting
  FROM read.order_lines l JOIN read.order_status o ON o.order_id = l.order_id
 WHERE l.backordered > 0 AND o.status <> 'cancelled'"""

#: 0004's supplier_scorecard (this revision appends columns to it).
OLD_SCORECARD_SO = """
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
      FROM read.returns, unnest(authorized_by) AS s GROUP BY s)"""
OLD_SCORECARD_SELECT = """
SELECT so.supplier_id, so.requested, so.accepted, so.rejected, so.acknowledge_sla_misses,
       so.dispatch_sla_misses, so.dispatched,
       round(so.dispatched_on_time::numeric / NULLIF(so.dispatched, 0), 4)
           AS on_time_dispatch_rate,
       so.mean_hours_to_dispatch, so.failovers_away, COALESCE(r.returns, 0) AS returns,
       round(COALESCE(r.returns, 0)::numeric / NULLIF(so.dispatched, 0), 4) AS returns_rate"""

#: The views, as of this revision (a later change is a new migration). Columns are only
#: appended to existing views (``CREATE OR REPLACE VIEW`` keeps the old ones in place).
VIEWS = {
    "late_shipments": """
SELECT s.order_id, o.shop_id, s.supplier_id, s.shipment_id, s.supplier_order_id, s.carrier,
       s.tracking_number, s.lines, s.units, s.state, s.flagged, s.dispatched_at,
       s.expected_by, s.deliver_by, read.pipeline_now() - s.deliver_by AS late_by,
       GREATEST(round((extract(epoch FROM read.pipeline_now() - s.deliver_by)
                       / 86400)::numeric, 1), 0) AS days_late
  FROM read.shipments s LEFT JOIN read.order_status o ON o.order_id = s.order_id
 WHERE s.state IN ('in_transit', 'late') AND s.delivered_at IS NULL
   AND (s.state = 'late' OR s.deliver_by < read.pipeline_now())""",
    "backorders": """
SELECT l.order_id, o.shop_id, l.line_id, l.sku, l.quantity, l.allocated, l.backordered,
       l.backordered_since AS since, read.pipeline_now() - l.backordered_since AS waiting,
       l.queued_at,
       row_number() OVER (PARTITION BY l.sku
                          ORDER BY COALESCE(l.queued_at, l.backordered_since), l.order_id,
                                   l.line_id) AS place
  FROM read.order_lines l JOIN read.order_status o ON o.order_id = l.order_id
 WHERE l.backordered > 0 AND o.status <> 'cancelled'""",
    "supplier_scorecard": OLD_SCORECARD_SO + """,
sh AS (
    SELECT supplier_id,
           count(*) AS shipments,
           count(delivered_at) AS delivered,
           count(*) FILTER (WHERE delivered_at IS NOT NULL AND deliver_by IS NOT NULL)
               AS delivered_with_deadline,
           count(*) FILTER (WHERE delivered_at <= deliver_by) AS delivered_on_time,
           round((extract(epoch FROM avg(delivered_at - dispatched_at)) / 86400)::numeric, 2)
               AS mean_transit_days,
           count(exception) AS delivery_exceptions,
           count(*) FILTER (WHERE flagged) AS flagged_shipments
      FROM read.shipments GROUP BY supplier_id)""" + OLD_SCORECARD_SELECT + """,
       COALESCE(sh.shipments, 0) AS shipments, COALESCE(sh.delivered, 0) AS delivered,
       round(sh.delivered_on_time::numeric / NULLIF(sh.delivered_with_deadline, 0), 4)
           AS on_time_delivery_rate,
       sh.mean_transit_days, COALESCE(sh.delivery_exceptions, 0) AS delivery_exceptions,
       COALESCE(sh.flagged_shipments, 0) AS flagged_shipments
  FROM so LEFT JOIN r ON r.supplier_id = so.supplier_id
          LEFT JOIN sh ON sh.supplier_id = so.supplier_id""",
}

OLD_VIEWS = {
    "backorders": OLD_BACKORDERS,
    "supplier_scorecard": OLD_SCORECARD_SO + OLD_SCORECARD_SELECT + """
  FROM so LEFT JOIN r ON r.supplier_id = so.supplier_id""",
}

SHIPMENT_COLUMNS: tuple[sa.Column[object], ...] = (
    sa.Column("state", sa.Text(), nullable=True),
    sa.Column("expected_by", sa.DateTime(timezone=True), nullable=True),
    sa.Column("deliver_by", sa.DateTime(timezone=True), nullable=True),
    sa.Column("exception", sa.Text(), nullable=True),
    sa.Column("flagged", sa.Boolean(), nullable=False, server_default=sa.text("false")),
    sa.Column("reason", sa.Text(), nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
)


def upgrade() -> None:
    for column in SHIPMENT_COLUMNS:
        op.add_column("shipments", column, schema="read")
    op.execute("""
        UPDATE read.shipments
           SET state = CASE WHEN delivered_at IS NULL THEN 'in_transit' ELSE 'delivered' END,
               updated_at = COALESCE(delivered_at, dispatched_at)""")
    op.add_column("order_status", sa.Column("late", sa.Boolean(), nullable=False,
                                            server_default=sa.text("false")), schema="read")
    op.add_column("order_lines", sa.Column("queued_at", sa.DateTime(timezone=True),
                                           nullable=True), schema="read")
    _views(VIEWS)


def _views(views: dict[str, str]) -> None:
    for name, sql in views.items():
        op.execute(f"CREATE OR REPLACE VIEW read.{name} AS {sql}")
        # a view needs SELECT only (the owner's default privileges give more)
        op.execute(f"REVOKE ALL ON read.{name} FROM {APP_ROLE}")
        op.execute(f"GRANT SELECT ON read.{name} TO {APP_ROLE}")


def downgrade() -> None:
    op.execute("DROP VIEW read.late_shipments")
    for name in OLD_VIEWS:
        op.execute(f"DROP VIEW read.{name}")  # columns cannot be dropped from a view
    _views(OLD_VIEWS)
    op.drop_column("order_lines", "queued_at", schema="read")
    op.drop_column("order_status", "late", schema="read")
    for column in SHIPMENT_COLUMNS:
        op.drop_column("shipments", column.name, schema="read")
