"""Events published by shops on ``shop.orders`` (key: order id)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, ClassVar, Final

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from events.base import Event, SourceKind
from events.topics import SHOP_ORDERS
from events.types import Address, CurrencyCode, Id, Money, Quantity, Text, Timestamp, Value

MAX_LINES = 200


class OrderLine(Value):
    line_id: Id
    sku: Id
    quantity: Quantity
    unit_price: Money


class LineQuantity(Value):
    """A quantity of one order line (returns, shipments)."""

    line_id: Id
    quantity: Quantity


def check_unique_lines(lines: tuple[OrderLine, ...] | tuple[LineQuantity, ...]) -> None:
    seen: set[str] = set()
    for line in lines:
        if line.line_id in seen:
            raise PydanticCustomError("duplicate_line", "line_id '{line_id}' appears twice",
                                      {"line_id": line.line_id})
        seen.add(line.line_id)


class LineQuantities(Event):
    """Base of events carrying ``lines`` of (line id, quantity), each line at most once."""

    lines: Annotated[tuple[LineQuantity, ...], Field(min_length=1, max_length=MAX_LINES)]

    @model_validator(mode="after")
    def _unique_lines(self) -> LineQuantities:
        check_unique_lines(self.lines)
        return self


class _ShopEvent(Event):
    TOPIC: ClassVar[str] = SHOP_ORDERS
    SOURCE_KIND: ClassVar[SourceKind] = "shop"
    SUBJECT: ClassVar[str] = "order_id"


#: An order's total must be a valid amount (15 integer digits), as the status
#: events, refunds and read models that carry it are.
MAX_TOTAL: Final = Decimal(10) ** 15


class OrderPlaced(_ShopEvent):
    """A customer placed an order in a shop. All prices are in ``currency``."""

    TYPE: ClassVar[str] = "dropship.order.placed.v1"

    order_id: Id
    shop_id: Id
    customer_ref: Id
    ship_to: Address
    currency: CurrencyCode
    lines: Annotated[tuple[OrderLine, ...], Field(min_length=1, max_length=MAX_LINES)]
    placed_at: Timestamp

    @model_validator(mode="after")
    def _consistent(self) -> OrderPlaced:
        check_unique_lines(self.lines)
        for line in self.lines:
            if line.unit_price.currency != self.currency:
                raise PydanticCustomError(
                    "currency_mismatch",
                    "line '{line_id}' is priced in {line_currency}, the order in {currency}",
                    {"line_id": line.line_id, "line_currency": line.unit_price.currency,
                     "currency": self.currency},
                )
        total = sum((ln.unit_price.amount * ln.quantity for ln in self.lines), start=Decimal(0))
        if total >= MAX_TOTAL:
            raise PydanticCustomError(
                "total_too_large", "the order total {total} is not below {limit}",
                {"total": str(total), "limit": str(MAX_TOTAL)})
        return self

    def total(self) -> Money:
        """The order total: sum of quantity x unit price."""
        amount = sum((ln.unit_price.amount * ln.quantity for ln in self.lines), start=Decimal(0))
        return Money(amount=amount, currency=self.currency)


class PaymentConfirmed(_ShopEvent):
    """The shop's payment provider confirmed payment for an order."""

    TYPE: ClassVar[str] = "dropship.payment.confirmed.v1"

    order_id: Id
    amount: Money
    payment_ref: Id
    paid_at: Timestamp


class OrderCancelled(_ShopEvent):
    """The shop (or its customer) cancelled an order."""

    TYPE: ClassVar[str] = "dropship.order.cancelled.v1"

    order_id: Id
    reason: Text
    cancelled_at: Timestamp


class ReturnRequested(LineQuantities, _ShopEvent):
    """The customer asked to return some units of some lines."""

    TYPE: ClassVar[str] = "dropship.return.requested.v1"

    order_id: Id
    rma_id: Id
    reason: Text
    requested_at: Timestamp


class DeliveryConfirmed(_ShopEvent):
    """The customer confirmed receipt of the order."""

    TYPE: ClassVar[str] = "dropship.delivery.confirmed.v1"

    order_id: Id
    confirmed_at: Timestamp
