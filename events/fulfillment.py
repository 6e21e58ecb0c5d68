"""What the order agent tells suppliers (``fulfillment.supplier-orders``, key:
supplier id) and shops (``fulfillment.order-status``, key: order id)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from events.base import Event, SourceKind
from events.orders import MAX_LINES, LineQuantity
from events.suppliers import DeliveryException, ReturnCondition, TrackingNumber
from events.topics import ORDER_STATUS, SUPPLIER_ORDERS
from events.types import Address, Amount, Id, Money, Quantity, Text, Timestamp, Value

OrderStatus = Literal[
    "placed", "payment_held", "paid", "allocated", "backordered", "sent_to_supplier",
    "partially_dispatched", "dispatched", "delivered", "cancelled", "return_requested",
    "returned", "partially_refunded", "refunded", "held_for_ops",
]


#: Why a supplier order was cancelled. The first three are failovers: the
#: order agent takes the units away from the supplier and routes them elsewhere.
#: ``superseded``: a failed-over supplier shipped after all, so the replacement supplier
#: order that has not shipped is cancelled (the goods are already on their way).
CancelCause = Literal["rejected", "acknowledge_sla_missed", "dispatch_sla_missed",
                      "order_cancelled", "lines_cancelled", "rerouted_by_ops", "superseded"]
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
    cancelled: Annotated[int, Field(ge=0)] = 0
    #: the line's share of the order total (price x quantity - discount + tax +
    #: shipping shares), and the value of its units taken off the order (cancelled,
    #: or returned and refunded), in the order's currency
    value: Amount | None = None
    credited: Amount | None = None
    #: when the line joined its sku's backorder queue at the allocation agent (backorders
    #: are served in this order); set while units of it are backordered
    queued_at: Timestamp | None = None


class Ledger(Value):
    """An order's money, in its currency (rules: docs/order-lifecycle.md, "Money").

    ``total`` is what was ordered (subtotal + shipping + tax - discount);
    ``credited`` the value of units taken off it (cancelled, or returned and
    refunded); ``written_off`` what ops accepted not to collect; ``due`` what the
    customer pays for what it keeps (total - credited - written_off). ``paid`` and
    ``refunded`` are payments and refunds in the order's currency (foreign ones
    are refunded whole and show only as refunds); ``outstanding`` is what is still
    to be paid (due - (paid - refunded), at least 0).
    """

    currency: str
    subtotal: Amount
    shipping: Amount
    tax: Amount
    discount: Amount
    total: Amount
    credited: Amount
    written_off: Amount
    due: Amount
    paid: Amount
    refunded: Amount
    outstanding: Amount


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
    customer_ref: Text | None = None
    ship_to: Address | None = None
    ledger: Ledger | None = None
    #: a shipment of the order is past its delivery deadline and not delivered
    late: bool = False
    changed_at: Timestamp


#: Why money went back. ``return``: units returned (or a return ops closed with a
#: refund); the cancellations: units that will not be sent; ``late_payment``: a
#: payment for an order already cancelled; ``overpayment``: paid beyond what is due;
#: ``wrong_currency``: a payment in another currency than the order's.
#: ``delivery_failed``: units of a lost, damaged or returned-to-sender shipment that
#: are not re-shipped.
RefundCause = Literal["return", "order_cancelled", "lines_cancelled", "ops_cancelled",
                      "payment_expired", "payment_window_closed", "backorder_expired",
                      "late_payment", "overpayment", "wrong_currency", "delivery_failed"]


class RefundLine(Value):
    """Units of one line and the money refunded for them (their share of shipping
    included when ``with_shipping``)."""

    line_id: Id
    units: Quantity
    amount: Amount
    with_shipping: bool = False


class RefundIssued(_StatusEvent):
    """Money goes back to the customer: for returned or cancelled units (``lines``),
    or for a payment that was not due (late, excess, wrong currency)."""

    TYPE: ClassVar[str] = "dropship.refund.issued.v2"

    order_id: Id
    shop_id: Id
    refund_id: Id
    cause: RefundCause
    amount: Money
    lines: Annotated[tuple[RefundLine, ...], Field(max_length=MAX_LINES)] = ()
    rma_id: Id | None = None
    payment_ref: Id | None = None
    reason: Text | None = None
    issued_at: Timestamp


class RefundIssuedV1(_StatusEvent):
    """Money went back to the customer for a return (superseded by v2, which
    covers every refund; still read from old records)."""

    TYPE: ClassVar[str] = "dropship.refund.issued.v1"

    order_id: Id
    shop_id: Id
    rma_id: Id
    amount: Money
    issued_at: Timestamp


#: Where a shipment is, as the order agent accepted it: ``in_transit`` until its
#: ``deliver_by`` deadline, then ``late``; ``delivered``; or a delivery exception.
ShipmentState = Literal["in_transit", "late", "delivered", "lost", "damaged",
                        "returned_to_sender"]


class ShipmentUpdated(_StatusEvent):
    """A shipment of an order as the order agent accepted it (shops follow carrier and
    tracking per shipment with it; ``read.shipments`` is built from it only).

    Published when a dispatch is accepted and whenever its state changes.
    ``expected_by`` is dispatch time + the offer's transit days to the ship-to
    country (the default transit when the offer does not say); past ``deliver_by``
    (``expected_by`` + the late-delivery grace) an undelivered shipment is ``late``.
    ``flagged`` names a shipment ops must look at: it came from a supplier whose
    supplier order had been cancelled (a failover, or the shop cancelled) while
    another supplier also shipped, or after a cancellation of the units.
    """

    TYPE: ClassVar[str] = "dropship.shipment.updated.v1"

    order_id: Id
    shop_id: Id
    supplier_id: Id
    supplier_order_id: Id
    shipment_id: Id
    carrier: Text
    tracking_number: TrackingNumber
    lines: Annotated[tuple[LineQuantity, ...], Field(min_length=1, max_length=MAX_LINES)]
    state: ShipmentState
    dispatched_at: Timestamp
    expected_by: Timestamp
    deliver_by: Timestamp
    delivered_at: Timestamp | None = None
    exception: DeliveryException | None = None
    flagged: bool = False
    reason: Text | None = None
    changed_at: Timestamp


#: What a supplier said of a supplier order, as the order agent accepted it.
SupplierOrderAnswer = Literal["accepted", "rejected", "partially_dispatched", "dispatched"]


class SupplierOrderUpdated(_StatusEvent):
    """A supplier's answer or dispatch the order agent accepted for one of the order's
    supplier orders (``read.supplier_orders`` is built from it, never from a refused
    supplier event). ``at`` is the supplier's time of it."""

    TYPE: ClassVar[str] = "dropship.supplier_order.updated.v1"

    order_id: Id
    supplier_order_id: Id
    supplier_id: Id
    state: SupplierOrderAnswer
    reason: Text | None = None
    at: Timestamp
    changed_at: Timestamp


class ReturnUpdated(_StatusEvent):
    """A supplier's receipt of returned units that the order agent accepted for an
    authorized return (``read.returns`` is built from it, never from a refused
    ``ReturnReceived``)."""

    TYPE: ClassVar[str] = "dropship.return.updated.v1"

    order_id: Id
    rma_id: Id
    supplier_id: Id
    state: Literal["received"]
    condition: ReturnCondition
    lines: Annotated[tuple[LineQuantity, ...], Field(min_length=1, max_length=MAX_LINES)]
    received_at: Timestamp
    changed_at: Timestamp
