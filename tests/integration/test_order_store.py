"""The order agent's state survives Postgres exactly, key order included."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from agents.core import order_rules
from agents.core.orders import Order
from agents.orders import (
    CLOCK_SOURCE,
    TOPICS,
    DeadlineRunner,
    OrderHandler,
    lock_orders,
    save_orders,
)
from pipeline.runtime.checkpoints import advance_checkpoint
from pipeline.runtime.processor import Processor
from pipeline.runtime.schema import outbox, processed_events
from tests.projection_story import NoKafka
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

    def __init__(self, marks: dict[tuple[str, int], int],
                 fetched_ms: dict[tuple[str, int], int] | None = None) -> None:
        self.marks, self.fetched_ms = marks, fetched_ms or {}
        self._thread = self  # as Faust's aiokafka driver: consumer._thread._ensure_consumer()

    def highwater(self, tp: object) -> int | None:
        return self.marks.get((tp.topic, tp.partition))  # type: ignore[attr-defined]

    def _ensure_consumer(self) -> Highwaters:
        return self

    def last_poll_timestamp(self, tp: object) -> int | None:
        """When the client last fetched ``tp`` (ms of wall clock), as aiokafka says."""
        return self.fetched_ms.get((tp.topic, tp.partition))  # type: ignore[attr-defined]


async def test_deadlines_wait_for_partitions_that_lag(engine: AsyncEngine) -> None:
    from agents.orders import caught_up

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
    # a mark the client has not refreshed for 5 s (Faust stopped fetching the partition
    # under a backlog) may miss records written since: wait; one fetched just now counts
    now_ms = int(time.time() * 1000)
    fetched = {tp: now_ms - 20 for tp in marks} | {(TOPICS[1], 0): now_ms - 5000}
    assert await caught_up(processor, Highwaters(marks, fetched), {0, 1, 2}) == set()
    fetched[(TOPICS[1], 0)] = now_ms - 20
    assert await caught_up(processor, Highwaters(marks, fetched), {0, 1, 2}) == {0}


async def _unpaid_order(engine: AsyncEngine) -> tuple[str, int]:
    """An order placed at T0 and never paid, saved in a partition of its own."""
    oid, partition = f"ord-{uuid.uuid4().hex[:8]}", 7000 + uuid.uuid4().int % 100_000
    event = placed(("a", "SKU-A", 1, "2.00")).model_copy(update={"order_id": oid})
    order, _ = order_rules.decide(Order(oid), event, event.placed_at, POLICY, "shop/acme")
    assert order_rules.next_deadline(order, POLICY) == event.placed_at + timedelta(minutes=60)
    async with engine.begin() as conn:
        await save_orders(conn, [(order, partition)], POLICY)
    return oid, partition


async def _effects(engine: AsyncEngine, consumer: str) -> tuple[int, int]:
    """(processed_events rows, outbox rows) this consumer wrote."""
    async with engine.connect() as conn:
        seen = await conn.scalar(select(func.count()).select_from(processed_events)
                                 .where(processed_events.c.consumer == consumer))
        queued = await conn.scalar(select(func.count()).select_from(outbox)
                                   .where(outbox.c.producer == consumer))
    return int(seen or 0), int(queued or 0)


async def test_deadlines_fire_through_the_processor_once(engine: AsyncEngine) -> None:
    """The payment window closes as a local cause of the order agent's processor:
    state, the firing's id and the outbox in one transaction; a second run finds
    nothing due and writes nothing."""
    consumer = f"orders-test-{uuid.uuid4().hex[:6]}"
    oid, partition = await _unpaid_order(engine)
    processor = Processor(engine, OrderHandler(POLICY, consumer), NoKafka())
    runner = DeadlineRunner(POLICY, lambda: placed().placed_at + timedelta(hours=2), consumer)

    assert await processor.apply_local(TOPICS, {partition}, runner) == 1
    async with engine.begin() as conn:
        order = (await lock_orders(conn, {oid}))[oid]
    assert order.cancelled
    assert order.paid_at is None
    seen, queued = await _effects(engine, consumer)
    assert seen == 1
    assert queued >= 1
    async with engine.connect() as conn:
        source = await conn.scalar(select(processed_events.c.source)
                                   .where(processed_events.c.consumer == consumer))
    assert source == CLOCK_SOURCE

    assert await processor.apply_local(TOPICS, {partition}, runner) == 0
    assert await _effects(engine, consumer) == (seen, queued)


async def test_a_zombie_fires_no_deadline(engine: AsyncEngine) -> None:
    """A worker whose partition another worker committed on since its own last
    commit fires nothing there: the order stays as it was, nothing is queued."""
    consumer = f"orders-test-{uuid.uuid4().hex[:6]}"
    oid, partition = await _unpaid_order(engine)
    zombie = Processor(engine, OrderHandler(POLICY, consumer), NoKafka())
    zombie.committed[(TOPICS[0], partition)] = 3  # its last commit there
    async with engine.begin() as conn:  # the new owner moved on past it
        await advance_checkpoint(conn, consumer, TOPICS[0], partition, -1, 5)
    runner = DeadlineRunner(POLICY, lambda: placed().placed_at + timedelta(hours=2), consumer)

    assert await zombie.apply_local(TOPICS, {partition}, runner) == 0
    async with engine.begin() as conn:
        order = (await lock_orders(conn, {oid}))[oid]
    assert not order.cancelled
    assert await _effects(engine, consumer) == (0, 0)
