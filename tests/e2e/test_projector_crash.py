"""The projector killed with SIGKILL mid-stream and restarted ends with the same read
models as an uncrashed run over the same records; its /metrics then show no lag.

1. publish a few thousand records of orders' lives on the projector's topics;
2. run ``dropship worker --agents projector`` on a fresh database, SIGKILL it once
   it has applied part of the stream, start it again, wait until every partition's
   checkpoint reaches the broker's high-water mark;
3. reference: read every record of those topics back from Kafka and apply them
   in-process, uncrashed, to another fresh database;
4. compare every read model row by row, and scrape the restarted worker's /metrics.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.devstack.processes import free_port
from pipeline.entry.catchup import unsent
from pipeline.runtime.db import create_engine
from pipeline.runtime.kafka import create_producer, ensure_topics
from pipeline.runtime.lag import broker_ends
from pipeline.runtime.records import Record
from pipeline.runtime.schema import checkpoints
from pipeline.runtime.settings import Settings
from projections.projector import TOPICS
from tests.helpers import start_worker, stop_worker
from tests.projection_story import project_all, read_back, snapshot, world

pytestmark = pytest.mark.e2e


async def _applied(engine: AsyncEngine) -> int:
    """Records applied by the projector so far (sum of checkpoint + 1)."""
    async with engine.connect() as conn:
        n = await conn.scalar(select(func.sum(checkpoints.c.offset + 1)).where(
            checkpoints.c.consumer == "projector"))
    return int(n or 0)


async def _until(what: str, check: Callable[[], object], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def _publish(settings: Settings, records: list[Record]) -> None:
    producer = create_producer(settings)
    await producer.start()
    try:
        for rec in records:
            await producer.send(rec.topic, rec.value, key=rec.key)
        await producer.flush()
    finally:
        await producer.stop()


async def test_projector_killed_mid_stream_ends_like_an_uncrashed_run(
    migrated: Settings, fresh_database: Callable[[str], Settings],
    cli_env: Callable[..., dict[str, str]], tmp_path: Path,
) -> None:
    await ensure_topics(migrated)
    await _publish(migrated, world("crash", orders=150).records)
    total = sum(last + 1 for last in (await broker_ends(migrated, TOPICS)).values())
    crashed_db = fresh_database("crashed")
    engine = create_engine(crashed_db)
    port = free_port()
    env = cli_env(DROPSHIP_DATABASE_URL=crashed_db.database_url, DROPSHIP_WEB_PORT=str(port),
                  DROPSHIP_AGENT_BATCH_SIZE="40", DROPSHIP_AGENT_BATCH_WITHIN_S="0.02")
    args = ("--agents", "projector")
    log = tmp_path / "first.log"
    worker = start_worker(env, log, *args)
    try:
        await _until("part of the stream applied", lambda: _some(engine, total))
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
        killed_at = await _applied(engine)
        assert 0 < killed_at < total, (killed_at, total)
        log = tmp_path / "second.log"
        worker = start_worker(env, log, *args)
        await _until("all applied after restart", lambda: _all(engine, migrated), 180)
        metrics = await _scrape(port)
    finally:
        stop_worker(worker, log)
    reference = create_engine(fresh_database("uncrashed"))
    try:
        await project_all(reference, await read_back(migrated, TOPICS), batch=500)
        crashed, uncrashed = await snapshot(engine), await snapshot(reference)
        for name in crashed:
            extra = {repr(r) for r in crashed[name]} ^ {repr(r) for r in uncrashed[name]}
            assert not extra, (name, sorted(extra)[:4])
        assert crashed == uncrashed
    finally:
        await reference.dispose()
        await engine.dispose()
    assert re.search(r'^dropship_consumer_lag\{consumer="projector",group="[^"]+",'
                     r'partition="0",topic="shop.orders",worker="[^"]+"\} 0.0$',
                     metrics, re.MULTILINE), metrics
    assert "dropship_events_processed_total" in metrics


async def _some(engine: AsyncEngine, total: int) -> bool:
    return await _applied(engine) > total // 5


async def _all(engine: AsyncEngine, settings: Settings) -> bool:
    """Caught up with everything on the topics now, the projector's own dead letters
    included: it publishes them after commit, so a read-back before that would make
    the reference archive one the crashed run has not (CI saw that race once)."""
    ends = await broker_ends(settings, TOPICS)
    caught_up = await _applied(engine) >= sum(last + 1 for last in ends.values())
    # the ends once more, after the outbox: a dead letter the relay published
    # between the first read and the outbox check is on the topic, not applied
    return caught_up and not await unsent(engine) \
        and await broker_ends(settings, TOPICS) == ends


async def _scrape(port: int) -> str:
    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            body: bytes = resp.read()
            return body.decode()

    for _ in range(50):  # the web server answers once the worker has started
        try:
            text = await asyncio.to_thread(get)
        except OSError:
            await asyncio.sleep(0.2)
            continue
        if 'consumer="projector",partition="0",topic="shop.orders"} 0.0' in text:
            return text
        await asyncio.sleep(0.2)
    return text
