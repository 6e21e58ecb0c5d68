"""Factories and a small driver for order-lifecycle unit tests (time is always injected)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from agents.core.order_rules import decide, due
from agents.core.order_status import reason_of, status_of
from agents.core.orders import Order, Output, Policy, Refused
from events.allocation import LineAllocated, LineBackordered, LineReleased
from events.base import Message
from events.ops import CancelOrder, CloseReturn, ReleasePayment, RerouteLine
from events.orders import (
    DeliveryConfirmed,
    LineQuantity,
    OrderCancelled,
    OrderLine,
    OrderPlaced,
    PaymentConfirmed,
    ReturnReason,
    ReturnRequested,
)
from events.suppliers import (
    DeliveryException,
    RejectReason,
    ReturnReceived,
    ShipmentDelivered,
    ShipmentDispatched,
    ShipmentFailed,
    SupplierOrderAccepted,
    SupplierOrderRejected,
)
from events.types import Address, Money

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
ORDER = "o1"
POLICY = Policy(payment_window=timedelta(minutes=60), return_window=timedelta(days=30),
                max_reroutes=2, hold_timeout=timedelta(minutes=30), max_held=3)
M = TypeVar("M", bound=Message)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def eur(amount: str) -> Money:
    return Money(amount=Decimal(amount), currency="EUR")


def placed(*lines: tuple[str, str, int, str], shipping: str | None = None,
           tax: str | None = None, discount: str | None = None) -> OrderPlaced:
    lines = lines or (("1", "SKU-1", 2, "10.00"),)
    return OrderPlaced(
        order_id=ORDER, shop_id="acme", customer_ref="c1",
        ship_to=Address(name="Ada", line1="1 Rd", city="Lyon", country="FR"), currency="EUR",
        lines=tuple(OrderLine(line_id=i, sku=s, quantity=q, unit_price=eur(p))
                    for i, s, q, p in lines),
        shipping=eur(shipping) if shipping else None, tax=eur(tax) if tax else None,
        discount=eur(discount) if discount else None, placed_at=T0)


def paid(amount: str = "20.00", currency: str = "EUR", ref: str = "p1") -> PaymentConfirmed:
    return PaymentConfirmed(order_id=ORDER, amount=Money(amount=Decimal(amount), currency=currency),
                            payment_ref=ref, paid_at=at(1))


def allocated(supplier: str, qty: int, line: str = "1", sku: str = "SKU-1", after: int = 0,
              ack: int = 24, dispatch: int = 72, transit: int | None = None,
              queued_at: datetime | None = None) -> LineAllocated:
    return LineAllocated(order_id=ORDER, line_id=line, sku=sku, supplier_id=supplier,
                         quantity=qty, unit_cost=eur("4.00"), acknowledge_sla_hours=ack,
                         dispatch_sla_hours=dispatch, backordered_after=after,
                         transit_days=transit, queued_at=queued_at, allocated_at=T0)


def backordered(qty: int, line: str = "1", sku: str = "SKU-1",
                queued_at: datetime | None = None) -> LineBackordered:
    return LineBackordered(order_id=ORDER, line_id=line, sku=sku, quantity=qty,
                           reason="no_stock", backordered_after=qty, queued_at=queued_at,
                           backordered_at=T0)


def released(supplier: str, qty: int, line: str = "1", sku: str = "SKU-1") -> LineReleased:
    return LineReleased(order_id=ORDER, line_id=line, sku=sku, supplier_id=supplier,
                        quantity=qty, reason="r", released_at=T0)


def accepted(so: str, supplier: str, when: datetime = T0) -> SupplierOrderAccepted:
    return SupplierOrderAccepted(order_id=ORDER, supplier_order_id=so, supplier_id=supplier,
                                 accepted_at=when)


def rejected(so: str, supplier: str, reason: RejectReason = "out_of_stock",
             when: datetime = T0) -> SupplierOrderRejected:
    return SupplierOrderRejected(order_id=ORDER, supplier_order_id=so, supplier_id=supplier,
                                 reason=reason, rejected_at=when)


def dispatched(so: str, supplier: str, shipment: str = "shp1", line: str = "1", qty: int = 2,
               tracking: str = "TRK1", when: datetime = T0) -> ShipmentDispatched:
    return ShipmentDispatched(order_id=ORDER, supplier_order_id=so, supplier_id=supplier,
                              shipment_id=shipment,
                              lines=(LineQuantity(line_id=line, quantity=qty),),
                              carrier="Colissimo", tracking_number=tracking, dispatched_at=when)


def delivered(shipment: str, supplier: str, when: datetime = T0) -> ShipmentDelivered:
    return ShipmentDelivered(order_id=ORDER, supplier_id=supplier, shipment_id=shipment,
                             delivered_at=when)


def failed(shipment: str, supplier: str, exception: DeliveryException = "lost",
           when: datetime = T0) -> ShipmentFailed:
    return ShipmentFailed(order_id=ORDER, supplier_id=supplier, shipment_id=shipment,
                          exception=exception, reported_at=when)


def confirmed() -> DeliveryConfirmed:
    return DeliveryConfirmed(order_id=ORDER, confirmed_at=T0)


def cancelled(**units: int) -> OrderCancelled:
    """The whole order, or ``line id=units`` of lines (``cancelled(**{"1": 2})``)."""
    return OrderCancelled(order_id=ORDER, reason="changed mind", cancelled_at=T0,
                          lines=tuple(LineQuantity(line_id=k, quantity=v)
                                      for k, v in units.items()))


def return_requested(rma: str, qty: int = 1, line: str = "1", when: datetime | None = None,
                     code: ReturnReason = "changed_mind") -> ReturnRequested:
    return ReturnRequested(order_id=ORDER, rma_id=rma,
                           lines=(LineQuantity(line_id=line, quantity=qty),), reason="too small",
                           reason_code=code, requested_at=when or at(60 * 24))


OPERATOR = "ops/alice"


def release_payment() -> ReleasePayment:
    return ReleasePayment(order_id=ORDER, reason="customer paid by bank transfer",
                          requested_at=T0)


def ops_cancel(**units: int) -> CancelOrder:
    return CancelOrder(order_id=ORDER, reason="giving up", requested_at=T0,
                       lines=tuple(LineQuantity(line_id=k, quantity=v) for k, v in units.items()))


def reroute(line: str, supplier: str) -> RerouteLine:
    return RerouteLine(order_id=ORDER, line_id=line, supplier_id=supplier,
                       reason="has stock, phoned", requested_at=T0)


def close_return(rma: str, refund: bool) -> CloseReturn:
    return CloseReturn(order_id=ORDER, rma_id=rma, refund=refund, reason="parcel lost",
                       requested_at=T0)


def return_received(rma: str, supplier: str, qty: int = 1, line: str = "1",
                    resellable: bool = True) -> ReturnReceived:
    return ReturnReceived(order_id=ORDER, rma_id=rma, supplier_id=supplier,
                          lines=(LineQuantity(line_id=line, quantity=qty),),
                          condition="resellable" if resellable else "not_resellable",
                          received_at=T0)


@dataclass
class Flow:
    """Drives one order through events and clock ticks, keeping every output."""

    order: Order = field(default_factory=lambda: Order(ORDER))
    outputs: list[Output] = field(default_factory=list)
    last: list[Output] = field(default_factory=list)

    def do(self, *messages: Message, minute: float = 0) -> Flow:
        for message in messages:
            sender = OPERATOR if message.SOURCE_KIND == "ops" else None
            self.order, self.last = decide(self.order, message, at(minute), POLICY, sender)
            self.outputs += self.last
        return self

    def tick(self, minute: float) -> Flow:
        self.order, self.last = due(self.order, at(minute), POLICY)
        self.outputs += self.last
        return self

    @property
    def status(self) -> str:
        return status_of(self.order)

    @property
    def reason(self) -> str | None:
        """The reason the order's status shows now."""
        return reason_of(self.order)

    def sent(self, kind: type[M], last: bool = False) -> list[M]:
        return [o for o in (self.last if last else self.outputs) if isinstance(o, kind)]

    def refused(self) -> list[str]:
        return [o.reason for o in self.last if isinstance(o, Refused)]

    def so_of(self, supplier: str) -> str:
        """The live supplier order routed to ``supplier``."""
        return next(so.supplier_order_id for so in self.order.supplier_orders.values()
                    if so.supplier_id == supplier and so.live)


def any_of(items: list[Any]) -> Any:
    assert items, "expected at least one"
    return items[-1]
