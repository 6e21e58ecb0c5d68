"""Retention: bounded ``processed_events``, sent ``outbox`` rows and ``event_log``.

Called by ``dropship retention run`` (a compose service of its own), as the
schema owner: the worker's role deletes nothing. Each table keeps rows younger
than its window (settings ``DROPSHIP_RETENTION_*``):

- ``processed_events``: the ids that make redeliveries and duplicates no-ops.
  The window must exceed the broker's retention, so any record Kafka can still
  deliver again is still recognised (exactly-once intact); older ids can only
  come back if a producer re-sends them, which the window documents.
- ``outbox``: rows already published (``published_at`` set) only; a row waiting
  for Kafka is never pruned, however old.
- ``event_log``: kept for ever unless a window is set; a rebuild then replays only
  what is kept.

Guarantees: rows are deleted in batches of ``retention_batch_size``, one short
transaction each (by an index on the age column), so no long lock holds the
agents back; one pruner runs at a time (advisory lock), a second returns at once;
running it twice deletes nothing more. Each pruned table is then vacuumed (plain
``VACUUM``, which does not block writers), so the freed space is reused and the
tables stay bounded on disk, not only in rows. On a database error the transaction
rolls back and the error is raised (the next run resumes).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.runtime.db import one_at_a_time
from pipeline.runtime.settings import Settings

#: held for one pruning pass: one pruner at a time
RETENTION_LOCK = 0x0D50_0004


@dataclass(frozen=True)
class Window:
    table: str
    column: str
    keep: timedelta
    only: str = "TRUE"  # which rows may go at all


def windows(settings: Settings) -> list[Window]:
    """The tables pruned under ``settings``, each with its window."""
    out = [
        Window("processed_events", "processed_at",
               timedelta(hours=settings.retention_processed_events_hours)),
        Window("outbox", "published_at", timedelta(hours=settings.retention_outbox_hours),
               "published_at IS NOT NULL"),
    ]
    if settings.retention_event_log_hours > 0:
        out.append(Window("event_log", "recorded_at",
                          timedelta(hours=settings.retention_event_log_hours)))
    return out


async def prune(engine: AsyncEngine, settings: Settings) -> dict[str, int] | None:
    """Delete every row past its window, batch by batch; rows deleted per table, or
    None if another pruner holds the lock."""
    async with one_at_a_time(engine, RETENTION_LOCK) as ours:
        if not ours:
            return None
        deleted = {w.table: await _prune(engine, w, settings.retention_batch_size)
                   for w in windows(settings)}
        await _vacuum(engine, [t for t, n in deleted.items() if n])
        return deleted


async def _prune(engine: AsyncEngine, window: Window, batch: int) -> int:
    """Steps: 1. fix the cutoff once (rows that age meanwhile wait for the next
    run, so the pass ends); 2. delete up to ``batch`` rows older than it per
    transaction, until a batch comes back short."""
    statement = text(f"""
        DELETE FROM {window.table} WHERE ctid = ANY(ARRAY(
            SELECT ctid FROM {window.table}
             WHERE {window.column} < :cutoff AND {window.only} LIMIT :n))""")
    async with engine.connect() as conn:
        cutoff = await conn.scalar(text("SELECT now() - make_interval(secs => :keep)"),
                                   {"keep": window.keep.total_seconds()})
    deleted = 0
    while True:
        async with engine.begin() as conn:
            n = (await conn.execute(statement, {"cutoff": cutoff, "n": batch})).rowcount
        deleted += n
        if n < batch:
            return deleted


async def _vacuum(engine: AsyncEngine, tables: list[str]) -> None:
    """``VACUUM (ANALYZE)`` what was pruned, so the space is reused at once rather
    than when autovacuum gets to it (plain VACUUM: writers are not blocked)."""
    if not tables:
        return
    async with engine.connect() as conn:
        auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
        for table in tables:
            await auto.execute(text(f"VACUUM (ANALYZE) {table}"))


async def sizes(engine: AsyncEngine, tables: tuple[str, ...] = (
        "processed_events", "outbox", "event_log")) -> dict[str, tuple[int, int]]:
    """(rows, bytes on disk with indexes) per table: what retention keeps bounded."""
    out = {}
    async with engine.connect() as conn:
        for table in tables:
            rows = await conn.scalar(text(f"SELECT count(*) FROM {table}"))
            size = await conn.scalar(text("SELECT pg_total_relation_size(:t)"), {"t": table})
            out[table] = (int(rows or 0), int(size or 0))
    return out


def describe(deleted: dict[str, int] | None, took_s: float) -> str:
    """One line for the CLI's log."""
    if deleted is None:
        return "retention: another pruner is running; nothing done"
    parts = ", ".join(f"{t} {n}" for t, n in deleted.items())
    return f"retention: pruned {parts} rows in {took_s:.1f} s"
