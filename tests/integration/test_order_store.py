"""The order agent's state survives Postgres exactly, key order included."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from agents.orders import lock_orders, save_orders
from tests.unit.order_factories import POLICY, Flow, allocated, paid, placed

pytestmark = pytest.mark.integration


async def test_an_order_reads_back_as_written(engine: AsyncEngine) -> None:
    flow = Flow().do(placed(("b", "SKU-B", 1, "1.00"), ("a", "SKU-A", 1, "2.00")),
                     allocated("s2", 1, line="b", sku="SKU-B"),
                     allocated("s1", 1, line="a", sku="SKU-A"), paid("3.00"))
    order = flow.order
    async with engine.begin() as conn:
        await save_orders(conn, [(order, 0)], POLICY)
    async with engine.begin() as conn:
        loaded = (await lock_orders(conn, {order.order_id}))[order.order_id]
    assert loaded == order
    assert list(loaded.lines) == ["b", "a"]  # the order of lines is kept (jsonb would sort)
    assert list(loaded.supplier_orders) == list(order.supplier_orders)
