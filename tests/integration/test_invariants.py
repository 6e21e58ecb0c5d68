"""The demo's invariant checker on real Postgres: it passes a healthy run and bites on
an oversold budget, an order left waiting with no reason, and an overdue deadline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
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


def _money(paid: str, refunded: str, due: str) -> dict[str, Any]:
    return {"paid": Decimal(paid), "refunded": Decimal(refunded), "due": Decimal(due),
            "written_off": Decimal(0)}


async def test_money_and_time_rules_pass_a_healthy_run_and_bite_on_each_break(
        engine: AsyncEngine) -> None:
    p = f"cash{NOW.timestamp():.0f}"
    old = NOW - timedelta(hours=3)
    async with engine.begin() as conn:
        await conn.execute(insert(T.order_status), [
            _order(f"{p}-kept", "partially_refunded", old, paid_at=old,
                   **_money("30.00", "10.00", "20.00")),
            _order(f"{p}-gone", "cancelled", old, paid_at=old, **_money("30.00", "30.00", "0")),
            _order(f"{p}-sent", "sent_to_supplier", old, paid_at=old,
                   **_money("30.00", "0", "30.00")),
        ])
        await conn.execute(insert(T.supplier_orders), [{
            "supplier_id": "s1", "supplier_order_id": f"{p}-so1", "order_id": f"{p}-sent",
            "units": 1, "requested_at": old + timedelta(minutes=1),
            "acknowledge_by": old + timedelta(hours=2), "accepted_at": old + timedelta(hours=3),
            "cancel_cause": "acknowledge_sla_missed", "cancelled_at": old + timedelta(hours=2),
            "dispatch_by": NOW + timedelta(hours=40)}])  # accepted too late: a fair failover
    healthy = await _check(engine, p)
    assert (healthy.money, healthy.timing) == ([], [])

    async with engine.begin() as conn:
        await conn.execute(insert(T.order_status), [
            _order(f"{p}-greedy", "delivered", old, paid_at=old, **_money("10.00", "12.00", "0")),
            _order(f"{p}-kept-it", "cancelled", old, paid_at=old, **_money("10.00", "4.00", "0")),
            _order(f"{p}-short", "delivered", old, paid_at=old, **_money("10.00", "0", "8.00")),
            _order(f"{p}-early", "sent_to_supplier", old, paid_at=old,
                   **_money("10.00", "0", "10.00")),
        ])
        await conn.execute(insert(T.supplier_orders), [  # rows with the same columns
            {"supplier_id": "s1", "supplier_order_id": f"{p}-so2", "order_id": f"{p}-early",
             "units": 1, "requested_at": old - timedelta(minutes=5), "accepted_at": None,
             "cancel_cause": None, "cancelled_at": None, "acknowledge_by": NOW,
             "dispatch_by": NOW},
            {"supplier_id": "s2", "supplier_order_id": f"{p}-so3", "order_id": f"{p}-early",
             "units": 1, "requested_at": old, "acknowledge_by": old + timedelta(hours=2),
             "accepted_at": old + timedelta(minutes=30), "cancel_cause": "acknowledge_sla_missed",
             "cancelled_at": old + timedelta(hours=2), "dispatch_by": NOW}])
    broken = await _check(engine, p)
    assert not broken.ok
    assert {(r["order_id"], r["problem"]) for r in broken.money} == {
        (f"{p}-greedy", "refunded more than paid"),
        (f"{p}-kept-it", "cancelled, not all refunded"),
        (f"{p}-short", "paid - refunded is not what is due")}
    assert {(r["supplier_order_id"], r["problem"]) for r in broken.timing} == {
        (f"{p}-so2", "sent before the order was paid"),
        (f"{p}-so3", "failed over for not accepting, though it accepted in time")}
