"""The projector's event_log keeping on the one transaction machinery: exactly once under replay,
gaps and zombies."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.runtime.checkpoints import CheckpointConflict, advance_checkpoint, load_checkpoint
from pipeline.runtime.processor import Processor
from pipeline.runtime.records import Record
from pipeline.runtime.schema import event_log
from projections.projector import ProjectorHandler
from tests.projection_story import NoKafka

pytestmark = pytest.mark.integration


def _records(topic: str, partition: int, offsets: range) -> list[Record]:
    return [Record(topic, partition, o, b"k", b'{"id": "e%d"}' % o, 1_700_000_000_000)
            for o in offsets]


def _archiver(engine: AsyncEngine) -> tuple[Processor, str, str]:
    topic, consumer = f"t-{uuid.uuid4().hex[:8]}", f"c-{uuid.uuid4().hex[:8]}"
    return Processor(engine, ProjectorHandler(consumer), NoKafka()), topic, consumer


async def _count(engine: AsyncEngine, topic: str) -> int:
    async with engine.connect() as conn:
        n = await conn.scalar(select(func.count()).where(event_log.c.topic == topic))
    return int(n or 0)


async def test_batch_is_logged_and_checkpointed(engine: AsyncEngine) -> None:
    archiver, topic, consumer = _archiver(engine)
    await archiver.process(_records(topic, 0, range(0, 10)) + _records(topic, 1, range(0, 3)))
    assert await _count(engine, topic) == 13
    async with engine.connect() as conn:
        assert await load_checkpoint(conn, consumer, topic, 0) == 9
        assert await load_checkpoint(conn, consumer, topic, 1) == 2


async def test_redelivered_records_change_nothing(engine: AsyncEngine) -> None:
    archiver, topic, consumer = _archiver(engine)
    await archiver.process(_records(topic, 0, range(0, 10)))
    await archiver.process(_records(topic, 0, range(5, 15)))  # redelivered after a rebalance
    await archiver.process(_records(topic, 0, range(0, 15)))
    assert await _count(engine, topic) == 15
    async with engine.connect() as conn:
        assert await load_checkpoint(conn, consumer, topic, 0) == 14


async def test_invalid_records_are_archived_verbatim(engine: AsyncEngine) -> None:
    archiver, topic, _ = _archiver(engine)
    await archiver.process([Record(topic, 0, 0, None, b"\x00\xffnot json", None)])
    async with engine.connect() as conn:
        row = (await conn.execute(select(event_log).where(event_log.c.topic == topic))).one()
    assert row.value == b"\x00\xffnot json"
    assert row.event_id is None


async def test_zombie_batch_rolls_back_whole(engine: AsyncEngine) -> None:
    """If a checkpoint moved after the zombie read it, none of its batch is written."""
    archiver, topic, consumer = _archiver(engine)
    await archiver.process(_records(topic, 0, range(0, 5)))
    real = archiver.checkpoints

    async def stale(tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        return {tp: (-1 if tp[1] == 0 else v) for tp, v in (await real(tps)).items()}

    archiver.checkpoints = stale  # type: ignore[method-assign]
    with pytest.raises(CheckpointConflict):
        # -1 for partition 0 makes 0..4 look fresh: a gap-free batch of 0..7
        await archiver.process(_records(topic, 1, range(0, 4)) + _records(topic, 0, range(0, 8)))
    assert await _count(engine, topic) == 5  # partition 1's rows rolled back too
    async with engine.connect() as conn:
        assert await load_checkpoint(conn, consumer, topic, 0) == 4
        assert await load_checkpoint(conn, consumer, topic, 1) == -1
    async with engine.begin() as conn:  # sanity: the real owner can still move on
        await advance_checkpoint(conn, consumer, topic, 0, 4, 7)
