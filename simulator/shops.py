"""A simulated shop: places orders, pays (mostly), cancels a few, confirms deliveries
and requests returns, with a small share of duplicated, reordered and garbled messages.

Every choice about an order is drawn from ``rng_for(seed, order_id)``, so the same
seed gives the same orders whatever the timing. The shop learns of deliveries
only from ``fulfillment.order-status``, as a real shop would.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

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
from simulator.world import ShopProfile, World, rng_for

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
            pay = envelope(PaymentConfirmed(order_id=order_id, amount=placed.total(),
                                            payment_ref=f"pay-{order_id}", paid_at=paid_at),
                           f"{order_id}.paid", self.source, paid_at,
                           fault="reorder" if reorder else None)
            plan.append(_at(paid_at, [pay, first] if reorder else [pay]))
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
        skus = rng.sample(self.world.skus, rng.randint(1, min(5, len(self.world.skus))))
        currency = self.profile.currency
        country = rng.choice(self.profile.countries)
        return OrderPlaced(
            order_id=order_id, shop_id=self.profile.shop_id,
            customer_ref=f"cust-{rng.randint(1, 99999)}",
            ship_to=Address(name="Sam Example", line1=f"{rng.randint(1, 200)} Market Street",
                            city=_CITIES[country], postal_code=f"{rng.randint(10000, 99999)}",
                            country=country),
            currency=currency,
            lines=tuple(OrderLine(line_id=f"L{i + 1}", sku=sku, quantity=rng.randint(1, 3),
                                  unit_price=Money(amount=self.profile.prices[sku],
                                                   currency=currency))
                        for i, sku in enumerate(skus)),
            placed_at=now)

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
            plan.append(_at(at, [envelope(ReturnRequested(
                order_id=order_id, rma_id=f"rma-{order_id}",
                lines=(LineQuantity(line_id=line.line_id, quantity=1),),
                reason="does not fit", requested_at=at),
                f"{order_id}.return", self.source, at)]))
        return plan


def _fault(send: Send, fault: str) -> Send:
    return Send(send.topic, send.key, send.value, send.type, send.event_id, fault)

