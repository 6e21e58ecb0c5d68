"""What shops see of an order: its status, the reason shown with it, its ledger, and
the snapshot (``OrderStatusChanged``) published when any of it changes (pure).

Who calls it: the order rules, at the end of every step, and checkers. The status
is derived from the state (first rule that applies wins, see
``docs/order-lifecycle.md``, "States"), never set by a transition.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

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
from events.types import Money


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


def ledger_of(order: Order) -> Ledger:
    """The order's money, each amount with its currency's decimals."""
    return Ledger(currency=order.currency, **_ledger_amounts(order))


def _ledger_amounts(order: Order) -> dict[str, Decimal]:
    paid, refunded, due = order.paid(), order.refunded, order.due()
    amounts = {"subtotal": order.subtotal, "shipping": order.shipping, "tax": order.tax,
               "discount": order.discount, "total": order.total(), "credited": order.credited(),
               "written_off": order.written_off, "due": due, "paid": paid, "refunded": refunded,
               "outstanding": max(ZERO, due - (paid - refunded))}
    return {k: money.major(money.minor(v, order.currency), order.currency)
            for k, v in amounts.items()}


def line_status(order: Order, ln: Line) -> LineStatus:
    fields = _line_fields(order, ln)
    held: tuple[tuple[str, int], ...] = fields.pop("allocations")  # type: ignore[assignment]
    return LineStatus.model_validate({**fields, "allocations": tuple(
        SupplierUnits(supplier_id=s, quantity=q) for s, q in held)})


def _line_fields(order: Order, ln: Line) -> dict[str, object]:
    """What a line's status shows, as plain values (allocations as (supplier, units))."""
    held = tuple((s, q) for s in sorted(ln.reserved) if (q := ln.holding(s)))[:MAX_SUPPLIERS]
    return {
        "line_id": ln.line_id, "sku": ln.sku, "quantity": ln.quantity,
        "allocated": ln.allocated, "backordered": ln.waiting, "shipped": ln.shipped,
        "delivered": ln.delivered, "returned": ln.returned, "cancelled": ln.cancelled,
        "suppliers": tuple(s for s, _ in held), "allocations": held,
        "reroutes": ln.reroutes, "held_for_ops": ln.held, "value": ln.goods + ln.shipping,
        "credited": money.major(ln.credited_value(order.currency), order.currency),
        "queued_at": ln.queued_at if ln.waiting else None}


def shown(order: Order, *, with_note: bool = True) -> tuple[object, ...]:
    """Everything :func:`status_event` shows of ``order`` but its version, previous
    status and time, as plain values (the step's note left out unless ``with_note``):
    orders with equal ``shown`` publish equal snapshots. The order rules compare
    these to publish only on a change, building no snapshot for a step that
    changes nothing shops see."""
    live = {so.supplier_id for so in order.supplier_orders.values() if so.live}
    return (
        order.order_id, order.shop_id, status_of(order), reason_of(order, with_note=with_note),
        tuple(tuple(_line_fields(order, ln).values()) for ln in order.lines.values()),
        tuple(sorted(live))[:MAX_SUPPLIERS], _tracking(order),
        (order.total(), order.currency) if order.currency else None,
        order.placed_at, order.paid_at, order.customer_ref, order.ship_to,
        tuple(_ledger_amounts(order).values()) if order.currency else None, order.late)


def _tracking(order: Order) -> tuple[str, ...]:
    """The latest tracking numbers, if there are ever more than fit."""
    return tuple(s.tracking_number for s in order.shipments.values())[-MAX_TRACKING_NUMBERS:]


def status_event(order: Order, now: datetime) -> OrderStatusChanged:
    """The snapshot shops receive: status, reason, every line, suppliers, tracking
    numbers, the ship-to address, the ledger and whether a shipment is late."""
    live = [so for so in order.supplier_orders.values() if so.live]
    return OrderStatusChanged(
        order_id=order.order_id, shop_id=order.shop_id, version=order.version + 1,
        status=status_of(order), previous_status=order.last_status, reason=reason_of(order),
        lines=tuple(line_status(order, ln) for ln in order.lines.values()),
        suppliers=tuple(sorted({so.supplier_id for so in live}))[:MAX_SUPPLIERS],
        tracking_numbers=_tracking(order),
        total=Money(amount=order.total(), currency=order.currency) if order.currency else None,
        placed_at=order.placed_at, paid_at=order.paid_at, customer_ref=order.customer_ref,
        ship_to=order.ship_to, ledger=ledger_of(order) if order.currency else None,
        late=order.late, changed_at=now,
    )
