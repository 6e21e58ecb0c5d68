"""The archive agent's batch transaction: exactly once under replay and zombies."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from agents import archive
from agents.archive import apply_batch, to_record
from pipeline.checkpoints import CheckpointConflict, LoggedRecord, load_checkpoint
from pipeline.schema import event_log

pytestmark = pytest.mark.integration


def _records(topic: str, partition: int, offsets: range) -> list[LoggedRecord]:
    return [to_record(topic, partition, o, b"k", b'{"id": "e%d"}' % o, 1.7e9) for o in offsets]


async def _count(engine: AsyncEngine, topic: str) -> int:
    async with engine.connect() as conn:
        n = await conn.scalar(select(func.count()).where(event_log.c.topic == topic))
    return int(n or 0)


async def test_batch_is_logged_and_checkpointed(engine: AsyncEngine) -> None:
    topic, consumer = f"t-{uuid.uuid4().hex[:8]}", f"c-{uuid.uuid4().hex[:8]}"
    batch = _records(topic, 0, range(0, 10)) + _records(topic, 1, range(0, 3))
    assert await apply_batch(engine, batch, consumer) == 13
    async with engine.connect() as conn:
        assert await load_checkpoint(conn, consumer, topic, 0) == 9
        assert await load_checkpoint(conn, consumer, topic, 1) == 2


async def test_redelivered_records_change_nothing(engine: AsyncEngine) -> None:
    topic, consumer = f"t-{uuid.uuid4().hex[:8]}", f"c-{uuid.uuid4().hex[:8]}"
    await apply_batch(engine, _records(topic, 0, range(0, 10)), consumer)
    # Kafka redelivers 5..14 after a rebalance: only 10..14 are new.
    assert await apply_batch(engine, _records(topic, 0, range(5, 15)), consumer) == 5
    assert await apply_batch(engine, _records(topic, 0, range(0, 15)), consumer) == 0
    assert await _count(engine, topic) == 15
    async with engine.connect() as conn:
        assert await load_checkpoint(conn, consumer, topic, 0) == 14


async def test_zombie_batch_rolls_back_whole(engine: AsyncEngine,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """If a checkpoint moved after the zombie read it, none of its batch is written."""
    topic, consumer = f"t-{uuid.uuid4().hex[:8]}", f"c-{uuid.uuid4().hex[:8]}"
    await apply_batch(engine, _records(topic, 0, range(0, 5)), consumer)

    async def stale_load(conn: AsyncConnection, c: str, t: str, p: int) -> int:
        # The zombie read partition 0's checkpoint before the owner moved it.
        return -1 if p == 0 else await load_checkpoint(conn, c, t, p)

    monkeypatch.setattr(archive, "load_checkpoint", stale_load)
    batch = _records(topic, 1, range(0, 4)) + _records(topic, 0, range(0, 8))
    with pytest.raises(CheckpointConflict):
        await apply_batch(engine, batch, consumer)
    monkeypatch.undo()
    assert await _count(engine, topic) == 5  # partition 1's rows rolled back too
    async with engine.connect() as conn:
        assert await load_checkpoint(conn, consumer, topic, 0) == 4
        assert await load_checkpoint(conn, consumer, topic, 1) == -1
