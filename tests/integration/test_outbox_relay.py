"""``OutboxRelay.close`` against the real broker and database: the flush in progress
ends its round, later flushes publish nothing and leave their rows for the next
start (a worker's stop closes the relays while agents may still be flushing)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.runtime.kafka import ensure_topics
from pipeline.runtime.outbox import OutboxRelay
from pipeline.runtime.schema import outbox
from pipeline.runtime.settings import Settings
from tests.projection_story import read_back

pytestmark = pytest.mark.integration


async def _queue(engine: AsyncEngine, producer: str, topic: str, n: int) -> list[bytes]:
    values = [f'{{"relay-test": "{uuid.uuid4()}"}}'.encode() for _ in range(n)]
    async with engine.begin() as conn:
        await conn.execute(outbox.insert(), [
            {"event_id": uuid.uuid4(), "producer": producer, "topic": topic,
             "key": b"relay-test", "value": v, "headers": {}} for v in values])
    return values


async def _unsent(engine: AsyncEngine, producer: str) -> int:
    async with engine.connect() as conn:
        rows = await conn.execute(select(outbox.c.id).where(
            outbox.c.producer == producer, outbox.c.published_at.is_(None)))
        return len(rows.all())


async def test_close_during_a_flush_lets_it_finish_and_stops_later_ones(
    migrated: Settings, engine: AsyncEngine,
) -> None:
    producer = f"relay-test-{uuid.uuid4().hex[:8]}"
    topic = f"test.{producer}"  # of this test alone
    await ensure_topics(migrated, (topic,))
    first = await _queue(engine, producer, topic, 30)
    relay = OutboxRelay(engine, producer, migrated, batch_size=10)
    flushing = asyncio.create_task(relay.flush())
    await asyncio.sleep(0)  # the flush has begun: it holds the relay
    await relay.close()
    assert await flushing == 10  # its round of rows went out, then it stopped
    later = await _queue(engine, producer, topic, 1)
    assert await relay.flush() == 0  # closed: nothing published, nothing reopened
    assert await _unsent(engine, producer) == 20 + 1  # left for the next start
    on_topic = {r.value for r in await read_back(migrated, (topic,))}
    assert len(on_topic & set(first)) == 10
    assert not on_topic & set(later)

    reopened = OutboxRelay(engine, producer, migrated)  # what the next start does
    try:
        assert await reopened.flush() == 21
    finally:
        await reopened.close()
    assert await _unsent(engine, producer) == 0
