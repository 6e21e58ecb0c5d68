"""The order after dispatch: shipments, deliveries and returns (pure transitions).

Called by :func:`agents.core.order_rules.decide`; same contract: each returns
the new order and its outputs, and refuses what it cannot accept.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from decimal import Decimal

from agents.core.orders import (
    Order,
    Output,
    Policy,
    Refused,
    Result,
    Return,
    Shipment,
    own_supplier_order,
    shipment_key,
    with_line,
    with_supplier_order,
)
from events.allocation import ReleaseLine
from events.fulfillment import RefundIssued, ReturnAuthorized
from events.orders import DeliveryConfirmed, LineQuantity, ReturnRequested
from events.suppliers import ReturnReceived, ShipmentDelivered, ShipmentDispatched
from events.types import Money


def dispatched(order: Order, m: ShipmentDispatched) -> Result:
    so = own_supplier_order(order, m.supplier_order_id, m.supplier_id)
    if isinstance(so, Refused):
        return order, [so]
    if shipment_key(m.supplier_id, m.shipment_id) in order.shipments:
        return order, []
    for item in m.lines:
        if item.line_id not in so.lines:
            return order, [Refused(f"line {item.line_id} is not in {so.supplier_order_id}")]
        if item.quantity > so.unshipped(item.line_id):
            return order, [Refused(
                f"{item.quantity} units of line {item.line_id} shipped, only "
                f"{so.unshipped(item.line_id)} routed to {so.supplier_id} and unshipped")]
    shipped = {**so.shipped}
    for item in m.lines:
        shipped[item.line_id] = shipped.get(item.line_id, 0) + item.quantity
        line = order.lines[item.line_id]
        order = with_line(order, replace(line, shipped=line.shipped + item.quantity))
    so = replace(so, shipped=shipped, state="accepted")
    so = replace(so, state="dispatched") if so.fully_shipped else so
    shipment = Shipment(m.shipment_id, m.supplier_id, {i.line_id: i.quantity for i in m.lines},
                        m.carrier, m.tracking_number)
    order = replace(with_supplier_order(order, so),
                    shipments={**order.shipments,
                               shipment_key(m.supplier_id, m.shipment_id): shipment})
    return order, []


def delivered(order: Order, m: ShipmentDelivered | DeliveryConfirmed, now: datetime) -> Result:
    if isinstance(m, ShipmentDelivered):
        shipment = order.shipments.get(shipment_key(m.supplier_id, m.shipment_id))
        if shipment is None or shipment.supplier_id != m.supplier_id:
            return order, [Refused(f"shipment {m.shipment_id} is not {m.supplier_id}'s")]
        targets = [shipment]
    else:
        targets = list(order.shipments.values())
    for shipment in targets:
        if shipment.delivered:
            continue
        for line_id, units in shipment.lines.items():
            line = order.lines[line_id]
            order = with_line(order, replace(line, delivered=line.delivered + units))
        key = shipment_key(shipment.supplier_id, shipment.shipment_id)
        order = replace(order, shipments={**order.shipments,
                                          key: replace(shipment, delivered=True)})
    if order.delivered_at is None and all(ln.delivered >= ln.quantity
                                          for ln in order.lines.values()):
        order = replace(order, delivered_at=now)
    return order, []


def return_requested(order: Order, m: ReturnRequested, now: datetime, policy: Policy) -> Result:
    if m.rma_id in order.returns:
        return order, []
    refusal = None
    if order.delivered_at is None:
        refusal = "nothing was delivered yet"
    elif m.requested_at > order.delivered_at + policy.return_window:
        refusal = f"the return window of {policy.return_window.days} days has closed"
    else:
        for item in m.lines:
            line = order.lines.get(item.line_id)
            if line is None or item.quantity > line.delivered - line.returned:
                refusal = f"line {item.line_id}: more units than delivered and not returned"
    if refusal:
        return replace(order, reason=f"return {m.rma_id} refused: {refusal}"), []
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
    rma = Return(m.rma_id, {i.line_id: i.quantity for i in m.lines}, by_supplier)
    order = replace(order, returns={**order.returns, m.rma_id: rma}, reason=None)
    return order, [ReturnAuthorized(
        rma_id=m.rma_id, supplier_id=s, order_id=order.order_id,
        lines=tuple(LineQuantity(line_id=k, quantity=v) for k, v in sorted(part.items())),
        authorized_at=now) for s, part in sorted(by_supplier.items())]


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
    amount = sum((order.lines[k].unit_price * v for k, v in got.items()), Decimal(0))
    out: list[Output] = [RefundIssued(order_id=order.order_id, shop_id=order.shop_id,
                                      rma_id=m.rma_id,
                                      amount=Money(amount=amount, currency=order.currency),
                                      issued_at=now)]
    if m.condition == "resellable":
        out += [ReleaseLine(order_id=order.order_id, line_id=k, sku=order.lines[k].sku,
                            supplier_id=m.supplier_id, quantity=v,
                            reason=f"restocked from return {m.rma_id}", requested_at=now)
                for k, v in sorted(got.items()) if v]
    rma = replace(rma, received=rma.received | {m.supplier_id}, refunded=rma.refunded + amount)
    return replace(order, returns={**order.returns, m.rma_id: rma}), out
