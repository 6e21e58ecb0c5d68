"""Runs a :class:`pipeline.runtime.processor.Processor` as a Faust agent (shared by every agent).

Faust does what it is good at here: group membership, partition ownership,
fetching, batching (``take_events``), timers. What is applied is decided by the
Postgres checkpoints, never by Faust's committed offsets:

- each batch goes through the processor (exactly once, gaps repaired);
- on start-up the outbox left unsent by a previous run is published;
- every ``tail_check_s`` the checkpoint of each owned partition is compared
  with the fetch high-water mark; if records past the checkpoint have been
  sitting there since the last check (a batch that failed, or records Faust
  skipped at the tail) while the agent applied nothing at all, they are read
  back from Kafka and applied. While the agent is busy, a partition that waits
  is a backlog, not a loss: reading it back would do the work twice (the
  benchmark measured a quarter of the worker's CPU in such repairs), and a
  record skipped mid-stream is repaired by the next batch's gap check anyway.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from faust.types import TP

from pipeline.runtime.checkpoints import CheckpointConflict
from pipeline.runtime.processor import Processor
from pipeline.runtime.records import Record

log = logging.getLogger(__name__)


def records_of(events: Iterable[Any]) -> list[Record]:
    """Faust events -> records (reads only ``event.message``)."""
    out = []
    for event in events:
        msg = event.message
        ts = msg.timestamp
        out.append(Record(msg.topic, msg.partition, msg.offset, msg.key, msg.value,
                          round(ts * 1000) if ts else None))  # Faust gives float seconds
    return out


async def process_safely(processor: Processor, records: list[Record]) -> None:
    """Process a batch; a conflict or a failure is logged, never raised into Faust.

    Nothing is lost by not raising: the checkpoint did not move, so the records
    come back through gap repair (next batch) or the tail check.
    """
    try:
        await processor.process(records)
    except CheckpointConflict as err:
        log.warning("%s: batch dropped, partition owned elsewhere now: %s",
                    processor.handler.consumer, err)
    except Exception:
        log.exception("%s: batch of %d records failed; it will be retried from the "
                      "checkpoint", processor.handler.consumer, len(records))


class TailCheck:
    """Finds partitions whose checkpoint lags the high-water mark without progress,
    and applies their records ``limit`` at a time.

    Progress is a batch the stream committed since the last check, or one in
    progress now (the processor's lock held): under a backlog one batch can take
    longer than the check's interval. A stuck partition is then repaired batch
    after batch, up to its high-water mark at the check, until the stream moves
    again or ``budget_s`` has passed. Each repair is a batch like any other: it
    holds the processor's lock for one batch's time, so the stream is never
    starved behind it, and memory holds one batch, never a whole backlog (a
    100k-order backlog read at once took over a GiB).
    """

    def __init__(self, processor: Processor, topics: Iterable[str], limit: int = 500,
                 budget_s: float = 10.0) -> None:
        self.processor = processor
        self.topics = set(topics)
        self.limit, self.budget_s = limit, budget_s
        self._last: dict[tuple[str, int], int] = {}
        self._batches = processor.stats.batches
        self._own = 0  # batches committed by this check's repairs

    async def run(self, consumer: Any) -> int:
        """One check over ``consumer``'s assignment; returns how many records were caught up."""
        owned = [(tp.topic, tp.partition) for tp in consumer.assignment()
                 if tp.topic in self.topics]
        if not owned:
            return 0
        done = await self.processor.checkpoints(owned)
        busy = self._stream_moved() or self.processor.lock.locked()
        self._batches, self._own = self.processor.stats.batches, 0
        deadline = asyncio.get_running_loop().time() + self.budget_s
        caught_up = 0
        for tp in owned:
            highwater = highwater_of(consumer, tp)
            lagging = highwater is not None and highwater - 1 > done[tp]
            stuck = lagging and not busy and self._last.get(tp) == done[tp]
            self._last[tp] = done[tp]
            if stuck and highwater is not None:
                caught_up += await self._repair(tp, done[tp], highwater, deadline)
        self._batches, self._own = self.processor.stats.batches, 0
        return caught_up

    def _stream_moved(self) -> bool:
        """Did the stream commit a batch since the last look (repairs left out)?"""
        return self.processor.stats.batches - self._batches > self._own

    async def _repair(self, tp: tuple[str, int], done: int, highwater: int,
                      deadline: float) -> int:
        """Apply ``tp`` from ``done + 1`` up to ``highwater``, one batch at a time,
        while the stream stays stalled and the budget lasts; returns records applied."""
        applied = 0
        loop = asyncio.get_running_loop()
        while done < highwater - 1 and not self._stream_moved() and loop.time() < deadline:
            end = min(highwater, done + 1 + self.limit)
            records = await self.processor.reader.read(tp[0], tp[1], done + 1, end)
            log.warning("%s: %s[%d] stuck at %d below high-water %d; applying %d records",
                        self.processor.handler.consumer, tp[0], tp[1], done, highwater,
                        len(records))
            before = self.processor.stats.batches
            await process_safely(self.processor, records)
            self._own += self.processor.stats.batches - before
            now = (await self.processor.checkpoints([tp]))[tp]
            applied += len(records)
            if now <= done:  # nothing moved (a failing batch): try again next check
                break
            done = now
        self._last[tp] = done
        return applied


def highwater_of(consumer: Any, tp: tuple[str, int], fresh_s: float | None = None
                 ) -> int | None:
    """The fetch high-water mark of ``tp`` on a Faust consumer; None while unknown.

    With ``fresh_s``, also None when the mark is older than that: the consumer has
    not fetched ``tp`` since (Faust stops fetching a partition whose records it has
    not taken yet, so under a backlog the mark can be many seconds old and records
    written since are not counted). Where the client cannot say when it last
    fetched, the mark is returned as it is.
    """
    try:
        value = consumer.highwater(TP(tp[0], tp[1]))
    except Exception:
        return None
    if not isinstance(value, int) or value < 0:
        return None
    if fresh_s is not None:
        polled = _last_fetch_ms(consumer, tp)
        if polled is not None and time.time() * 1000 - polled > fresh_s * 1000:
            return None
    return int(value)


def _last_fetch_ms(consumer: Any, tp: tuple[str, int]) -> int | None:
    """When ``tp``'s high-water mark was last updated (ms of wall clock), from the
    aiokafka client behind a Faust consumer; None where it cannot be read."""
    try:
        client = consumer._thread._ensure_consumer()  # faust's aiokafka driver
        value = client.last_poll_timestamp(TP(tp[0], tp[1]))
    except Exception:
        return None
    return int(value) if isinstance(value, int) else None


def register(app: Any, topic: Any, processor: Processor, name: str, topics: Iterable[str],
             batch_size: int = 500, within_s: float = 0.02, tail_check_s: float = 2.0) -> Any:
    """Declare the agent ``name`` on ``app``: batches of ``topic`` through ``processor``."""
    tail = TailCheck(processor, topics, limit=batch_size)

    async def agent(stream: Any) -> None:
        async for batch in stream.take_events(batch_size, within=within_s):
            await process_safely(processor, records_of(batch))

    async def publish_leftovers() -> None:
        if processor.relay is not None:
            sent = await processor.relay.flush()
            if sent:
                log.info("%s: published %d outbox rows left by a previous run", name, sent)

    async def tail_check() -> None:
        try:
            await tail.run(app.consumer)
        except Exception:
            log.exception("%s: tail check failed", name)

    async def close_relay(sender: Any, **kwargs: Any) -> None:
        if processor.relay is not None:
            await processor.relay.close()

    app.task(publish_leftovers)
    app.timer(tail_check_s, name=f"{name}.tail_check")(tail_check)
    app.on_before_shutdown.connect(close_relay)
    return app.agent(topic, name=name)(agent)
