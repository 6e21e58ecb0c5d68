"""Catalog and stock feed published by suppliers on ``supplier.catalog`` (key: sku)."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field

from events.base import Event, SourceKind
from events.topics import SUPPLIER_CATALOG
from events.types import Id, Money, Timestamp


class _CatalogEvent(Event):
    TOPIC: ClassVar[str] = SUPPLIER_CATALOG
    SOURCE_KIND: ClassVar[SourceKind] = "supplier"
    SUBJECT: ClassVar[str] = "sku"


class SupplierOfferUpdated(_CatalogEvent):
    """A supplier's terms for a sku. Lower ``priority`` is preferred."""

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
    updated_at: Timestamp


class StockLevelReported(_CatalogEvent):
    """How many units of a sku a supplier can ship, as of a time."""

    TYPE: ClassVar[str] = "dropship.stock.reported.v1"

    supplier_id: Id
    sku: Id
    available: Annotated[int, Field(ge=0, le=100_000_000)]
    as_of: Timestamp
