"""Rebuild read models from ``event_log`` into fresh tables, then swap them in.

Called by ``dropship projections rebuild``. Ops queries keep answering from the
live tables the whole time, and the projector keeps running:

1. create empty copies of the chosen tables in the ``read_rebuild`` schema
   (same definitions, index and constraint names: :func:`read_tables`);
2. replay ``event_log`` (the projector's topics) partition by partition, in
   offset order, in chunks, one transaction each, through the same row builders
   and guarded upserts as the projector, keeping a **watermark per (topic,
   partition)**: the last offset replayed there. The merge rules make the result
   independent of how topics interleave, so it equals the live tables. Rounds
   repeat while the live projector keeps adding records, until one round finds
   fewer than a chunk;
3. in **one transaction**, under a short ``lock_timeout`` (retried whole if a
   lock is not granted in time, so a long ops query never makes every other
   query queue behind the swap): take the rebuild lock exclusively (the projector
   takes it shared per batch, so no batch is half-applied on either side),
   replay what every partition gained past its watermark (partitions new since
   the last round included), complete truncated dead letters,
   take every live table and view at once (never one while waiting for another,
   so an ops query cannot deadlock with the swap), drop the live tables, move the
   new ones into ``read``, recreate the views
   that depended on them (their definitions read from the catalog first) and
   grant ops SELECT and the worker's role its privileges again (the new tables
   were created in ``read_rebuild``, where no default privileges apply).
   Queries wait for that instant, then see the new tables.

A failure before step 3 commits leaves the live tables untouched. Only one
rebuild runs at a time: a second one fails at once with :class:`RebuildRunning`
(a session advisory lock held for the whole rebuild).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass

from sqlalchemy import Connection, Table, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from events.codec import DecodeError, decode
from pipeline.runtime.db import one_at_a_time
from pipeline.runtime.records import Record
from pipeline.runtime.schema import checkpoints, event_log
from projections.projector import REBUILD_LOCK, TOPICS, complete_dead_letters, project
from projections.tables import (
    APP_PRIVILEGES,
    APP_ROLE,
    LIVE_SCHEMA,
    OPS_ROLE,
    STAGING_SCHEMA,
    ReadTables,
    read_tables,
)

TP = tuple[str, int]
Watermarks = dict[TP, int]  # (topic, partition) -> last offset replayed there
NAMES = tuple(read_tables().by_name())
#: held (session-level) for a whole rebuild: one at a time
ONE_REBUILD_LOCK = 0x0D50_0003
#: the swap's lock_timeout, and how often it is tried before the rebuild gives up
SWAP_LOCK_TIMEOUT = "2s"
SWAP_ATTEMPTS = 15


class RebuildRunning(RuntimeError):
    """Another rebuild holds :data:`ONE_REBUILD_LOCK`."""


@dataclass
class Rebuilt:
    names: tuple[str, ...]
    events: int
    rows: dict[str, int]


async def _fresh(conn: AsyncConnection, tables: Sequence[Table]) -> None:
    for table in tables:
        await conn.execute(text(f"DROP TABLE IF EXISTS {STAGING_SCHEMA}.{table.name}"))

    def create(sync: Connection) -> None:
        for table in tables:
            table.create(sync)

    await conn.run_sync(create)


async def count_events(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        n = await conn.scalar(select(func.count()).select_from(event_log)
                              .where(event_log.c.topic.in_(TOPICS)))
    return int(n or 0)


async def _partitions(conn: AsyncConnection) -> list[TP]:
    """Every partition of the projector's topics that ``event_log`` may hold: the
    projector checkpoints each partition in the transaction that logs its records."""
    rows = await conn.execute(select(checkpoints.c.topic, checkpoints.c.partition)
                              .where(checkpoints.c.topic.in_(TOPICS)).distinct())
    return sorted((t, p) for t, p in rows)


async def _replay(conn: AsyncConnection, tables: ReadTables, names: Sequence[str],
                  tp: TP, after: int, limit: int) -> tuple[int, int]:
    """Apply up to ``limit`` event_log records of ``tp`` past offset ``after`` (a
    primary-key range scan); returns the new watermark and how many were read."""
    log = event_log.c
    query = (select(log.offset, log.key, log.value, log.kafka_timestamp)
             .where(log.topic == tp[0], log.partition == tp[1], log.offset > after)
             .order_by(log.offset).limit(limit))
    rows = (await conn.execute(query)).all()
    if not rows:
        return after, 0
    events = []
    for offset, key, value, ts in rows:
        rec = Record(tp[0], tp[1], offset, key, value,
                     round(ts.timestamp() * 1000) if ts else None)
        try:
            events.append((rec, decode(value, key=key, topic=tp[0])))
        except DecodeError:
            continue  # dead-lettered when it was first consumed; its letter is in the log
    await project(conn, tables, events, "rebuild", only=names)
    return rows[-1].offset, len(rows)


async def _catch_up(begin: Callable[[], AbstractAsyncContextManager[AsyncConnection]],
                    parts: Sequence[TP], tables: ReadTables, names: Sequence[str],
                    marks: Watermarks, chunk: int, advance: Callable[[int], None]) -> int:
    """Replay each of ``parts`` past its watermark up to its end as of now, a chunk
    per ``begin()`` block (its own transaction in the rounds, the one final
    transaction in step 3); returns how many records were read."""
    total = 0
    for tp in parts:
        while True:
            async with begin() as conn:
                marks[tp], n = await _replay(conn, tables, names, tp, marks.get(tp, -1), chunk)
            total += n
            advance(n)
            if n < chunk:
                break
    return total


async def _round(engine: AsyncEngine, tables: ReadTables, names: Sequence[str],
                 marks: Watermarks, chunk: int, advance: Callable[[int], None]) -> int:
    """Replay every partition up to its end as of now, a chunk per transaction."""
    async with engine.connect() as conn:
        parts = await _partitions(conn)
    return await _catch_up(engine.begin, parts, tables, names, marks, chunk, advance)


async def _lock_all(conn: AsyncConnection, relations: Sequence[str],
                    attempts: int = 40, pause_s: float = 0.05) -> None:
    """Take ACCESS EXCLUSIVE on every relation at once, or on none: each try asks with
    NOWAIT inside a savepoint and lets go of all if one is busy, so the swap never holds
    a lock while it waits for another (an ops query reading two of them could deadlock
    with it, and one of the two would fail). After ``attempts`` busy tries (~2 s) the
    last "lock not available" error is raised: the caller retries its whole
    transaction, letting the live projector go on meanwhile."""
    statement = text(f"LOCK TABLE {', '.join(relations)} IN ACCESS EXCLUSIVE MODE NOWAIT")
    for attempt in range(attempts):
        try:
            async with conn.begin_nested():
                await conn.execute(statement)
            return
        except DBAPIError as err:
            if getattr(err.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE \
                    or attempt == attempts - 1:
                raise
        await asyncio.sleep(pause_s)


#: PostgreSQL's SQLSTATE for "could not obtain lock" (NOWAIT).
LOCK_NOT_AVAILABLE = "55P03"


async def _swap(conn: AsyncConnection, names: Sequence[str]) -> None:
    views = (await conn.execute(text(
        "SELECT viewname, definition FROM pg_views WHERE schemaname = :s"),
        {"s": LIVE_SCHEMA})).all()
    await _lock_all(conn, [f"{LIVE_SCHEMA}.{v}" for v, _ in views]
                    + [f"{LIVE_SCHEMA}.{n}" for n in names])
    for name in names:
        await conn.execute(text(f"DROP TABLE IF EXISTS {LIVE_SCHEMA}.{name} CASCADE"))
        await conn.execute(text(f"ALTER TABLE {STAGING_SCHEMA}.{name} SET SCHEMA {LIVE_SCHEMA}"))
    for view, definition in views:
        exists = await conn.scalar(text("SELECT to_regclass(:v)"),
                                   {"v": f"{LIVE_SCHEMA}.{view}"})
        if exists is None:
            await conn.execute(text(f"CREATE VIEW {LIVE_SCHEMA}.{view} AS {definition}"))
            # default privileges gave it SELECT, INSERT, UPDATE: a view needs SELECT only
            await conn.execute(text(f"REVOKE ALL ON {LIVE_SCHEMA}.{view} FROM {APP_ROLE}"))
            await conn.execute(text(f"GRANT SELECT ON {LIVE_SCHEMA}.{view} TO {APP_ROLE}"))
    await conn.execute(text(f"GRANT SELECT ON ALL TABLES IN SCHEMA {LIVE_SCHEMA} TO {OPS_ROLE}"))
    for name in names:
        await conn.execute(text(
            f"GRANT {APP_PRIVILEGES[name]} ON {LIVE_SCHEMA}.{name} TO {APP_ROLE}"))


async def rebuild(engine: AsyncEngine, names: Sequence[str] = NAMES,
                  advance: Callable[[int], None] = lambda n: None,
                  chunk: int = 2000) -> Rebuilt:
    """Rebuild ``names`` (steps in the module docstring); ``advance(n)`` reports progress.

    Raises :class:`RebuildRunning` if another rebuild is under way, TimeoutError if
    the swap's locks stay busy for all :data:`SWAP_ATTEMPTS`."""
    unknown = set(names) - set(NAMES)
    if unknown:
        raise ValueError(f"unknown read model(s): {', '.join(sorted(unknown))}")
    async with one_at_a_time(engine, ONE_REBUILD_LOCK) as ours:
        if not ours:
            raise RebuildRunning("another `dropship projections rebuild` is running; "
                                 "wait for it to finish")
        return await _rebuild(engine, names, advance, chunk)


async def _rebuild(engine: AsyncEngine, names: Sequence[str], advance: Callable[[int], None],
                   chunk: int) -> Rebuilt:
    staging = read_tables(STAGING_SCHEMA)
    async with engine.begin() as conn:
        await _fresh(conn, [staging.by_name()[n] for n in names])
    marks: Watermarks = {}
    replayed = await _round(engine, staging, names, marks, chunk, advance)
    while (n := await _round(engine, staging, names, marks, chunk, advance)) >= chunk:
        replayed += n  # the live projector kept adding: another round before the lock
    replayed += n
    for attempt in range(SWAP_ATTEMPTS):
        try:
            async with engine.begin() as conn:
                replayed += await _final(conn, staging, names, dict(marks), chunk, advance)
                rows = {n: int(await conn.scalar(select(func.count()).select_from(
                    read_tables(LIVE_SCHEMA).by_name()[n])) or 0) for n in names}
            return Rebuilt(tuple(names), replayed, rows)
        except DBAPIError as err:
            if getattr(err.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                raise
            await asyncio.sleep(min(0.1 * 2 ** attempt, 2.0))
    raise TimeoutError(f"the read models stayed busy; no swap after {SWAP_ATTEMPTS} tries")


async def _final(conn: AsyncConnection, staging: ReadTables, names: Sequence[str],
                 marks: Watermarks, chunk: int, advance: Callable[[int], None]) -> int:
    """Step 3 in ``conn``'s transaction; returns the records replayed in it. ``marks``
    is a copy: a retried attempt starts from the watermarks of before it."""
    await conn.execute(text(f"SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'"))
    await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": REBUILD_LOCK})
    total = await _catch_up(lambda: nullcontext(conn), await _partitions(conn), staging,
                            names, marks, chunk, advance)
    if "dead_letters" in names:
        await complete_dead_letters(conn, staging)
    await _swap(conn, names)
    return total
