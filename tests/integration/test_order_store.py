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


class Highwaters:
    """Faust consumer stand-in: fetch high-water marks per (topic, partition)."""

    def __init__(self, marks: dict[tuple[str, int], int]) -> None:
        self.marks = marks

    def highwater(self, tp: object) -> int | None:
        return self.marks.get((tp.topic, tp.partition))  # type: ignore[attr-defined]


async def test_deadlines_wait_for_partitions_that_lag(engine: AsyncEngine) -> None:
    import uuid

    from agents.orders import TOPICS, OrderHandler, caught_up
    from pipeline.runtime.checkpoints import advance_checkpoint
    from pipeline.runtime.processor import Processor
    from tests.projection_story import NoKafka

    consumer = f"orders-test-{uuid.uuid4().hex[:6]}"
    processor = Processor(engine, OrderHandler(POLICY, consumer), NoKafka())
    async with engine.begin() as conn:
        for topic in TOPICS:  # partition 0: everything applied up to offset 9
            await advance_checkpoint(conn, consumer, topic, 0, -1, 9)
            await advance_checkpoint(conn, consumer, topic, 1, -1, 9)
    marks = {(t, p): 10 for t in TOPICS for p in (0, 1, 2)}
    marks[(TOPICS[1], 1)] = 12  # partition 1: supplier events 10 and 11 not applied yet
    ready = await caught_up(processor, Highwaters(marks), {0, 1, 2})
    assert ready == {0}  # 1 lags; 2 has applied nothing although records exist
    assert await caught_up(processor, Highwaters({}), {0}) == set()  # unknown: wait
