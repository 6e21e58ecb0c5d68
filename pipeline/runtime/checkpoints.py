"""Tracking records: per (consumer, topic, partition), the last applied offset.

Callers (every agent's batch transaction) read the checkpoint, apply what lies
past it, and advance it **in the same transaction** as their effects. The
advance is a compare-and-set: it succeeds only if the stored offset is still the
one the caller read, so a zombie worker that lost its partition in a rebalance
fails its commit instead of applying a batch twice. A checkpoint never moves back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from pipeline.runtime.schema import checkpoints, event_log

NOTHING_APPLIED = -1


class CheckpointConflict(Exception):
    """The stored checkpoint is not the one the caller read: someone else moved it."""


async def load_checkpoint(conn: AsyncConnection, consumer: str, topic: str, partition: int) -> int:
    """The last applied offset, or -1 if nothing was applied yet."""
    stored = await conn.scalar(
        select(checkpoints.c.offset).where(
            checkpoints.c.consumer == consumer,
            checkpoints.c.topic == topic,
            checkpoints.c.partition == partition,
        )
    )
    return NOTHING_APPLIED if stored is None else int(stored)


async def advance_checkpoint(
    conn: AsyncConnection, consumer: str, topic: str, partition: int, expected: int, new: int
) -> None:
    """Move the checkpoint from ``expected`` to ``new`` (> expected), or raise.

    Raises ValueError if ``new <= expected`` (a checkpoint never moves back) and
    CheckpointConflict if the stored value is not ``expected``.
    """
    if new <= expected:
        raise ValueError(f"checkpoint must move forward: {expected} -> {new}")
    key = and_(
        checkpoints.c.consumer == consumer,
        checkpoints.c.topic == topic,
        checkpoints.c.partition == partition,
    )
    if expected == NOTHING_APPLIED:
        ins = insert(checkpoints).values(
            consumer=consumer, topic=topic, partition=partition, offset=new
        ).on_conflict_do_nothing()
        if (await conn.execute(ins)).rowcount == 1:
            return
    upd = (
        update(checkpoints)
        .where(key, checkpoints.c.offset == expected)
        .values(offset=new, updated_at=func.now())
    )
    if (await conn.execute(upd)).rowcount != 1:
        current = await load_checkpoint(conn, consumer, topic, partition)
        raise CheckpointConflict(
            f"{consumer} {topic}[{partition}]: expected checkpoint {expected}, found {current}"
        )


@dataclass(frozen=True)
class LoggedRecord:
    """One input record as kept in ``event_log``."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp: datetime | None
    event_id: str | None = None
    event_type: str | None = None
    subject: str | None = None


async def log_records(conn: AsyncConnection, records: Sequence[LoggedRecord]) -> int:
    """Insert records into ``event_log``; ones already there are left alone.

    Returns how many rows were new. Idempotent under replay.
    """
    if not records:
        return 0
    rows = [
        {
            "topic": r.topic, "partition": r.partition, "offset": r.offset,
            "event_id": r.event_id, "event_type": r.event_type, "subject": r.subject,
            "key": r.key, "value": r.value, "kafka_timestamp": r.timestamp,
        }
        for r in records
    ]
    # executemany: one cached statement, batched by SQLAlchemy's insertmanyvalues
    # (a multi-row .values() is compiled afresh each time: most of a batch's CPU)
    result = await conn.execute(insert(event_log).on_conflict_do_nothing()
                                .returning(event_log.c.offset), rows)
    return len(result.all())
