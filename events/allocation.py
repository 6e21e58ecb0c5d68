"""Allocation commands (``fulfillment.allocation``, key: sku), decisions
(``fulfillment.decisions``, key: order id) and stock budgets (``fulfillment.stock``,
key: sku), exchanged by our own agents."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from events.base import Command, Event, SourceKind
from events.topics import ALLOCATION, DECISIONS, STOCK
from events.types import CountryCode, Id, Money, Quantity, Text, Timestamp

#: Why units are backordered: ``no_offer``: no active offer for the sku;
#: ``no_route``: active offers exist, none ships to the line's country;
#: ``all_suppliers_excluded``: every offer that ships there is excluded for the line;
#: ``no_stock``: some candidate exists, none has (enough, for a no-split offer) stock.
BackorderReason = Literal["no_offer", "no_route", "no_stock", "all_suppliers_excluded"]
SupplierIds = Annotated[tuple[Id, ...], Field(max_length=100)]
#: The line's backordered units once the decision is applied, so that a consumer
#: never has to guess whether an allocation served a backorder.
BackorderedAfter = Annotated[int, Field(ge=0)]


class _AllocationCommand(Command):
    TOPIC: ClassVar[str] = ALLOCATION
    SOURCE_KIND: ClassVar[SourceKind] = "dropship"
    SUBJECT: ClassVar[str] = "sku"


class AllocateLine(_AllocationCommand):
    """Reserve stock for (the rest of) an order line, never from ``excluded_suppliers``;
    with ``supplier_id``, only from that supplier (ops re-routed the line to it), now
    and for the line's backorder."""

    TYPE: ClassVar[str] = "dropship.allocation.allocate_line.v1"

    order_id: Id
    line_id: Id
    sku: Id
    quantity: Quantity
    ship_to_country: CountryCode
    excluded_suppliers: SupplierIds = ()
    supplier_id: Id | None = None
    requested_at: Timestamp


class ReleaseLine(_AllocationCommand):
    """Give back units of a line: all of it (backorder and reservations), or up to
    ``quantity``; with ``supplier_id``, only that supplier's reservations; with
    ``backorder_only``, only backordered units, never a reservation."""

    TYPE: ClassVar[str] = "dropship.allocation.release_line.v1"

    order_id: Id
    line_id: Id
    sku: Id
    supplier_id: Id | None = None
    quantity: Quantity | None = None
    backorder_only: bool = False
    #: the supplier rejected for out of stock at this time: its budget for the sku is
    #: 0 until a stock report as of a later time (docs/allocation.md)
    out_of_stock_at: Timestamp | None = None
    #: the units came back to the supplier (a resellable return): free there at once;
    #: otherwise units the supplier had accepted stay used until its next report
    returned: bool = False
    reason: Text
    requested_at: Timestamp


class CommitLine(_AllocationCommand):
    """``supplier_id`` accepted ``quantity`` reserved units of a line at ``accepted_at``
    (its own clock): from then its stock reports count them as taken, so the
    allocation agent stops subtracting them from reports as of a later time (at
    ``accepted_at`` itself it keeps subtracting them: the safe side). Sent by the
    order agent when it applies a supplier's acceptance (or a dispatch that came
    without one)."""

    TYPE: ClassVar[str] = "dropship.allocation.commit_line.v1"

    order_id: Id
    line_id: Id
    sku: Id
    supplier_id: Id
    quantity: Quantity
    accepted_at: Timestamp
    requested_at: Timestamp


class _Decision(Event):
    TOPIC: ClassVar[str] = DECISIONS
    SOURCE_KIND: ClassVar[SourceKind] = "dropship"
    SUBJECT: ClassVar[str] = "order_id"


class LineAllocated(_Decision):
    """``quantity`` units of a line were reserved at ``supplier_id``, whose offer
    promises to accept within ``acknowledge_sla_hours`` and dispatch within
    ``dispatch_sla_hours`` of receiving the supplier order."""

    TYPE: ClassVar[str] = "dropship.line.allocated.v1"

    order_id: Id
    line_id: Id
    sku: Id
    supplier_id: Id
    quantity: Quantity
    unit_cost: Money
    #: the offer's shipping cost per unit to the line's country, in ``unit_cost``'s
    #: currency (0 for an offer without destinations)
    shipping_cost: Money | None = None
    #: the offer's transit days to the line's country (None: the offer does not say)
    transit_days: Annotated[int, Field(ge=0, le=365)] | None = None
    acknowledge_sla_hours: Annotated[int, Field(ge=1, le=720)]
    dispatch_sla_hours: Annotated[int, Field(ge=1, le=2160)]
    backordered_after: BackorderedAfter = 0
    #: when the line joined the sku's backorder queue (the allocation agent's time of
    #: the line's first AllocateLine): backorders are served in this order
    queued_at: Timestamp | None = None
    allocated_at: Timestamp


class LineBackordered(_Decision):
    """``quantity`` units of a line could not be reserved anywhere (yet)."""

    TYPE: ClassVar[str] = "dropship.line.backordered.v1"

    order_id: Id
    line_id: Id
    sku: Id
    quantity: Quantity
    reason: BackorderReason
    backordered_after: BackorderedAfter = 0
    #: when the line joined the sku's backorder queue: backorders are served in this
    #: order (``dropship ops backorders`` lists them so)
    queued_at: Timestamp | None = None
    backordered_at: Timestamp


class LineReleased(_Decision):
    """``quantity`` reserved units of a line went back to ``supplier_id``'s stock."""

    TYPE: ClassVar[str] = "dropship.line.released.v1"

    order_id: Id
    line_id: Id
    sku: Id
    supplier_id: Id
    quantity: Quantity
    reason: Text
    backordered_after: BackorderedAfter = 0
    released_at: Timestamp


class BackorderDropped(_Decision):
    """The answer to a ``backorder_only`` release: of the ``requested`` backordered units
    of a line, ``quantity`` were dropped (fewer if stock served some meanwhile; 0 if the
    line was gone). Always sent, so the order agent knows the release was applied."""

    TYPE: ClassVar[str] = "dropship.line.backorder_dropped.v1"

    order_id: Id
    line_id: Id
    sku: Id
    requested: Quantity
    quantity: Annotated[int, Field(ge=0)]
    reason: Text
    backordered_after: BackorderedAfter = 0
    dropped_at: Timestamp


class SupplierStockChanged(Event):
    """A (supplier, sku) stock budget after a change: what the supplier last reported
    (or 0 after an out-of-stock rejection), the reserved units that report does not
    count (not accepted by the supplier by then), and what remains to allocate
    (never below 0).

    ``version`` counts the sku's changes (1, 2, ...; shared by its suppliers): a
    consumer keeps the highest it has seen per (supplier, sku).
    """

    TYPE: ClassVar[str] = "dropship.stock.changed.v1"
    TOPIC: ClassVar[str] = STOCK
    SOURCE_KIND: ClassVar[SourceKind] = "dropship"
    SUBJECT: ClassVar[str] = "sku"

    supplier_id: Id
    sku: Id
    version: Annotated[int, Field(ge=1)]
    reported_available: Annotated[int, Field(ge=0)]
    reserved: Annotated[int, Field(ge=0)]
    remaining: Annotated[int, Field(ge=0)]
    report_as_of: Timestamp
    changed_at: Timestamp
