"""Lost-record detector: the consumer group's offset jumps past records never applied.

faust-streaming can commit past unprocessed records on a rebalance (DESIGN.md,
"Faust's limits"). Here the jump is forced: before the worker starts, its
consumer group's committed offset on ``shop.orders`` is set beyond records that
no agent has applied (a fresh database: checkpoint -1), so Faust hands the agent
an offset beyond checkpoint + 1. The worker must notice, log it, count it in
``/metrics``, and read the skipped records back rather than skip them.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from events.codec import encode, key_of
from events.topics import SHOP_ORDERS
from pipeline.devstack.processes import free_port
from pipeline.entry.worker import group_of
from pipeline.runtime.db import create_engine
from pipeline.runtime.kafka import client_options, create_producer, ensure_topics
from pipeline.runtime.schema import order_state
from pipeline.runtime.settings import Settings
from tests.helpers import sample_order, start_worker

pytestmark = pytest.mark.e2e
ORDERS = 40
KEEP = 2  # records per partition the consumer is still handed after the jump


async def publish_orders(settings: Settings, prefix: str) -> dict[int, list[int]]:
    """ORDERS orders; returns the offsets written per partition."""
    producer = create_producer(settings)
    await producer.start()
    written: dict[int, list[int]] = {}
    try:
        for i in range(ORDERS):
            event = sample_order(f"{prefix}-{i}")
            md = await (await producer.send(SHOP_ORDERS, encode(event), key=key_of(event)))
            written.setdefault(md.partition, []).append(md.offset)
    finally:
        await producer.stop()
    return written


async def commit_beyond(settings: Settings, group: str, offsets: dict[int, int]) -> None:
    """Commit ``group``'s offsets on shop.orders, as a faulty rebalance would."""
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tps = {p: TopicPartition(SHOP_ORDERS, p) for p in offsets}
        consumer.assign(list(tps.values()))
        await consumer.commit({tps[p]: OffsetAndMetadata(o, "") for p, o in offsets.items()})
    finally:
        await consumer.stop()


async def count_orders(engine: AsyncEngine, prefix: str) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(order_state)
                                     .where(order_state.c.order_id.like(f"{prefix}-%"))) or 0)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return str(resp.read().decode())


def metric(text: str, name: str, consumer: str) -> float:
    found = re.search(rf'^{name}{{consumer="{consumer}",group="[^"]+",worker="[^"]+"}} (\S+)$',
                      text, re.MULTILINE)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


async def test_a_jump_past_unapplied_records_is_detected_and_repaired(
        migrated: Settings, fresh_database: Callable[[str], Settings],
        cli_env: Callable[..., dict[str, str]], tmp_path: Path) -> None:
    await ensure_topics(migrated)
    fresh = fresh_database("lost")
    prefix = f"lost-{uuid.uuid4().hex[:8]}"
    written = await publish_orders(migrated, prefix)
    jump = {p: offsets[-1] + 1 - KEEP for p, offsets in written.items()}
    skipped = sum(len([o for o in offsets if o < jump[p]]) for p, offsets in written.items())
    app_id = f"lost-{uuid.uuid4().hex[:8]}"
    group = group_of(migrated.model_copy(update={"app_id": app_id}), ("orders",))
    await commit_beyond(migrated, group, jump)  # the group of a worker of the order agent

    port = free_port()
    log = tmp_path / "worker.log"
    proc = start_worker(cli_env(DROPSHIP_APP_ID=app_id, DROPSHIP_DATABASE_URL=fresh.database_url,
                                DROPSHIP_WEB_PORT=str(port)), log, "--agents", "orders")
    engine = create_engine(fresh)
    try:
        deadline = time.monotonic() + 120
        while await count_orders(engine, prefix) < ORDERS and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            await asyncio.sleep(0.5)
        assert await count_orders(engine, prefix) == ORDERS  # none of the skipped is lost
        metrics = await asyncio.to_thread(scrape, port)
    finally:
        await engine.dispose()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    text = log.read_text()
    assert skipped >= ORDERS - KEEP * len(written)
    assert re.search(r"orders: shop\.orders\[\d+\] offsets 0\.\.\d+ were skipped by the "
                     r"consumer; repaired \d+ records", text), text[-3000:]
    assert metric(metrics, "dropship_offset_jumps_total", "orders") >= len(written)
    assert metric(metrics, "dropship_gaps_repaired_total", "orders") >= skipped
