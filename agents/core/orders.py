"""The order's state and its status: plain values, no I/O.

An :class:`Order` holds each line's progress (units reserved per supplier,
backordered, shipped, delivered, returned), the supplier orders it was routed
to, the returns, the deadlines and any event held until its predecessor
arrives. ``agents.core.order_rules`` moves it from event to event;
:func:`status_of` derives the status shops see, so no transition sets it by hand.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

from events.base import Message
from events.fulfillment import (
    MAX_SUPPLIERS,
    MAX_TRACKING_NUMBERS,
    LineStatus,
    OrderStatus,
    OrderStatusChanged,
    SupplierUnits,
)
from events.types import Address, Money

SupplierOrderState = Literal["requested", "accepted", "dispatched", "cancelled"]


@dataclass(frozen=True)
class Policy:
    """The business settings the rules need (from ``pipeline.settings``)."""

    payment_window: timedelta = timedelta(hours=1)
    return_window: timedelta = timedelta(days=30)
    max_reroutes: int = 3
    hold_timeout: timedelta = timedelta(hours=1)
    max_held: int = 50


@dataclass(frozen=True)
class Line:
    line_id: str
    sku: str
    quantity: int
    unit_price: Decimal
    reserved: dict[str, int] = field(default_factory=dict)  # supplier -> units reserved
    #: supplier -> (acknowledge SLA, dispatch SLA) in hours, from its offer
    slas: dict[str, tuple[int, int]] = field(default_factory=dict)
    backordered: int = 0
    shipped: int = 0
    delivered: int = 0
    returned: int = 0  # units under an authorized return
    excluded: frozenset[str] = frozenset()
    reroutes: int = 0
    held: bool = False


@dataclass(frozen=True)
class SupplierOrder:
    supplier_order_id: str
    supplier_id: str
    lines: dict[str, int]  # line id -> units
    requested_at: datetime
    acknowledge_by: datetime
    dispatch_by: datetime
    state: SupplierOrderState = "requested"
    shipped: dict[str, int] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        return self.state != "cancelled"

    def unshipped(self, line_id: str) -> int:
        return self.lines.get(line_id, 0) - self.shipped.get(line_id, 0)

    @property
    def fully_shipped(self) -> bool:
        return all(self.unshipped(ln) == 0 for ln in self.lines)


@dataclass(frozen=True)
class Shipment:
    shipment_id: str
    supplier_id: str
    lines: dict[str, int]
    carrier: str
    tracking_number: str
    delivered: bool = False


@dataclass(frozen=True)
class Return:
    rma_id: str
    lines: dict[str, int]
    by_supplier: dict[str, dict[str, int]]  # supplier -> line id -> units
    received: frozenset[str] = frozenset()  # suppliers that received their part
    refunded: Decimal = Decimal(0)


@dataclass(frozen=True)
class Held:
    """An event kept until the one it depends on has been applied."""

    message: Message
    time: datetime
    held_at: datetime
    sender: str | None = None  # the CloudEvents source it came from (a shop may act
    #                            only on its own orders; checked when it is released)


@dataclass(frozen=True)
class Order:
    order_id: str
    shop_id: str = ""
    currency: str = ""
    ship_to: Address | None = None
    placed_at: datetime | None = None
    lines: dict[str, Line] = field(default_factory=dict)
    paid_at: datetime | None = None
    payment_held: bool = False
    cancelled: bool = False
    delivered_at: datetime | None = None
    supplier_orders: dict[str, SupplierOrder] = field(default_factory=dict)
    shipments: dict[str, Shipment] = field(default_factory=dict)
    returns: dict[str, Return] = field(default_factory=dict)
    held: tuple[Held, ...] = ()
    held_for_ops: bool = False
    reason: str | None = None
    last_status: OrderStatus | None = None
    version: int = 0  # status snapshots published so far (OrderStatusChanged.version)
    #: Deadline firings that changed the order so far. Each firing derives its events'
    #: ids from its number, as two firings can share an instant (an event applied late
    #: can bring a deadline equal to, or before, one already fired).
    firings: int = 0

    @property
    def placed(self) -> bool:
        return self.placed_at is not None

    def total(self) -> Decimal:
        return sum((ln.unit_price * ln.quantity for ln in self.lines.values()), Decimal(0))

    def routed(self, line_id: str, supplier_id: str) -> int:
        """Units of a line in live supplier orders of ``supplier_id`` (shipped or not)."""
        return sum(so.lines.get(line_id, 0) for so in self.supplier_orders.values()
                   if so.live and so.supplier_id == supplier_id)

    def supplier_order_id(self, supplier_id: str) -> str:
        """A deterministic id for the next supplier order of this order to ``supplier_id``."""
        digest = hashlib.sha256(
            f"{self.order_id}/{supplier_id}/{len(self.supplier_orders)}".encode()).hexdigest()
        return f"so-{digest[:24]}"


def status_of(order: Order) -> OrderStatus:
    """The status shops see, derived from the state (first rule that applies wins)."""
    lines = order.lines.values()
    open_returns = [r for r in order.returns.values() if r.received != set(r.by_supplier)]
    if order.cancelled:
        return "cancelled"
    if order.returns:
        return "return_requested" if open_returns else "refunded"
    if lines and all(ln.delivered >= ln.quantity for ln in lines):
        return "delivered"
    if any(ln.shipped for ln in lines):
        return "dispatched" if all(ln.shipped >= ln.quantity for ln in lines) \
            else "partially_dispatched"
    if order.held_for_ops or any(ln.held for ln in lines):
        return "held_for_ops"
    if order.payment_held:
        return "payment_held"
    if order.paid_at and any(so.live for so in order.supplier_orders.values()):
        return "sent_to_supplier"
    if any(ln.backordered for ln in lines):
        return "backordered"
    if lines and all(sum(ln.reserved.values()) >= ln.quantity for ln in lines):
        return "allocated"
    return "paid" if order.paid_at else "placed"


def status_event(order: Order, now: datetime) -> OrderStatusChanged:
    """The snapshot shops receive: status, reason, every line, suppliers, tracking numbers."""
    live = [so for so in order.supplier_orders.values() if so.live]
    return OrderStatusChanged(
        order_id=order.order_id, shop_id=order.shop_id, version=order.version + 1,
        status=status_of(order),
        previous_status=order.last_status, reason=order.reason,
        lines=tuple(
            LineStatus(line_id=ln.line_id, sku=ln.sku, quantity=ln.quantity,
                       allocated=sum(ln.reserved.values()), backordered=ln.backordered,
                       shipped=ln.shipped, delivered=ln.delivered, returned=ln.returned,
                       suppliers=tuple(sorted(s for s, q in ln.reserved.items() if q))[
                           :MAX_SUPPLIERS],
                       allocations=tuple(SupplierUnits(supplier_id=s, quantity=q)
                                         for s, q in sorted(ln.reserved.items()) if q)[
                           :MAX_SUPPLIERS],
                       reroutes=ln.reroutes, held_for_ops=ln.held)
            for ln in order.lines.values()),
        suppliers=tuple(sorted({so.supplier_id for so in live}))[:MAX_SUPPLIERS],
        tracking_numbers=tuple(  # the latest ones, if there are ever more than fit
            s.tracking_number for s in order.shipments.values())[-MAX_TRACKING_NUMBERS:],
        total=Money(amount=order.total(), currency=order.currency) if order.currency else None,
        placed_at=order.placed_at, paid_at=order.paid_at, changed_at=now,
    )


@dataclass(frozen=True)
class Refused:
    """An event is not acceptable; the agent dead-letters it with ``reason``.

    ``held`` is set when the refused event is one that was held and has just been
    released by the consumed event (the dead letter then carries the held one).
    """

    reason: str
    held: Message | None = None


Output = Message | Refused
Result = tuple[Order, list[Output]]


def shipment_key(supplier_id: str, shipment_id: str) -> str:
    """Shipments are known by supplier and id: two suppliers may reuse an id."""
    return f"{supplier_id}/{shipment_id}"


def with_line(order: Order, line: Line) -> Order:
    return replace(order, lines={**order.lines, line.line_id: line})


def with_supplier_order(order: Order, so: SupplierOrder) -> Order:
    return replace(order, supplier_orders={**order.supplier_orders, so.supplier_order_id: so})


def own_supplier_order(order: Order, so_id: str, supplier: str) -> SupplierOrder | Refused:
    """The live supplier order ``so_id`` if it was routed to ``supplier``, else a refusal."""
    so = order.supplier_orders.get(so_id)
    if so is None or so.supplier_id != supplier:
        return Refused(f"supplier order {so_id} was not routed to {supplier}")
    if not so.live:
        return Refused(f"supplier order {so_id} was cancelled")
    return so
