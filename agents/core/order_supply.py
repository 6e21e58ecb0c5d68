"""An order's units on their way to suppliers: allocation feedback, supplier orders,
failover, cancellation of units and re-routing (pure transitions).

Called by :mod:`agents.core.order_rules`; same contract as its ``decide``.

How the order's view of reservations stays right while commands and decisions
cross: a release the order asks for counts at once (``Line.releasing``) and is
confirmed by the allocation agent's ``LineReleased``; a decision that reserves
more than the line still wants (a cancellation overtook it) is given back at once;
a backorder counts only up to the units still wanted (``Line.waiting``). Supplier
orders never carry more units than the line still wants.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from agents.core import order_ledger as ledger
from agents.core.orders import (
    Line,
    Order,
    Output,
    Policy,
    Refused,
    Result,
    SupplierOrder,
    with_line,
    with_supplier_order,
)
from events.allocation import (
    AllocateLine,
    BackorderDropped,
    LineAllocated,
    LineBackordered,
    LineReleased,
    ReleaseLine,
)
from events.fulfillment import (
    CancelCause,
    RefundCause,
    SupplierOrderCancelled,
    SupplierOrderLine,
    SupplierOrderRequested,
)

Decision = LineAllocated | LineBackordered | LineReleased | BackorderDropped


def release(order: Order, line: Line, supplier: str | None, units: int | None, reason: str,
            now: datetime, backorder_only: bool = False,
            out_of_stock_at: datetime | None = None,
            returned: bool = False) -> tuple[Line, ReleaseLine]:
    """A release command; what it gives back stops counting at once (a supplier's units
    as ``releasing``, backordered units as ``dropping``) until the answer arrives.
    ``out_of_stock_at``: the supplier rejected for out of stock then (its budget for
    the sku is 0 until a later report); ``returned``: the units came back to the
    supplier (free there at once)."""
    if supplier is not None and units:
        line = replace(line, releasing={**line.releasing,
                                        supplier: line.releasing.get(supplier, 0) + units})
    elif backorder_only and units:
        line = replace(line, dropping=line.dropping + units)
    return line, ReleaseLine(order_id=order.order_id, line_id=line.line_id, sku=line.sku,
                             supplier_id=supplier, quantity=units, reason=reason[:500],
                             backorder_only=backorder_only, out_of_stock_at=out_of_stock_at,
                             returned=returned, requested_at=now)


def allocate(order: Order, line: Line, units: int, now: datetime,
             supplier: str | None = None) -> AllocateLine:
    """Ask for ``units`` more of a line, never from its excluded suppliers (only from
    ``supplier``, if given)."""
    assert order.ship_to is not None
    return AllocateLine(order_id=order.order_id, line_id=line.line_id, sku=line.sku,
                        quantity=units, ship_to_country=order.ship_to.country,
                        excluded_suppliers=tuple(sorted(line.excluded)), supplier_id=supplier,
                        requested_at=now)


# --- decisions -------------------------------------------------------------------------

def decision(order: Order, m: Decision, now: datetime, policy: Policy) -> Result:
    """Apply an allocation decision; give back what the line no longer wants."""
    line = order.lines.get(m.line_id)
    if line is None:
        return order, [Refused(f"decision for unknown line {m.line_id}")]
    # a line never has more units backordered than it has: a decision saying so is
    # read as all of them (so what the order asks back stays a valid quantity)
    line = replace(line, backordered=min(m.backordered_after, line.quantity))
    if isinstance(m, LineAllocated | LineBackordered) and m.queued_at is not None:
        line = replace(line, queued_at=m.queued_at)
    if isinstance(m, LineAllocated):
        line = replace(line, reserved={**line.reserved, m.supplier_id:
                                       line.reserved.get(m.supplier_id, 0) + m.quantity},
                       slas={**line.slas, m.supplier_id: (m.acknowledge_sla_hours,
                                                          m.dispatch_sla_hours)})
        if m.transit_days is not None:
            line = replace(line, transit={**line.transit, m.supplier_id: m.transit_days})
    elif isinstance(m, LineReleased):
        line = replace(
            line, reserved={**line.reserved,
                            m.supplier_id: max(0, line.reserved.get(m.supplier_id, 0)
                                               - m.quantity)},
            releasing={**line.releasing,
                       m.supplier_id: max(0, line.releasing.get(m.supplier_id, 0)
                                          - m.quantity)})
    elif isinstance(m, BackorderDropped):
        line = replace(line, dropping=max(0, line.dropping - m.requested))
    line, out = _give_back_excess(order, line, m, now)
    if isinstance(m, LineAllocated) and m.supplier_id in line.excluded \
            and line.pinned != m.supplier_id and not line.released_all:
        # made before a failover took the supplier out, answered after it: it goes too
        stray = min(m.quantity, line.holding(m.supplier_id)
                    - order.sent_to(line.line_id, m.supplier_id))
        if stray > 0:
            order, more = _away_from(order, line, m.supplier_id, stray,
                                     f"{m.supplier_id} is out for line {line.line_id}", now,
                                     policy)
            return order, [*out, *more]
    return with_line(order, line), out


def _give_back_excess(order: Order, line: Line, m: Decision,
                      now: datetime) -> tuple[Line, list[Output]]:
    """Units the allocation agent holds beyond what the line wants (a cancellation or a
    re-route overtook a decision): its backorder first, then this decision's reservation."""
    out: list[Output] = []
    excess = line.allocated + line.queued - line.wanted
    if line.released_all or excess <= 0:
        return line, out
    if line.queued:
        units = min(excess, line.queued)
        line, cmd = release(order, line, None, units, "no longer wanted", now,
                            backorder_only=True)
        out.append(cmd)
        excess -= units
    if excess > 0 and isinstance(m, LineAllocated) and line.holding(m.supplier_id):
        line, cmd = release(order, line, m.supplier_id,
                            min(excess, line.holding(m.supplier_id)), "no longer wanted", now)
        out.append(cmd)
    return line, out


def track_backorders(order: Order, now: datetime) -> Order:
    """Start (or stop) each line's backorder clock."""
    for line in order.lines.values():
        since = (line.backordered_since or now) if line.waiting else None
        if since != line.backordered_since:
            order = with_line(order, replace(line, backordered_since=since))
    return order


# --- supplier orders ---------------------------------------------------------------------

def forward(order: Order, now: datetime) -> Result:
    """Once paid: one supplier order per supplier for reserved units not yet sent, never
    more than a line still wants."""
    if not order.paid_at or order.cancelled:
        return order, []
    out: list[Output] = []
    # units of failed shipments are in supplier orders but no longer on their way
    free = {ln.line_id: ln.wanted - order.sent_to(ln.line_id) + ln.failed
            for ln in order.lines.values()}
    suppliers = sorted({s for ln in order.lines.values() for s in ln.reserved})
    for supplier in suppliers:
        todo = {}
        for ln in order.lines.values():
            if supplier in ln.excluded or ln.held:
                continue
            units = min(ln.holding(supplier) - order.sent_to(ln.line_id, supplier),
                        free[ln.line_id])
            if units > 0:
                todo[ln.line_id] = units
                free[ln.line_id] -= units
        if todo:
            order, request = _request(order, supplier, todo, now)
            out.append(request)
    return order, out


def _request(order: Order, supplier: str, todo: dict[str, int],
             now: datetime) -> tuple[Order, SupplierOrderRequested]:
    ack = min(order.lines[k].slas.get(supplier, (24, 72))[0] for k in todo)
    dispatch = min(order.lines[k].slas.get(supplier, (24, 72))[1] for k in todo)
    so = SupplierOrder(order.supplier_order_id(supplier), supplier, todo, now,
                       now + timedelta(hours=ack), now + timedelta(hours=dispatch))
    assert order.ship_to is not None
    return with_supplier_order(order, so), SupplierOrderRequested(
        supplier_order_id=so.supplier_order_id, supplier_id=supplier,
        order_id=order.order_id, ship_to=order.ship_to,
        lines=tuple(SupplierOrderLine(line_id=k, sku=order.lines[k].sku, quantity=v)
                    for k, v in sorted(todo.items())),
        acknowledge_by=so.acknowledge_by, dispatch_by=so.dispatch_by, requested_at=now)


def cancel_supplier_order(order: Order, so: SupplierOrder, reason: str, cause: CancelCause,
                          now: datetime) -> tuple[Order, SupplierOrderCancelled]:
    order = with_supplier_order(order, replace(so, state="cancelled", cause=cause))
    return order, SupplierOrderCancelled(
        supplier_order_id=so.supplier_order_id, supplier_id=so.supplier_id,
        order_id=order.order_id, reason=reason[:500], cause=cause, cancelled_at=now)


def failover(order: Order, so: SupplierOrder, reason: str, cause: CancelCause,
             now: datetime, policy: Policy, out_of_stock_at: datetime | None = None) -> Result:
    """Cancel a supplier order; its supplier is out for each of its lines (never asked
    for more of them): the order's unshipped units, and any units of those lines reserved
    there and not sent, are released there and asked for again elsewhere.

    Only this supplier order: another live supplier order of the same supplier (units of
    the line sent earlier or later) stands on its own answer and deadlines, so an
    accepted one is never cancelled for a sibling's miss. The allocation agent releases
    counts per line and supplier, so releasing exactly the units no live supplier order
    holds keeps its books and the order's alike.
    """
    order, cancelled = cancel_supplier_order(order, so, reason, cause, now)
    out: list[Output] = [cancelled]
    lines = sorted(k for k in so.lines if so.unshipped(k) > 0)
    for line_id in lines:
        line = order.lines[line_id]
        line = replace(line, excluded=line.excluded | {so.supplier_id},
                       reroutes=line.reroutes + 1, pinned=None)
        units = line.holding(so.supplier_id) - order.sent_to(line_id, so.supplier_id)
        order, more = _away_from(order, line, so.supplier_id, units, reason, now, policy,
                                 out_of_stock_at)
        out += more
    return replace(order, note=reason[:500]), out


def _away_from(order: Order, line: Line, supplier: str, units: int, reason: str,
               now: datetime, policy: Policy, out_of_stock_at: datetime | None = None) -> Result:
    """Release ``units`` of a line at ``supplier`` (excluded for it) and ask for them
    again elsewhere; past the re-route bound the line is held for ops instead."""
    out: list[Output] = []
    if units > 0:
        line, cmd = release(order, line, supplier, units, reason, now,
                            out_of_stock_at=out_of_stock_at)
        out.append(cmd)
    if line.reroutes > policy.max_reroutes:
        line = replace(line, held=True)
        if line.waiting:  # nobody will be asked for this line again: drop its queue
            line, cmd = release(order, line, None, line.waiting,
                                f"line {line.line_id} held for ops", now, backorder_only=True)
            out.append(cmd)
    elif units > 0 and not order.cancelled:
        out.append(allocate(order, line, units, now))
    return with_line(order, line), out


# --- cancelling units ----------------------------------------------------------------------

def cancel_all(order: Order, reason: str, now: datetime, refund: RefundCause) -> Result:
    """Cancel every unit not shipped yet. With nothing shipped the order is cancelled:
    every live supplier order is cancelled and each line released whole."""
    if any(ln.dispatched_any for ln in order.lines.values()):
        units = {ln.line_id: ln.wanted - ln.shipped for ln in order.lines.values()}
        return cancel_units(order, units, reason, now, refund, "order_cancelled")
    out: list[Output] = []
    for so in sorted(order.supplier_orders.values(), key=lambda s: s.supplier_order_id):
        if so.live:
            order, cancelled = cancel_supplier_order(order, so, reason, "order_cancelled", now)
            out.append(cancelled)
    for line in order.lines.values():
        line = replace(line, cancelled=line.quantity, released_all=True)
        line, cmd = release(order, line, None, None, reason, now)
        order = with_line(order, line)
        out.append(cmd)
    order, credited = ledger.credit(order, {k: ln.quantity for k, ln in order.lines.items()},
                                    with_shipping=True)
    order = replace(order, cancelled=True, note=reason[:500])
    order, refunds = ledger.settle(order, now, refund, credited, reason=reason)
    return order, [*out, *refunds]


def cancel_units(order: Order, units: dict[str, int], reason: str, now: datetime,
                 refund: RefundCause, cause: CancelCause = "lines_cancelled") -> Result:
    """Cancel up to ``units`` (line id -> units) of lines, never shipped ones, and refund
    them if paid. Taken first from units not at any supplier, then backordered, then
    reserved but not sent, then in supplier orders (cancelled, and what they hold of
    other units sent again)."""
    out: list[Output] = []
    taken: dict[str, int] = {}
    for line_id, wanted in units.items():
        line = order.lines[line_id]
        n = min(wanted, line.wanted - line.shipped)
        if n <= 0:
            continue
        taken[line_id] = n
        order, more = _take(order, line, n, reason, now, cause)
        out += more
    if not taken:
        return order, []
    order, credited = ledger.credit(order, taken, with_shipping=True)
    if all(ln.wanted == 0 for ln in order.lines.values()):
        order = replace(order, cancelled=True)
    order, refunds = ledger.settle(order, now, refund, credited, reason=reason)
    return replace(order, note=reason[:500]), [*out, *refunds]


def _take(order: Order, line: Line, n: int, reason: str, now: datetime,
          cause: CancelCause) -> Result:
    pending = max(0, line.wanted - line.allocated - line.waiting)
    left = n - min(n, pending)
    order, out, _ = shed(order, line.line_id, left, reason, now, cause)
    line = order.lines[line.line_id]
    return with_line(order, replace(line, cancelled=line.cancelled + n)), out


def shed(order: Order, line_id: str, left: int, reason: str, now: datetime,
         cause: CancelCause) -> tuple[Order, list[Output], int]:
    """Give back up to ``left`` unshipped units of a line: its backorder first, then units
    reserved and not sent, then units of live supplier orders (each cancelled with
    ``cause``, its units of the line released; what it held of other lines is sent
    again by :func:`forward`). Returns the order, the outputs, and what could not be
    given back (already shipped)."""
    out: list[Output] = []
    line = order.lines[line_id]
    if left and line.waiting:
        units = min(left, line.waiting)
        line, cmd = release(order, line, None, units, reason, now, backorder_only=True)
        out.append(cmd)
        left -= units
    for supplier in sorted(line.reserved):
        units = min(left, line.holding(supplier) - order.sent_to(line.line_id, supplier))
        if units > 0:
            line, cmd = release(order, line, supplier, units, reason, now)
            out.append(cmd)
            left -= units
    order = with_line(order, line)
    for so in sorted(order.supplier_orders.values(), key=lambda s: s.supplier_order_id):
        units = min(left, so.unshipped(line_id)) if so.live else 0
        if units > 0:
            order, cancelled = cancel_supplier_order(order, so, reason, cause, now)
            line, cmd = release(order, order.lines[line_id], so.supplier_id, units,
                                reason, now)
            order = with_line(order, line)
            out += [cancelled, cmd]
            left -= units
    return order, out, left


# --- ops: re-route a line ---------------------------------------------------------------------

def reroute(order: Order, line_id: str, supplier: str, reason: str, now: datetime) -> Result:
    """Every unshipped unit of a line not already at ``supplier`` goes there: taken back
    from other suppliers (their supplier orders cancelled), its backorder dropped, a hold
    lifted; ``supplier`` is no longer excluded for the line."""
    line = order.lines.get(line_id)
    if line is None or order.cancelled or line.wanted <= line.shipped:
        return order, [Refused(f"line {line_id} has no unit left to re-route")]
    out: list[Output] = []
    for so in sorted(order.supplier_orders.values(), key=lambda s: s.supplier_order_id):
        if so.live and so.supplier_id != supplier and so.unshipped(line_id) > 0:
            order, cancelled = cancel_supplier_order(order, so, reason, "rerouted_by_ops", now)
            out.append(cancelled)
    line = order.lines[line_id]
    for other in sorted(line.reserved):
        units = line.holding(other) - order.shipped_by(line_id, other)
        if other != supplier and units > 0:
            line, cmd = release(order, line, other, units, reason, now)
            out.append(cmd)
    if line.waiting:
        line, cmd = release(order, line, None, line.waiting, reason, now, backorder_only=True)
        out.append(cmd)
    move = line.wanted - line.shipped - (line.holding(supplier)
                                         - order.shipped_by(line_id, supplier))
    line = replace(line, held=False, pinned=supplier, excluded=line.excluded - {supplier},
                   backordered=0)
    if move > 0:
        out.append(allocate(order, line, move, now, supplier))
    return replace(with_line(order, line), note=reason[:500]), out
