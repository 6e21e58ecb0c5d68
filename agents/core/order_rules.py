"""The order lifecycle: pure transitions of an :class:`~agents.core.orders.Order`.

The order agent calls :func:`decide` for every event it consumes (shop events,
supplier events, allocation decisions) and :func:`due` when a deadline may
have passed. Both return the new order and the outputs: messages to publish
(commands to the allocation agent, supplier orders, status changes, refunds)
and :class:`Refused` verdicts that the agent dead-letters with their reason.
``now`` is the cause's time (or the clock, for deadlines): nothing reads a clock.
States, transitions and every event -> effect are in ``docs/order-lifecycle.md``.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from agents.core import order_shipping as shipping
from agents.core.orders import (
    Held,
    Line,
    Order,
    Output,
    Policy,
    Refused,
    Result,
    SupplierOrder,
    own_supplier_order,
    status_event,
    with_line,
    with_supplier_order,
)
from events.allocation import (
    AllocateLine,
    LineAllocated,
    LineBackordered,
    LineReleased,
    ReleaseLine,
)
from events.base import Message
from events.fulfillment import (
    CancelCause,
    SupplierOrderCancelled,
    SupplierOrderLine,
    SupplierOrderRequested,
)
from events.orders import (
    DeliveryConfirmed,
    OrderCancelled,
    OrderPlaced,
    PaymentConfirmed,
    ReturnRequested,
)
from events.suppliers import (
    ReturnReceived,
    ShipmentDelivered,
    ShipmentDispatched,
    SupplierOrderAccepted,
    SupplierOrderRejected,
)
from events.types import Money

# --- entry points -------------------------------------------------------------

def decide(order: Order, message: Message, now: datetime, policy: Policy,
           sender: str | None = None) -> Result:
    """Apply one event, then any held event it unblocks; publish the status if it changed.

    ``sender`` is the event's CloudEvents source: a shop's event about an order of
    another shop (an order id two shops use) is refused, not applied; None (tests
    of other rules) skips that check, except for an ``OrderPlaced``'s own shop id.
    """
    before = order
    foreign = _foreign(order, message, sender)
    if foreign is not None:
        return order, [foreign]
    if not _applicable(order, message):
        return _hold(order, message, now, policy, sender)
    order, out = _apply(order, message, now, policy)
    order, more = _apply_held(order, policy)
    return _with_status(before, order, [*out, *more], now)


def due(order: Order, now: datetime, policy: Policy) -> Result:
    """Fire every deadline at or before ``now``: payment window, supplier SLAs, held events."""
    before, out = order, list[Output]()
    if order.placed_at and not order.paid_at and not order.payment_held \
            and not order.cancelled and order.placed_at + policy.payment_window <= now:
        order, out = _cancel(order, f"not paid within {_hours(policy.payment_window)}", now)
    for so in sorted(order.supplier_orders.values(), key=lambda s: s.supplier_order_id):
        if not so.live or order.cancelled:
            continue
        if so.state == "requested" and so.acknowledge_by <= now:
            order, more = _failover(order, so, f"{so.supplier_id} did not accept in time",
                                    "acknowledge_sla_missed", now, policy)
            out += more
        elif not so.fully_shipped and so.dispatch_by <= now:
            order, more = _failover(order, so, f"{so.supplier_id} did not dispatch in time",
                                    "dispatch_sla_missed", now, policy)
            out += more
    stale = [h for h in order.held if h.held_at + policy.hold_timeout <= now]
    if stale and not order.held_for_ops:
        order = replace(order, held_for_ops=True,
                        reason=f"{len(stale)} event(s) still waiting for their predecessor")
    return _with_status(before, order, out, now)


def fire(order: Order, instant: datetime, policy: Policy) -> tuple[Order, list[Output], int]:
    """:func:`due` at ``instant``, counted: returns (order, outputs, n), where n is the
    number of this firing among the order's firings that changed it (0 for the first),
    or -1 if this one changes nothing (the order is returned as it was).

    Who calls it: the order agent's deadline runner, and checkers replaying it. The
    number tells firings apart in the ids of what they derive.
    """
    after, out = due(order, instant, policy)
    if after == order and not out:
        return order, [], -1
    return replace(after, firings=order.firings + 1), out, order.firings


def next_deadline(order: Order, policy: Policy) -> datetime | None:
    """When :func:`due` next has something to do (None: nothing pending)."""
    times = []
    if order.placed_at and not order.paid_at and not order.payment_held and not order.cancelled:
        times.append(order.placed_at + policy.payment_window)
    if not order.cancelled:
        for so in order.supplier_orders.values():
            if so.live and so.state == "requested":
                times.append(so.acknowledge_by)
            if so.live and not so.fully_shipped:
                times.append(so.dispatch_by)
    if order.held and not order.held_for_ops:
        times.append(min(h.held_at for h in order.held) + policy.hold_timeout)
    return min(times) if times else None


# --- plumbing ------------------------------------------------------------------

def _applicable(order: Order, message: Message) -> bool:
    if isinstance(message, OrderPlaced):
        return True
    if not order.placed:
        return False
    return not (isinstance(message, DeliveryConfirmed) and not order.shipments)


SHOP_EVENTS = (OrderPlaced, PaymentConfirmed, OrderCancelled, ReturnRequested, DeliveryConfirmed)


def _foreign(order: Order, message: Message, sender: str | None) -> Refused | None:
    """A refusal if a shop's event is about a placed order of another shop."""
    if not order.placed or not isinstance(message, SHOP_EVENTS):
        return None
    if isinstance(message, OrderPlaced):
        sender = f"shop/{message.shop_id}"
    owner = f"shop/{order.shop_id}"
    if sender is None or sender == owner:
        return None
    return Refused(f"{message.TYPE} from {sender[:200]} is about order {order.order_id}, "
                   f"which belongs to {owner}")


def _hold(order: Order, message: Message, now: datetime, policy: Policy,
          sender: str | None = None) -> Result:
    if len(order.held) >= policy.max_held:
        return order, [Refused(f"{policy.max_held} events already wait for this order")]
    return replace(order, held=(*order.held, Held(message, now, now, sender))), []


def _apply_held(order: Order, policy: Policy) -> Result:
    out: list[Output] = []
    progress = True
    while progress:
        progress = False
        for held in order.held:
            foreign = _foreign(order, held.message, held.sender)
            if foreign is not None or _applicable(order, held.message):
                rest = tuple(h for h in order.held if h is not held)
                order, more = ((replace(order, held=rest), [foreign]) if foreign is not None
                               else _apply(replace(order, held=rest), held.message,
                                           held.time, policy))
                out += [replace(o, held=held.message) if isinstance(o, Refused) else o
                        for o in more]
                progress = True
                break
    if not order.held and order.held_for_ops:  # only the hold timeout sets the flag
        waiting = order.reason is not None and "waiting" in order.reason
        order = replace(order, held_for_ops=False, reason=None if waiting else order.reason)
    return order, out


def _with_status(before: Order, after: Order, out: list[Output], now: datetime) -> Result:
    """Append an ``OrderStatusChanged`` if anything shops see has changed."""
    if not after.placed:
        return after, out
    new = status_event(after, now)
    if before.placed:
        old = status_event(before, now)
        if old.model_copy(update={"previous_status": new.previous_status}) == new:
            return after, out
    return replace(after, last_status=new.status, version=new.version), [*out, new]


def _hours(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 3600:g} h"


# --- the transitions -------------------------------------------------------------

def _apply(order: Order, m: Message, now: datetime, policy: Policy) -> Result:
    if isinstance(m, OrderPlaced):
        return _placed(order, m, now)
    if isinstance(m, PaymentConfirmed):
        return _paid(order, m, now)
    if isinstance(m, LineAllocated | LineBackordered | LineReleased):
        return _decision(order, m, now)
    if isinstance(m, SupplierOrderAccepted | SupplierOrderRejected):
        return _supplier_answer(order, m, now, policy)
    if isinstance(m, ShipmentDispatched):
        return shipping.dispatched(order, m)
    if isinstance(m, ShipmentDelivered | DeliveryConfirmed):
        return shipping.delivered(order, m, now)
    if isinstance(m, OrderCancelled):
        if any(ln.shipped for ln in order.lines.values()):
            return replace(order, reason="cancellation refused: already dispatched, "
                                         "request a return instead"), []
        return _cancel(order, f"cancelled by the shop: {m.reason}", now)
    if isinstance(m, ReturnRequested):
        return shipping.return_requested(order, m, now, policy)
    if isinstance(m, ReturnReceived):
        return shipping.return_received(order, m, now)
    return order, []


def _placed(order: Order, m: OrderPlaced, now: datetime) -> Result:
    if order.placed:
        return order, []  # the same order placed again under another event id
    lines = {ln.line_id: Line(ln.line_id, ln.sku, ln.quantity, ln.unit_price.amount)
             for ln in m.lines}
    order = replace(order, shop_id=m.shop_id, currency=m.currency, ship_to=m.ship_to,
                    placed_at=m.placed_at, lines=lines)
    return order, [AllocateLine(order_id=m.order_id, line_id=ln.line_id, sku=ln.sku,
                                quantity=ln.quantity, ship_to_country=m.ship_to.country,
                                requested_at=now) for ln in m.lines]


def _paid(order: Order, m: PaymentConfirmed, now: datetime) -> Result:
    if order.paid_at or order.cancelled:
        return order, ([] if order.paid_at else [Refused("payment for a cancelled order")])
    total = Money(amount=order.total(), currency=order.currency)
    if m.amount.currency != total.currency or m.amount.amount != total.amount:
        return replace(order, payment_held=True, reason=(
            f"payment {m.amount.amount} {m.amount.currency} does not match the order total "
            f"{total.amount} {total.currency}")), []
    return _forward(replace(order, paid_at=m.paid_at, payment_held=False, reason=None), now)


def _decision(order: Order, m: LineAllocated | LineBackordered | LineReleased,
              now: datetime) -> Result:
    line = order.lines.get(m.line_id)
    if line is None:
        return order, [Refused(f"decision for unknown line {m.line_id}")]
    line = replace(line, backordered=m.backordered_after)
    out: list[Output] = []
    if isinstance(m, LineAllocated):
        line = replace(line, reserved={**line.reserved,
                                       m.supplier_id: line.reserved.get(m.supplier_id, 0)
                                       + m.quantity},
                       slas={**line.slas, m.supplier_id: (m.acknowledge_sla_hours,
                                                          m.dispatch_sla_hours)})
        if order.cancelled:  # reserved after the order was cancelled: give it back
            out.append(ReleaseLine(order_id=order.order_id, line_id=line.line_id, sku=line.sku,
                                   supplier_id=m.supplier_id, quantity=m.quantity,
                                   reason="order cancelled", requested_at=now))
    elif isinstance(m, LineReleased):
        left = max(0, line.reserved.get(m.supplier_id, 0) - m.quantity)
        line = replace(line, reserved={**line.reserved, m.supplier_id: left})
    order, more = _forward(with_line(order, line), now)
    return order, [*out, *more]


def _forward(order: Order, now: datetime) -> Result:
    """Once paid: one supplier order per supplier for reserved units not yet routed."""
    if not order.paid_at or order.cancelled:
        return order, []
    out: list[Output] = []
    suppliers = sorted({s for ln in order.lines.values() for s in ln.reserved})
    for supplier in suppliers:
        todo = {ln.line_id: ln.reserved.get(supplier, 0) - order.routed(ln.line_id, supplier)
                for ln in order.lines.values() if supplier not in ln.excluded and not ln.held}
        todo = {k: v for k, v in todo.items() if v > 0}
        if not todo:
            continue
        ack = min(order.lines[k].slas.get(supplier, (24, 72))[0] for k in todo)
        dispatch = min(order.lines[k].slas.get(supplier, (24, 72))[1] for k in todo)
        so = SupplierOrder(order.supplier_order_id(supplier), supplier, todo, now,
                           now + timedelta(hours=ack), now + timedelta(hours=dispatch))
        order = with_supplier_order(order, so)
        assert order.ship_to is not None
        out.append(SupplierOrderRequested(
            supplier_order_id=so.supplier_order_id, supplier_id=supplier,
            order_id=order.order_id, ship_to=order.ship_to,
            lines=tuple(SupplierOrderLine(line_id=k, sku=order.lines[k].sku, quantity=v)
                        for k, v in sorted(todo.items())),
            acknowledge_by=so.acknowledge_by, dispatch_by=so.dispatch_by, requested_at=now))
    return order, out


def _supplier_answer(order: Order, m: SupplierOrderAccepted | SupplierOrderRejected,
                     now: datetime, policy: Policy) -> Result:
    so = own_supplier_order(order, m.supplier_order_id, m.supplier_id)
    if isinstance(so, Refused):
        return order, [so]
    if isinstance(m, SupplierOrderAccepted):
        return (with_supplier_order(order, replace(so, state="accepted")) if so.state == "requested"
                else order), []
    return _failover(order, so, f"{so.supplier_id} rejected: {m.reason}", "rejected", now,
                     policy)


def _failover(order: Order, so: SupplierOrder, reason: str, cause: CancelCause,
              now: datetime, policy: Policy) -> Result:
    """Cancel a supplier order; release and re-allocate its unshipped units elsewhere."""
    out: list[Output] = [SupplierOrderCancelled(
        supplier_order_id=so.supplier_order_id, supplier_id=so.supplier_id,
        order_id=order.order_id, reason=reason[:500], cause=cause, cancelled_at=now)]
    order = with_supplier_order(order, replace(so, state="cancelled"))
    for line_id in sorted(so.lines):
        units = so.unshipped(line_id)
        if units <= 0:
            continue
        line = order.lines[line_id]
        line = replace(line, excluded=line.excluded | {so.supplier_id}, reroutes=line.reroutes + 1)
        out.append(ReleaseLine(order_id=order.order_id, line_id=line_id, sku=line.sku,
                               supplier_id=so.supplier_id, quantity=units, reason=reason[:500],
                               requested_at=now))
        if line.reroutes > policy.max_reroutes:
            line = replace(line, held=True)
            reason = f"line {line_id} held for ops after {line.reroutes} re-routes"
            if line.backordered:  # nobody will be asked for this line again: drop its queue
                out.append(ReleaseLine(order_id=order.order_id, line_id=line_id, sku=line.sku,
                                       quantity=line.backordered, reason=reason,
                                       requested_at=now))
        else:
            out.append(AllocateLine(order_id=order.order_id, line_id=line_id, sku=line.sku,
                                    quantity=units, ship_to_country=_country(order),
                                    excluded_suppliers=tuple(sorted(line.excluded)),
                                    requested_at=now))
        order = with_line(order, line)
    return replace(order, reason=reason[:500]), out


def _country(order: Order) -> str:
    assert order.ship_to is not None
    return order.ship_to.country


def _cancel(order: Order, reason: str, now: datetime) -> Result:
    out: list[Output] = []
    for so in sorted(order.supplier_orders.values(), key=lambda s: s.supplier_order_id):
        if so.live:
            out.append(SupplierOrderCancelled(
                supplier_order_id=so.supplier_order_id, supplier_id=so.supplier_id,
                order_id=order.order_id, reason=reason[:500], cancelled_at=now))
            order = with_supplier_order(order, replace(so, state="cancelled"))
    out += [ReleaseLine(order_id=order.order_id, line_id=ln.line_id, sku=ln.sku,
                        reason=reason[:500], requested_at=now)
            for ln in order.lines.values()]
    return replace(order, cancelled=True, reason=reason[:500]), out


