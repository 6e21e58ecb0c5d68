"""The money rule of ``docs/order-lifecycle.md`` ("Money"), written again for the referee.

Who calls it: ``tests/chaos/referee.py``. Nothing here comes from ``agents/``: it
is the documented rule, in cents (every currency the simulator uses has two
decimals):

1. discount, tax and shipping are split over the lines in proportion to their
   subtotals, rounded down on the running sum, the last line taking the rest;
2. a line's goods = subtotal - discount share + tax share; its shipping = its share;
3. ``n`` of a line's ``q`` units are worth ``floor(value * n / q)``;
4. units that will not be sent are taken off with goods and shipping; returned units
   with goods, and shipping only when the return is the seller's fault;
6. what is paid beyond what is due is refunded at once: a customer keeps
   ``min(paid, due)`` in the order's currency.

:func:`candidates` gives what an order may keep: one amount when the world fixes
which units were taken off, several when an event raced with another within the
tolerance (a cancellation and a dispatch, a payment and its window), None when the
world does not fix it (a failed parcel, a failed-over supplier that shipped all the
same, a backorder old enough to expire).
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from events.orders import OrderPlaced
from tests.chaos.world_facts import Facts, OrderFacts, Terms

SELLERS_FAULT = ("defective", "damaged", "wrong_item")
Units = dict[str, int]  # line id -> units


@dataclass(frozen=True)
class LineValue:
    line_id: str
    quantity: int
    goods: int     # cents
    shipping: int  # cents


def cents(amount: Decimal) -> int:
    scaled = amount * 100
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} has more than two decimals")
    return int(scaled)


def split(amount: int, weights: list[int]) -> list[int]:
    """Rule 1: ``amount`` over ``weights``, floored on the running sum, the last the rest."""
    whole, shares, given, running = sum(weights), [], 0, 0
    for weight in weights[:-1]:
        running += weight
        share = amount * running // whole - given
        shares.append(share)
        given += share
    return [*shares, amount - given]


def line_values(placed: OrderPlaced) -> list[LineValue]:
    subs = [cents(ln.unit_price.amount) * ln.quantity for ln in placed.lines]
    discount, tax, shipping = (split(cents(placed.amount(n)), subs)
                               for n in ("discount", "tax", "shipping"))
    return [LineValue(ln.line_id, ln.quantity, sub - d + t, s)
            for ln, sub, d, t, s in zip(placed.lines, subs, discount, tax, shipping,
                                        strict=True)]


def due(values: list[LineValue], goods_off: Units, shipping_off: Units) -> int:
    """Rules 3-4: the total less the value of the units taken off (capped at a line)."""
    left = 0
    for v in values:
        goods, ship = (min(v.quantity, off.get(v.line_id, 0)) for off in (goods_off,
                                                                          shipping_off))
        left += v.goods - v.goods * goods // v.quantity
        left += v.shipping - v.shipping * ship // v.quantity
    return left


def credit_of(o: OrderFacts, units: Units) -> int:
    """What taking ``units`` off (goods and shipping) credits, by the rule."""
    assert o.placed is not None
    values = line_values(o.placed)
    return due(values, {}, {}) - due(values, units, units)


def taken_by_shop(o: OrderFacts, by: datetime | None = None) -> Units:
    """Every unit the shop asked to cancel (stamped no later than ``by``), shipped or not."""
    assert o.placed is not None
    units: Counter[str] = Counter()
    for cancel in o.cancels:
        if by is None or cancel.cancelled_at <= by:
            asked = cancel.lines or o.placed.lines
            for line in asked:
                units[line.line_id] += line.quantity
    return dict(units)


def shipped_by(o: OrderFacts, line_id: str, at: datetime) -> int:
    return sum(ln.quantity for s in o.shipments.values() if s.dispatched_at <= at
               for ln in s.lines if ln.line_id == line_id)


def undetermined(o: OrderFacts, facts: Facts, terms: Terms) -> bool:
    """The world does not fix what was taken off (module docstring)."""
    assert o.placed is not None
    reconciled = any(facts.supplier_orders[so].cancelled is not None
                     and facts.supplier_orders[so].shipments for so in o.supplier_orders)
    quantity = {ln.line_id: ln.quantity for ln in o.placed.lines}
    over = any(n > quantity.get(line, 0) for line, n in o.held_units().items())
    several = len(o.cancels) > 1 and bool(o.shipments)
    old = o.placed.placed_at + terms.backorder_window <= terms.span.end
    return bool(o.failed) or reconciled or over or several or old


def candidates(o: OrderFacts, facts: Facts, terms: Terms) -> set[int] | None:
    """What the order may keep, in cents of its currency (module docstring)."""
    placed = o.placed
    assert placed is not None
    if undetermined(o, facts, terms):
        return None
    whole: Units = {ln.line_id: ln.quantity for ln in placed.lines}
    goods: Counter[str] = Counter()
    ship: Counter[str] = Counter()
    maybes: list[list[Units]] = []
    for choices in _payment_takeoffs(o, terms, whole) + _shop_takeoffs(o, terms):
        if len(choices) == 1:
            goods.update(choices[0])
            ship.update(choices[0])
        else:
            maybes.append(choices)
    for received in o.received:
        asked = o.returns.get(received.rma_id)
        fault = asked is not None and asked.reason_code in SELLERS_FAULT
        for line in received.lines:
            goods[line.line_id] += line.quantity
            ship[line.line_id] += line.quantity if fault else 0
    values, paid = line_values(placed), cents(o.paid(placed.currency))
    out = set()
    for combo in itertools.product(*maybes):
        extra: Counter[str] = Counter()
        for units in combo:
            extra.update(units)
        out.add(min(paid, due(values, dict(goods + extra), dict(ship + extra))))
    return out


def _payment_takeoffs(o: OrderFacts, terms: Terms, whole: Units) -> list[list[Units]]:
    """The whole order, taken off when its payment window closes unpaid or its short
    payment's window runs out (both choices when the payment raced the deadline)."""
    placed = o.placed
    assert placed is not None
    first = o.first_paid_at()
    deadline = placed.placed_at + terms.payment_window
    if first is None or first > deadline + terms.tolerance:
        return [[whole]]
    out: list[list[Units]] = []
    if first > deadline - terms.jitter:
        out.append([{}, whole])
    held_until = first + terms.held_payment_window
    if o.paid(placed.currency, by=held_until) < placed.total().amount and \
            held_until <= terms.span.end:
        out.append([{}, whole])
    return out


def _shop_takeoffs(o: OrderFacts, terms: Terms) -> list[list[Units]]:
    """The units each cancellation by the shop takes off: those not shipped when it was
    applied (both choices when a dispatch came within the tolerance of it)."""
    placed = o.placed
    assert placed is not None
    quantity = {ln.line_id: ln.quantity for ln in placed.lines}
    out = []
    for cancel in o.cancels:
        asked = {ln.line_id: ln.quantity for ln in cancel.lines} if cancel.lines else quantity
        at, tol = cancel.cancelled_at, terms.tolerance
        most = {line: min(n, quantity[line] - shipped_by(o, line, at - tol))
                for line, n in asked.items() if line in quantity}
        least = {line: min(n, quantity[line] - shipped_by(o, line, at + tol))
                 for line, n in asked.items() if line in quantity}
        out.append([most] if most == least else [most, least])
    return out
