"""The order's parcels: dispatches, deliveries, late deliveries, delivery exceptions and
shipments the order no longer expected (pure transitions).

Called by :mod:`agents.core.order_rules`; same contract as its ``decide``. Every
supplier fact the order accepts is published as it accepted it
(``SupplierOrderUpdated``, ``ShipmentUpdated``): read models are built from those,
never from raw supplier events, which may be refused. The policy is in
``docs/order-lifecycle.md``, "Delivery":

- a shipment is expected by dispatch time + the largest transit days of its lines
  at its supplier (``Policy.default_transit`` when the offer does not say); past
  ``deliver_by`` (+ ``Policy.late_grace``) undelivered, it is late;
- a lost, damaged or returned-to-sender shipment's units are sent again (the
  failing supplier stays a candidate: the carrier failed) while the line has been
  re-shipped fewer than ``Policy.max_reships`` times, else cancelled and refunded;
- a shipment of a cancelled supplier order (a failover, a cancellation) is accepted:
  what the line then holds beyond what it wants is given back (unshipped supplier
  orders cancelled, ``superseded``); if that is not enough (both shipped, or the
  units were cancelled), the order is flagged for ops.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from agents.core import order_ledger as ledger
from agents.core import order_supply as supply
from agents.core.orders import (
    Order,
    Output,
    Policy,
    Refused,
    Result,
    Shipment,
    SupplierOrder,
    own_supplier_order,
    shipment_key,
    with_line,
    with_supplier_order,
)
from events.allocation import CommitLine
from events.fulfillment import ShipmentUpdated, SupplierOrderAnswer, SupplierOrderUpdated
from events.orders import DeliveryConfirmed, LineQuantity
from events.suppliers import (
    ShipmentDelivered,
    ShipmentDispatched,
    ShipmentFailed,
    SupplierOrderAccepted,
    SupplierOrderRejected,
)


def commits(order: Order, so: SupplierOrder, accepted_at: datetime,
            now: datetime) -> list[Output]:
    """``CommitLine`` per line of ``so``: its supplier took those units at ``accepted_at``."""
    return [CommitLine(order_id=order.order_id, line_id=k, sku=order.lines[k].sku,
                       supplier_id=so.supplier_id, quantity=n, accepted_at=accepted_at,
                       requested_at=now)
            for k, n in sorted(so.lines.items()) if n > 0]


def answered(order: Order, so: SupplierOrder, state: SupplierOrderAnswer, at: datetime,
             now: datetime, reason: str | None = None) -> SupplierOrderUpdated:
    """The supplier's answer or dispatch, as the order accepted it."""
    return SupplierOrderUpdated(order_id=order.order_id, supplier_order_id=so.supplier_order_id,
                                supplier_id=so.supplier_id, state=state,
                                reason=reason[:500] if reason else None, at=at, changed_at=now)


def updated(order: Order, key: str, now: datetime, reason: str | None = None,
            ) -> list[Output]:
    """The shipment as the order now sees it (nothing for one recorded before shipments
    had times)."""
    s = order.shipments[key]
    if s.dispatched_at is None or s.expected_by is None or s.deliver_by is None:
        return []
    return [ShipmentUpdated(
        order_id=order.order_id, shop_id=order.shop_id, supplier_id=s.supplier_id,
        supplier_order_id=s.supplier_order_id, shipment_id=s.shipment_id, carrier=s.carrier,
        tracking_number=s.tracking_number,
        lines=tuple(LineQuantity(line_id=k, quantity=v) for k, v in sorted(s.lines.items())),
        state=s.state, dispatched_at=s.dispatched_at, expected_by=s.expected_by,
        deliver_by=s.deliver_by, delivered_at=s.delivered_at, exception=s.exception,
        flagged=s.flagged, reason=reason[:500] if reason else None, changed_at=now)]


def _with_shipment(order: Order, key: str, shipment: Shipment) -> Order:
    return replace(order, shipments={**order.shipments, key: shipment})


def known(order: Order, m: ShipmentDelivered | ShipmentFailed) -> bool:
    """The shipment a delivery or an exception is about was dispatched (else it is held)."""
    return shipment_key(m.supplier_id, m.shipment_id) in order.shipments


def supplier_answer(order: Order, m: SupplierOrderAccepted | SupplierOrderRejected,
                    now: datetime, policy: Policy) -> Result:
    """A supplier's answer to a live supplier order routed to it: an acceptance in time
    commits its lines; a late acceptance commits them too (the supplier holds the units)
    and fails it over; a rejection fails it over (an out-of-stock rejection zeroes that
    supplier's budget for the sku, ``out_of_stock_at``)."""
    so = own_supplier_order(order, m.supplier_order_id, m.supplier_id)
    if isinstance(so, Refused):
        return order, [so]
    if isinstance(m, SupplierOrderAccepted):
        if so.state != "requested":
            return order, []
        if m.accepted_at > so.acknowledge_by:  # within the grace, but too late
            # it took the units all the same: committed at its acceptance, the release
            # that follows keeps them used there until it reports again
            taken = commits(order, so, m.accepted_at, now)
            order, out = supply.failover(order, so, f"{so.supplier_id} accepted after its "
                                         "deadline", "acknowledge_sla_missed", now, policy)
            return order, [*taken, *out]
        return with_supplier_order(order, replace(so, state="accepted")), [
            answered(order, so, "accepted", m.accepted_at, now),
            *commits(order, so, m.accepted_at, now)]
    reason = f"{so.supplier_id} rejected: {m.reason}" + (f" ({m.detail})" if m.detail else "")
    order, out = supply.failover(
        order, so, reason, "rejected", now, policy,
        out_of_stock_at=m.rejected_at if m.reason == "out_of_stock" else None)
    return order, [answered(order, so, "rejected", m.rejected_at, now, m.reason),
                   *out]


# --- dispatch ------------------------------------------------------------------------------

def dispatched(order: Order, m: ShipmentDispatched, now: datetime, policy: Policy) -> Result:
    """A parcel of a supplier order routed to this supplier, live or cancelled (a late
    shipment after a failover or a cancellation is accepted and reconciled)."""
    so = order.supplier_orders.get(m.supplier_order_id)
    if so is None or so.supplier_id != m.supplier_id:
        return order, [Refused(f"supplier order {m.supplier_order_id} was not routed to "
                               f"{m.supplier_id}")]
    key = shipment_key(m.supplier_id, m.shipment_id)
    if key in order.shipments:
        return order, []
    for item in m.lines:
        if item.line_id not in so.lines:
            return order, [Refused(f"line {item.line_id} is not in {so.supplier_order_id}")]
        if item.quantity > so.unshipped(item.line_id):
            return order, [Refused(
                f"{item.quantity} units of line {item.line_id} shipped, only "
                f"{so.unshipped(item.line_id)} routed to {so.supplier_id} and unshipped")]
    out: list[Output] = []
    if so.state == "requested":  # shipped without accepting first: it took the units now
        out += commits(order, so, m.dispatched_at, now)
    shipped = {**so.shipped}
    for item in m.lines:
        shipped[item.line_id] = shipped.get(item.line_id, 0) + item.quantity
        line = order.lines[item.line_id]
        order = with_line(order, replace(line, shipped=line.shipped + item.quantity))
    after = replace(so, shipped=shipped)
    if so.live:
        after = replace(after, state="dispatched" if after.fully_shipped else "accepted")
    order = with_supplier_order(order, after)
    transit = max((timedelta(days=order.lines[i.line_id].transit[so.supplier_id])
                   if so.supplier_id in order.lines[i.line_id].transit
                   else policy.default_transit for i in m.lines), default=policy.default_transit)
    expected = m.dispatched_at + transit
    order = _with_shipment(order, key, Shipment(
        m.shipment_id, m.supplier_id, {i.line_id: i.quantity for i in m.lines}, m.carrier,
        m.tracking_number, supplier_order_id=so.supplier_order_id,
        dispatched_at=m.dispatched_at, expected_by=expected,
        deliver_by=expected + policy.late_grace))
    out.insert(0, answered(order, after, "dispatched" if after.fully_shipped
                           else "partially_dispatched", m.dispatched_at, now))
    reason = None
    if not so.live:
        order, more, reason = _reconcile(order, key, so, now)
        out += more
    return order, [*out, *updated(order, key, now, reason)]


def _reconcile(order: Order, key: str, so: SupplierOrder,
               now: datetime) -> tuple[Order, list[Output], str]:
    """A shipment of the cancelled supplier order ``so`` was accepted: its units count as
    its supplier's again (the allocation agent had released them: the supplier's next
    stock report counts them as gone), and what its lines now hold beyond what they
    want is given back; units shipped beyond what is wanted flag the order for ops."""
    shipment = order.shipments[key]
    supplier = shipment.supplier_id
    what = f"shipment {shipment.tracking_number} of {supplier}"
    why = f"came after {so.supplier_order_id} was cancelled ({so.cause or 'cancelled'})"
    out: list[Output] = []
    over: list[str] = []
    for line_id in sorted(shipment.lines):
        line = order.lines[line_id]
        if line.released_all:  # the order was cancelled whole: nothing left to give back
            over.append(line_id)
            continue
        stray = order.sent_to(line_id, supplier) - line.holding(supplier)
        if stray > 0:
            line = replace(line, reserved={**line.reserved,
                                           supplier: line.reserved.get(supplier, 0) + stray})
        excess = line.allocated + line.queued - line.wanted
        if excess > 0 and line.queued:
            line, cmd = supply.release(order, line, None, min(excess, line.queued),
                                       f"{what} {why}", now, backorder_only=True)
            out.append(cmd)
            excess = line.allocated + line.queued - line.wanted
        order = with_line(order, line)
        if excess > 0:
            order, more, _ = supply.shed(order, line_id, excess, f"superseded: {what} {why}",
                                         now, "superseded")
            out += more
        if order.lines[line_id].shipped > order.lines[line_id].wanted:
            over.append(line_id)
    if not over:
        return replace(order, note=f"{what} accepted: it {why}; its units are no longer "
                                   "asked of others"[:500]), out, f"{what} {why}"
    others = sorted(k for k, s in order.shipments.items()
                    if k != key and s.exception is None and set(s.lines) & set(over))
    tracking = ", ".join(order.shipments[k].tracking_number for k in others)
    flag = (f"{what} {why}: line(s) {', '.join(over)} shipped beyond what is wanted"
            + (f"; also shipped: {tracking}" if tracking else "") + "; ops to decide")[:500]
    for k in [key, *others]:
        if not order.shipments[k].flagged:
            order = _with_shipment(order, k, replace(order.shipments[k], flagged=True))
            if k != key:
                out += updated(order, k, now, flag)
    return replace(order, flag=flag, held_for_ops=True, hold_reason=flag, note=flag), out, flag


# --- delivery, lateness, exceptions ----------------------------------------------------------

def delivered(order: Order, m: ShipmentDelivered | DeliveryConfirmed, now: datetime) -> Result:
    """The carrier delivered a shipment, or the shop confirms every shipment not failed."""
    if isinstance(m, ShipmentDelivered):
        key = shipment_key(m.supplier_id, m.shipment_id)
        shipment = order.shipments.get(key)
        if shipment is None:
            return order, [Refused(f"shipment {m.shipment_id} is not {m.supplier_id}'s")]
        if shipment.exception is not None:
            return order, [Refused(f"shipment {m.shipment_id} was reported "
                                   f"{shipment.exception}")]
        targets, when = [key], m.delivered_at
    else:
        targets = [k for k, s in sorted(order.shipments.items()) if s.exception is None]
        when = m.confirmed_at
    out: list[Output] = []
    for key in targets:
        shipment = order.shipments[key]
        if shipment.delivered:
            continue
        for line_id, units in shipment.lines.items():
            line = order.lines[line_id]
            order = with_line(order, replace(line, delivered=line.delivered + units,
                                             delivered_at=now))
        order = _with_shipment(order, key, replace(shipment, delivered=True, delivered_at=when))
        out += updated(order, key, now)
    if order.delivered_at is None and all(ln.delivered >= ln.wanted
                                          for ln in order.lines.values()):
        order = replace(order, delivered_at=now)
    return order, out


def overdue(order: Order, now: datetime) -> Result:
    """Shipments past their ``deliver_by`` and neither delivered nor failed become late."""
    out: list[Output] = []
    for key, s in sorted(order.shipments.items()):
        if s.moving and not s.late and s.deliver_by is not None and s.deliver_by <= now:
            order = _with_shipment(order, key, replace(s, late=True))
            reason = f"shipment {s.tracking_number} not delivered by {s.deliver_by.isoformat()}"
            out += updated(order, key, now, reason)
            order = replace(order, note=reason)
    return order, out


def next_overdue(order: Order) -> datetime | None:
    """When a shipment in transit next becomes late."""
    times = [s.deliver_by for s in order.shipments.values()
             if s.moving and not s.late and s.deliver_by is not None]
    return min(times) if times else None


def failed(order: Order, m: ShipmentFailed, now: datetime, policy: Policy) -> Result:
    """A delivery exception: the shipment's units are sent again (an ``AllocateLine``,
    the failing supplier still a candidate) while the line was re-shipped fewer than
    ``policy.max_reships`` times, else cancelled and refunded (``delivery_failed``).
    Units the line no longer needs (it was shipped twice) are neither."""
    key = shipment_key(m.supplier_id, m.shipment_id)
    shipment = order.shipments.get(key)
    if shipment is None:
        return order, [Refused(f"shipment {m.shipment_id} is not {m.supplier_id}'s")]
    if shipment.delivered:
        return order, [Refused(f"shipment {m.shipment_id} was delivered")]
    if shipment.exception is not None:
        return order, []  # reported again
    order = _with_shipment(order, key, replace(shipment, exception=m.exception))
    out: list[Output] = []
    sent: list[str] = []
    refund: dict[str, int] = {}
    for line_id, units in sorted(shipment.lines.items()):
        line = order.lines[line_id]
        line = replace(line, shipped=line.shipped - units, failed=line.failed + units)
        need = min(units, max(0, line.wanted - line.allocated - line.waiting))
        if need and line.reships < policy.max_reships and not order.cancelled:
            line = replace(line, reships=line.reships + 1)
            out.append(supply.allocate(order, line, need, now))
            sent.append(f"{need} unit(s) of line {line_id} sent again")
        elif need:
            line = replace(line, cancelled=line.cancelled + need)
            refund[line_id] = need
        order = with_line(order, line)
    what = f"shipment {shipment.tracking_number} {m.exception.replace('_', ' ')}"
    note = "; ".join([what, *sent, *(f"{n} unit(s) of line {k} refunded"
                                     for k, n in refund.items())])
    order = replace(order, note=note[:500])
    out = [*updated(order, key, now, what), *out]
    if refund:
        order, credited = ledger.credit(order, refund, with_shipping=True)
        if all(ln.wanted == 0 for ln in order.lines.values()):
            order = replace(order, cancelled=True)
        order, refunds = ledger.settle(order, now, "delivery_failed", credited, reason=note)
        out += refunds
    return order, out
