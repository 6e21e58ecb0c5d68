"""``projections rebuild`` under live traffic loses nothing, lets queries answer, and
runs one at a time (real Postgres).

The live projector is the worker's own machinery (a :class:`Processor` around the
projector's handler, one transaction per batch with its checkpoint), applying a
realistic stream of orders' lives (every topic the projector reads, several
partitions each) in small batches *throughout* the rebuild. The referee is a
fresh database that projected the same records with no rebuild at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from pipeline.runtime.db import create_engine
from pipeline.runtime.processor import Processor
from pipeline.runtime.records import Record
from pipeline.runtime.settings import Settings
from projections.projector import ProjectorHandler
from projections.rebuild import ONE_REBUILD_LOCK, RebuildRunning, rebuild
from tests.projection_story import NoKafka, project_all, snapshot, world

pytestmark = pytest.mark.integration


async def test_rebuild_under_live_traffic_equals_a_projection_of_everything(
        fresh_database: Callable[[str], Settings]) -> None:
    records = world("live", orders=60).records
    first, rest = records[:len(records) // 3], records[len(records) // 3:]
    settings = fresh_database("rebuild_live")
    engine = create_engine(settings)
    reference = create_engine(fresh_database("rebuild_ref"))
    live = Processor(engine, ProjectorHandler(), NoKafka())
    during: list[Record] = []  # applied by the live projector while the rebuild ran
    rebuilding = asyncio.Event()
    try:
        await project_all(engine, first, batch=200)

        async def projector() -> None:
            for i in range(0, len(rest), 8):
                await live.process(rest[i:i + 8])
                if rebuilding.is_set():
                    during.extend(rest[i:i + 8])
                await asyncio.sleep(0.002)

        async def rebuilder() -> None:
            await asyncio.sleep(0.05)
            rebuilding.set()
            try:
                await rebuild(engine, chunk=20)
            finally:
                rebuilding.clear()

        await asyncio.gather(projector(), rebuilder())
        await project_all(reference, records, batch=500)
        # the race was on: the live projector wrote to several partitions mid-rebuild
        assert len({(r.topic, r.partition) for r in during}) > 3
        assert len(during) < len(rest)  # and went on after the swap
        got, want = await snapshot(engine), await snapshot(reference)
        for name in want:
            missing = {repr(r) for r in want[name]} - {repr(r) for r in got[name]}
            assert not missing, (name, len(missing), sorted(missing)[:3])
        assert got == want
    finally:
        await engine.dispose()
        await reference.dispose()


async def test_a_second_rebuild_is_refused(fresh_database: Callable[[str], Settings]) -> None:
    settings = fresh_database("rebuild_one")
    engine = create_engine(settings)
    try:
        async with engine.connect() as other:  # stands for a rebuild under way
            await other.execute(text("SELECT pg_advisory_lock(:k)"), {"k": ONE_REBUILD_LOCK})
            with pytest.raises(RebuildRunning, match=r"another .* is running"):
                await rebuild(engine)
            await other.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ONE_REBUILD_LOCK})
        assert (await rebuild(engine)).names  # free again
    finally:
        await engine.dispose()


async def test_a_long_ops_query_does_not_make_other_queries_queue_behind_the_swap(
        fresh_database: Callable[[str], Settings]) -> None:
    settings = fresh_database("rebuild_busy")
    engine = create_engine(settings)
    url = make_url(settings.database_url)
    connect = dict(host=url.host, port=url.port, user=url.username, database=url.database)
    long_query = await asyncpg.connect(**connect)
    probe = await asyncpg.connect(**connect)
    try:
        await project_all(engine, world("busy", orders=5).records)
        await probe.execute("SET lock_timeout = '500ms'")  # fails if ever queued
        tx = long_query.transaction()
        await tx.start()
        await long_query.fetch("SELECT count(*) FROM read.order_status")  # holds its lock
        task = asyncio.create_task(rebuild(engine))
        answered = 0
        for _ in range(30):  # ~3 s of ops queries while the swap cannot get its locks
            await probe.fetchval("SELECT count(*) FROM read.order_status")
            await probe.fetchval("SELECT count(*) FROM read.stuck_orders")
            answered += 1
            await asyncio.sleep(0.1)
        assert not task.done()  # the swap waited for the long query, without queueing
        await tx.rollback()
        result = await asyncio.wait_for(task, 60)
        assert result.rows["order_status"] == 10
        assert answered == 30
    finally:
        await long_query.close()
        await probe.close()
        await engine.dispose()
