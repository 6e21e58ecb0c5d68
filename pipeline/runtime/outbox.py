"""The outbox: what a transaction derives is queued in Postgres, then published.

Who calls it: the :class:`~pipeline.runtime.processor.Processor` writes each
batch's derived events with :func:`write_outbox` inside the batch transaction,
and flushes the agent's :class:`OutboxRelay` after commit. Guarantee: every
committed row is published at least once, in id order per producer; consumers
drop the duplicates a crash between send and mark can cause.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from sqlalchemy import bindparam, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from events.codec import encode, key_of
from events.envelope import CloudEvent
from pipeline.runtime.kafka import create_producer
from pipeline.runtime.schema import outbox
from pipeline.runtime.settings import Settings


async def write_outbox(conn: AsyncConnection, producer: str, events: Sequence[CloudEvent]) -> None:
    """Queue events for publishing, in order; an event already queued is left alone."""
    if not events:
        return
    rows = [{"event_id": e.id, "producer": producer, "topic": e.data.TOPIC,
             "key": key_of(e), "value": encode(e)} for e in events]
    await conn.execute(insert(outbox).on_conflict_do_nothing(), rows)


@dataclass
class OutboxRelay:
    """Publishes a producer's unsent outbox rows in id order, then marks them sent.

    At-least-once: a crash between send and mark re-sends on the next flush, and
    consumers drop the duplicate by event id. One flush at a time per producer
    (a transaction-scoped advisory lock on its name), across workers and within
    one, so rows go out strictly in id order and one key's events never overtake
    each other.
    """

    engine: AsyncEngine
    producer_name: str
    settings: Settings
    batch_size: int = 1000
    published: int = 0
    _producer: AIOKafkaProducer | None = None
    _closed: bool = False
    #: one flush at a time in this process (the batch path and the deadline timer
    #: share a relay); close waits for the flush in progress
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def close(self) -> None:
        """Stop publishing: 1. later flushes publish nothing (their rows stay in the
        outbox for the next start); 2. the flush in progress ends its round of rows;
        3. the producer stops."""
        self._closed = True
        async with self._lock:
            if self._producer is not None:
                await self._producer.stop()
                self._producer = None

    async def flush(self) -> int:
        """Publish everything pending; return how many rows were sent (0 once closed)."""
        async with self._lock:
            return await self._flush()

    async def _flush(self) -> int:
        sent = 0
        while not self._closed:
            if self._producer is None:
                producer = create_producer(self.settings)
                await producer.start()
                self._producer = producer
            producer = self._producer
            async with self.engine.begin() as conn:
                await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:p))"),
                                   {"p": f"outbox:{self.producer_name}"})
                rows = (await conn.execute(
                    select(outbox.c.id, outbox.c.topic, outbox.c.key, outbox.c.value)
                    .where(outbox.c.producer == self.producer_name,
                           outbox.c.published_at.is_(None))
                    .order_by(outbox.c.id).limit(self.batch_size)
                )).all()
                if not rows:
                    break
                futures = [await producer.send(r.topic, r.value, key=r.key) for r in rows]
                await asyncio.gather(*futures)
                await conn.execute(
                    update(outbox).where(outbox.c.id.in_(bindparam("ids", expanding=True)))
                    .values(published_at=datetime.now(UTC)), {"ids": [r.id for r in rows]},
                )
            sent += len(rows)
        self.published += sent
        return sent


