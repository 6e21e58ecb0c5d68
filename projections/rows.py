"""Events -> read-model rows: plain functions, no I/O.

:func:`rows_of` turns one decoded event (and where it was read) into the rows
it contributes, per read model. How a row merges with the one already stored
(snapshot version, newest update, first report wins, earliest wins, set union)
is decided by :mod:`projections.store`; here every row lists all the columns of
its table that the event knows, the others being ``None``.

What a supplier says (acceptances, rejections, dispatches, deliveries, delivery
exceptions, return receipts) reaches the read models only as the order agent
accepted it (``ShipmentUpdated``, ``SupplierOrderUpdated``, ``ReturnUpdated``): a
raw supplier event, which the order agent may refuse, is in the timeline only.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from events.allocation import (
    BackorderDropped,
    LineAllocated,
    LineBackordered,
    LineReleased,
    SupplierStockChanged,
)
from events.base import Message
from events.deadletter import DeadLetter
from events.envelope import CloudEvent, parse_sequence
from events.fulfillment import (
    OrderStatusChanged,
    RefundIssued,
    RefundIssuedV1,
    ReturnAuthorized,
    ReturnUpdated,
    ShipmentUpdated,
    SupplierOrderCancelled,
    SupplierOrderRequested,
    SupplierOrderUpdated,
)
from events.ops import CancelOrder, CloseReturn, ReleasePayment, RerouteLine
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
    ShipmentFailed,
    SupplierOrderAccepted,
    SupplierOrderRejected,
)
from projections.tables import LEDGER_COLUMNS

Row = dict[str, Any]
Contribution = tuple[str, Row]  # (read model name, row)

#: Statuses at or past "every unit reserved" / "something shipped".
ALLOCATED_OR_LATER = frozenset({
    "allocated", "sent_to_supplier", "partially_dispatched", "dispatched", "delivered",
    "return_requested", "returned", "partially_refunded", "refunded"})
DISPATCHED_OR_LATER = frozenset({
    "partially_dispatched", "dispatched", "delivered", "return_requested", "returned",
    "partially_refunded", "refunded"})
#: Whose ``sequence`` / ``causationid`` extensions order the timeline: the order agent's,
#: and the allocation agent's decisions, which keep the place of the command they answer.
SEQUENCED_SOURCES = ("dropship/orders", "dropship/allocation")


@dataclass(frozen=True)
class Position:
    """Where an event was read: the timeline's key."""

    topic: str
    partition: int
    offset: int


def _if(condition: bool, value: datetime) -> datetime | None:
    return value if condition else None


def _status(m: OrderStatusChanged) -> list[Contribution]:
    at = m.changed_at
    order = {
        "order_id": m.order_id, "shop_id": m.shop_id, "version": m.version,
        "status": m.status, "previous_status": m.previous_status, "status_since": at,
        "last_reason": m.reason, "suppliers": list(m.suppliers),
        "tracking_numbers": list(m.tracking_numbers),
        "total": m.total.amount if m.total else None,
        "currency": m.total.currency if m.total else None,
        "lines": len(m.lines), "units": sum(ln.quantity for ln in m.lines),
        "placed_at": m.placed_at, "paid_at": m.paid_at,
        "allocated_at": _if(m.status in ALLOCATED_OR_LATER, at),
        "dispatched_at": _if(m.status in DISPATCHED_OR_LATER, at),
        "delivered_at": _if(m.status == "delivered", at),
        "cancelled_at": _if(m.status == "cancelled", at),
        "updated_at": at,
        "customer_ref": m.customer_ref,
        "ship_to": m.ship_to.model_dump(mode="json", exclude_none=True) if m.ship_to else None,
        **{name: getattr(m.ledger, name) if m.ledger else None for name in LEDGER_COLUMNS},
        "late": m.late,
    }
    lines = [("order_lines", {
        "order_id": m.order_id, "line_id": ln.line_id, "version": m.version, "sku": ln.sku,
        "quantity": ln.quantity, "allocated": ln.allocated,
        "allocations": {a.supplier_id: a.quantity for a in ln.allocations},
        "suppliers": list(ln.suppliers), "backordered": ln.backordered,
        "backordered_since": _if(ln.backordered > 0, at), "shipped": ln.shipped,
        "delivered": ln.delivered, "returned": ln.returned, "reroutes": ln.reroutes,
        "held_for_ops": ln.held_for_ops, "cancelled": ln.cancelled, "value": ln.value,
        "credited": ln.credited, "queued_at": ln.queued_at,
    }) for ln in m.lines]
    return [("order_status", order), *lines]


def _supplier_order(m: Any, **known: Any) -> list[Contribution]:
    row = {col: None for col in SUPPLIER_ORDER_COLUMNS}
    row.update(supplier_id=m.supplier_id, order_id=m.order_id,
               supplier_order_id=m.supplier_order_id, **known)
    return [("supplier_orders", row)]


SUPPLIER_ORDER_COLUMNS = (
    "supplier_id", "supplier_order_id", "order_id", "units", "requested_at", "acknowledge_by",
    "dispatch_by", "accepted_at", "rejected_at", "reject_reason", "cancelled_at",
    "cancel_cause", "cancel_reason", "dispatched_at")


def _requested(m: SupplierOrderRequested) -> list[Contribution]:
    return _supplier_order(m, units=sum(ln.quantity for ln in m.lines),
                           requested_at=m.requested_at, acknowledge_by=m.acknowledge_by,
                           dispatch_by=m.dispatch_by)


def _shipment(m: ShipmentUpdated) -> list[Contribution]:
    """The whole shipment as the order agent accepted it (the newest update wins)."""
    return [("shipments", {
        "supplier_id": m.supplier_id, "shipment_id": m.shipment_id, "order_id": m.order_id,
        "supplier_order_id": m.supplier_order_id, "carrier": m.carrier,
        "tracking_number": m.tracking_number,
        "lines": {ln.line_id: ln.quantity for ln in m.lines},
        "units": sum(ln.quantity for ln in m.lines), "dispatched_at": m.dispatched_at,
        "delivered_at": m.delivered_at, "state": m.state, "expected_by": m.expected_by,
        "deliver_by": m.deliver_by, "exception": m.exception, "flagged": m.flagged,
        "reason": m.reason, "updated_at": m.changed_at})]


#: What an accepted supplier answer sets on its supplier order.
ANSWER_COLUMNS = {"accepted": "accepted_at", "rejected": "rejected_at",
                  "partially_dispatched": "dispatched_at", "dispatched": "dispatched_at"}


def _answer(m: SupplierOrderUpdated) -> list[Contribution]:
    known: Row = {ANSWER_COLUMNS[m.state]: m.at}
    if m.state == "rejected":
        known["reject_reason"] = m.reason
    return _supplier_order(m, **known)


def _return(m: Any, **known: Any) -> list[Contribution]:
    row: Row = {col: None for col in RETURN_COLUMNS}
    row.update(authorized_by=[], received_by=[])
    row.update(order_id=m.order_id, rma_id=m.rma_id, **known)
    return [("returns", row)]


RETURN_COLUMNS = ("order_id", "rma_id", "reason", "lines", "requested_at", "authorized_at",
                  "authorized_by", "received_at", "received_by", "refunded_at")


def _refund(m: RefundIssued | RefundIssuedV1, event: CloudEvent) -> list[Contribution]:
    row: Row = {"order_id": m.order_id, "refund_id": event.id, "shop_id": m.shop_id,
                "cause": "return", "amount": m.amount.amount, "currency": m.amount.currency,
                "lines": None, "rma_id": m.rma_id, "payment_ref": None, "reason": None,
                "issued_at": m.issued_at}
    if isinstance(m, RefundIssued):
        row.update(refund_id=m.refund_id, cause=m.cause,
                   lines=[ln.model_dump(mode="json") for ln in m.lines],
                   payment_ref=m.payment_ref, reason=m.reason)
    out: list[Contribution] = [("refunds", row)]
    if m.rma_id is not None:
        out += _return(m, refunded_at=m.issued_at)
    return out


def _stock(m: SupplierStockChanged) -> list[Contribution]:
    return [("supplier_stock", {
        "supplier_id": m.supplier_id, "sku": m.sku, "version": m.version,
        "reported_available": m.reported_available, "reserved": m.reserved,
        "remaining": m.remaining, "report_as_of": m.report_as_of, "changed_at": m.changed_at})]


def _dead_letter(m: DeadLetter, event: CloudEvent) -> list[Contribution]:
    return [("dead_letters", {
        "id": event.id, "consumer": m.consumer, "source_topic": m.source_topic,
        "source_partition": m.source_partition, "source_offset": m.source_offset,
        "original_key": m.original_key, "rule": m.rule, "field": m.field, "error": m.error,
        "payload": base64.b64decode(m.original_b64), "payload_size": m.original_size,
        "payload_sha256": m.original_sha256, "truncated": m.truncated,
        "dead_lettered_at": m.dead_lettered_at})]


Builder = Callable[[Any, CloudEvent], list[Contribution]]

BUILDERS: dict[type[Message], Builder] = {
    OrderStatusChanged: lambda m, e: _status(m),
    RefundIssued: _refund,
    RefundIssuedV1: _refund,
    ReturnRequested: lambda m, e: _return(m, reason=m.reason,
                                          lines={ln.line_id: ln.quantity for ln in m.lines},
                                          requested_at=m.requested_at),
    ReturnAuthorized: lambda m, e: _return(m, authorized_at=m.authorized_at,
                                           authorized_by=[m.supplier_id]),
    ReturnUpdated: lambda m, e: _return(m, received_at=m.received_at,
                                        received_by=[m.supplier_id]),
    SupplierOrderRequested: lambda m, e: _requested(m),
    SupplierOrderCancelled: lambda m, e: _supplier_order(
        m, cancelled_at=m.cancelled_at, cancel_cause=m.cause, cancel_reason=m.reason),
    SupplierOrderUpdated: lambda m, e: _answer(m),
    ShipmentUpdated: lambda m, e: _shipment(m),
    SupplierStockChanged: lambda m, e: _stock(m),
    DeadLetter: _dead_letter,
}


def summary(m: Message) -> str:
    """One line for the timeline: what happened, in ops' words."""
    match m:
        case OrderPlaced():
            return f"placed: {len(m.lines)} line(s), {m.total().amount} {m.currency}, " \
                   f"ship to {m.ship_to.country}"
        case PaymentConfirmed():
            return f"payment {m.payment_ref} confirmed: {m.amount.amount} {m.amount.currency}"
        case OrderCancelled():
            what = f" of {_units(m.lines)} unit(s)" if m.lines else ""
            return f"cancellation{what} requested: {m.reason}"
        case ReleasePayment():
            return f"ops: release the held payment ({m.reason})"
        case CancelOrder():
            what = f" {_units(m.lines)} unit(s) of" if m.lines else ""
            return f"ops: cancel{what} the order ({m.reason})"
        case RerouteLine():
            return f"ops: re-route line {m.line_id} to {m.supplier_id} ({m.reason})"
        case CloseReturn():
            return f"ops: close return {m.rma_id} {'with' if m.refund else 'without'} " \
                   f"refund ({m.reason})"
        case DeliveryConfirmed():
            return "customer confirmed delivery"
        case ReturnRequested():
            return f"return {m.rma_id} requested: {_units(m.lines)} unit(s), " \
                   f"{m.reason_code}: {m.reason}"
        case LineAllocated():
            return f"line {m.line_id}: {m.quantity} x {m.sku} reserved at {m.supplier_id}"
        case LineBackordered():
            return f"line {m.line_id}: {m.quantity} x {m.sku} backordered ({m.reason})"
        case LineReleased():
            return f"line {m.line_id}: {m.quantity} x {m.sku} released at {m.supplier_id}"
        case BackorderDropped():
            return f"line {m.line_id}: {m.quantity} backordered x {m.sku} dropped"
        case OrderStatusChanged():
            reason = f" ({m.reason})" if m.reason else ""
            if m.previous_status == m.status:
                return f"status {m.status}, updated{reason}"
            return f"status {m.previous_status or '-'} -> {m.status}{reason}"
        case RefundIssued():
            return f"refund ({m.cause}): {m.amount.amount} {m.amount.currency}"
        case RefundIssuedV1():
            return f"refund for {m.rma_id}: {m.amount.amount} {m.amount.currency}"
        case SupplierOrderRequested():
            return f"supplier order {m.supplier_order_id} sent to {m.supplier_id}: " \
                   f"{_units(m.lines)} unit(s)"
        case SupplierOrderCancelled():
            return f"supplier order {m.supplier_order_id} at {m.supplier_id} cancelled " \
                   f"({m.cause}): {m.reason}"
        case ReturnAuthorized():
            return f"return {m.rma_id} authorized at {m.supplier_id}"
        case SupplierOrderAccepted():
            return f"{m.supplier_id} accepted {m.supplier_order_id}"
        case SupplierOrderRejected():
            return f"{m.supplier_id} rejected {m.supplier_order_id}: {m.reason}"
        case ShipmentDispatched():
            return f"{m.supplier_id} dispatched {m.shipment_id} via {m.carrier} " \
                   f"{m.tracking_number}: {_units(m.lines)} unit(s)"
        case ShipmentDelivered():
            return f"shipment {m.shipment_id} from {m.supplier_id} delivered"
        case ShipmentFailed():
            return f"{m.supplier_id} reports shipment {m.shipment_id} {m.exception}"
        case ReturnReceived():
            return f"{m.supplier_id} received return {m.rma_id} ({m.condition})"
        case ShipmentUpdated() | SupplierOrderUpdated() | ReturnUpdated():
            return _accepted(m)
    return m.TYPE


def _accepted(m: ShipmentUpdated | SupplierOrderUpdated | ReturnUpdated) -> str:
    """The timeline line of a supplier fact the order agent accepted."""
    match m:
        case ShipmentUpdated():
            marks = "".join((", flagged" if m.flagged else "",
                             f": {m.reason}" if m.reason else ""))
            return f"shipment {m.shipment_id} from {m.supplier_id} ({m.carrier} " \
                   f"{m.tracking_number}, {_units(m.lines)} unit(s)): {m.state}, " \
                   f"expected by {m.expected_by:%Y-%m-%d}{marks}"
        case SupplierOrderUpdated():
            reason = f": {m.reason}" if m.reason else ""
            return f"supplier order {m.supplier_order_id} at {m.supplier_id} {m.state}{reason}"
    return f"return {m.rma_id} received by {m.supplier_id} ({m.condition})"


def _units(lines: Any) -> int:
    return sum(ln.quantity for ln in lines)


def rows_of(event: CloudEvent, at: Position) -> list[Contribution]:
    """The rows ``event``, read at ``at``, contributes to the read models."""
    data = event.data
    out: list[Contribution] = []
    order_id = getattr(data, "order_id", None)
    if isinstance(order_id, str) and not isinstance(data, DeadLetter):
        sequenced = event.source in SEQUENCED_SOURCES and event.sequence is not None
        seq, sub = parse_sequence(event.sequence) if sequenced and event.sequence else (None, None)
        out.append(("order_timeline", {
            "topic": at.topic, "partition": at.partition, "offset": at.offset,
            "order_id": order_id, "event_id": event.id, "source": event.source,
            "event_type": event.type, "time": event.time, "summary": summary(data)[:500],
            "seq": seq, "sub": sub, "cause": event.causationid if sequenced else None}))
    builder = BUILDERS.get(type(data))
    if builder is not None:
        out.extend(builder(data, event))
    return out
