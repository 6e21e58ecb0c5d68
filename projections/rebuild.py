"""Rebuild read models from ``event_log`` into fresh tables, then swap them in.

Called by ``dropship projections rebuild``. Ops queries keep answering from the
live tables the whole time, and the projector keeps running:

1. create empty copies of the chosen tables in the ``read_rebuild`` schema
   (same definitions, index and constraint names: :func:`read_tables`);
2. replay ``event_log`` (the projector's topics, in (topic, partition, offset)
   order, in chunks, one transaction each) through the same row builders and
   guarded upserts as the projector; the merge rules make the result
   independent of how topics interleave, so it equals the live tables;
3. in **one transaction**: take the rebuild lock exclusively (the projector
   takes it shared per batch, so no batch is half-applied on either side),
   replay what ``event_log`` gained meanwhile, complete truncated dead letters,
   take every live table and view at once (never one while waiting for another,
   so an ops query cannot deadlock with the swap), drop the live tables, move the
   new ones into ``read``, recreate the views
   that depended on them (their definitions read from the catalog first) and
   grant ops SELECT and the worker's role its privileges again (the new tables
   were created in ``read_rebuild``, where no default privileges apply).
   Queries wait for that instant, then see the new tables.

A failure before step 3 commits leaves the live tables untouched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Table, func, select, text, tuple_
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from events.codec import DecodeError, decode
from pipeline.runtime.records import Record
from pipeline.runtime.schema import event_log
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

Cursor = tuple[str, int, int]  # (topic, partition, offset) last replayed
START: Cursor = ("", -1, -1)
NAMES = tuple(read_tables().by_name())


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


async def _replay(conn: AsyncConnection, tables: ReadTables, names: Sequence[str],
                  after: Cursor, limit: int) -> tuple[Cursor, int]:
    """Apply up to ``limit`` event_log records past ``after``; returns the new cursor."""
    log = event_log.c
    query = (select(log.topic, log.partition, log.offset, log.key, log.value,
                    log.kafka_timestamp)
             .where(log.topic.in_(TOPICS),
                    tuple_(log.topic, log.partition, log.offset) > tuple_(*after))
             .order_by(log.topic, log.partition, log.offset).limit(limit))
    rows = (await conn.execute(query)).all()
    if not rows:
        return after, 0
    events = []
    for topic, partition, offset, key, value, ts in rows:
        rec = Record(topic, partition, offset, key, value,
                     round(ts.timestamp() * 1000) if ts else None)
        try:
            events.append((rec, decode(value, key=key, topic=topic)))
        except DecodeError:
            continue  # dead-lettered when it was first consumed; its letter is in the log
    await project(conn, tables, events, "rebuild", only=names)
    last = rows[-1]
    return (last.topic, last.partition, last.offset), len(rows)


async def _lock_all(conn: AsyncConnection, relations: Sequence[str],
                    attempts: int = 600, pause_s: float = 0.05) -> None:
    """Take ACCESS EXCLUSIVE on every relation at once, or on none: each try asks with
    NOWAIT inside a savepoint and lets go of all if one is busy, so the swap never holds
    a lock while it waits for another (an ops query reading two of them could deadlock
    with it, and one of the two would fail). Raises after ``attempts`` busy tries."""
    statement = text(f"LOCK TABLE {', '.join(relations)} IN ACCESS EXCLUSIVE MODE NOWAIT")
    for _ in range(attempts):
        try:
            async with conn.begin_nested():
                await conn.execute(statement)
            return
        except DBAPIError as err:
            if getattr(err.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                raise
        await asyncio.sleep(pause_s)
    raise TimeoutError(f"the read models stayed busy; no swap after {attempts} tries")


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
    """Rebuild ``names`` (steps in the module docstring); ``advance(n)`` reports progress."""
    unknown = set(names) - set(NAMES)
    if unknown:
        raise ValueError(f"unknown read model(s): {', '.join(sorted(unknown))}")
    staging = read_tables(STAGING_SCHEMA)
    async with engine.begin() as conn:
        await _fresh(conn, [staging.by_name()[n] for n in names])
    cursor, replayed = START, 0
    while True:
        async with engine.begin() as conn:
            cursor, n = await _replay(conn, staging, names, cursor, chunk)
        replayed += n
        advance(n)
        if n < chunk:
            break
    async with engine.begin() as conn:
        await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": REBUILD_LOCK})
        while True:
            cursor, n = await _replay(conn, staging, names, cursor, chunk)
            replayed += n
            advance(n)
            if n < chunk:
                break
        if "dead_letters" in names:
            await complete_dead_letters(conn, staging)
        await _swap(conn, names)
        rows = {n: int(await conn.scalar(select(func.count()).select_from(
            read_tables(LIVE_SCHEMA).by_name()[n])) or 0) for n in names}
    return Rebuilt(tuple(names), replayed, rows)

