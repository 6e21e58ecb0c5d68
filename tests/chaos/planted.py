"""Deliberate bugs in the agents' shared cores, to show which judge sees them.

Who calls it: ``tests/chaos/test_referee_bites.py``. :func:`plant` swaps one function
of ``agents.core`` for a wrong one, in this process (the replay checker then
replays the same wrong core) and, through ``planted_site/sitecustomize.py`` with
``DROPSHIP_PLANTED_BUG`` set, in every worker started with :func:`worker_env`. A
bug that both agree on is invisible to the checker (crash consistency holds); the
independent referee must still fail the run.

- ``half_payment``: an order counts as paid once half of what is due came in, so a
  payment in two parts sends supplier orders after the first (invariant 4);
- ``no_shipping_credit``: units taken off the order are credited without their share
  of shipping, so cancellations refund too little (invariant 3).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from agents.core import money, order_ledger
from agents.core.orders import Line, Order

SITE = Path(__file__).parent / "planted_site"
ROOT = Path(__file__).parents[2]


def _covered_at_half(order: Order, when: datetime) -> Order:
    if order.paid_at or order.cancelled or not order.paid_something:
        return order
    if (order.paid() - order.refunded) * 2 >= order.due():
        return replace(order, paid_at=when, short_since=None)
    return order


def _credited_goods_only(self: Line, currency: str) -> int:
    if not self.credited_goods:
        return 0
    return money.portion(money.minor(self.goods, currency), self.quantity, self.credited_goods)


BUGS: dict[str, tuple[object, str, Callable[..., object]]] = {
    "half_payment": (order_ledger, "covered", _covered_at_half),
    "no_shipping_credit": (Line, "credited_value", _credited_goods_only),
}


def plant(name: str) -> Callable[[], None]:
    """Put bug ``name`` in place; returns what takes it out again."""
    owner, attribute, wrong = BUGS[name]
    right = getattr(owner, attribute)
    setattr(owner, attribute, wrong)
    return lambda: setattr(owner, attribute, right)


def worker_env(name: str) -> dict[str, str]:
    """What a worker's environment needs to run with bug ``name``."""
    return {"PYTHONPATH": f"{SITE}:{ROOT}", "DROPSHIP_PLANTED_BUG": name}
