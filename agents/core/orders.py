"""The order's state and its status: plain values, no I/O.

An :class:`Order` holds each line's progress (units reserved per supplier,
backordered, shipped, delivered, returned, cancelled), the supplier orders it
was routed to, the shipments and returns, its money (payments, refunds, what
was credited), the deadlines, its clock and any event held until its
predecessor arrives. ``agents.core.order_rules`` moves it from event to event;
``agents.core.order_status`` derives the status shops see, so no transition sets
it by hand.

The order's clock (:attr:`Order.clock`) is the latest time it has applied;
every step runs at ``max(cause time, clock)``, so nothing it derives is stamped
earlier than anything it had applied. :attr:`Order.step` numbers the steps
(events applied and deadline firings that changed it): the timeline's order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cached_property
from typing import Literal

from agents.core import money
from events.base import Message
from events.fulfillment import CancelCause, OrderStatus, ShipmentState
from events.suppliers import DeliveryException
from events.types import Address

SupplierOrderState = Literal["requested", "accepted", "dispatched", "cancelled"]
ZERO = Decimal(0)


@dataclass(frozen=True)
class Policy:
    """The business settings the rules need (from ``pipeline.runtime.settings``)."""

    payment_window: timedelta = timedelta(hours=1)
    return_window: timedelta = timedelta(days=30)
    max_reroutes: int = 3
    hold_timeout: timedelta = timedelta(hours=1)
    max_held: int = 50
    #: a short payment waits this long for the balance, then the order is cancelled
    held_payment_window: timedelta = timedelta(hours=24)
    #: units backordered this long are cancelled (and refunded if paid)
    backorder_window: timedelta = timedelta(days=14)
    #: a supplier's answer stamped by its deadline may still be in transit this long:
    #: its supplier order fails over only then (an answer stamped later fails it over)
    sla_grace: timedelta = timedelta(0)
    #: transit assumed when the offer names none for the destination
    default_transit: timedelta = timedelta(days=7)
    #: a shipment not delivered this long after its expected delivery is late
    late_grace: timedelta = timedelta(days=2)
    #: times a line's units lost, damaged or returned to sender are sent again
    max_reships: int = 1


@dataclass(frozen=True)
class Line:
    line_id: str
    sku: str
    quantity: int
    unit_price: Decimal
    goods: Decimal = ZERO     # price x quantity - discount share + tax share
    shipping: Decimal = ZERO  # the line's share of the order's shipping
    reserved: dict[str, int] = field(default_factory=dict)  # supplier -> units reserved
    #: supplier -> units the order asked the allocation agent to release there and
    #: whose release it has not seen yet (they no longer count as reserved)
    releasing: dict[str, int] = field(default_factory=dict)
    #: supplier -> (acknowledge SLA, dispatch SLA) in hours, from its offer
    slas: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: supplier -> the offer's transit days to the ship-to country (absent: unknown)
    transit: dict[str, int] = field(default_factory=dict)
    #: when the line joined its sku's backorder queue (from the allocation agent)
    queued_at: datetime | None = None
    backordered: int = 0  # as the allocation agent last said (see :meth:`waiting`)
    #: backordered units the order asked the allocation agent to drop and whose
    #: answer (``BackorderDropped``) it has not seen yet
    dropping: int = 0
    #: the whole line was released at once (the order was cancelled with nothing
    #: shipped): the allocation agent gives back everything, nothing to reconcile
    released_all: bool = False
    backordered_since: datetime | None = None
    shipped: int = 0  # units on their way or delivered (not those of failed shipments)
    #: units of shipments lost, damaged or returned to sender: they stay reserved at
    #: their supplier (they left its stock) and are re-shipped or cancelled
    failed: int = 0
    reships: int = 0  # times units of it were sent again after a delivery exception
    delivered: int = 0
    delivered_at: datetime | None = None  # when units of it were last delivered
    returned: int = 0  # units under authorized returns
    cancelled: int = 0  # units that will not be sent
    credited_goods: int = 0  # units whose goods value was taken off the order
    credited_shipping: int = 0  # units whose shipping share was taken off the order
    excluded: frozenset[str] = frozenset()
    reroutes: int = 0
    held: bool = False
    pinned: str | None = None  # ops re-routed the line to this supplier

    @property
    def wanted(self) -> int:
        """Units the customer still wants sent."""
        return self.quantity - self.cancelled

    def holding(self, supplier_id: str) -> int:
        """Units reserved at ``supplier_id`` that are not being released."""
        if self.released_all:
            return 0
        return max(0, self.reserved.get(supplier_id, 0) - self.releasing.get(supplier_id, 0))

    @property
    def queued(self) -> int:
        """Backordered units at the allocation agent that are not being dropped."""
        return 0 if self.released_all else max(0, self.backordered - self.dropping)

    @cached_property  # a line is immutable: computed once per line value
    def allocated(self) -> int:
        """Units reserved for the line, not counting those of failed shipments."""
        return max(0, sum(self.holding(s) for s in self.reserved) - self.failed)

    @property
    def dispatched_any(self) -> bool:
        """Units of it were shipped (even if their parcel failed since)."""
        return bool(self.shipped or self.failed)

    @cached_property
    def waiting(self) -> int:
        """Backordered units still wanted: :attr:`queued`, at most the wanted units not
        reserved."""
        return max(0, min(self.queued, self.wanted - self.allocated))

    def credited_value(self, currency: str) -> int:
        """The value, in minor units, of its units taken off the order (goods and, for
        as many units as were credited it, shipping)."""
        if not (self.credited_goods or self.credited_shipping):
            return 0
        return (money.portion(money.minor(self.goods, currency), self.quantity,
                              self.credited_goods)
                + money.portion(money.minor(self.shipping, currency), self.quantity,
                                self.credited_shipping))


@dataclass(frozen=True)
class SupplierOrder:
    supplier_order_id: str
    supplier_id: str
    lines: dict[str, int]  # line id -> units
    requested_at: datetime
    acknowledge_by: datetime
    dispatch_by: datetime
    state: SupplierOrderState = "requested"
    shipped: dict[str, int] = field(default_factory=dict)
    cause: CancelCause | None = None  # why it was cancelled

    @property
    def live(self) -> bool:
        return self.state != "cancelled"

    def unshipped(self, line_id: str) -> int:
        return self.lines.get(line_id, 0) - self.shipped.get(line_id, 0)

    @property
    def fully_shipped(self) -> bool:
        return all(self.unshipped(ln) == 0 for ln in self.lines)


@dataclass(frozen=True)
class Shipment:
    """A parcel as the order accepted it (``docs/order-lifecycle.md``, "Delivery")."""

    shipment_id: str
    supplier_id: str
    lines: dict[str, int]
    carrier: str
    tracking_number: str
    delivered: bool = False
    supplier_order_id: str = ""
    dispatched_at: datetime | None = None  # the supplier's time
    expected_by: datetime | None = None  # dispatched_at + transit
    deliver_by: datetime | None = None  # expected_by + the late grace: late after it
    delivered_at: datetime | None = None
    late: bool = False  # its deliver_by passed before it was delivered
    exception: DeliveryException | None = None  # it failed (lost, damaged, returned)
    flagged: bool = False  # ops must look at it (a reconciliation: both shipped)

    @property
    def state(self) -> ShipmentState:
        if self.delivered:
            return "delivered"
        if self.exception is not None:
            return self.exception
        return "late" if self.late else "in_transit"

    @property
    def moving(self) -> bool:
        """Neither delivered nor failed: it may still become late."""
        return not self.delivered and self.exception is None


@dataclass(frozen=True)
class Return:
    rma_id: str
    lines: dict[str, int]
    by_supplier: dict[str, dict[str, int]]  # supplier -> line id -> units
    received: frozenset[str] = frozenset()  # suppliers that received their part
    refunded: Decimal = ZERO
    sellers_fault: bool = False  # defective, damaged, wrong item: shipping refunded too
    #: ops closed it: parts not received were refunded then (``refund_on_close``), or
    #: stay with the customer until, if ever, they arrive after all
    closed: bool = False
    refund_on_close: bool = False

    @property
    def open(self) -> bool:
        return not self.closed and self.received != set(self.by_supplier)


@dataclass(frozen=True)
class Payment:
    payment_ref: str
    amount: Decimal
    currency: str
    paid_at: datetime


@dataclass(frozen=True)
class Held:
    """An event kept until the one it depends on has been applied."""

    message: Message
    time: datetime
    held_at: datetime
    sender: str | None = None  # the CloudEvents source it came from (a shop may act
    #                            only on its own orders; checked when it is released)


@dataclass(frozen=True)
class Order:
    order_id: str
    shop_id: str = ""
    currency: str = ""
    ship_to: Address | None = None
    customer_ref: str | None = None
    placed_at: datetime | None = None
    placement: str = ""  # fingerprint of the OrderPlaced (another one is a conflict)
    subtotal: Decimal = ZERO
    shipping: Decimal = ZERO
    tax: Decimal = ZERO
    discount: Decimal = ZERO
    lines: dict[str, Line] = field(default_factory=dict)
    payments: tuple[Payment, ...] = ()
    #: when what was paid first covered what is due (or ops released the payment)
    paid_at: datetime | None = None
    short_since: datetime | None = None  # first payment of a short payment
    written_off: Decimal = ZERO
    refunded: Decimal = ZERO  # refunds in the order's currency
    refunds: int = 0  # refunds issued (numbers their ids)
    cancelled: bool = False
    delivered_at: datetime | None = None
    supplier_orders: dict[str, SupplierOrder] = field(default_factory=dict)
    shipments: dict[str, Shipment] = field(default_factory=dict)
    returns: dict[str, Return] = field(default_factory=dict)
    held: tuple[Held, ...] = ()
    held_for_ops: bool = False
    hold_reason: str | None = None  # why it is held for ops (shown while it is)
    #: ops must look at the order: a shipment came that the order no longer wanted
    #: (after a failover or a cancellation) while other units were also shipped
    flag: str | None = None
    note: str | None = None  # the reason of the current step only
    clock: datetime | None = None  # the latest time applied (see the module docstring)
    step: int = 0
    last_status: OrderStatus | None = None
    version: int = 0  # status snapshots published so far (OrderStatusChanged.version)
    #: Deadline firings that changed the order so far. Each firing derives its events'
    #: ids from its number, as two firings can share an instant (an event applied late
    #: can bring a deadline equal to, or before, one already fired).
    firings: int = 0

    @property
    def placed(self) -> bool:
        return self.placed_at is not None

    @property
    def late(self) -> bool:
        """A shipment of it is past its delivery deadline and not delivered."""
        return any(s.late and s.moving for s in self.shipments.values())

    def total(self) -> Decimal:
        return self.subtotal + self.shipping + self.tax - self.discount

    def paid(self) -> Decimal:
        """Payments in the order's currency (others are refunded whole)."""
        return sum((p.amount for p in self.payments if p.currency == self.currency), ZERO)

    def credited(self) -> Decimal:
        """The value of units taken off the order (cancelled, or returned and refunded)."""
        units = sum(ln.credited_value(self.currency) for ln in self.lines.values())
        return money.major(units, self.currency) if self.currency else ZERO

    def due(self) -> Decimal:
        """What the customer pays for what it keeps (never below 0: what ops wrote off
        is not paid back when units are taken off later)."""
        return max(ZERO, self.total() - self.credited() - self.written_off)

    def balance(self) -> Decimal:
        """Paid and not refunded, less what is due: above 0, the customer's money."""
        return self.paid() - self.refunded - self.due()

    @property
    def paid_something(self) -> bool:
        """A payment in the order's currency came (even of 0.00)."""
        return any(p.currency == self.currency for p in self.payments)

    @property
    def short(self) -> bool:
        """Something was paid, not yet all that is due (the payment is held)."""
        return not self.paid_at and not self.cancelled and self.paid_something

    def shipped_by(self, line_id: str, supplier_id: str) -> int:
        """Units of a line ``supplier_id`` shipped, in any of its supplier orders."""
        return sum(so.shipped.get(line_id, 0) for so in self.supplier_orders.values()
                   if so.supplier_id == supplier_id)

    def sent_to(self, line_id: str, supplier_id: str | None = None) -> int:
        """Units of a line that ``supplier_id`` (or any supplier) has: in live supplier
        orders, or shipped."""
        return sum(so.lines.get(line_id, 0) if so.live else so.shipped.get(line_id, 0)
                   for so in self.supplier_orders.values()
                   if supplier_id in (None, so.supplier_id))

    def supplier_order_id(self, supplier_id: str) -> str:
        """A deterministic id for the next supplier order of this order to ``supplier_id``."""
        return _digest("so", f"{self.order_id}/{supplier_id}/{len(self.supplier_orders)}")

    def refund_id(self) -> str:
        """A deterministic id for the order's next refund; ids sort in issue order."""
        n = self.refunds + 1
        return f"rf-{n:04d}-{_digest('', f'{self.order_id}/{n}')[1:17]}"


def _digest(prefix: str, text: str) -> str:
    return f"{prefix}-{hashlib.sha256(text.encode()).hexdigest()[:24]}"


@dataclass(frozen=True)
class Refused:
    """An event is not acceptable; the agent dead-letters it with ``reason``.

    ``held`` is set when the refused event is one that was held and has just been
    released by the consumed event (the dead letter then carries the held one).
    """

    reason: str
    held: Message | None = None


Output = Message | Refused
Result = tuple[Order, list[Output]]


def shipment_key(supplier_id: str, shipment_id: str) -> str:
    """Shipments are known by supplier and id: two suppliers may reuse an id."""
    return f"{supplier_id}/{shipment_id}"


def with_line(order: Order, line: Line) -> Order:
    return replace(order, lines={**order.lines, line.line_id: line})


def with_supplier_order(order: Order, so: SupplierOrder) -> Order:
    return replace(order, supplier_orders={**order.supplier_orders, so.supplier_order_id: so})


def own_supplier_order(order: Order, so_id: str, supplier: str) -> SupplierOrder | Refused:
    """The live supplier order ``so_id`` if it was routed to ``supplier``, else a refusal."""
    so = order.supplier_orders.get(so_id)
    if so is None or so.supplier_id != supplier:
        return Refused(f"supplier order {so_id} was not routed to {supplier}")
    if not so.live:
        return Refused(f"supplier order {so_id} was cancelled")
    return so
