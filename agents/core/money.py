"""The money rule of an order: how its total splits onto lines and units (pure, exact).

Who calls it: the order rules, when an order is placed (each line's share) and
whenever units are taken off an order (their value). Guarantees, documented with
worked examples in ``docs/order-lifecycle.md`` ("Money"):

1. the order's discount, tax and shipping are each split over its lines in
   proportion to the lines' subtotals (price x quantity), rounded down to the
   currency's minor unit on the running sum, so the parts add up to the amount
   exactly and no line's discount exceeds its subtotal;
2. a line's **goods** value is its subtotal - its discount share + its tax share;
   its **shipping** value is its shipping share; goods + shipping of every line add
   up to the order total exactly;
3. the first ``n`` of a line's ``q`` units are worth ``floor(value * n / q)``
   (all ``q``: the whole value), so units taken off one by one or all at once
   are worth the same in all, and all of them together exactly the line's value.

All arithmetic is on integers of minor units: nothing is lost to rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from events.iso import MINOR_UNITS


def minor(amount: Decimal, currency: str) -> int:
    """``amount`` in minor units of ``currency`` (an amount never has more decimals)."""
    return int(amount.scaleb(MINOR_UNITS[currency]))


def major(units: int, currency: str) -> Decimal:
    """Minor units of ``currency`` back to an amount with exactly its decimals."""
    return Decimal(units).scaleb(-MINOR_UNITS[currency])


def split(amount: int, weights: Sequence[int]) -> list[int]:
    """``amount`` over ``weights`` pro rata, floor on the running sum (rule 1); with
    no weight at all, evenly."""
    if not weights:
        return []
    total = sum(weights)
    if total == 0:
        weights, total = [1] * len(weights), len(weights)
    parts, done, running = [], 0, 0
    for i, weight in enumerate(weights):
        running += weight
        upto = amount if i == len(weights) - 1 else amount * running // total
        parts.append(upto - done)
        done = upto
    return parts


def portion(value: int, quantity: int, units: int) -> int:
    """What the first ``units`` of ``quantity`` units worth ``value`` together are worth
    (rule 3)."""
    if units >= quantity:
        return value
    return value * max(units, 0) // quantity


def units_value(value: int, quantity: int, before: int, units: int) -> int:
    """The value of units ``before + 1 .. before + units`` of a line (rule 3)."""
    return portion(value, quantity, before + units) - portion(value, quantity, before)


def line_values(subtotals: Sequence[int], discount: int, tax: int,
                shipping: int) -> list[tuple[int, int]]:
    """(goods, shipping) value of each line, in minor units (rules 1-2)."""
    discounts, taxes = split(discount, subtotals), split(tax, subtotals)
    shipped = split(shipping, subtotals)
    return [(sub - d + t, s) for sub, d, t, s in zip(subtotals, discounts, taxes, shipped,
                                                      strict=True)]
