"""A simulated shop: places orders (shipping, sales tax and coupons at checkout), pays
(mostly: some in two parts, some too much, some first in the wrong currency), cancels a
few orders or units, confirms deliveries and requests returns (some for defective
goods), with a small share of duplicated, reordered and garbled messages.

Every choice about an order is drawn from ``rng_for(seed, order_id)``, so the same
seed gives the same orders whatever the timing. The shop learns of deliveries
only from ``fulfillment.order-status``, as a real shop would.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from events.fulfillment import OrderStatusChanged
from events.orders import (
    DeliveryConfirmed,
    LineQuantity,
    OrderCancelled,
    OrderLine,
    OrderPlaced,
    PaymentConfirmed,
    ReturnRequested,
)
from events.types import Address, Money
from simulator.messages import Later, Send, envelope, garble
from simulator.world import CURRENCIES, ShopProfile, World, rng_for

_CITIES = {"FR": "Lyon", "DE": "Berlin", "ES": "Sevilla", "IT": "Torino", "NL": "Utrecht",
           "BE": "Gent", "GB": "Leeds", "US": "Austin"}


def _now(sends: list[Send]) -> tuple[list[Send], list[Later]]:
    return sends, []


def _at(at: datetime, sends: list[Send]) -> Later:
    return Later(at, lambda _t: _now(sends))


class Shop:
    """One shop of the world; :meth:`place` and :meth:`on_status` return what it will send."""

    def __init__(self, world: World, profile: ShopProfile) -> None:
        self.world, self.profile = world, profile
        self.source = f"shop/{profile.shop_id}"
        self.lines: dict[str, tuple[OrderLine, ...]] = {}  # order id -> its lines
        self.reacted: set[str] = set()  # orders whose delivery the shop has acted on

    def order_id(self, n: int) -> str:
        return f"{self.profile.shop_id}-o{n}"

    def owns(self, key: bytes) -> bool:
        """Whether a record keyed by order id is about one of this shop's orders."""
        return key.decode(errors="replace").rsplit("-o", 1)[0] == self.profile.shop_id

    def place(self, n: int, now: datetime) -> list[Later]:
        """Order number ``n``, placed ``now``: the placement and everything the shop
        already knows it will do about it (pay, cancel, send garbage)."""
        order_id, shares = self.order_id(n), self.world.shares
        rng = rng_for(self.world.seed, order_id)
        placed = self._order(order_id, now, rng)
        self.lines[order_id] = placed.lines
        first = envelope(placed, f"{order_id}.placed", self.source, now)
        plan: list[Later] = []
        reorder = False
        if rng.random() < shares.pay:
            late = rng.random() < shares.pay_late
            reorder = not late and rng.random() < shares.reorder
            window = self.world.payment_window
            paid_at = now + (window * rng.uniform(0.4, 1.6) if late
                             else timedelta(0) if reorder else window * rng.uniform(0.01, 0.15))
            pays = self._payments(placed, paid_at, rng)
            pays[0] = _fault(pays[0], "reorder") if reorder else pays[0]
            plan.append(_at(paid_at, [pays[0], first] if reorder else [pays[0]]))
            plan += [_at(paid_at + timedelta(minutes=10 * n), [pay])
                     for n, pay in enumerate(pays[1:], start=1)]
            if rng.random() < shares.cancel_units:
                plan.append(self._cancel_unit(placed, paid_at, rng))
        if not reorder:  # else the payment overtook the order, sent right after it
            plan.insert(0, _at(now, [first]))
        if rng.random() < shares.cancel:
            at = now + timedelta(minutes=rng.uniform(2, 120))
            plan.append(_at(at, [envelope(OrderCancelled(
                order_id=order_id, reason="customer changed their mind", cancelled_at=at),
                f"{order_id}.cancelled", self.source, at)]))
        if rng.random() < shares.malformed:
            plan.append(_at(now + timedelta(seconds=30), [garble(first, rng)]))
        if rng.random() < shares.duplicate:
            plan.append(_at(now + timedelta(minutes=rng.uniform(0.1, 5)),
                            [_fault(first, "duplicate")]))
        return plan

    def _order(self, order_id: str, now: datetime, rng: random.Random) -> OrderPlaced:
        """An order as the shop's checkout computes it: lines, shipping (free from a
        threshold), sales tax where the shop adds it, and now and then a coupon."""
        skus = rng.sample(self.world.skus, rng.randint(1, min(5, len(self.world.skus))))
        currency, p = self.profile.currency, self.profile
        country = rng.choice(p.countries)
        lines = tuple(OrderLine(line_id=f"L{i + 1}", sku=sku, quantity=rng.randint(1, 3),
                                unit_price=Money(amount=p.prices[sku], currency=currency))
                      for i, sku in enumerate(skus))
        subtotal = sum((ln.unit_price.amount * ln.quantity for ln in lines), Decimal(0))
        discount = _cents(subtotal / 10) if rng.random() < self.world.shares.coupon else None
        shipping = p.shipping if p.shipping and subtotal < p.free_shipping_from else None
        tax = _cents((subtotal - (discount or 0)) * p.tax_rate) if p.tax_rate else None
        return OrderPlaced(
            order_id=order_id, shop_id=p.shop_id,
            customer_ref=f"{rng.choice(_NAMES)} <c{rng.randint(1, 99999)}@example.com>",
            ship_to=Address(name="Sam Example", line1=f"{rng.randint(1, 200)} Market Street",
                            city=_CITIES[country], postal_code=f"{rng.randint(10000, 99999)}",
                            country=country),
            currency=currency, lines=lines, placed_at=now,
            shipping=_money(shipping, currency), tax=_money(tax, currency),
            discount=_money(discount, currency))

    def _payments(self, placed: OrderPlaced, at: datetime, rng: random.Random) -> list[Send]:
        """How the customer pays the total: at once; in two parts; a little too much; or
        first in another currency (refunded), then right."""
        order_id, total, shares = placed.order_id, placed.total(), self.world.shares
        draw = rng.random()
        if draw < shares.pay_in_two:
            half = _cents(total.amount / 2)
            amounts = [(half, total.currency), (total.amount - half, total.currency)]
        elif draw < shares.pay_in_two + shares.overpay:
            amounts = [(total.amount + Decimal("1.00"), total.currency)]
        elif draw < shares.pay_in_two + shares.overpay + shares.wrong_currency:
            other = next(c for c in CURRENCIES if c != total.currency)
            amounts = [(total.amount, other), (total.amount, total.currency)]
        else:
            amounts = [(total.amount, total.currency)]
        return [envelope(PaymentConfirmed(order_id=order_id, payment_ref=f"pay-{order_id}-{n}",
                                          amount=Money(amount=amount, currency=currency),
                                          paid_at=at), f"{order_id}.paid.{n}", self.source, at)
                for n, (amount, currency) in enumerate(amounts)]

    def _cancel_unit(self, placed: OrderPlaced, paid_at: datetime,
                     rng: random.Random) -> Later:
        """One unit of one line cancelled soon after paying (it may have shipped by then:
        the pipeline then refuses that part)."""
        line = rng.choice(placed.lines)
        at = paid_at + timedelta(minutes=rng.uniform(1, 30))
        return _at(at, [envelope(OrderCancelled(
            order_id=placed.order_id, reason="one was enough", cancelled_at=at,
            lines=(LineQuantity(line_id=line.line_id, quantity=1),)),
            f"{placed.order_id}.cancel-unit", self.source, at)])

    def on_status(self, status: OrderStatusChanged) -> list[Later]:
        """Once an order is delivered: maybe confirm receipt, maybe ask for a return."""
        order_id = status.order_id
        if status.status != "delivered" or order_id in self.reacted:
            return []
        self.reacted.add(order_id)
        rng, plan = rng_for(self.world.seed, order_id, "delivered"), []
        now = status.changed_at
        if rng.random() < self.world.shares.confirm_delivery:
            at = now + timedelta(hours=rng.uniform(0.5, 12))
            plan.append(_at(at, [envelope(DeliveryConfirmed(order_id=order_id, confirmed_at=at),
                                          f"{order_id}.confirmed", self.source, at)]))
        delivered = [ln for ln in status.lines if ln.delivered > ln.returned]
        if delivered and rng.random() < self.world.shares.return_:
            at = now + timedelta(hours=rng.uniform(1, 12))
            line = rng.choice(delivered)
            defective = rng.random() < self.world.shares.defective
            plan.append(_at(at, [envelope(ReturnRequested(
                order_id=order_id, rma_id=f"rma-{order_id}",
                lines=(LineQuantity(line_id=line.line_id,
                                    quantity=rng.randint(1, line.delivered - line.returned)),),
                reason="arrived broken" if defective else "does not fit",
                reason_code="defective" if defective else "changed_mind", requested_at=at),
                f"{order_id}.return", self.source, at)]))
        return plan


_NAMES = ("Sam Example", "Ana Lopez", "Jo Smith", "Kim Park", "Lea Martin")


def _cents(amount: Decimal) -> Decimal:
    return amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def _money(amount: Decimal | None, currency: str) -> Money | None:
    return Money(amount=amount, currency=currency) if amount else None


def _fault(send: Send, fault: str) -> Send:
    return Send(send.topic, send.key, send.value, send.type, send.event_id, fault)

