"""Catalog and stock feed published by suppliers on ``supplier.catalog`` (key: sku)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, ClassVar, Literal, NamedTuple

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from events.base import Event, SourceKind
from events.topics import SUPPLIER_CATALOG
from events.types import Amount, CountryCode, Id, Money, Timestamp, Value

#: Most destinations one offer lists.
MAX_DESTINATIONS = 300
#: The destination that stands for every country an offer does not list by name.
ANY_COUNTRY: Literal["*"] = "*"


class _CatalogEvent(Event):
    TOPIC: ClassVar[str] = SUPPLIER_CATALOG
    SOURCE_KIND: ClassVar[SourceKind] = "supplier"
    SUBJECT: ClassVar[str] = "sku"


class Destination(Value):
    """Where an offer ships: a country (ISO 3166-1 alpha-2) or ``"*"`` (every country
    not listed by name), what shipping one unit there costs (in the offer's
    currency) and how many days the carrier takes from dispatch to delivery."""

    country: CountryCode | Literal["*"]
    shipping_cost: Amount
    transit_days: Annotated[int, Field(ge=0, le=365)]


class SupplierOfferUpdated(_CatalogEvent):
    """A supplier's terms for a sku. Lower ``priority`` is preferred.

    ``destinations`` says where the supplier ships, at what shipping cost per unit
    and in how many transit days; a line whose ship-to country is not listed (and no
    ``"*"`` entry) is never routed to this offer. Absent or empty: the supplier
    ships everywhere, shipping included in ``unit_cost``, transit time unknown
    (offers published before destinations existed keep working).
    """

    TYPE: ClassVar[str] = "dropship.offer.updated.v1"

    supplier_id: Id
    sku: Id
    priority: Annotated[int, Field(ge=0, le=1000)]
    unit_cost: Money
    lead_time_days: Annotated[int, Field(ge=0, le=365)]
    acknowledge_sla_hours: Annotated[int, Field(ge=1, le=720)]
    dispatch_sla_hours: Annotated[int, Field(ge=1, le=2160)]
    active: bool
    allow_split: bool = True
    destinations: Annotated[tuple[Destination, ...], Field(max_length=MAX_DESTINATIONS)] = ()
    updated_at: Timestamp

    @model_validator(mode="after")
    def _unique_destinations(self) -> SupplierOfferUpdated:
        seen: set[str] = set()
        for d in self.destinations:
            if d.country in seen:
                raise PydanticCustomError(
                    "duplicate_destination", "destination '{country}' appears twice",
                    {"country": d.country})
            seen.add(d.country)
        return self

    def route(self, country: str) -> Route | None:
        """The terms for shipping one unit to ``country``: (shipping cost, transit days,
        None if unknown); None if the offer does not ship there."""
        if not self.destinations:
            return Route(Decimal(0), None)
        named = {d.country: d for d in self.destinations}
        found = named.get(country, named.get(ANY_COUNTRY))
        return None if found is None else Route(found.shipping_cost, found.transit_days)


class Route(NamedTuple):
    """An offer's terms for one destination (see :meth:`SupplierOfferUpdated.route`)."""

    shipping_cost: Decimal
    transit_days: int | None


class StockLevelReported(_CatalogEvent):
    """How many units of a sku a supplier can still promise, as of a time.

    ``available`` counts the units **free** at ``as_of``: on hand, less every unit of
    the supplier orders the supplier had accepted before ``as_of`` and not yet
    shipped. It is not the total on hand: units of accepted supplier orders must not be
    counted again. Units of supplier orders the supplier had not accepted by
    ``as_of`` (not received yet, or received and not decided) are counted as free:
    the allocation agent subtracts them itself (docs/allocation.md, "Stock
    accounting"). A report older than the latest one applied is ignored.
    """

    TYPE: ClassVar[str] = "dropship.stock.reported.v1"

    supplier_id: Id
    sku: Id
    available: Annotated[int, Field(ge=0, le=100_000_000)]
    as_of: Timestamp
