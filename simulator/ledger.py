"""A supplier's inventory ledger, and the simulation's books of what suppliers were asked.

:class:`Inventory` (one per supplier, pure): units **on hand** per sku and the
units **promised** to supplier orders it accepted and has not shipped;
``free = on hand - promised``. Accepting takes units from free at once;
shipping takes them off the shelf (free does not change); a cancellation gives
back what was promised and not shipped; a restock or a resellable return adds to
the shelf; a sale on another channel takes free units only.

:class:`Books` (one per simulation) records, independently of the pipeline, every
request a supplier received with the units it had free at that moment, every
stock report it published, every unit it sold elsewhere, and every parcel. From
them :meth:`Books.over_asks` lists the requests for more units than were free,
each explained (docs/simulator.md, "The books"):

- ``report_lag``: the shortfall is covered by units sold elsewhere after the
  newest report the pipeline surely had when it sent the request;
- ``race``: covered by units sold elsewhere after the newest report the pipeline
  surely had when the order was placed (its units were reserved before the
  report that showed the sale; a reservation is never taken back for it);
- ``unexplained``: neither: the pipeline asked for units it had no reason to
  think were free (double booking).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

Decision = Literal["accepted", "out_of_stock", "cannot_ship_to_country", "other", "silent"]
Explanation = Literal["report_lag", "race", "unexplained"]
Fate = Literal["on_time", "late", "lost", "damaged", "returned_to_sender"]


@dataclass
class Inventory:
    """One supplier's stock (see the module docstring). Never goes below 0."""

    on_hand: dict[str, int]
    promised: dict[str, Counter[str]] = field(default_factory=dict)  # so id -> sku -> units

    def free(self, sku: str) -> int:
        return self.on_hand.get(sku, 0) - sum(p[sku] for p in self.promised.values())

    def fits(self, need: Counter[str]) -> bool:
        """Whether every sku of ``need`` is carried and has that many units free."""
        return all(sku in self.on_hand and self.free(sku) >= units for sku, units in need.items())

    def take(self, supplier_order_id: str, need: Counter[str]) -> None:
        """Promise ``need`` to an accepted supplier order; refuses what does not fit."""
        if supplier_order_id in self.promised or not self.fits(need):
            raise ValueError(f"cannot promise {dict(need)} to {supplier_order_id}")
        self.promised[supplier_order_id] = Counter(need)

    def give_back(self, supplier_order_id: str) -> Counter[str] | None:
        """A cancellation: the units promised and not shipped are free again."""
        return self.promised.pop(supplier_order_id, None)

    def ship(self, supplier_order_id: str) -> Counter[str] | None:
        """The promised units leave the shelf (None: nothing promised to it)."""
        units = self.promised.pop(supplier_order_id, None)
        for sku, n in (units or Counter[str]()).items():
            self.on_hand[sku] -= n
        return units

    def add(self, sku: str, units: int) -> None:
        """A restock or a resellable return (a sku it does not carry is ignored)."""
        if sku in self.on_hand:
            self.on_hand[sku] += units

    def sell_elsewhere(self, sku: str, units: int) -> int:
        """Sell up to ``units`` free units on another channel; returns how many it sold."""
        sold = max(0, min(units, self.free(sku)))
        self.on_hand[sku] -= sold
        return sold


@dataclass(frozen=True)
class Receipt:
    """A supplier received a supplier order: per line (sku, units asked, units free)."""

    supplier_id: str
    supplier_order_id: str
    order_id: str
    country: str
    requested_at: datetime
    received_at: datetime
    lines: tuple[tuple[str, int, int], ...]
    decision: Decision

    def shortfall(self) -> dict[str, int]:
        """Units asked beyond what was free, per sku (lines of one sku added up)."""
        asked, free = Counter[str](), {}
        for sku, units, available in self.lines:
            asked[sku] += units
            free[sku] = available
        return {sku: n - free[sku] for sku, n in asked.items() if n > free[sku]}


@dataclass(frozen=True)
class Parcel:
    """A dispatched shipment and what its carrier will do with it."""

    supplier_id: str
    supplier_order_id: str
    order_id: str
    shipment_id: str
    dispatched_at: datetime
    expected_by: datetime
    deliver_by: datetime
    fate: Fate
    ends_at: datetime
    after_cancel: bool = False


@dataclass(frozen=True)
class OverAsk:
    receipt: Receipt
    shortfall: dict[str, int]
    explanation: Explanation


@dataclass
class Books:
    """The simulation's own records (module docstring). ``latency``: how long after its
    publication a stock report is surely applied by the pipeline."""

    latency: timedelta = timedelta(0)
    receipts: list[Receipt] = field(default_factory=list)
    reports: dict[tuple[str, str], list[tuple[datetime, datetime, int]]] = field(
        default_factory=dict)  # (supplier, sku) -> [(published_at, as_of, available)]
    sales: dict[tuple[str, str], list[tuple[datetime, int]]] = field(default_factory=dict)
    placed: dict[str, datetime] = field(default_factory=dict)  # order id -> placed at
    parcels: list[Parcel] = field(default_factory=list)
    ended: set[str] = field(default_factory=set)  # shipment ids whose end was sent
    cancelled_unanswered: int = 0  # decided, then cancelled before the answer went out

    def report(self, supplier_id: str, sku: str, published_at: datetime, as_of: datetime,
               available: int) -> None:
        self.reports.setdefault((supplier_id, sku), []).append((published_at, as_of, available))

    def sold(self, supplier_id: str, sku: str, at: datetime, units: int) -> None:
        if units > 0:
            self.sales.setdefault((supplier_id, sku), []).append((at, units))

    def decisions(self) -> Counter[str]:
        return Counter(r.decision for r in self.receipts)

    def over_asks(self) -> list[OverAsk]:
        """Every receipt asking beyond free, explained (see the module docstring)."""
        out = []
        for receipt in self.receipts:
            short = receipt.shortfall()
            if short:
                out.append(OverAsk(receipt, short, self._explain(receipt, short)))
        return out

    def _explain(self, receipt: Receipt, short: dict[str, int]) -> Explanation:
        placed = self.placed.get(receipt.order_id, receipt.requested_at)
        found: Explanation = "report_lag"
        for sku, missing in short.items():
            key = (receipt.supplier_id, sku)
            if self._sold_since(key, self._known_as_of(key, receipt.requested_at),
                                receipt.received_at) >= missing:
                continue
            if self._sold_since(key, self._known_as_of(key, placed),
                                receipt.received_at) >= missing:
                found = "race"
                continue
            return "unexplained"
        return found

    def _known_as_of(self, key: tuple[str, str], at: datetime) -> datetime | None:
        """The as_of of the newest report of ``key`` surely applied by ``at``."""
        known = [as_of for published, as_of, _ in self.reports.get(key, ())
                 if published + self.latency <= at]
        return max(known, default=None)

    def _sold_since(self, key: tuple[str, str], since: datetime | None,
                    until: datetime) -> int:
        return sum(n for at, n in self.sales.get(key, ())
                   if (since is None or at > since) and at <= until)

    def summary(self) -> dict[str, object]:
        """Plain figures for the demo's summary and its invariants."""
        over = self.over_asks()
        explained = Counter(o.explanation for o in over)
        oos = Counter(o.explanation for o in over if o.receipt.decision == "out_of_stock")
        fates = Counter(p.fate for p in self.parcels)
        ended = Counter(p.fate for p in self.parcels if p.shipment_id in self.ended)
        return {
            "requests": len(self.receipts), "decisions": dict(self.decisions()),
            "over_asks": len(over), "over_asks_by_explanation": dict(explained),
            "out_of_stock_by_explanation": dict(oos),
            "unexplained": [(o.receipt.supplier_id, o.receipt.supplier_order_id, o.shortfall)
                            for o in over if o.explanation == "unexplained"],
            "cannot_ship": [(r.supplier_id, r.supplier_order_id, r.country)
                            for r in self.receipts if r.decision == "cannot_ship_to_country"],
            "parcels": len(self.parcels), "fates": dict(fates), "fates_sent": dict(ended),
            "shipped_after_cancel": sum(p.after_cancel for p in self.parcels),
            "sold_elsewhere": sum(n for v in self.sales.values() for _, n in v),
        }
