"""The demo's invariant checker on real Postgres: it passes a healthy run and bites on
an oversold budget, an order left waiting with no reason, and an overdue deadline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from projections import invariants
from projections.tables import read_tables

pytestmark = pytest.mark.integration
T = read_tables()
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
WINDOW, GRACE = timedelta(hours=1), timedelta(minutes=5)


def _order(order_id: str, status: str, since: datetime, **extra: Any) -> dict[str, Any]:
    return {"order_id": order_id, "shop_id": "shop", "version": 1, "status": status,
            "status_since": since, "lines": 1, "units": 1, "placed_at": since,
            "updated_at": since, "paid_at": None, "last_reason": None, **extra}


async def _check(engine: AsyncEngine, prefix: str) -> invariants.Verdict:
    return await invariants.check(engine, prefix, NOW, payment_window=WINDOW, grace=GRACE)


async def test_explained_waits_pass_and_each_broken_invariant_is_reported(
        engine: AsyncEngine) -> None:
    p = f"inv{NOW.timestamp():.0f}"
    old = NOW - timedelta(hours=3)
    async with engine.begin() as conn:
        await conn.execute(insert(T.order_status), [
            _order(f"{p}-done", "delivered", old),
            _order(f"{p}-unpaid", "placed", NOW - timedelta(minutes=20)),
            _order(f"{p}-held", "payment_held", old, last_reason="amount differs",
                   paid_at=old),
            _order(f"{p}-asked", "sent_to_supplier", old, paid_at=old),
        ])
        await conn.execute(insert(T.supplier_orders), [{
            "supplier_id": "s1", "supplier_order_id": f"{p}-so1", "order_id": f"{p}-asked",
            "units": 1, "requested_at": old, "acknowledge_by": NOW + timedelta(hours=1),
            "dispatch_by": NOW + timedelta(hours=40)}])
        await conn.execute(insert(T.supplier_stock), [{
            "supplier_id": "s1", "sku": f"{p}-SKU-1", "version": 3, "reported_available": 5,
            "reserved": 5, "remaining": 0, "report_as_of": old, "changed_at": old}])
    healthy = await _check(engine, p)
    assert healthy.ok
    assert healthy.orders == 4
    assert healthy.waiting == {"finished": 1, "awaiting payment": 1, "held for ops": 1,
                               "waiting for supplier": 1}

    async with engine.begin() as conn:
        await conn.execute(insert(T.order_status), [
            # the payment window passed long ago and nobody cancelled it
            _order(f"{p}-forgotten", "placed", old),
            # paid and allocated hours ago, never sent to a supplier
            _order(f"{p}-limbo", "allocated", old, paid_at=old),
            # the supplier's acknowledge deadline passed and nothing failed over
            _order(f"{p}-overdue", "sent_to_supplier", old, paid_at=old)])
        await conn.execute(insert(T.supplier_orders), [{
            "supplier_id": "s1", "supplier_order_id": f"{p}-so2", "order_id": f"{p}-overdue",
            "units": 1, "requested_at": old, "acknowledge_by": NOW - timedelta(hours=1),
            "dispatch_by": NOW + timedelta(hours=40)}])
        await conn.execute(insert(T.supplier_stock), [{
            "supplier_id": "s2", "sku": f"{p}-SKU-1", "version": 1, "reported_available": 2,
            "reserved": 3, "remaining": -1, "report_as_of": old, "changed_at": old}])
    broken = await _check(engine, p)
    assert not broken.ok
    assert {r["order_id"] for r in broken.unexplained} == {
        f"{p}-forgotten", f"{p}-limbo", f"{p}-overdue"}
    assert [(r["supplier_id"], r["reserved"]) for r in broken.oversold] == [("s2", 3)]
