"""The pipeline's clock in the database, by which the ops views measure waiting time.

Who calls it: every worker, at each deadline check (``pipeline.entry.worker``). It
writes the time the worker's deadlines run by (``pipeline.runtime.clock``: the system's,
or a test's or simulation's file clock) into ``read.pipeline_clock``; the views
read it through ``read.pipeline_now()``, which moves it on by the database's clock
since it was written. A failure is logged by the caller and retried at the next tick.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from projections.tables import pipeline_clock


async def record(engine: AsyncEngine, now: datetime) -> None:
    """Store ``now`` as the pipeline's clock (one row, upserted)."""
    stmt = insert(pipeline_clock).values(id=1, at=now, written_at=func.now())
    async with engine.begin() as conn:
        await conn.execute(stmt.on_conflict_do_update(
            index_elements=[pipeline_clock.c.id],
            set_={"at": stmt.excluded.at, "written_at": func.now()}))
