"""Consumer lag: per (consumer, topic, partition), checkpoint vs last offset written.

Used by ``dropship ops lag`` and the worker's ``/metrics``. The checkpoint is
the consumer's tracking record in Postgres (what is really applied, unlike
Kafka's committed offsets). The end of the partition comes from the broker's
**fetch** high-water mark, which is trustworthy even on the embedded broker
(whose ListOffsets "latest" is not, DESIGN.md); where the broker cannot be
asked, from ``event_log`` (the last offset the projector kept), and the row
says which.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.runtime.kafka import client_options
from pipeline.runtime.schema import checkpoints, event_log
from pipeline.runtime.settings import Settings

TP = tuple[str, int]
Source = Literal["broker", "event_log", "unknown"]


@dataclass(frozen=True)
class Lag:
    consumer: str
    topic: str
    partition: int
    checkpoint: int  # last applied offset, -1 if none
    last_offset: int | None  # last offset written to the partition, None if unknown
    source: Source

    @property
    def lag(self) -> int | None:
        """Records written and not applied yet (None if the end is unknown)."""
        return None if self.last_offset is None else max(self.last_offset - self.checkpoint, 0)


async def stored_checkpoints(engine: AsyncEngine, consumers: Iterable[str]
                             ) -> dict[tuple[str, str, int], int]:
    """(consumer, topic, partition) -> checkpoint, for every row of these consumers."""
    async with engine.connect() as conn:
        rows = await conn.execute(select(
            checkpoints.c.consumer, checkpoints.c.topic, checkpoints.c.partition,
            checkpoints.c.offset).where(checkpoints.c.consumer.in_(list(consumers))))
        return {(c, t, p): o for c, t, p, o in rows}


async def logged_ends(engine: AsyncEngine, topics: Iterable[str]) -> dict[TP, int]:
    """(topic, partition) -> last offset in ``event_log``, for every partition of
    ``topics`` a checkpoint names (the projector checkpoints every partition it logs).

    One primary-key probe per partition: a scrape never scans ``event_log``.
    """
    parts = (select(checkpoints.c.topic, checkpoints.c.partition)
             .where(checkpoints.c.topic.in_(list(topics))).distinct().subquery())
    last = (select(event_log.c.offset)
            .where(event_log.c.topic == parts.c.topic,
                   event_log.c.partition == parts.c.partition)
            .order_by(event_log.c.offset.desc()).limit(1).scalar_subquery())
    async with engine.connect() as conn:
        rows = await conn.execute(select(parts.c.topic, parts.c.partition, last))
        return {(t, p): o for t, p, o in rows if o is not None}


async def broker_ends(settings: Settings, topics: Iterable[str], timeout_s: float = 5.0
                      ) -> dict[TP, int]:
    """(topic, partition) -> last offset written (fetch high-water - 1), for every
    partition the broker reports within ``timeout_s``; empty if it cannot be reached."""
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=1024)
    try:
        await asyncio.wait_for(consumer.start(), timeout_s)
    except Exception:
        return {}
    try:
        return await asyncio.wait_for(_highwaters(consumer, topics), timeout_s)
    except TimeoutError:
        return {}
    finally:
        await consumer.stop()


async def _highwaters(consumer: AIOKafkaConsumer, topics: Iterable[str]) -> dict[TP, int]:
    tps = [TopicPartition(t, p) for t in topics
           for p in sorted(consumer.partitions_for_topic(t) or ())]
    if not tps:
        return {}
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    found: dict[TP, int] = {}
    while len(found) < len(tps):
        await consumer.getmany(timeout_ms=200, max_records=1)
        for tp in tps:
            mark: Any = consumer.highwater(tp)
            if isinstance(mark, int):
                found[(tp.topic, tp.partition)] = mark - 1
    return found


async def lag_report(engine: AsyncEngine, consumers: Mapping[str, Sequence[str]],
                     ends: Mapping[TP, int], logged: Mapping[TP, int]) -> list[Lag]:
    """One row per (consumer, topic, partition) known to the broker or the checkpoints."""
    stored = await stored_checkpoints(engine, consumers)
    rows = []
    for consumer, topics in sorted(consumers.items()):
        parts = {tp for tp in (*ends, *logged) if tp[0] in topics}
        parts |= {(t, p) for c, t, p in stored if c == consumer}
        for topic, partition in sorted(parts):
            end, source = _end_of((topic, partition), ends, logged)
            rows.append(Lag(consumer, topic, partition,
                            stored.get((consumer, topic, partition), -1), end, source))
    return rows


def _end_of(tp: TP, ends: Mapping[TP, int], logged: Mapping[TP, int]
            ) -> tuple[int | None, Source]:
    if tp in ends:
        return ends[tp], "broker"
    if tp in logged:
        return logged[tp], "event_log"
    return None, "unknown"
