"""The order after delivery: returns (pure transitions; parcels are in
:mod:`agents.core.order_delivery`).

Called by :func:`agents.core.order_rules.decide`; same contract: each returns
the new order and its outputs, and refuses what it cannot accept. Returns are
per line and unit: units may be returned as soon as they are delivered, within
the return window counted from the line's last delivery; received units are
refunded at their value (with their share of shipping when the return is the
seller's fault), see ``docs/order-lifecycle.md``.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from agents.core import order_ledger as ledger
from agents.core.order_supply import release
from agents.core.orders import (
    Order,
    Output,
    Policy,
    Refused,
    Result,
    Return,
    with_line,
)
from events.fulfillment import RefundIssued, ReturnAuthorized, ReturnUpdated
from events.ops import CloseReturn
from events.orders import SELLERS_FAULT, LineQuantity, ReturnRequested
from events.suppliers import ReturnReceived


def return_requested(order: Order, m: ReturnRequested, now: datetime, policy: Policy) -> Result:
    if m.rma_id in order.returns:
        return order, []
    refusal = _return_refusal(order, m, policy)
    if refusal:
        return replace(order, note=f"return {m.rma_id} refused: {refusal}"[:500]), []
    by_supplier: dict[str, dict[str, int]] = {}
    for item in m.lines:
        left = item.quantity
        for supplier, units in _returnable(order, item.line_id):  # first shipped first
            take = min(left, units)
            if take:
                part = by_supplier.setdefault(supplier, {})
                part[item.line_id] = part.get(item.line_id, 0) + take
                left -= take
        line = order.lines[item.line_id]
        order = with_line(order, replace(line, returned=line.returned + item.quantity))
    rma = Return(m.rma_id, {i.line_id: i.quantity for i in m.lines}, by_supplier,
                 sellers_fault=m.reason_code in SELLERS_FAULT)
    order = replace(order, returns={**order.returns, m.rma_id: rma})
    return order, [ReturnAuthorized(
        rma_id=m.rma_id, supplier_id=s, order_id=order.order_id,
        lines=tuple(LineQuantity(line_id=k, quantity=v) for k, v in sorted(part.items())),
        authorized_at=now) for s, part in sorted(by_supplier.items())]


def _return_refusal(order: Order, m: ReturnRequested, policy: Policy) -> str | None:
    for item in m.lines:
        line = order.lines.get(item.line_id)
        if line is None or line.delivered_at is None:
            return f"line {item.line_id}: nothing of it was delivered"
        if item.quantity > line.delivered - line.returned:
            return f"line {item.line_id}: more units than delivered and not returned"
        if m.requested_at > line.delivered_at + policy.return_window:
            return f"the return window of {policy.return_window.days} days has closed"
    return None


def _returnable(order: Order, line_id: str) -> list[tuple[str, int]]:
    """Per supplier, in shipping order: units of the line it delivered and that no
    earlier return has claimed yet."""
    delivered: dict[str, int] = {}
    for shipment in order.shipments.values():
        if shipment.delivered and shipment.lines.get(line_id):
            delivered[shipment.supplier_id] = (delivered.get(shipment.supplier_id, 0)
                                               + shipment.lines[line_id])
    for rma in order.returns.values():
        for supplier, part in rma.by_supplier.items():
            if supplier in delivered:
                delivered[supplier] -= part.get(line_id, 0)
    return [(s, n) for s, n in delivered.items() if n > 0]


def return_received(order: Order, m: ReturnReceived, now: datetime) -> Result:
    rma = order.returns.get(m.rma_id)
    part = rma.by_supplier.get(m.supplier_id) if rma else None
    if rma is None or part is None:
        return order, [Refused(f"no return {m.rma_id} was authorized to {m.supplier_id}")]
    if m.supplier_id in rma.received:
        return order, []
    got = {i.line_id: i.quantity for i in m.lines}
    if any(got.get(k, 0) > v for k, v in part.items()) or set(got) - set(part):
        return order, [Refused(f"return {m.rma_id} holds units that were not authorized")]
    out: list[Output] = []
    if rma.closed and not rma.refund_on_close:  # closed as kept, came back after all
        for line_id, units in got.items():
            line = order.lines[line_id]
            order = with_line(order, replace(line, returned=line.returned + units))
    if not rma.refund_on_close:
        order, out = _refund_return(order, rma, got, now, f"return {m.rma_id} received")
    if m.condition == "resellable":
        for line_id, units in sorted(got.items()):
            line, cmd = release(order, order.lines[line_id], m.supplier_id, units,
                                f"restocked from return {m.rma_id}", now, returned=True)
            order = with_line(order, line)
            out.append(cmd)
    rma = order.returns[m.rma_id]
    rma = replace(rma, received=rma.received | {m.supplier_id})
    receipt = ReturnUpdated(order_id=order.order_id, rma_id=m.rma_id, supplier_id=m.supplier_id,
                            state="received", condition=m.condition, lines=m.lines,
                            received_at=m.received_at, changed_at=now)
    return replace(order, returns={**order.returns, m.rma_id: rma}), [receipt, *out]


def _refund_return(order: Order, rma: Return, units: dict[str, int], now: datetime,
                   reason: str) -> Result:
    order, credited = ledger.credit(order, units, with_shipping=rma.sellers_fault)
    order, out = ledger.settle(order, now, "return", credited, rma_id=rma.rma_id, reason=reason)
    refunded = sum((r.amount.amount for r in out if isinstance(r, RefundIssued)),
                   rma.refunded)
    rma = replace(rma, refunded=refunded)
    return replace(order, returns={**order.returns, rma.rma_id: rma}), out


def close_return(order: Order, m: CloseReturn, now: datetime, operator: str) -> Result:
    """Ops end a return: the parts not received are refunded (``refund``) or stay with
    the customer."""
    rma = order.returns.get(m.rma_id)
    if rma is None or not rma.open:
        return order, [Refused(f"return {m.rma_id} is not open")]
    missing: dict[str, int] = {}
    for supplier, part in rma.by_supplier.items():
        if supplier not in rma.received:
            for line_id, units in part.items():
                missing[line_id] = missing.get(line_id, 0) + units
    note = f"return {m.rma_id} closed by {operator}: {m.reason}"
    out: list[Output] = []
    if m.refund:
        order, out = _refund_return(order, rma, missing, now, note)
    else:
        for line_id, units in missing.items():
            line = order.lines[line_id]
            order = with_line(order, replace(line, returned=line.returned - units))
    rma = replace(order.returns[m.rma_id], closed=True, refund_on_close=m.refund)
    return replace(order, returns={**order.returns, m.rma_id: rma}, note=note[:500]), out
