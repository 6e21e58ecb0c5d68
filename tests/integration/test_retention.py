"""Retention on real Postgres: exactly what is past its window goes, in batches, once;
what is inside it still makes redeliveries no-ops."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from events.envelope import CloudEvent
from pipeline.runtime.db import create_engine
from pipeline.runtime.processor import Processor
from pipeline.runtime.records import Incoming, Record
from pipeline.runtime.retention import RETENTION_LOCK, prune, sizes
from pipeline.runtime.schema import event_log, outbox, processed_events
from pipeline.runtime.settings import Settings
from tests.projection_story import Log, NoKafka, world

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC)


@pytest.fixture
def db(fresh_database: Callable[[str], Settings]) -> Settings:
    return fresh_database("retention")


@pytest_asyncio.fixture
async def engine(db: Settings) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(db)
    try:
        yield eng
    finally:
        await eng.dispose()


async def _seed(engine: AsyncEngine, age: timedelta, n: int, tag: str) -> None:
    """``n`` rows of each kind, ``age`` old: ids, sent and unsent outbox rows, log rows."""
    at = NOW - age
    async with engine.begin() as conn:
        await conn.execute(insert(processed_events), [
            {"consumer": "c", "source": "s", "event_id": f"{tag}-{i}", "processed_at": at}
            for i in range(n)])
        await conn.execute(insert(outbox), [
            {"event_id": uuid.uuid4(), "producer": "p", "topic": "t", "key": b"k",
             "value": b"v", "created_at": at, "published_at": at if sent else None}
            for i in range(n) for sent in (True, False)])
        await conn.execute(insert(event_log), [
            {"topic": f"t-{tag}", "partition": 0, "offset": i, "value": b"v",
             "recorded_at": at} for i in range(n)])


async def _count(engine: AsyncEngine, table: str, where: str = "TRUE") -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(text(f"SELECT count(*) FROM {table} WHERE {where}")) or 0)


async def test_prunes_exactly_what_is_past_its_window_in_batches(
        engine: AsyncEngine, db: Settings) -> None:
    await _seed(engine, timedelta(days=20), 7, "old")
    await _seed(engine, timedelta(hours=1), 3, "new")
    settings = db.model_copy(update={"retention_batch_size": 2})  # several batches each
    assert await prune(engine, settings) == {"processed_events": 7, "outbox": 7}
    assert await _count(engine, "processed_events") == 3
    assert await _count(engine, "processed_events", "event_id LIKE 'old-%'") == 0
    assert await _count(engine, "outbox", "published_at IS NOT NULL") == 3
    assert await _count(engine, "outbox", "published_at IS NULL") == 10  # never unsent ones
    assert await _count(engine, "event_log") == 10  # kept for ever by default
    kept_log = settings.model_copy(update={"retention_event_log_hours": 24.0})
    assert await prune(engine, kept_log) == {"processed_events": 0, "outbox": 0, "event_log": 7}
    assert await _count(engine, "event_log", "topic = 't-new'") == 3
    assert await prune(engine, kept_log) == {"processed_events": 0, "outbox": 0, "event_log": 0}
    assert (await sizes(engine))["event_log"][0] == 3


class Counting:
    """An agent's handler that counts the events it is given (dedup is the machinery's)."""

    consumer = "retention-test"

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def handle(self, conn: AsyncConnection, batch: Sequence[Incoming]) -> list[CloudEvent]:
        self.seen += [inc.event.id for inc in batch]
        return []


def _published_again(log: Log, records: list[Record]) -> list[Record]:
    """``records`` published again by their producer: new offsets, the same event ids."""
    again = []
    for rec in records:
        again.append(replace(rec, offset=log.offsets[(rec.topic, rec.partition)]))
        log.offsets[(rec.topic, rec.partition)] += 1
    return again


async def test_a_redelivery_inside_the_window_is_a_no_op_and_past_it_is_not(
        engine: AsyncEngine, db: Settings) -> None:
    log = world("ret", orders=3)
    records = list(log.records)
    handler = Counting()
    processor = Processor(engine, handler, NoKafka())
    await processor.process(records)
    first = len(handler.seen)  # the story itself holds duplicates and invalid events
    assert first > 50
    assert await prune(engine, db) == {"processed_events": 0, "outbox": 0}
    await processor.process(_published_again(log, records))  # inside the window
    assert len(handler.seen) == first
    async with engine.begin() as conn:  # the ids age past the window
        await conn.execute(text("UPDATE processed_events SET processed_at = now() - "
                                "interval '15 days' WHERE consumer = 'retention-test'"))
    assert await prune(engine, db) == {"processed_events": first, "outbox": 0}
    await processor.process(_published_again(log, records))  # the documented trade-off
    assert len(handler.seen) == 2 * first


async def test_one_pruner_at_a_time(engine: AsyncEngine, db: Settings) -> None:
    await _seed(engine, timedelta(days=20), 2, "old")
    async with engine.connect() as other:
        await other.execute(text("SELECT pg_advisory_lock(:k)"), {"k": RETENTION_LOCK})
        assert await prune(engine, db) is None
        await other.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": RETENTION_LOCK})
    assert await prune(engine, db) == {"processed_events": 2, "outbox": 2}


async def test_the_command_prints_one_line(engine: AsyncEngine, db: Settings,
                                           cli_env: Callable[..., dict[str, str]]) -> None:
    await _seed(engine, timedelta(days=20), 3, "old")
    env = cli_env(DROPSHIP_DATABASE_URL=db.database_url)
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "pipeline.entry.cli", "retention", "run"],
        env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith(
        "retention: pruned processed_events 3, outbox 3 rows in"), done.stdout
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(processed_events)) == 0
