"""What shops see of an order: its status, the reason shown with it, its ledger, and
the snapshot (``OrderStatusChanged``) published when any of it changes (pure).

Who calls it: the order rules, at the end of every step, and checkers. The status
is derived from the state (first rule that applies wins, see
``docs/order-lifecycle.md``, "States"), never set by a transition.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

from agents.core import money
from agents.core.orders import ZERO, Line, Order
from events.fulfillment import (
    MAX_SUPPLIERS,
    MAX_TRACKING_NUMBERS,
    Ledger,
    LineStatus,
    OrderStatus,
    OrderStatusChanged,
    SupplierUnits,
)
from events.types import Address, Money


def status_of(order: Order) -> OrderStatus:
    """The status shops see, derived from the state (first rule that applies wins)."""
    lines = [ln for ln in order.lines.values() if ln.wanted > 0]
    if order.cancelled or (order.lines and not lines):
        return "cancelled"
    if any(r.open for r in order.returns.values()):
        return "return_requested"
    if lines and all(ln.delivered >= ln.wanted for ln in lines):
        return _after_delivery(order)
    if any(ln.shipped for ln in lines):
        return "dispatched" if all(ln.shipped >= ln.wanted for ln in lines) \
            else "partially_dispatched"
    if order.held_for_ops or any(ln.held for ln in lines):
        return "held_for_ops"
    if order.short:
        return "payment_held"
    return _before_dispatch(order, lines)


def _after_delivery(order: Order) -> OrderStatus:
    if order.refunded and order.credited():
        kept = any(ln.credited_goods < ln.quantity for ln in order.lines.values())
        return "partially_refunded" if kept else "refunded"
    return "delivered"


def _before_dispatch(order: Order, lines: list[Line]) -> OrderStatus:
    allocated = bool(lines) and all(ln.allocated >= ln.wanted for ln in lines)
    if not order.paid_at:
        return "backordered" if any(ln.waiting for ln in lines) else \
            "allocated" if allocated else "placed"
    if any(so.live for so in order.supplier_orders.values()):
        return "sent_to_supplier"
    if any(ln.waiting for ln in lines):
        return "backordered"
    if order.supplier_orders:  # sent once, being re-routed: never back to "paid"
        return "sent_to_supplier"
    return "allocated" if allocated else "paid"


def reason_of(order: Order, *, with_note: bool = True) -> str | None:
    """The reason shown with the status: the current step's note (unless not
    ``with_note``), else why it is held (or flagged for ops)."""
    if with_note and order.note is not None:
        return order.note
    status = status_of(order)
    if status == "held_for_ops":
        return order.hold_reason or next(
            (f"line {ln.line_id} held for ops after {ln.reroutes} re-routes"
             for ln in order.lines.values() if ln.held), None)
    if status == "payment_held":
        return (f"paid {order.paid() - order.refunded} of {order.due()} {order.currency}; "
                f"waiting for the balance")
    return order.flag  # ops must look at it, whatever its status


class Amounts(NamedTuple):
    """An order's ledger amounts, each with its currency's decimals."""

    subtotal: Decimal
    shipping: Decimal
    tax: Decimal
    discount: Decimal
    total: Decimal
    credited: Decimal
    written_off: Decimal
    due: Decimal
    paid: Decimal
    refunded: Decimal
    outstanding: Decimal


class LineShown(NamedTuple):
    """What a line's status shows, as plain values (allocations as (supplier, units))."""

    line_id: str
    sku: str
    quantity: int
    allocated: int
    backordered: int
    shipped: int
    delivered: int
    returned: int
    cancelled: int
    suppliers: tuple[str, ...]
    allocations: tuple[tuple[str, int], ...]
    reroutes: int
    held_for_ops: bool
    value: Decimal
    credited: Decimal
    queued_at: datetime | None


class Shown(NamedTuple):
    """Everything the snapshot shows of an order but its version, previous status
    and time, as plain values: orders with equal ``Shown`` publish equal snapshots."""

    order_id: str
    shop_id: str
    status: OrderStatus
    reason: str | None
    lines: tuple[LineShown, ...]
    suppliers: tuple[str, ...]
    tracking: tuple[str, ...]
    total: Decimal | None
    currency: str | None
    placed_at: datetime | None
    paid_at: datetime | None
    customer_ref: str | None
    ship_to: Address | None
    ledger: Amounts | None
    late: bool


def _amounts(order: Order) -> Amounts:
    paid, refunded, due = order.paid(), order.refunded, order.due()
    cur = order.currency

    def rounded(v: Decimal) -> Decimal:
        return money.major(money.minor(v, cur), cur)

    return Amounts(*map(rounded, (
        order.subtotal, order.shipping, order.tax, order.discount, order.total(),
        order.credited(), order.written_off, due, paid, refunded,
        max(ZERO, due - (paid - refunded)))))


def _line_shown(order: Order, ln: Line) -> LineShown:
    held = tuple((s, q) for s in sorted(ln.reserved) if (q := ln.holding(s)))[:MAX_SUPPLIERS]
    return LineShown(
        line_id=ln.line_id, sku=ln.sku, quantity=ln.quantity,
        allocated=ln.allocated, backordered=ln.waiting, shipped=ln.shipped,
        delivered=ln.delivered, returned=ln.returned, cancelled=ln.cancelled,
        suppliers=tuple(s for s, _ in held), allocations=held,
        reroutes=ln.reroutes, held_for_ops=ln.held, value=ln.goods + ln.shipping,
        credited=money.major(ln.credited_value(order.currency), order.currency),
        queued_at=ln.queued_at if ln.waiting else None)


def line_status(shown_line: LineShown) -> LineStatus:
    """The published form of one line's :class:`LineShown`."""
    return LineStatus.model_validate({**shown_line._asdict(), "allocations": tuple(
        SupplierUnits(supplier_id=s, quantity=q) for s, q in shown_line.allocations)})


def shown(order: Order, *, with_note: bool = True) -> Shown:
    """Everything :func:`status_event` shows of ``order`` (the step's note left out
    unless ``with_note``). The order rules compare these to publish only on a
    change, and build the snapshot from the same value, so a publishing step
    computes what shops see once."""
    live = {so.supplier_id for so in order.supplier_orders.values() if so.live}
    return Shown(
        order_id=order.order_id, shop_id=order.shop_id, status=status_of(order),
        reason=reason_of(order, with_note=with_note),
        lines=tuple(_line_shown(order, ln) for ln in order.lines.values()),
        suppliers=tuple(sorted(live))[:MAX_SUPPLIERS], tracking=_tracking(order),
        total=order.total() if order.currency else None, currency=order.currency or None,
        placed_at=order.placed_at, paid_at=order.paid_at, customer_ref=order.customer_ref,
        ship_to=order.ship_to, ledger=_amounts(order) if order.currency else None,
        late=order.late)


def _tracking(order: Order) -> tuple[str, ...]:
    """The latest tracking numbers, if there are ever more than fit."""
    return tuple(s.tracking_number for s in order.shipments.values())[-MAX_TRACKING_NUMBERS:]


def status_event(order: Order, now: datetime, seen: Shown | None = None) -> OrderStatusChanged:
    """The snapshot shops receive: status, reason, every line, suppliers, tracking
    numbers, the ship-to address, the ledger and whether a shipment is late.
    ``seen`` is ``shown(order)`` when the caller has it already."""
    v = seen if seen is not None else shown(order)
    return OrderStatusChanged(
        order_id=v.order_id, shop_id=v.shop_id, version=order.version + 1,
        status=v.status, previous_status=order.last_status, reason=v.reason,
        lines=tuple(map(line_status, v.lines)), suppliers=v.suppliers,
        tracking_numbers=v.tracking,
        total=Money(amount=v.total, currency=v.currency)
        if v.total is not None and v.currency else None,
        placed_at=v.placed_at, paid_at=v.paid_at, customer_ref=v.customer_ref,
        ship_to=v.ship_to,
        ledger=Ledger(currency=v.currency, **v.ledger._asdict())
        if v.ledger is not None and v.currency else None,
        late=v.late, changed_at=now,
    )
