"""Contender B of ``bench/allocation.py``: the allocation as a textbook Faust agent with a
``Table``, no database, no exactly-once.

    BENCH_FAUST_APP_ID=... BENCH_FAUST_OUTPUT=... BENCH_FAUST_LOG=... \\
        DROPSHIP_KAFKA_BOOTSTRAP_SERVERS=... python bench/faust_table_agent.py

One agent over ``fulfillment.allocation`` and ``supplier.catalog`` (both keyed by
sku, so a sku's events reach one agent in order). Per event, as the Faust guide
shows it: decode (``events.codec.decode``, as the allocation agent does), take
the sku's state from the table, apply the same pure core with the same rules
(``core.apply``, ``agents.allocation.rules_of``), put the new state in the table,
and send what it derives (wrapped as the agent wraps it: same ids, times and
sequence) to ``<output>.decisions`` (keyed by order) and ``<output>.stock`` (by sku).

State: the table ``sku_state`` holds each sku's ``SkuState`` in memory (the
``memory://`` store); every update also goes to the table's changelog topic,
**pickled** (``pickle.dumps`` of the ``SkuState``, a codec of five lines below:
Faust's own ``pickle`` codec adds base64 and warns). At-least-once: Faust commits
consumer offsets every few seconds, apart from the changelog; a crash may apply
events twice. An event the core or the codec refuses is logged and skipped.

For the benchmark only: each applied record's ``topic<TAB>partition<TAB>offset`` is
appended to ``BENCH_FAUST_LOG`` (flushed every 0.1 s), so the benchmark can follow
the progress and check the decisions against the core applied in the same order.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import sys
from pathlib import Path
from typing import IO, Any

import faust

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.allocation import CONSUMER, rules_of
from agents.core import allocation as core
from events.codec import decode, encode, key_of
from events.topics import ALLOCATION, DECISIONS, SUPPLIER_CATALOG
from pipeline.runtime.records import derive
from pipeline.runtime.settings import Settings

log = logging.getLogger("bench.faust_table_agent")
ENV_APP_ID, ENV_OUTPUT, ENV_LOG = "BENCH_FAUST_APP_ID", "BENCH_FAUST_OUTPUT", "BENCH_FAUST_LOG"


class PickleCodec(faust.Codec):
    """The table's changelog values: the object pickled (no base64)."""

    def _dumps(self, obj: Any) -> bytes:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)

    def _loads(self, s: bytes) -> Any:
        return pickle.loads(s)  # noqa: S301 (our own changelog, read back on recovery)


def raw_topic(app: faust.App, *names: str) -> Any:
    return app.topic(*names, key_type=bytes, value_type=bytes, key_serializer="raw",
                     value_serializer="raw")


def build(settings: Settings, app_id: str, output: str, applied: IO[str]) -> faust.App:
    """The app: the table, the agent, and the timer that flushes ``applied``."""
    app = faust.App(
        app_id, broker=settings.kafka_broker_url,
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=settings.kafka_heartbeat_interval_s,
        consumer_auto_offset_reset="earliest",
        topic_partitions=settings.kafka_topic_partitions,
        topic_replication_factor=settings.kafka_replication_factor,
        web_bind=settings.web_bind, web_host=settings.web_bind, web_port=settings.web_port,
        autodiscover=False, store="memory://", producer_acks=-1, stream_wait_empty=False,
    )
    states = app.Table("sku_state", partitions=settings.kafka_topic_partitions)
    states.value_serializer = PickleCodec()  # type: ignore[attr-defined]  # (on Table, not TableT)
    rules = rules_of(settings)
    decisions = raw_topic(app, f"{output}.decisions")
    stock = raw_topic(app, f"{output}.stock")

    async def allocate(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            try:
                cloud_event = decode(msg.value, key=msg.key, topic=msg.topic)
                sku = cloud_event.subject
                state = states.get(sku) or core.SkuState(sku)
                new, payloads = core.apply(state, cloud_event.data, cloud_event.time, rules)
                states[sku] = new
                for out in derive(cloud_event, payloads, CONSUMER, time=new.clock,
                                  sequence=cloud_event.sequence):
                    topic = decisions if out.data.TOPIC == DECISIONS else stock
                    await topic.send(key=key_of(out), value=encode(out))
            except Exception:
                log.exception("%s[%d]@%d skipped", msg.topic, msg.partition, msg.offset)
            applied.write(f"{msg.topic}\t{msg.partition}\t{msg.offset}\n")

    async def flush() -> None:
        applied.flush()

    app.agent(raw_topic(app, ALLOCATION, SUPPLIER_CATALOG), name="allocate")(allocate)
    app.timer(0.1, name="flush_applied")(flush)
    return app


def parse_applied(line: str) -> tuple[str, int, int]:
    """A line of the applied log -> (topic, partition, offset)."""
    topic, partition, offset = line.split("\t")
    return topic, int(partition), int(offset)


def main() -> None:
    settings = Settings(_env_file=None)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    with open(os.environ[ENV_LOG], "a", buffering=1 << 16) as applied:
        app = build(settings, os.environ[ENV_APP_ID], os.environ[ENV_OUTPUT], applied)
        faust.Worker(app, loop=loop, loglevel=settings.log_level).execute_from_commandline()


if __name__ == "__main__":
    main()
