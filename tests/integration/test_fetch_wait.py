"""``DROPSHIP_KAFKA_FETCH_MAX_WAIT_MS`` reaches the live consumer of a running Faust app
(issue 16): Faust passes a fixed 1,500 ms to aiokafka, and the embedded broker holds
each fetch that long, so the setting decides each hop's latency.

The assertions are on what aiokafka uses (its running Fetcher, and the fetch
requests it sends to the broker), never on wall-clock time; the latencies are
printed for the curious.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from typing import Any, cast

import pytest
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import StreamT

from pipeline.devstack.processes import free_port
from pipeline.runtime.app import create_app, raw_topic
from pipeline.runtime.kafka import create_producer, ensure_topics
from pipeline.runtime.settings import Settings

pytestmark = pytest.mark.integration

WAIT_MS = 37  # neither aiokafka's default (500), Faust's (1,500) nor ours (20)


async def test_a_running_apps_fetcher_uses_the_configured_wait(settings: Settings) -> None:
    topic_name = f"test.fetchwait.{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, (topic_name,))
    s = settings.model_copy(update={
        "app_id": f"{settings.app_id}-fetchwait-{uuid.uuid4().hex[:6]}",
        "kafka_fetch_max_wait_ms": WAIT_MS, "web_port": free_port()})
    app = create_app(s)
    received: asyncio.Queue[tuple[bytes, float]] = asyncio.Queue()

    @app.agent(raw_topic(app, topic_name))
    async def tap(stream: StreamT[bytes]) -> None:
        async for value in stream:
            received.put_nowait((value, time.perf_counter()))

    producer = create_producer(s)
    await producer.start()
    await app.start()
    try:
        # the first record arrives once the group has formed and partitions are assigned
        await producer.send_and_wait(topic_name, b"warm-up", key=b"k")
        assert (await asyncio.wait_for(received.get(), 60))[0] == b"warm-up"

        aiokafka_consumer = cast(faust_aiokafka.Consumer, app.consumer)._thread._ensure_consumer()
        fetcher = aiokafka_consumer._fetcher
        assert fetcher is not None
        assert fetcher._fetch_max_wait_ms == WAIT_MS

        sent_waits = _spy_fetch_waits(aiokafka_consumer._client)
        latencies_ms = []
        for i in range(5):
            await asyncio.sleep(0.3)  # the topic is idle: the consumer sits in a fetch
            started = time.perf_counter()
            await producer.send_and_wait(topic_name, b"%d" % i, key=b"k")
            value, at = await asyncio.wait_for(received.get(), 30)
            assert value == b"%d" % i
            latencies_ms.append((at - started) * 1000)
        print(f"produce -> agent latency at {WAIT_MS} ms wait: "
              f"median {statistics.median(latencies_ms):.1f} ms, all "
              + ", ".join(f"{ms:.1f}" for ms in latencies_ms))
        assert sent_waits, "no fetch request was sent while records were being consumed"
        assert set(sent_waits) == {WAIT_MS}
    finally:
        await app.stop()
        await producer.stop()


def _spy_fetch_waits(client: Any) -> list[int]:
    """Record the max wait of every fetch request ``client`` (aiokafka's, shared by the
    consumer's Fetcher) sends from now on; returns the list it appends to."""
    from aiokafka.protocol.fetch import FetchRequest

    waits: list[int] = []
    send = client.send

    async def spy(node_id: int, request: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(request, FetchRequest):
            waits.append(request._max_wait_ms)
        return await send(node_id, request, *args, **kwargs)

    client.send = spy
    return waits
