"""The embedded broker speaks Kafka: topics are created and records round-trip."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from events.topics import ALL_TOPICS
from pipeline.runtime.kafka import client_options, create_producer, ensure_topics
from pipeline.runtime.settings import Settings

pytestmark = pytest.mark.integration


async def test_ensure_topics_creates_every_topic_with_configured_partitions(
    settings: Settings,
) -> None:
    await ensure_topics(settings)
    again = await ensure_topics(settings)
    assert again == []  # idempotent
    producer = create_producer(settings)
    await producer.start()
    try:
        for topic in ALL_TOPICS:
            parts = await producer.partitions_for(topic)
            assert len(parts) == settings.kafka_topic_partitions, topic
    finally:
        await producer.stop()


async def test_publish_and_read_back_with_aiokafka(settings: Settings) -> None:
    topic = f"test.roundtrip.{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, (topic,))
    payloads = [f"message-{i}".encode() for i in range(20)]
    producer = create_producer(settings)
    await producer.start()
    try:
        metas = [await producer.send_and_wait(topic, p, key=b"same-key") for p in payloads]
    finally:
        await producer.stop()
    partition = metas[0].partition
    assert {m.partition for m in metas} == {partition}  # one key, one partition
    assert [m.offset for m in metas] == list(range(metas[0].offset, metas[0].offset + 20))

    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, metas[0].offset)
        got: list[bytes] = []
        while len(got) < len(payloads):
            batch = await consumer.getmany(tp, timeout_ms=5000, max_records=100)
            assert batch, "no records came back within 5 s"
            got.extend(rec.value for rec in batch[tp])
    finally:
        await consumer.stop()
    assert got == payloads
