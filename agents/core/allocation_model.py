"""The allocation core's plain state (offers, budgets, lines), its rules, and the
ranking of suppliers for a line: pure data and pure functions (no I/O).

The order of ranking criteria is documented in ``docs/allocation.md`` ("Ranking")
and in :func:`candidates`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from events.allocation import BackorderReason
from events.catalog import ANY_COUNTRY, Route

LineKey = tuple[str, str]  # (order id, line id)
#: An offer's destinations: country (or "*") -> (shipping cost per unit, transit days)
Destinations = Mapping[str, tuple[Decimal, int]]


@dataclass(frozen=True)
class Rules:
    """Settings the decisions depend on (the agent builds them from its settings).

    ``fx_rates``: value of one unit of each currency in a common base, to compare
    landed costs across currencies; ``backorder_overtakes``: how many times later
    lines may take stock a waiting line could use before that stock is kept for it.
    """

    fx_rates: Mapping[str, Decimal] = field(default_factory=dict)
    backorder_overtakes: int = 3


DEFAULT_RULES = Rules()


@dataclass(frozen=True)
class Offer:
    supplier_id: str
    priority: int
    unit_cost: Decimal
    currency: str
    lead_time_days: int
    active: bool
    allow_split: bool
    updated_at: datetime
    acknowledge_sla_hours: int = 24
    dispatch_sla_hours: int = 72
    destinations: Destinations = field(default_factory=dict)  # empty: ships everywhere

    def route(self, country: str | None) -> Route | None:
        """Shipping one unit to ``country``: (cost, transit days) or None if the offer
        does not ship there. No destinations: everywhere, free, transit unknown. A line
        without a known country (stored before countries were kept) ships anywhere."""
        if not self.destinations:
            return Route(Decimal(0), None)
        found = self.destinations.get(country or ANY_COUNTRY,
                                      self.destinations.get(ANY_COUNTRY))
        if found is None:
            return None if country else Route(Decimal(0), None)
        return Route(found[0], found[1])


@dataclass(frozen=True)
class Stock:
    """A supplier's budget for the sku: its latest report (or 0 as of an out-of-stock
    rejection) and ``used``: the live reserved units that report does not count, plus
    ``held``: units of reservations the supplier had accepted, released since that
    report (it holds them until it hears of the release, and may ship them first), so
    they stay used until a report as of after their acceptance says what became of
    them: (accepted at, units) pairs."""

    available: int
    as_of: datetime
    used: int = 0
    held: tuple[tuple[datetime, int], ...] = ()

    @property
    def remaining(self) -> int:
        return max(0, self.available - self.used)

    @property
    def held_units(self) -> int:
        return sum(units for _, units in self.held)

    def counts(self, res: Reservation) -> bool:
        """Whether this report already counts ``res``: accepted by the supplier before
        ``as_of`` (at the report's own instant it may not: we keep subtracting it)."""
        return res.committed_at is not None and self.counts_accepted(res.committed_at)

    def counts_accepted(self, accepted_at: datetime) -> bool:
        """Whether this report counts units the supplier accepted at ``accepted_at``."""
        return accepted_at < self.as_of


@dataclass(frozen=True)
class Reservation:
    supplier_id: str
    quantity: int
    committed_at: datetime | None = None  # when the supplier accepted the units (CommitLine)


@dataclass(frozen=True)
class Line:
    order_id: str
    line_id: str
    requested: int
    arrival: int  # position in the sku's queue: backorders are served in this order
    reservations: tuple[Reservation, ...] = ()
    backordered: int = 0
    excluded: frozenset[str] = frozenset()
    pinned: str | None = None  # ops re-routed the line: only this supplier serves it
    ship_to: str | None = None  # ship-to country (None: stored before it was kept)
    queued_at: datetime | None = None  # the sku's clock when the line first arrived
    overtakes: int = 0  # later lines served with stock it could use while it waited

    @property
    def allocated(self) -> int:
        return sum(r.quantity for r in self.reservations)

    @property
    def key(self) -> LineKey:
        return (self.order_id, self.line_id)


@dataclass(frozen=True)
class SkuState:
    sku: str
    offers: dict[str, Offer] = field(default_factory=dict)
    stock: dict[str, Stock] = field(default_factory=dict)
    lines: dict[LineKey, Line] = field(default_factory=dict)
    next_arrival: int = 0
    version: int = 0  # stock changes published so far (SupplierStockChanged.version)
    clock: datetime | None = None  # the latest time applied (see agents.core.allocation)


# --- ranking -----------------------------------------------------------------

def landed_cost(offer: Offer, route: Route, rules: Rules) -> Decimal | None:
    """Unit cost + shipping per unit, in the rate table's base; None without a rate."""
    rate = rules.fx_rates.get(offer.currency)
    return None if rate is None else (offer.unit_cost + route.shipping_cost) * rate


def candidates(state: SkuState, line: Line, rules: Rules = DEFAULT_RULES,
               ) -> list[tuple[Offer, Route]]:
    """The offers that may serve ``line``, best first, each with its route.

    Filter: active; only the pinned supplier's if the line is pinned, else not
    excluded for the line; ships to the line's country. Order: 1. priority (lower
    first); 2. landed cost (unit + shipping to the country) converted through the
    rate table, lower first; an offer whose currency has no rate comes after those
    that have one; 3. lead time; 4. supplier id (a total, deterministic order).
    """
    found: list[tuple[tuple[int, bool, Decimal, int, str], Offer, Route]] = []
    for o in state.offers.values():
        if not o.active or o.supplier_id in line.excluded or line.pinned not in (None,
                                                                                 o.supplier_id):
            continue
        route = o.route(line.ship_to)
        if route is None:
            continue
        cost = landed_cost(o, route, rules)
        key = (o.priority, cost is None, cost or Decimal(0), o.lead_time_days, o.supplier_id)
        found.append((key, o, route))
    found.sort(key=lambda f: f[0])
    return [(o, r) for _, o, r in found]


def ranked(state: SkuState, line: Line | None = None,
           rules: Rules = DEFAULT_RULES) -> list[Offer]:
    """The offers of :func:`candidates` (for a line without exclusions or country when
    ``line`` is None), best first."""
    line = line or Line("", "", 0, 0)
    return [o for o, _ in candidates(state, line, rules)]


def backorder_reason(state: SkuState, line: Line) -> BackorderReason:
    """Why nobody could fill the line. Filters in this order: active and the pin
    (``no_offer``), the ship-to country (``no_route``), the line's exclusions
    (``all_suppliers_excluded``); a candidate left: ``no_stock``."""
    active = [o for o in state.offers.values()
              if o.active and line.pinned in (None, o.supplier_id)]
    if not active:
        return "no_offer"
    routed = [o for o in active if o.route(line.ship_to) is not None]
    if not routed:
        return "no_route"
    if all(o.supplier_id in line.excluded for o in routed):
        return "all_suppliers_excluded"
    return "no_stock"


def usable(state: SkuState, line: Line, rules: Rules = DEFAULT_RULES) -> frozenset[str]:
    """The suppliers that could serve the line's backorder given stock: its candidates,
    less no-split offers while another supplier holds units of the line."""
    holders = {r.supplier_id for r in line.reservations}
    return frozenset(o.supplier_id for o, _ in candidates(state, line, rules)
                     if o.allow_split or not holders - {o.supplier_id})


def uncounted(state: SkuState, supplier_id: str, stock: Stock) -> int:
    """Live reserved units at a supplier that ``stock``'s report does not count."""
    return sum(r.quantity for ln in state.lines.values() for r in ln.reservations
               if r.supplier_id == supplier_id and not stock.counts(r))


def oversold(state: SkuState) -> Iterable[str]:
    """Suppliers whose budget is broken (for checks and tests): ``used`` below 0 or
    differing from the live reserved units its report does not count plus ``held``, or
    holding units its report counts."""
    for supplier_id, stock in state.stock.items():
        stale = any(stock.counts_accepted(at) for at, _ in stock.held)
        if stock.used < 0 or stale or \
                stock.used != uncounted(state, supplier_id, stock) + stock.held_units:
            yield supplier_id
