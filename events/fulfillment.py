"""What the order agent tells suppliers (``fulfillment.supplier-orders``, key:
supplier id) and shops (``fulfillment.order-status``, key: order id)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from events.base import Event, SourceKind
from events.orders import MAX_LINES, LineQuantity
from events.suppliers import TrackingNumber
from events.topics import ORDER_STATUS, SUPPLIER_ORDERS
from events.types import Address, Id, Money, Quantity, Text, Timestamp, Value

OrderStatus = Literal[
    "placed", "payment_held", "paid", "allocated", "backordered", "sent_to_supplier",
    "partially_dispatched", "dispatched", "delivered", "cancelled", "return_requested",
    "returned", "refunded", "held_for_ops",
]


#: Why a supplier order was cancelled. The first three are failovers: the
#: order agent takes the units away from the supplier and routes them elsewhere.
CancelCause = Literal["rejected", "acknowledge_sla_missed", "dispatch_sla_missed",
                      "order_cancelled"]
FAILOVER_CAUSES: tuple[CancelCause, ...] = (
    "rejected", "acknowledge_sla_missed", "dispatch_sla_missed")

#: Bounds of the lists in a status event; producers keep the most relevant entries.
MAX_SUPPLIERS = 100
MAX_TRACKING_NUMBERS = 200


class SupplierOrderLine(Value):
    line_id: Id
    sku: Id
    quantity: Quantity


class _SupplierOrderEvent(Event):
    TOPIC: ClassVar[str] = SUPPLIER_ORDERS
    SOURCE_KIND: ClassVar[SourceKind] = "dropship"
    SUBJECT: ClassVar[str] = "supplier_id"


class SupplierOrderRequested(_SupplierOrderEvent):
    """Ship these lines to this address: accept by ``acknowledge_by``, dispatch by
    ``dispatch_by``."""

    TYPE: ClassVar[str] = "dropship.supplier_order.requested.v1"

    supplier_order_id: Id
    supplier_id: Id
    order_id: Id
    ship_to: Address
    lines: Annotated[tuple[SupplierOrderLine, ...], Field(min_length=1, max_length=MAX_LINES)]
    acknowledge_by: Timestamp
    dispatch_by: Timestamp
    requested_at: Timestamp


class SupplierOrderCancelled(_SupplierOrderEvent):
    """Do not ship this supplier order (any more)."""

    TYPE: ClassVar[str] = "dropship.supplier_order.cancelled.v1"

    supplier_order_id: Id
    supplier_id: Id
    order_id: Id
    reason: Text
    cause: CancelCause = "order_cancelled"
    cancelled_at: Timestamp


class ReturnAuthorized(_SupplierOrderEvent):
    """The customer may send these units back to the supplier under ``rma_id``."""

    TYPE: ClassVar[str] = "dropship.return.authorized.v1"

    rma_id: Id
    supplier_id: Id
    order_id: Id
    lines: Annotated[tuple[LineQuantity, ...], Field(min_length=1, max_length=MAX_LINES)]
    authorized_at: Timestamp


class _StatusEvent(Event):
    TOPIC: ClassVar[str] = ORDER_STATUS
    SOURCE_KIND: ClassVar[SourceKind] = "dropship"
    SUBJECT: ClassVar[str] = "order_id"


class SupplierUnits(Value):
    """Units of a line reserved at one supplier."""

    supplier_id: Id
    quantity: Quantity


class LineStatus(Value):
    """Where the units of one order line are."""

    line_id: Id
    sku: Id
    quantity: Quantity
    allocated: Annotated[int, Field(ge=0)] = 0
    backordered: Annotated[int, Field(ge=0)] = 0
    shipped: Annotated[int, Field(ge=0)] = 0
    delivered: Annotated[int, Field(ge=0)] = 0
    returned: Annotated[int, Field(ge=0)] = 0
    suppliers: Annotated[tuple[Id, ...], Field(max_length=MAX_SUPPLIERS)] = ()
    allocations: Annotated[tuple[SupplierUnits, ...], Field(max_length=MAX_SUPPLIERS)] = ()
    reroutes: Annotated[int, Field(ge=0)] = 0
    held_for_ops: bool = False


class OrderStatusChanged(_StatusEvent):
    """An order moved to a new status, or its lines changed (what shops and the
    projections follow): a full snapshot of the order.

    ``version`` counts the order's snapshots (1, 2, ...): a consumer keeps the
    highest it has seen, so a late or re-sent snapshot never overwrites a newer one.
    """

    TYPE: ClassVar[str] = "dropship.order.status_changed.v1"

    order_id: Id
    shop_id: Id
    version: Annotated[int, Field(ge=1)]
    status: OrderStatus
    previous_status: OrderStatus | None = None
    reason: Text | None = None
    lines: Annotated[tuple[LineStatus, ...], Field(max_length=MAX_LINES)] = ()
    suppliers: Annotated[tuple[Id, ...], Field(max_length=MAX_SUPPLIERS)] = ()
    tracking_numbers: Annotated[tuple[TrackingNumber, ...],
                                Field(max_length=MAX_TRACKING_NUMBERS)] = ()
    total: Money | None = None
    placed_at: Timestamp | None = None
    paid_at: Timestamp | None = None
    changed_at: Timestamp


class RefundIssued(_StatusEvent):
    """Money goes back to the customer for a return."""

    TYPE: ClassVar[str] = "dropship.refund.issued.v1"

    order_id: Id
    shop_id: Id
    rma_id: Id
    amount: Money
    issued_at: Timestamp
