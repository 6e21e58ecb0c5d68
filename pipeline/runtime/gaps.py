"""Gap repair: read back from Kafka the offsets a consumer never handed over.

Who calls it: the :class:`~pipeline.runtime.processor.Processor` when a batch
starts past its checkpoint + 1 (faust-streaming can skip records on a
rebalance, DESIGN.md "Faust's limits"). Guarantee: a range is returned whole
or not at all (:class:`GapUnreadable`), so a checkpoint never passes a record
that was not applied.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.runtime.kafka import client_options
from pipeline.runtime.records import Record
from pipeline.runtime.settings import Settings


class GapUnreadable(Exception):
    """A range could not be read back in time; the batch is retried later."""


@dataclass
class KafkaRangeReader:
    """Reads offset ranges with a group-less consumer (assign + seek): gap repair.

    Reads until its position reaches ``end``, or the partition's high-water mark
    (nothing beyond it exists yet). Offsets inside the range that it passed
    without a record do not exist (transaction markers, compaction). If neither
    is reached within ``timeout_s``, it raises :class:`GapUnreadable` rather
    than return part of the range: the checkpoint must never pass a record that
    was not read.
    """

    settings: Settings
    poll_timeout_ms: int = 500
    timeout_s: float = 30.0

    async def read(self, topic: str, partition: int, start: int, end: int) -> list[Record]:
        consumer = AIOKafkaConsumer(**client_options(self.settings), group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        try:
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, start)
            out: list[Record] = []
            deadline = asyncio.get_running_loop().time() + self.timeout_s
            while True:
                position = await consumer.position(tp)
                highwater = consumer.highwater(tp)
                if position >= end or (highwater is not None and position >= highwater):
                    return out
                if asyncio.get_running_loop().time() > deadline:
                    raise GapUnreadable(f"{topic}[{partition}] {start}..{end - 1}: read up to "
                                        f"{position} in {self.timeout_s:.0f} s")
                batch = await consumer.getmany(tp, timeout_ms=self.poll_timeout_ms,
                                               max_records=1000)
                msgs: list[Any] = batch.get(tp, [])
                out.extend(Record(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp)
                           for m in msgs if start <= m.offset < end)
        finally:
            await _stop_quietly(consumer)


async def _stop_quietly(consumer: AIOKafkaConsumer) -> None:
    """Stop a consumer. aiokafka can leak a CancelledError of its own coordinator
    task when stopped right after start; only our own cancellation propagates."""
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
