"""Events published by shops on ``shop.orders`` (key: order id)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, ClassVar, Final, Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from events.base import Event, SourceKind
from events.topics import SHOP_ORDERS
from events.types import Address, CurrencyCode, Id, Money, Quantity, Text, Timestamp, Value

MAX_LINES = 200
#: Why a customer returns units. The last three are the seller's fault: such a
#: return is refunded with the units' share of shipping (docs/order-lifecycle.md).
ReturnReason = Literal["changed_mind", "defective", "damaged", "wrong_item"]
SELLERS_FAULT: Final[frozenset[str]] = frozenset({"defective", "damaged", "wrong_item"})


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
    """A customer placed an order in a shop. All amounts are in ``currency``.

    ``shipping``, ``tax`` and ``discount`` are order-level amounts of the checkout
    (absent: zero, so producers written before they existed keep working). The
    order total is the lines' subtotal + shipping + tax - discount; the discount
    may not exceed the subtotal.
    """

    TYPE: ClassVar[str] = "dropship.order.placed.v1"

    order_id: Id
    shop_id: Id
    customer_ref: Text
    ship_to: Address
    currency: CurrencyCode
    lines: Annotated[tuple[OrderLine, ...], Field(min_length=1, max_length=MAX_LINES)]
    shipping: Money | None = None
    tax: Money | None = None
    discount: Money | None = None
    placed_at: Timestamp

    @model_validator(mode="after")
    def _consistent(self) -> OrderPlaced:
        check_unique_lines(self.lines)
        for line in self.lines:
            self._same_currency(f"line '{line.line_id}'", line.unit_price)
        for name in ("shipping", "tax", "discount"):
            self._same_currency(name, getattr(self, name))
        if self.amount("discount") > self.subtotal():
            raise PydanticCustomError(
                "discount_too_large", "the discount {discount} exceeds the lines' subtotal "
                "{subtotal}", {"discount": str(self.amount("discount")),
                               "subtotal": str(self.subtotal())})
        total = self.total().amount
        if total >= MAX_TOTAL or self.subtotal() >= MAX_TOTAL:
            raise PydanticCustomError(
                "total_too_large", "the order total {total} is not below {limit}",
                {"total": str(max(total, self.subtotal())), "limit": str(MAX_TOTAL)})
        return self

    def _same_currency(self, what: str, money: Money | None) -> None:
        if money is not None and money.currency != self.currency:
            raise PydanticCustomError(
                "currency_mismatch", "{what} is priced in {other}, the order in {currency}",
                {"what": what, "other": money.currency, "currency": self.currency})

    def amount(self, name: str) -> Decimal:
        """``shipping``, ``tax`` or ``discount`` as an amount (absent: zero)."""
        money: Money | None = getattr(self, name)
        return Decimal(0) if money is None else money.amount

    def subtotal(self) -> Decimal:
        """The lines' sum of quantity x unit price."""
        return sum((ln.unit_price.amount * ln.quantity for ln in self.lines), start=Decimal(0))

    def total(self) -> Money:
        """What the customer pays: subtotal + shipping + tax - discount."""
        amount = (self.subtotal() + self.amount("shipping") + self.amount("tax")
                  - self.amount("discount"))
        return Money(amount=amount, currency=self.currency)


class PaymentConfirmed(_ShopEvent):
    """The shop's payment provider confirmed payment for an order."""

    TYPE: ClassVar[str] = "dropship.payment.confirmed.v1"

    order_id: Id
    amount: Money
    payment_ref: Id
    paid_at: Timestamp


class OrderCancelled(_ShopEvent):
    """The shop (or its customer) cancelled an order: all of it, or with ``lines``
    only those units of those lines (a partial cancellation)."""

    TYPE: ClassVar[str] = "dropship.order.cancelled.v1"

    order_id: Id
    reason: Text
    lines: Annotated[tuple[LineQuantity, ...], Field(max_length=MAX_LINES)] = ()
    cancelled_at: Timestamp

    @model_validator(mode="after")
    def _unique_lines(self) -> OrderCancelled:
        check_unique_lines(self.lines)
        return self


class ReturnRequested(LineQuantities, _ShopEvent):
    """The customer asked to return some units of some lines; ``reason_code`` decides
    whether the units' share of shipping is refunded (the seller's fault) or not."""

    TYPE: ClassVar[str] = "dropship.return.requested.v1"

    order_id: Id
    rma_id: Id
    reason: Text
    reason_code: ReturnReason = "changed_mind"
    requested_at: Timestamp


class DeliveryConfirmed(_ShopEvent):
    """The customer confirmed receipt of the order."""

    TYPE: ClassVar[str] = "dropship.delivery.confirmed.v1"

    order_id: Id
    confirmed_at: Timestamp
