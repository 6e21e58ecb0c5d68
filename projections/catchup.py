"""Has the pipeline caught up? Lag of every consumer of ours, and the outbox not yet sent.

Who calls it: ``dropship ops lag``, ``dropship demo`` and the end-to-end benchmark.
Reads the checkpoints and outbox in Postgres and the high-water marks of the
broker; writes nothing.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from agents import allocation, orders
from pipeline.lag import Lag, broker_ends, lag_report, logged_ends
from pipeline.schema import outbox
from pipeline.settings import Settings
from projections import projector

#: Every consumer of ours, with the topics it reads.
CONSUMERS: dict[str, tuple[str, ...]] = {
    projector.CONSUMER: projector.TOPICS, allocation.CONSUMER: allocation.TOPICS,
    orders.CONSUMER: orders.TOPICS}


async def lag_rows(settings: Settings, engine: AsyncEngine) -> list[Lag]:
    """One row per (consumer, topic, partition); see :mod:`pipeline.lag`."""
    every = {t for ts in CONSUMERS.values() for t in ts}
    ends = await broker_ends(settings, every)
    return await lag_report(engine, CONSUMERS, ends, await logged_ends(engine, every))


async def backlog(settings: Settings, engine: AsyncEngine) -> int | None:
    """Records written and not applied, plus outbox rows not yet published; None if
    some partition's end is unknown (the broker could not be asked)."""
    rows = await lag_rows(settings, engine)
    if any(r.lag is None for r in rows):
        return None
    return sum(r.lag or 0 for r in rows) + await unsent(engine)


async def unsent(engine: AsyncEngine) -> int:
    """Outbox rows committed and not yet published (by any agent)."""
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(outbox)
                                     .where(outbox.c.published_at.is_(None))) or 0)
