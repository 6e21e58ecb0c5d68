"""Worker wiring (entry point; nothing of ours imports this module).

Builds the Faust app, the database engine and the agents from settings, creates
any missing topic, and runs the Faust worker with its web server on
``settings.web_bind`` (loopback by default, never Faust's 0.0.0.0 default).
"""

from __future__ import annotations

import asyncio
import logging

import faust

from agents import allocation, archive, orders, runner
from agents.allocation import AllocationHandler
from agents.archive import ArchiveHandler
from pipeline import clock
from pipeline.app import create_app, declare_topics, raw_topic
from pipeline.db import create_engine
from pipeline.kafka import ensure_topics
from pipeline.settings import Settings
from pipeline.transactional import KafkaRangeReader, OutboxRelay, Processor


def build(settings: Settings) -> faust.App:
    """The app with every agent registered; connects to nothing yet."""
    app = create_app(settings)
    engine = create_engine(settings)
    declare_topics(app, settings)
    reader = KafkaRangeReader(settings)
    policy = orders.policy_of(settings)
    order_relay = OutboxRelay(engine, orders.CONSUMER, settings)
    order_processor = Processor(engine, orders.OrderHandler(policy), reader, order_relay)
    agents = [
        ("archive", archive.TOPICS, Processor(engine, ArchiveHandler(), reader)),
        ("allocation", allocation.TOPICS,
         Processor(engine, AllocationHandler(), reader,
                   OutboxRelay(engine, allocation.CONSUMER, settings))),
        ("orders", orders.TOPICS, order_processor),
    ]
    for name, topics, processor in agents:
        runner.register(app, raw_topic(app, *topics), processor, name, topics,
                        batch_size=settings.agent_batch_size,
                        within_s=settings.agent_batch_within_s)
    deadlines = orders.DeadlineRunner(engine, policy, order_relay, lambda: clock.now(settings))
    orders.register_deadlines(app, deadlines, order_processor, settings.deadline_check_s)
    return app


def run(settings: Settings) -> None:
    """Create topics, then run the worker until SIGTERM/SIGINT (blocks).

    Steps: 1. one event loop for everything; 2. ensure topics (fails fast if
    Kafka is unreachable); 3. start the Faust worker on that loop.
    """
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(ensure_topics(settings))
    app = build(settings)
    logging.getLogger("dropship").info(
        "worker %s: kafka=%s web=%s:%d", settings.app_id, settings.kafka_bootstrap_servers,
        settings.web_bind, settings.web_port,
    )
    worker = faust.Worker(app, loop=loop, loglevel=settings.log_level)
    worker.execute_from_commandline()
