"""Postgres stops for 20 s under a running worker: it waits, retries, and resumes.

While the database is down nothing can be stored, so nothing may be taken as
consumed: the consumer group's committed offsets must not pass what Postgres
holds (checkpoint + 1). The worker logs each retry, backing off, stays up, and
once Postgres is back applies every order sent during the outage, exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from events.codec import encode, key_of
from events.topics import SHOP_ORDERS
from pipeline.clock import set_file_time
from pipeline.devstack import Stack
from pipeline.devstack.stack import restart_postgres
from pipeline.kafka import client_options, create_producer
from pipeline.schema import order_state
from pipeline.settings import Settings
from tests.chaos.harness import Worker, worker_env
from tests.helpers import sample_order

pytestmark = [pytest.mark.chaos, pytest.mark.e2e]
BEFORE, DURING, DOWN_S = 50, 50, 20.0


async def publish(settings: Settings, ids: list[str]) -> None:
    producer = create_producer(settings)
    await producer.start()
    try:
        for oid in ids:
            event = sample_order(oid)
            await (await producer.send(SHOP_ORDERS, encode(event), key=key_of(event)))
    finally:
        await producer.stop()


async def count(engine: AsyncEngine, prefix: str) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(order_state)
                                     .where(order_state.c.order_id.like(f"{prefix}-%"))) or 0)


async def wait_count(engine: AsyncEngine, prefix: str, n: int, worker: Worker) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert worker.alive, worker.log()[-3000:]
        with contextlib.suppress(Exception):  # Postgres may still be coming back
            if await count(engine, prefix) >= n:
                return
        await asyncio.sleep(0.5)
    raise AssertionError(f"fewer than {n} orders applied:\n{worker.log()[-3000:]}")


async def committed(settings: Settings, group: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets on shop.orders (-1: none); joins no group."""
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        found = {}
        for p in range(partitions):
            offset = await consumer.committed(TopicPartition(SHOP_ORDERS, p))
            found[p] = -1 if offset is None else offset
        return found
    finally:
        await consumer.stop()


async def test_postgres_down_20s_pauses_consumption_and_loses_nothing(
        chaos_stack: Stack, chaos_settings: Settings, chaos_engine: AsyncEngine,
        tmp_path: Path) -> None:
    prefix = f"pgdown-{uuid.uuid4().hex[:6]}"
    clock = tmp_path / "clock"
    set_file_time(clock, datetime.now(UTC))
    app_id = f"pgdown-{uuid.uuid4().hex[:6]}"
    worker = Worker("worker", worker_env(chaos_stack, app_id, clock), tmp_path)
    worker.start()
    try:
        await publish(chaos_settings, [f"{prefix}-{i}" for i in range(BEFORE)])
        await wait_count(chaos_engine, prefix, BEFORE, worker)
        async with chaos_engine.connect() as conn:
            stored: dict[int, int] = dict((await conn.execute(text(
                "SELECT partition, \"offset\" FROM checkpoints "
                "WHERE consumer = 'orders' AND topic = :t"), {"t": SHOP_ORDERS})).all())
        outage = asyncio.create_task(asyncio.to_thread(restart_postgres, chaos_stack, "fast",
                                                       DOWN_S))
        await asyncio.sleep(2.0)
        await publish(chaos_settings, [f"{prefix}-{BEFORE + i}" for i in range(DURING)])
        seen: list[dict[int, int]] = []
        while not outage.done():
            seen.append(await committed(chaos_settings, app_id,
                                        chaos_settings.kafka_topic_partitions))
            await asyncio.sleep(2.0)
        await outage
        assert worker.alive, "the worker exited while Postgres was down"
        await wait_count(chaos_engine, prefix, BEFORE + DURING, worker)
    finally:
        worker.stop()
    assert len(seen) >= 5
    for offsets in seen:  # nothing was taken as consumed beyond what Postgres holds
        assert all(o <= stored.get(p, -1) + 1 for p, o in offsets.items()), (offsets, stored)
    log = worker.log()
    delays = [float(d) for d in re.findall(r"database unavailable \(\w+\); retrying in "
                                           r"([\d.]+)s", log)]
    assert len(delays) >= 4, log[-3000:]
    assert delays[:3] == sorted(delays[:3])  # backing off...
    assert max(delays) >= 1.6  # ...up to seconds between tries
    async with chaos_engine.connect() as conn:
        applied = await conn.scalar(text(
            "SELECT count(*) FROM processed_events WHERE consumer = 'orders' "
            "AND source = 'shop/demo-shop'"))
    assert applied == BEFORE + DURING  # each order applied once
