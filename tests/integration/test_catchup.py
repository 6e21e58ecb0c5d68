"""``pipeline.entry.catchup.backlog``: 0 only when nothing is left, even when the relay
publishes an outbox row between its reads (the demo waits on it; a test that checked
"caught up" in that order once compared read models one dead letter apart)."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.entry import catchup
from pipeline.runtime.kafka import create_producer, ensure_topics
from pipeline.runtime.settings import Settings

pytestmark = pytest.mark.integration


async def _publish(settings: Settings, topic: str) -> None:
    producer = create_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"{}", partition=0)
    finally:
        await producer.stop()


async def test_a_record_published_while_backlog_reads_the_outbox_counts(
    migrated: Settings, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic = f"test.catchup-{uuid.uuid4().hex[:8]}"  # of this test alone
    await ensure_topics(migrated, (topic,))
    consumers = {"catchup-a": (topic,), "catchup-b": (topic,)}
    real_unsent = catchup.unsent

    async def relay_publishes_meanwhile(eng: AsyncEngine) -> int:
        # what the relay does between backlog's steps 1 and 2: the row lands on the
        # topic after step 1 read its end, and is no longer unsent
        await _publish(migrated, topic)
        return await real_unsent(eng)

    assert await catchup.backlog(migrated, engine, consumers) == await real_unsent(engine)
    monkeypatch.setattr(catchup, "unsent", relay_publishes_meanwhile)
    racing = await catchup.backlog(migrated, engine, consumers)
    monkeypatch.setattr(catchup, "unsent", real_unsent)
    settled = await catchup.backlog(migrated, engine, consumers)
    unpublished = await real_unsent(engine)
    # one record neither consumer applied, counted per consumer, in step 3 then as lag
    assert racing == settled == unpublished + 2
