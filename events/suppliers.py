"""Events published by suppliers on ``supplier.events`` (key: order id)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import StringConstraints

from events.base import Event, SourceKind
from events.orders import LineQuantities
from events.topics import SUPPLIER_EVENTS
from events.types import Id, Text, Timestamp

TrackingNumber = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9 -]{0,63}$")]
RejectReason = Literal["out_of_stock", "cannot_ship_to_country", "other"]
ReturnCondition = Literal["resellable", "not_resellable"]
#: What went wrong with a parcel after dispatch (reported by the supplier, from its
#: carrier): ``lost``, ``damaged`` in transit, or ``returned_to_sender`` (undeliverable).
DeliveryException = Literal["lost", "damaged", "returned_to_sender"]


class _SupplierEvent(Event):
    TOPIC: ClassVar[str] = SUPPLIER_EVENTS
    SOURCE_KIND: ClassVar[SourceKind] = "supplier"
    SUBJECT: ClassVar[str] = "order_id"


class SupplierOrderAccepted(_SupplierEvent):
    """The supplier accepted a supplier order and will ship it."""

    TYPE: ClassVar[str] = "dropship.supplier_order.accepted.v1"

    order_id: Id
    supplier_order_id: Id
    supplier_id: Id
    accepted_at: Timestamp


class SupplierOrderRejected(_SupplierEvent):
    """The supplier refused a supplier order."""

    TYPE: ClassVar[str] = "dropship.supplier_order.rejected.v1"

    order_id: Id
    supplier_order_id: Id
    supplier_id: Id
    reason: RejectReason
    detail: Text | None = None
    rejected_at: Timestamp


class ShipmentDispatched(LineQuantities, _SupplierEvent):
    """The supplier handed (part of) a supplier order to a carrier."""

    TYPE: ClassVar[str] = "dropship.shipment.dispatched.v1"

    order_id: Id
    supplier_order_id: Id
    supplier_id: Id
    shipment_id: Id
    carrier: Text
    tracking_number: TrackingNumber
    dispatched_at: Timestamp


class ShipmentFailed(_SupplierEvent):
    """The carrier will not deliver a shipment: lost, damaged in transit, or returned to
    the sender. Its units are re-shipped from a supplier or refunded (the policy is in
    docs/order-lifecycle.md, "Delivery exceptions")."""

    TYPE: ClassVar[str] = "dropship.shipment.failed.v1"

    order_id: Id
    supplier_id: Id
    shipment_id: Id
    exception: DeliveryException
    detail: Text | None = None
    reported_at: Timestamp


class ShipmentDelivered(_SupplierEvent):
    """The carrier delivered a shipment."""

    TYPE: ClassVar[str] = "dropship.shipment.delivered.v1"

    order_id: Id
    supplier_id: Id
    shipment_id: Id
    delivered_at: Timestamp


class ReturnReceived(LineQuantities, _SupplierEvent):
    """The supplier received returned goods."""

    TYPE: ClassVar[str] = "dropship.return.received.v1"

    order_id: Id
    rma_id: Id
    supplier_id: Id
    condition: ReturnCondition
    received_at: Timestamp
