"""The order lifecycle: pure transitions of an :class:`~agents.core.orders.Order`.

The order agent calls :func:`decide` for every event it consumes (shop events,
supplier events, allocation decisions, ops commands) and :func:`fire` when a
deadline may have passed. Both return the new order and the outputs: messages
to publish (commands to the allocation agent, supplier orders, status changes,
refunds) and :class:`Refused` verdicts that the agent dead-letters with their
reason. Nothing reads a clock: a step runs at ``max(cause time, order clock)``
(the deadline instant, for deadlines), and that is the time of everything it
derives. States, transitions, the money rules and every event -> effect are in
``docs/order-lifecycle.md``.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import datetime, timedelta

from agents.core import money
from agents.core import order_delivery as delivery
from agents.core import order_ledger as ledger
from agents.core import order_shipping as shipping
from agents.core import order_supply as supply
from agents.core.order_status import shown, status_event
from agents.core.orders import (
    Held,
    Line,
    Order,
    Output,
    Policy,
    Refused,
    Result,
)
from events.allocation import (
    AllocateLine,
    BackorderDropped,
    LineAllocated,
    LineBackordered,
    LineReleased,
)
from events.base import Message
from events.fulfillment import RefundCause
from events.ops import CancelOrder, CloseReturn, ReleasePayment, RerouteLine
from events.orders import (
    DeliveryConfirmed,
    LineQuantity,
    OrderCancelled,
    OrderPlaced,
    PaymentConfirmed,
    ReturnRequested,
)
from events.suppliers import (
    ReturnReceived,
    ShipmentDelivered,
    ShipmentDispatched,
    ShipmentFailed,
    SupplierOrderAccepted,
    SupplierOrderRejected,
)

SHOP_EVENTS = (OrderPlaced, PaymentConfirmed, OrderCancelled, ReturnRequested, DeliveryConfirmed)
OPS_COMMANDS = (ReleasePayment, CancelOrder, RerouteLine, CloseReturn)

# --- entry points -------------------------------------------------------------

def decide(order: Order, message: Message, now: datetime, policy: Policy,
           sender: str | None = None) -> Result:
    """Apply one event, then any held event it unblocks; publish the status if what
    shops see changed.

    ``sender`` is the event's CloudEvents source: a shop's event about an order of
    another shop (an order id two shops use) is refused, not applied; None (tests
    of other rules) skips that check, except for an ``OrderPlaced``'s own shop id.
    An event refused outright leaves the order as it was; any other advances its
    clock and step (see :mod:`agents.core.orders`).
    """
    refusal = _foreign(order, message, sender)
    if refusal is None and isinstance(message, OPS_COMMANDS) and not order.placed:
        refusal = Refused(f"order {order.order_id} is unknown")
    if refusal is not None:
        return order, [refusal]
    start = _begin(order, now)
    if not _applicable(order, message):
        held, out = _hold(start, message, policy, sender)
        return (order, out) if out else (held, out)
    after, out = _apply(start, message, start.clock or now, policy, sender)
    if after is start and all(isinstance(o, Refused) for o in out):
        return order, out
    after, more = _apply_held(after, policy)
    return _finish(order, after, [*out, *more])


def due(order: Order, now: datetime, policy: Policy) -> Result:
    """Fire every deadline at or before ``now``: payment windows, supplier SLAs,
    backorders, late shipments, held events. An order with nothing due is returned as
    it was."""
    work = _begin(order, now)
    now = work.clock or now
    out: list[Output] = []
    if work.placed_at and not work.paid_at and not work.short and not work.cancelled \
            and work.placed_at + policy.payment_window <= now:
        work, out = supply.cancel_all(work, f"not paid within {_hours(policy.payment_window)}",
                                      now, "payment_window_closed")
    elif work.short and work.short_since and \
            work.short_since + policy.held_payment_window <= now:
        work, out = supply.cancel_all(
            work, f"payment incomplete after {_hours(policy.held_payment_window)}", now,
            "payment_expired")
    for so in sorted(work.supplier_orders.values(), key=lambda s: s.supplier_order_id):
        if not so.live or work.cancelled:
            continue
        if so.state == "requested" and so.acknowledge_by + policy.sla_grace <= now:
            work, more = supply.failover(work, so, f"{so.supplier_id} did not accept in time",
                                         "acknowledge_sla_missed", now, policy)
            out += more
        elif not so.fully_shipped and so.dispatch_by + policy.sla_grace <= now:
            work, more = supply.failover(work, so, f"{so.supplier_id} did not dispatch in time",
                                         "dispatch_sla_missed", now, policy)
            out += more
    work, more = _expire_backorders(work, now, policy)
    out += more
    work, more = delivery.overdue(work, now)
    out += more
    stale = [h for h in work.held if h.held_at + policy.hold_timeout <= now]
    if stale and not work.held_for_ops:
        work = replace(work, held_for_ops=True, hold_reason=(
            f"{len(stale)} event(s) still waiting for their predecessor"))
    if not out and _unchanged(work, order):
        return order, []
    return _finish(order, work, out)


def fire(order: Order, instant: datetime, policy: Policy) -> tuple[Order, list[Output], int]:
    """:func:`due` at ``instant``, counted: returns (order, outputs, n), where n is the
    number of this firing among the order's firings that changed it (0 for the first),
    or -1 if this one changes nothing (the order is returned as it was).

    Who calls it: the order agent's deadline runner, and checkers replaying it. The
    number tells firings apart in the ids of what they derive.
    """
    after, out = due(order, instant, policy)
    if after is order:
        return order, [], -1
    return replace(after, firings=order.firings + 1), out, order.firings


def next_deadline(order: Order, policy: Policy) -> datetime | None:
    """When :func:`due` next has something to do (None: nothing pending)."""
    times = []
    if order.placed_at and not order.paid_at and not order.short and not order.cancelled:
        times.append(order.placed_at + policy.payment_window)
    if order.short and order.short_since:
        times.append(order.short_since + policy.held_payment_window)
    if not order.cancelled:
        for so in order.supplier_orders.values():
            if so.live and so.state == "requested":
                times.append(so.acknowledge_by + policy.sla_grace)
            if so.live and not so.fully_shipped:
                times.append(so.dispatch_by + policy.sla_grace)
        times += [ln.backordered_since + policy.backorder_window
                  for ln in order.lines.values() if ln.waiting and ln.backordered_since]
    if order.held and not order.held_for_ops:
        times.append(min(h.held_at for h in order.held) + policy.hold_timeout)
    late = delivery.next_overdue(order)
    if late is not None:
        times.append(late)
    return min(times) if times else None


# --- plumbing ------------------------------------------------------------------

def _begin(order: Order, now: datetime) -> Order:
    """A new step: the clock never goes back; the last step's reason is done."""
    clock = now if order.clock is None else max(now, order.clock)
    return replace(order, clock=clock, step=order.step + 1, note=None)


def _unchanged(after: Order, before: Order) -> bool:
    return replace(after, clock=before.clock, step=before.step, note=before.note) == before


def _finish(before: Order, after: Order, out: list[Output]) -> Result:
    """End a step: send what is now paid and reserved, follow backorders, publish the
    status if what shops see changed."""
    now = after.clock
    assert now is not None
    after, sent = supply.forward(after, now)
    after = supply.track_backorders(after, now)
    out = [*out, *sent]
    if not after.placed:
        return after, out
    seen = shown(after)
    if before.placed and before.version == after.version \
            and shown(before, with_note=False) == seen:
        return after, out
    new = status_event(after, now, seen)
    return replace(after, last_status=new.status, version=new.version), [*out, new]


def _applicable(order: Order, message: Message) -> bool:
    if isinstance(message, OrderPlaced):
        return True
    if not order.placed:
        return False
    if isinstance(message, ShipmentDelivered | ShipmentFailed):
        return delivery.known(order, message)
    return not (isinstance(message, DeliveryConfirmed) and not order.shipments)


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


def _hold(order: Order, message: Message, policy: Policy, sender: str | None) -> Result:
    if len(order.held) >= policy.max_held:
        return order, [Refused(f"{policy.max_held} events already wait for this order")]
    assert order.clock is not None
    return replace(order, held=(*order.held, Held(message, order.clock, order.clock,
                                                  sender))), []


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
                                           order.clock or held.time, policy, held.sender))
                out += [replace(o, held=held.message) if isinstance(o, Refused) else o
                        for o in more]
                progress = True
                break
    if not order.held and order.held_for_ops and order.flag is None:
        # only the hold timeout sets it then (a flag for ops stays: ops decide)
        order = replace(order, held_for_ops=False, hold_reason=None)
    return order, out


def _hours(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 3600:g} h"


def _operator(sender: str | None) -> str:
    return (sender or "ops/?").partition("/")[2] or "?"


# --- the transitions -------------------------------------------------------------

def _apply(order: Order, m: Message, now: datetime, policy: Policy,
           sender: str | None = None) -> Result:
    if isinstance(m, OrderPlaced):
        return _placed(order, m, now)
    if isinstance(m, PaymentConfirmed):
        return ledger.pay(order, m, now)
    if isinstance(m, LineAllocated | LineBackordered | LineReleased | BackorderDropped):
        return supply.decision(order, m, now, policy)
    if isinstance(m, SupplierOrderAccepted | SupplierOrderRejected):
        return delivery.supplier_answer(order, m, now, policy)
    if isinstance(m, ShipmentDispatched):
        return delivery.dispatched(order, m, now, policy)
    if isinstance(m, ShipmentDelivered | DeliveryConfirmed):
        return delivery.delivered(order, m, now)
    if isinstance(m, ShipmentFailed):
        return delivery.failed(order, m, now, policy)
    if isinstance(m, OrderCancelled):
        return _cancelled(order, m.lines, f"cancelled by the shop: {m.reason}", now,
                          "lines_cancelled" if m.lines else "order_cancelled")
    if isinstance(m, ReturnRequested):
        return shipping.return_requested(order, m, now, policy)
    if isinstance(m, ReturnReceived):
        return shipping.return_received(order, m, now)
    if isinstance(m, OPS_COMMANDS):
        return _ops(order, m, now, _operator(sender))
    return order, []


def _placed(order: Order, m: OrderPlaced, now: datetime) -> Result:
    fingerprint = hashlib.sha256(m.model_dump_json().encode()).hexdigest()
    if order.placed:
        if fingerprint == order.placement:
            return order, []  # the same order placed again under another event id
        return order, [Refused(f"order {m.order_id} was already placed with other content; "
                               "an order cannot be changed by placing it again")]
    cur = m.currency
    subtotals = [money.minor(ln.unit_price.amount * ln.quantity, cur) for ln in m.lines]
    values = money.line_values(subtotals, money.minor(m.amount("discount"), cur),
                               money.minor(m.amount("tax"), cur),
                               money.minor(m.amount("shipping"), cur))
    lines = {ln.line_id: Line(ln.line_id, ln.sku, ln.quantity, ln.unit_price.amount,
                              goods=money.major(goods, cur), shipping=money.major(ship, cur))
             for ln, (goods, ship) in zip(m.lines, values, strict=True)}
    order = replace(order, shop_id=m.shop_id, currency=cur, ship_to=m.ship_to,
                    customer_ref=m.customer_ref, placed_at=m.placed_at, placement=fingerprint,
                    subtotal=m.subtotal(), shipping=m.amount("shipping"), tax=m.amount("tax"),
                    discount=m.amount("discount"), lines=lines)
    return order, [AllocateLine(order_id=m.order_id, line_id=ln.line_id, sku=ln.sku,
                                quantity=ln.quantity, ship_to_country=m.ship_to.country,
                                requested_at=now) for ln in m.lines]


def _cancelled(order: Order, lines: tuple[LineQuantity, ...], reason: str, now: datetime,
               refund: RefundCause) -> Result:
    """A cancellation, by the shop or ops: without ``lines`` every unit not shipped (the
    order), else those units of those lines; refunded with ``refund`` (the whole order:
    ``order_cancelled`` when the shop cancels)."""
    unknown = [ln.line_id for ln in lines if ln.line_id not in order.lines]
    if unknown:
        return order, [Refused(f"cannot cancel unknown line {unknown[0]}")]
    units = ({ln.line_id: ln.quantity for ln in lines} if lines
             else {ln.line_id: ln.wanted for ln in order.lines.values()})
    return _cancel_or_explain(order, units, reason, now, refund, whole=not lines)


def _cancel_or_explain(order: Order, units: dict[str, int], reason: str, now: datetime,
                       refund: RefundCause, whole: bool) -> Result:
    """Cancel what can be (never shipped units), say what cannot."""
    if order.cancelled:
        return order, []  # already done
    room = {k: min(n, order.lines[k].wanted - order.lines[k].shipped) for k, n in units.items()}
    if not any(n > 0 for n in room.values()):
        return replace(order, note="cancellation refused: already dispatched, request a "
                                   "return instead"), []
    if whole and not any(ln.shipped for ln in order.lines.values()):
        return supply.cancel_all(order, reason, now, refund)
    order, out = supply.cancel_units(order, units, reason, now, refund,
                                     "order_cancelled" if whole else "lines_cancelled")
    kept = ", ".join(f"{n - max(0, room[k])} of line {k}" for k, n in sorted(units.items())
                     if n > room[k] and order.lines[k].shipped)
    if kept:
        order = replace(order, note=f"{reason}; already dispatched, not cancelled: {kept}"[:500])
    return order, out


def _ops(order: Order, m: Message, now: datetime, operator: str) -> Result:
    """Ops commands (``events.ops``): each names the operator in its reason."""
    if isinstance(m, ReleasePayment):
        if not order.short:
            return order, [Refused(f"order {order.order_id} has no held payment")]
        order = ledger.write_off(order, now)
        return replace(order, note=f"payment released by {operator}: {m.reason}"[:500]), []
    if isinstance(m, CancelOrder):
        return _cancelled(order, m.lines, f"cancelled by {operator}: {m.reason}", now,
                          "ops_cancelled")
    if isinstance(m, RerouteLine):
        return supply.reroute(order, m.line_id, m.supplier_id,
                              f"line {m.line_id} re-routed to {m.supplier_id} by {operator}: "
                              f"{m.reason}", now)
    if isinstance(m, CloseReturn):
        return shipping.close_return(order, m, now, operator)
    return order, []


def _expire_backorders(order: Order, now: datetime, policy: Policy) -> Result:
    out: list[Output] = []
    if order.cancelled:
        return order, out
    for line in list(order.lines.values()):
        if line.waiting and line.backordered_since and \
                line.backordered_since + policy.backorder_window <= now:
            order, more = supply.cancel_units(
                order, {line.line_id: line.waiting},
                f"line {line.line_id}: {line.waiting} unit(s) backordered for over "
                f"{policy.backorder_window.days} days, cancelled", now, "backorder_expired")
            out += more
    return order, out
