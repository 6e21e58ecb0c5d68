"""Factories for allocation inputs (catalog events and commands), with defaults."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from events.allocation import AllocateLine, ReleaseLine
from events.catalog import StockLevelReported, SupplierOfferUpdated
from events.types import Money

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
SKU = "SKU-1"


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def offer(supplier: str, priority: int = 1, cost: str = "5.00", lead: int = 2,
          active: bool = True, split: bool = True, minute: int = 0,
          currency: str = "EUR") -> SupplierOfferUpdated:
    return SupplierOfferUpdated(
        supplier_id=supplier, sku=SKU, priority=priority,
        unit_cost=Money(amount=Decimal(cost), currency=currency), lead_time_days=lead,
        acknowledge_sla_hours=24, dispatch_sla_hours=48, active=active, allow_split=split,
        updated_at=at(minute),
    )


def stock(supplier: str, available: int, minute: int = 0) -> StockLevelReported:
    return StockLevelReported(supplier_id=supplier, sku=SKU, available=available,
                              as_of=at(minute))


def alloc(order: str, qty: int, line: str = "1", excluded: tuple[str, ...] = ()) -> AllocateLine:
    return AllocateLine(order_id=order, line_id=line, sku=SKU, quantity=qty,
                        ship_to_country="FR", excluded_suppliers=excluded, requested_at=T0)


def rel(order: str, line: str = "1", supplier: str | None = None,
        qty: int | None = None) -> ReleaseLine:
    return ReleaseLine(order_id=order, line_id=line, sku=SKU, supplier_id=supplier,
                       quantity=qty, reason="test", requested_at=T0)
