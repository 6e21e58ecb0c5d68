"""Has the pipeline caught up? Lag of every consumer of ours, and the outbox not yet sent.

Who calls it: ``dropship ops lag``, ``dropship demo`` and the end-to-end benchmark.
Reads the checkpoints and outbox in Postgres and the high-water marks of the
broker; writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.entry.registry import topics_of
from pipeline.runtime.db import agent_engine
from pipeline.runtime.lag import Lag, broker_ends, lag_report, logged_ends
from pipeline.runtime.schema import outbox
from pipeline.runtime.settings import Settings

#: consumer -> the topics it reads
Consumers = Mapping[str, tuple[str, ...]]


async def lag_rows(settings: Settings, engine: AsyncEngine,
                   consumers: Consumers | None = None) -> list[Lag]:
    """One row per (consumer, topic, partition) of ``consumers`` (default: every
    consumer of the registry); see :mod:`pipeline.runtime.lag`. ``engine`` is the
    read models' database; each consumer's checkpoints are read in its own
    (:func:`pipeline.runtime.db.agent_engine`)."""
    consumers = topics_of() if consumers is None else consumers
    every = {t for ts in consumers.values() for t in ts}
    ends = await broker_ends(settings, every)
    logged = await logged_ends(engine, every)
    rows: list[Lag] = []
    for name, topics in sorted(consumers.items()):
        async with agent_engine(settings, name, engine) as own:  # where its checkpoints are
            rows += await lag_report(own, {name: topics}, ends, logged)
    return rows


async def backlog(settings: Settings, engine: AsyncEngine,
                  consumers: Consumers | None = None) -> int | None:
    """Records written and not applied, plus outbox rows not yet published; None if
    some partition's end is unknown (the broker could not be asked).

    Steps, in this order, so that 0 means settled and not "between two reads":
    1. the lag of every consumer (the broker's ends, then the checkpoints);
    2. the outbox rows not yet published;
    3. the broker's ends again: records written since step 1 (an outbox row the
       relay published between steps 1 and 2) count as backlog too.
    """
    rows = await lag_rows(settings, engine, consumers)
    if any(r.lag is None for r in rows):
        return None
    left = await unsent(engine)
    after = await broker_ends(settings, {r.topic for r in rows})
    grown = sum(max(after.get((r.topic, r.partition), -1) - (r.last_offset or 0), 0)
                for r in rows)  # per consumer, as the lag counts it
    return sum(r.lag or 0 for r in rows) + left + grown


async def unsent(engine: AsyncEngine) -> int:
    """Outbox rows committed and not yet published (by any agent)."""
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(outbox)
                                     .where(outbox.c.published_at.is_(None))) or 0)
