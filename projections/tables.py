"""The read models: SQLAlchemy Core tables in the ``read`` schema (what ops query).

Each table is built by :mod:`projections.rows` from events; the Alembic
migrations (``0004`` and later) create them (a test compares the two). The same definitions
are built in the ``read_rebuild`` schema by ``dropship projections rebuild``
(:func:`read_tables`), so a rebuilt table is identical to the live one, down to
its index and constraint names.

Guards, so that a late or re-sent event never overwrites newer data:

- ``order_status``, ``order_lines`` and ``supplier_stock`` hold snapshots: a row
  carries the ``version`` of the snapshot it shows and only a higher one replaces it;
- ``shipments`` holds the order agent's latest ``ShipmentUpdated`` of each shipment: a
  row is replaced by an update with a later ``changed_at`` (``updated_at``), ties
  broken by state (in_transit < late < delivered < exceptions), then ``flagged``;
- every other column is "first report wins" (``COALESCE``), "earliest wins"
  (``LEAST``) or a set union, which give the same row whatever the order of
  arrival across topics;
- ``order_timeline``, ``refunds`` and ``dead_letters`` rows are written once per event.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Computed,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from events.fulfillment import Ledger

LIVE_SCHEMA = "read"
STAGING_SCHEMA = "read_rebuild"
#: The read-only role the migration creates for ops (SELECT on ``read`` only).
OPS_ROLE = "dropship_ops"
#: The worker's role (migration 0006) and what it may do to each read model: the
#: projector upserts (UPDATE for ``ON CONFLICT DO UPDATE``), ``order_timeline`` is
#: insert-only. ``dropship projections rebuild`` grants these again after its swap.
APP_ROLE = "dropship_app"
APP_PRIVILEGES = {
    "order_status": "SELECT, INSERT, UPDATE",
    "order_lines": "SELECT, INSERT, UPDATE",
    "shipments": "SELECT, INSERT, UPDATE",
    "returns": "SELECT, INSERT, UPDATE",
    "supplier_orders": "SELECT, INSERT, UPDATE",
    "supplier_stock": "SELECT, INSERT, UPDATE",
    "order_timeline": "SELECT, INSERT",
    "refunds": "SELECT, INSERT",
    "dead_letters": "SELECT, INSERT, UPDATE",
}
#: The order's ledger columns of ``order_status``: the snapshot's ``Ledger`` amounts
#: (its total is the ``total`` column already).
LEDGER_COLUMNS = tuple(name for name in Ledger.model_fields if name not in ("currency", "total"))

RETURN_STATE = """CASE
    WHEN refunded_at IS NOT NULL THEN 'refunded'
    WHEN cardinality(received_by) > 0 AND authorized_by <@ received_by THEN 'received'
    WHEN cardinality(received_by) > 0 THEN 'partially_received'
    WHEN authorized_at IS NOT NULL THEN 'authorized'
    ELSE 'requested' END"""


def _ts(name: str) -> Column[object]:
    return Column(name, DateTime(timezone=True), nullable=True)


def _texts(name: str) -> Column[object]:
    return Column(name, ARRAY(Text), nullable=False, server_default="{}")


@dataclass(frozen=True)
class ReadTables:
    """The projected tables of one schema (live ``read`` or staging ``read_rebuild``)."""

    metadata: MetaData
    order_status: Table
    order_lines: Table
    shipments: Table
    returns: Table
    supplier_orders: Table
    supplier_stock: Table
    order_timeline: Table
    refunds: Table
    dead_letters: Table

    def by_name(self) -> dict[str, Table]:
        """Projection name -> table, in dependency-free creation order."""
        return {t.name: t for t in (
            self.order_status, self.order_lines, self.shipments, self.returns,
            self.supplier_orders, self.supplier_stock, self.order_timeline, self.refunds,
            self.dead_letters)}


def _order_tables(md: MetaData) -> tuple[Table, Table]:
    order_status = Table(
        "order_status", md,
        Column("order_id", Text, primary_key=True),
        Column("shop_id", Text, nullable=False),
        Column("version", Integer, nullable=False),
        Column("status", Text, nullable=False),
        Column("previous_status", Text),
        Column("status_since", DateTime(timezone=True), nullable=False),
        Column("last_reason", Text),
        _texts("suppliers"), _texts("tracking_numbers"),
        Column("total", Numeric), Column("currency", Text),
        Column("lines", Integer, nullable=False), Column("units", Integer, nullable=False),
        _ts("placed_at"), _ts("paid_at"), _ts("allocated_at"), _ts("dispatched_at"),
        _ts("delivered_at"), _ts("cancelled_at"),
        Column("updated_at", DateTime(timezone=True), nullable=False),
        *(Column(name, Numeric) for name in LEDGER_COLUMNS),
        Column("customer_ref", Text), Column("ship_to", JSONB(none_as_null=True)),
        # a shipment of the order is past its delivery deadline and not delivered
        Column("late", Boolean, nullable=False, server_default=text("false")),
        Index("order_status_status_idx", "status", "status_since"),
        Index("order_status_shop_idx", "shop_id", "placed_at"),
    )
    order_lines = Table(
        "order_lines", md,
        Column("order_id", Text, nullable=False),
        Column("line_id", Text, nullable=False),
        Column("version", Integer, nullable=False),
        Column("sku", Text, nullable=False),
        Column("quantity", Integer, nullable=False),
        Column("allocated", Integer, nullable=False),
        Column("allocations", JSONB(none_as_null=True), nullable=False),  # {supplier_id: units}
        _texts("suppliers"),
        Column("backordered", Integer, nullable=False),
        _ts("backordered_since"),
        Column("shipped", Integer, nullable=False),
        Column("delivered", Integer, nullable=False),
        Column("returned", Integer, nullable=False),
        Column("reroutes", Integer, nullable=False),
        Column("held_for_ops", Boolean, nullable=False),
        Column("cancelled", Integer, nullable=False, server_default="0"),
        Column("value", Numeric), Column("credited", Numeric),
        _ts("queued_at"),  # its place in the sku's backorder queue (allocation agent's time)
        PrimaryKeyConstraint("order_id", "line_id", name="order_lines_pkey"),
        Index("order_lines_backordered_idx", "sku", postgresql_where=text("backordered > 0")),
    )
    return order_status, order_lines


def _fulfillment_tables(md: MetaData) -> tuple[Table, Table, Table]:
    shipments = Table(
        "shipments", md,
        Column("supplier_id", Text, nullable=False),
        Column("shipment_id", Text, nullable=False),
        Column("order_id", Text, nullable=False),
        Column("supplier_order_id", Text),
        Column("carrier", Text), Column("tracking_number", Text),
        Column("lines", JSONB(none_as_null=True)),  # {line_id: units}
        Column("units", Integer),
        _ts("dispatched_at"), _ts("delivered_at"),
        # as the order agent accepted it (ShipmentUpdated): in_transit, late, delivered,
        # lost, damaged, returned_to_sender
        Column("state", Text),
        _ts("expected_by"), _ts("deliver_by"),
        Column("exception", Text),
        Column("flagged", Boolean, nullable=False, server_default=text("false")),
        Column("reason", Text),
        _ts("updated_at"),  # the ShipmentUpdated's changed_at: the newest update wins
        # a supplier's shipment ids are only known unique within one order
        PrimaryKeyConstraint("order_id", "supplier_id", "shipment_id", name="shipments_pkey"),
    )
    returns = Table(
        "returns", md,
        Column("order_id", Text, nullable=False),
        Column("rma_id", Text, nullable=False),
        Column("state", Text, Computed(RETURN_STATE, persisted=True)),
        Column("reason", Text),
        Column("lines", JSONB(none_as_null=True)),  # {line_id: units}, as requested
        _ts("requested_at"), _ts("authorized_at"), _texts("authorized_by"),
        _ts("received_at"), _texts("received_by"), _ts("refunded_at"),
        PrimaryKeyConstraint("order_id", "rma_id", name="returns_pkey"),
    )
    supplier_orders = Table(
        "supplier_orders", md,
        Column("supplier_id", Text, nullable=False),
        Column("supplier_order_id", Text, nullable=False),
        Column("order_id", Text, nullable=False),
        Column("units", Integer),
        _ts("requested_at"), _ts("acknowledge_by"), _ts("dispatch_by"),
        _ts("accepted_at"), _ts("rejected_at"), Column("reject_reason", Text),
        _ts("cancelled_at"), Column("cancel_cause", Text), Column("cancel_reason", Text),
        _ts("dispatched_at"),
        PrimaryKeyConstraint("supplier_id", "supplier_order_id", name="supplier_orders_pkey"),
        Index("supplier_orders_order_idx", "order_id"),
    )
    return shipments, returns, supplier_orders


def _refunds(md: MetaData) -> Table:
    return Table(
        "refunds", md,
        Column("order_id", Text, nullable=False),
        Column("refund_id", Text, nullable=False),
        Column("shop_id", Text, nullable=False),
        Column("cause", Text, nullable=False),
        Column("amount", Numeric, nullable=False),
        Column("currency", Text, nullable=False),
        Column("lines", JSONB(none_as_null=True)),  # [{line_id, units, amount, with_shipping}]
        Column("rma_id", Text), Column("payment_ref", Text), Column("reason", Text),
        Column("issued_at", DateTime(timezone=True), nullable=False),
        PrimaryKeyConstraint("order_id", "refund_id", name="refunds_pkey"),
    )


def _other_tables(md: MetaData) -> tuple[Table, Table, Table]:
    supplier_stock = Table(
        "supplier_stock", md,
        Column("supplier_id", Text, nullable=False),
        Column("sku", Text, nullable=False),
        Column("version", Integer, nullable=False),
        Column("reported_available", Integer, nullable=False),
        Column("reserved", Integer, nullable=False),
        Column("remaining", Integer, nullable=False),
        Column("report_as_of", DateTime(timezone=True), nullable=False),
        Column("changed_at", DateTime(timezone=True), nullable=False),
        PrimaryKeyConstraint("supplier_id", "sku", name="supplier_stock_pkey"),
    )
    order_timeline = Table(
        "order_timeline", md,
        Column("topic", Text, nullable=False),
        Column("partition", Integer, nullable=False),
        Column("offset", BigInteger, nullable=False),
        Column("order_id", Text, nullable=False),
        Column("event_id", Text, nullable=False),
        Column("source", Text, nullable=False),
        Column("event_type", Text, nullable=False),
        Column("time", DateTime(timezone=True), nullable=False),
        Column("summary", Text, nullable=False),
        # the order agent's step that applied (or derived) the event and its place in it,
        # and the event that caused a derived one: the timeline's causal order
        Column("seq", BigInteger), Column("sub", Integer), Column("cause", Text),
        PrimaryKeyConstraint("topic", "partition", "offset", name="order_timeline_pkey"),
        UniqueConstraint("order_id", "source", "event_id", name="order_timeline_event_key"),
        Index("order_timeline_order_idx", "order_id", "time"),
    )
    dead_letters = Table(
        "dead_letters", md,
        Column("id", Text, primary_key=True),  # the DeadLetter event's id
        Column("consumer", Text, nullable=False),
        Column("source_topic", Text, nullable=False),
        Column("source_partition", Integer, nullable=False),
        Column("source_offset", BigInteger, nullable=False),
        Column("original_key", Text, nullable=False),
        Column("rule", Text, nullable=False),
        Column("field", Text),
        Column("error", Text, nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("payload_size", Integer, nullable=False),
        Column("payload_sha256", Text, nullable=False),
        Column("truncated", Boolean, nullable=False),
        Column("dead_lettered_at", DateTime(timezone=True), nullable=False),
        Index("dead_letters_source_idx", "source_topic", "source_partition", "source_offset"),
        Index("dead_letters_time_idx", "dead_lettered_at"),
    )
    return supplier_stock, order_timeline, dead_letters


@cache
def read_tables(schema: str = LIVE_SCHEMA) -> ReadTables:
    """The read-model tables in ``schema`` (one MetaData per schema, built once)."""
    md = MetaData(schema=schema)
    order_status, order_lines = _order_tables(md)
    shipments, returns, supplier_orders = _fulfillment_tables(md)
    supplier_stock, order_timeline, dead_letters = _other_tables(md)
    return ReadTables(md, order_status, order_lines, shipments, returns, supplier_orders,
                      supplier_stock, order_timeline, _refunds(md), dead_letters)


#: Ops' record of re-published dead letters (written by ``dropship ops dead-letters
#: --replay``; not a projection, never rebuilt).
replay_metadata = MetaData(schema=LIVE_SCHEMA)
dead_letter_replays = Table(
    "dead_letter_replays", replay_metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("dead_letter_id", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("topic", Text, nullable=False),
    Column("replayed_at", DateTime(timezone=True), nullable=False),
    Column("replayed_by", Text, nullable=False),
)

#: The workers' clock (written every deadline check, read through ``read.pipeline_now()``
#: by the ops views; not a projection, never rebuilt).
pipeline_clock = Table(
    "pipeline_clock", replay_metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("written_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    CheckConstraint("id = 1", name="pipeline_clock_one_row"),
)
