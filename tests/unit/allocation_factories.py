"""Factories for allocation inputs (catalog events and commands), with defaults."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from agents.core.allocation import Rules
from events.allocation import AllocateLine, CommitLine, ReleaseLine
from events.catalog import Destination, StockLevelReported, SupplierOfferUpdated
from events.types import Money

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
SKU = "SKU-1"
#: The rate table of the examples (docs/allocation.md): GBP deliberately has no rate.
RULES = Rules(fx_rates={"USD": Decimal(1), "EUR": Decimal("1.08")}, backorder_overtakes=3)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def dest(country: str, shipping: str = "0", transit: int = 3) -> Destination:
    return Destination(country=country, shipping_cost=Decimal(shipping), transit_days=transit)


def offer(supplier: str, priority: int = 1, cost: str = "5.00", lead: int = 2,
          active: bool = True, split: bool = True, minute: int = 0,
          currency: str = "EUR", destinations: tuple[Destination, ...] = (),
          ) -> SupplierOfferUpdated:
    return SupplierOfferUpdated(
        supplier_id=supplier, sku=SKU, priority=priority,
        unit_cost=Money(amount=Decimal(cost), currency=currency), lead_time_days=lead,
        acknowledge_sla_hours=24, dispatch_sla_hours=48, active=active, allow_split=split,
        destinations=destinations, updated_at=at(minute),
    )


def stock(supplier: str, available: int, minute: int = 0) -> StockLevelReported:
    return StockLevelReported(supplier_id=supplier, sku=SKU, available=available,
                              as_of=at(minute))


def alloc(order: str, qty: int, line: str = "1", excluded: tuple[str, ...] = (),
          country: str = "FR", pinned: str | None = None) -> AllocateLine:
    return AllocateLine(order_id=order, line_id=line, sku=SKU, quantity=qty,
                        ship_to_country=country, excluded_suppliers=excluded,
                        supplier_id=pinned, requested_at=T0)


def rel(order: str, line: str = "1", supplier: str | None = None,
        qty: int | None = None, out_of_stock: int | None = None) -> ReleaseLine:
    return ReleaseLine(order_id=order, line_id=line, sku=SKU, supplier_id=supplier,
                       quantity=qty, reason="test", requested_at=T0,
                       out_of_stock_at=None if out_of_stock is None else at(out_of_stock))


def commit(order: str, supplier: str, qty: int, minute: int, line: str = "1") -> CommitLine:
    """``supplier`` accepted ``qty`` units of the line at ``minute`` (its clock)."""
    return CommitLine(order_id=order, line_id=line, sku=SKU, supplier_id=supplier,
                      quantity=qty, accepted_at=at(minute), requested_at=T0)
