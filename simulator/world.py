"""The simulated market: shops, suppliers, a catalog, and how often each behaves how.

Pure and seeded: :func:`make_world` returns the same world for the same seed
and options, and every later choice about one order or one supplier order is
drawn from :func:`rng_for` of its id, so a run's behaviour does not depend on
the order in which Kafka happens to deliver things.

Each supplier has a currency (its offers are priced in it), and a lane per
country it ships to: a shipping cost per unit (in its currency) and the transit
days its carrier takes. Its offers state them as destinations in one of three
styles: every country by name; a few by name and ``"*"`` for the rest; or none
at all (an offer from before destinations: ships everywhere, shipping included,
transit unknown). A supplier that does not serve every country names the ones
it serves.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields
from datetime import timedelta
from decimal import Decimal
from typing import Literal

from events.catalog import ANY_COUNTRY, Destination

#: Countries shops sell to; every supplier ships to most, not all, of them.
COUNTRIES = ("FR", "DE", "ES", "IT", "NL", "BE", "GB", "US")
CURRENCIES = ("EUR", "USD", "GBP")
CARRIERS = ("La Poste", "DHL", "UPS", "GLS", "DPD", "Royal Mail")
#: Suppliers' currencies, by supplier number (so a world of 4+ suppliers has offers in
#: three currencies), and what one unit of each is worth in USD (the pipeline's
#: default DROPSHIP_FX_RATES): costs are drawn in EUR and converted with it.
SUPPLIER_CURRENCIES = ("EUR", "USD", "EUR", "GBP", "EUR", "EUR")
FX = {"USD": Decimal(1), "EUR": Decimal("1.08"), "GBP": Decimal("1.27")}
DestinationStyle = Literal["named", "star", "none"]


@dataclass(frozen=True)
class Shares:
    """How often shops and suppliers do what (each a probability from 0 to 1).

    Shop shares are per order, supplier shares per supplier order. The fault
    shares (``duplicate``, ``reorder``, ``malformed``) apply to shop messages.
    """

    pay: float = 0.93            # orders paid at all (the rest never are: the window cancels them)
    pay_late: float = 0.08       # of paid orders: paid late, some after the payment window
    pay_in_two: float = 0.03     # of paid orders: half first, the balance a little later
    overpay: float = 0.01        # of paid orders: paid a little too much (the excess is refunded)
    wrong_currency: float = 0.01  # of paid orders: paid first in another currency, then right
    cancel: float = 0.03         # orders the shop cancels
    cancel_units: float = 0.02   # orders the shop cancels one unit of, after paying
    coupon: float = 0.05         # orders with a 10 % discount
    confirm_delivery: float = 0.6  # delivered orders the customer confirms
    return_: float = 0.06        # delivered orders with a return request
    defective: float = 0.3       # of returns: the goods are defective (shipping refunded too)
    duplicate: float = 0.02      # shop messages sent twice (same id)
    reorder: float = 0.02        # payments sent before their order
    malformed: float = 0.01      # orders followed by a garbled copy
    reject: float = 0.03         # supplier orders refused for no stock-related reason
    silent: float = 0.02         # supplier orders never answered (acknowledge SLA missed)
    late_dispatch: float = 0.01  # accepted supplier orders dispatched after their SLA
    ship_anyway: float = 0.3     # of those cancelled for their dispatch SLA: shipped anyway
    resellable: float = 0.9      # returned goods that go back to stock
    sold_elsewhere: float = 0.1  # per sku and restock round: a few free units sold elsewhere
    late_delivery: float = 0.03  # parcels delivered after their deadline
    delivery_failed: float = 0.02  # parcels lost, damaged or returned to sender

    @classmethod
    def names(cls) -> list[str]:
        return [f.name.rstrip("_") for f in fields(cls)]

    def with_overrides(self, pairs: dict[str, float]) -> Shares:
        """A copy with ``name=value`` overrides; raises ValueError naming a bad pair."""
        known = {f.name.rstrip("_"): f.name for f in fields(self)}
        update: dict[str, float] = {}
        for name, value in pairs.items():
            if name not in known:
                raise ValueError(f"unknown share '{name}'; known: {', '.join(known)}")
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"share '{name}' must be between 0 and 1, got {value}")
            update[known[name]] = value
        return Shares(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **update})


@dataclass(frozen=True)
class Lane:
    """How a supplier ships to one country: per unit, in its currency, and how long."""

    shipping_cost: Decimal
    transit_days: int


@dataclass(frozen=True)
class Offer:
    supplier_id: str
    sku: str
    priority: int
    unit_cost: Decimal
    currency: str
    acknowledge_sla_hours: int
    dispatch_sla_hours: int
    lead_time_days: int
    initial_stock: int
    destinations: tuple[Destination, ...] = ()


@dataclass(frozen=True)
class SupplierProfile:
    supplier_id: str
    countries: frozenset[str]
    reliability: float  # multiplies the reject/silent/late shares (0.5 good .. 2 poor)
    offers: tuple[Offer, ...]
    currency: str = "EUR"
    lanes: dict[str, Lane] = field(default_factory=dict, hash=False)  # country -> lane
    style: DestinationStyle = "named"

    def stated_transit(self, country: str) -> int | None:
        """The transit days its offers state for ``country`` (None: they do not say)."""
        return None if self.style == "none" else self.lanes[country].transit_days


@dataclass(frozen=True)
class ShopProfile:
    shop_id: str
    currency: str
    countries: tuple[str, ...]
    prices: dict[str, Decimal] = field(hash=False)
    shipping: Decimal = Decimal("4.90")  # per order, free from ``free_shipping_from``
    free_shipping_from: Decimal = Decimal("60")
    tax_rate: Decimal = Decimal(0)  # sales tax added at checkout (0: prices include VAT)


@dataclass(frozen=True)
class World:
    seed: int
    prefix: str
    skus: tuple[str, ...]
    suppliers: tuple[SupplierProfile, ...]
    shops: tuple[ShopProfile, ...]
    shares: Shares
    payment_window: timedelta = timedelta(hours=1)  # the platform's; late payers straddle it
    #: the pipeline's late-delivery grace and default transit (DROPSHIP_LATE_DELIVERY_
    #: GRACE_DAYS, DROPSHIP_DEFAULT_TRANSIT_DAYS): carriers are late relative to them
    delivery_grace: timedelta = timedelta(days=2)
    default_transit: timedelta = timedelta(days=7)
    #: longest lag between a stock snapshot (its as_of) and its publication
    report_lag: timedelta = timedelta(minutes=90)

    def supplier(self, supplier_id: str) -> SupplierProfile | None:
        return next((s for s in self.suppliers if s.supplier_id == supplier_id), None)


def rng_for(seed: int, *parts: object) -> random.Random:
    """A generator for one decision about one thing: same seed and parts, same draws."""
    return random.Random("/".join([str(seed), *map(str, parts)]))  # noqa: S311 (not crypto)


def make_world(seed: int, prefix: str, *, shops: int = 3, suppliers: int = 6, skus: int = 40,
               shares: Shares | None = None, stock: tuple[int, int] = (5, 60),
               payment_window: timedelta = timedelta(hours=1),
               transit_days: tuple[int, int] = (1, 6),
               delivery_grace: timedelta = timedelta(days=2),
               default_transit: timedelta = timedelta(days=7),
               report_lag: timedelta = timedelta(minutes=90),
               everywhere: bool = False) -> World:
    """A market of ``shops`` shops and ``suppliers`` suppliers over ``skus`` skus; each sku
    is carried by 1-4 suppliers with distinct priorities, costs and SLAs; suppliers'
    lanes take ``transit_days`` (a range) to each country they serve (with
    ``everywhere``, every supplier serves every country: benchmarks, where no line
    should wait for a route)."""
    rng = rng_for(seed, "world")
    sku_ids = tuple(f"{prefix}-SKU-{i:04d}" for i in range(skus))
    supplier_ids = [f"{prefix}-sup-{i}" for i in range(suppliers)]
    lanes = {s: _lanes(rng, transit_days, everywhere) for s in supplier_ids}
    styles = {s: _style(rng, len(lanes[s])) for s in supplier_ids}
    stated: dict[str, tuple[Destination, ...]] = {}
    for s in supplier_ids:
        stated[s], lanes[s] = _destinations(rng, lanes[s], styles[s])
    currency = {s: SUPPLIER_CURRENCIES[i % len(SUPPLIER_CURRENCIES)]
                for i, s in enumerate(supplier_ids)}
    carried: dict[str, list[Offer]] = {s: [] for s in supplier_ids}
    for sku in sku_ids:
        chosen = rng.sample(supplier_ids, rng.randint(1, min(4, suppliers)))
        base = Decimal(rng.randint(200, 4000)) / 100
        for priority, supplier in enumerate(chosen, start=1):
            eur = base * Decimal(rng.uniform(0.8, 1.3))
            cost = (eur * FX["EUR"] / FX[currency[supplier]]).quantize(Decimal("0.01"))
            carried[supplier].append(Offer(
                supplier_id=supplier, sku=sku, priority=priority, unit_cost=cost,
                currency=currency[supplier], acknowledge_sla_hours=rng.choice((2, 4, 6, 8)),
                dispatch_sla_hours=rng.choice((24, 36, 48, 72)),
                lead_time_days=rng.randint(1, 7), initial_stock=rng.randint(*stock),
                destinations=stated[supplier]))
    profiles = tuple(
        SupplierProfile(supplier_id=s, countries=frozenset(lanes[s]),
                        reliability=rng.choice((0.5, 1.0, 1.0, 1.5, 2.0)),
                        offers=tuple(carried[s]), currency=currency[s], lanes=lanes[s],
                        style=styles[s])
        for s in supplier_ids)
    shop_profiles = tuple(
        ShopProfile(shop_id=f"{prefix}-shop-{i}", currency=CURRENCIES[i % len(CURRENCIES)],
                    countries=tuple(rng.sample(COUNTRIES, rng.randint(3, 6))),
                    prices={sku: Decimal(rng.randint(500, 9000)).scaleb(-2) for sku in sku_ids},
                    shipping=Decimal(rng.choice(("0", "4.90", "5.90"))),
                    tax_rate=Decimal("0.08") if CURRENCIES[i % len(CURRENCIES)] == "USD"
                    else Decimal(0))
        for i in range(shops))
    return World(seed=seed, prefix=prefix, skus=sku_ids, suppliers=profiles,
                 shops=shop_profiles, shares=shares or Shares(), payment_window=payment_window,
                 delivery_grace=delivery_grace, default_transit=default_transit,
                 report_lag=report_lag)


def _lanes(rng: random.Random, transit_days: tuple[int, int],
           everywhere: bool = False) -> dict[str, Lane]:
    """A supplier's lanes: every country or all but one or two, each with its shipping
    cost per unit (0 to 6.00, a third of them free) and transit days."""
    left_out = rng.choice((0, 0, 0, 1, 1, 2))
    served = sorted(rng.sample(COUNTRIES, len(COUNTRIES) - (0 if everywhere else left_out)))
    return {c: Lane(Decimal(0) if rng.random() < 0.33
                    else Decimal(rng.randint(50, 600)).scaleb(-2),
                    rng.randint(*transit_days)) for c in served}


def _style(rng: random.Random, served: int) -> DestinationStyle:
    """How its offers state destinations: one serving every country may say none (ships
    everywhere) or use ``"*"``; one that does not must name the countries it serves."""
    return rng.choice(("named", "star", "none")) if served == len(COUNTRIES) else "named"


def _destinations(rng: random.Random, lanes: dict[str, Lane],
                  style: DestinationStyle) -> tuple[tuple[Destination, ...], dict[str, Lane]]:
    """A supplier's destinations (the same in all its offers) and its lanes made to
    match them: with ``"*"``, every country not named takes the ``"*"`` terms, so what
    an offer says is what its carrier does."""
    if style == "none":
        return (), lanes
    named = sorted(lanes) if style == "named" else sorted(rng.sample(sorted(lanes), 3))
    out = [Destination(country=c, shipping_cost=lanes[c].shipping_cost,
                       transit_days=lanes[c].transit_days) for c in named]
    if style == "named":
        return tuple(out), lanes
    star = lanes[next(c for c in sorted(lanes) if c not in named)]
    out.append(Destination(country=ANY_COUNTRY, shipping_cost=star.shipping_cost,
                           transit_days=star.transit_days))
    return tuple(out), {c: lanes[c] if c in named else star for c in lanes}
