"""Worker wiring (entry point; nothing of ours imports this module).

Builds the Faust app, the database engine and the agents from settings, creates
any missing topic, and runs the Faust worker with its web server on
``settings.web_bind`` (loopback by default, never Faust's 0.0.0.0 default).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterable
from typing import Any

import faust
from sqlalchemy.ext.asyncio import AsyncEngine

from agents import orders
from pipeline.entry.registry import CONSUMERS, NAMES
from pipeline.runtime import clock
from pipeline.runtime import stream as runner
from pipeline.runtime.app import create_app, declare_topics, raw_topic
from pipeline.runtime.db import create_engine
from pipeline.runtime.gaps import KafkaRangeReader
from pipeline.runtime.health import Membership, register_health
from pipeline.runtime.kafka import ensure_topics
from pipeline.runtime.outbox import OutboxRelay
from pipeline.runtime.processor import Processor
from pipeline.runtime.settings import Settings, SettingsError
from pipeline.runtime.shutdown import StopDeadline
from projections import clock as pipeline_clock
from projections.metrics import register_metrics

#: The agents ``dropship worker --agents`` can run: every consumer of the registry.
AGENTS = NAMES


def build(settings: Settings, only: tuple[str, ...] = AGENTS) -> faust.App:
    """The app with the agents ``only`` (default: all) registered; connects to nothing yet.

    The composition root: every agent is a consumer of the registry
    (:mod:`pipeline.entry.registry`) run by its own :class:`Processor` on the
    one machinery; the order agent's deadlines go through that agent's
    processor; the worker's web server also answers ``/metrics`` (Prometheus) and
    ``/health`` (ready: assigned and caught up, :mod:`pipeline.runtime.health`).
    """
    app = create_app(settings.model_copy(update={"app_id": group_of(settings, only)}))
    engines: dict[str, AsyncEngine] = {}

    def engine_of(agent: str) -> AsyncEngine:
        """The agent's database (``DROPSHIP_DATABASE_URL_<AGENT>``, else the common one),
        one engine per distinct database."""
        own = settings.of_agent(agent)
        if own.database_url not in engines:
            engines[own.database_url] = create_engine(own)
        return engines[own.database_url]

    declare_topics(app, settings)
    reader = KafkaRangeReader(settings)
    processors = {
        name: (CONSUMERS[name].topics,
               Processor(engine_of(name), CONSUMERS[name].handler(settings), reader,
                         OutboxRelay(engine_of(name), name, settings)))
        for name in only}
    for name, (topics, processor) in processors.items():
        runner.register(app, raw_topic(app, *topics), processor, name, topics,
                        batch_size=settings.agent_batch_size,
                        within_s=settings.agent_batch_within_s)
    if orders.CONSUMER in processors:
        deadlines = orders.DeadlineRunner(orders.policy_of(settings),
                                          lambda: clock.now(settings))
        orders.register_deadlines(app, deadlines, processors[orders.CONSUMER][1],
                                  settings.deadline_check_s)
    register_clock(app, engine_of("projector"), settings)  # read by the read models' views
    register_metrics(app, engine_of("projector"), processors, {
        "group": app.conf.id, "worker": f"{socket.gethostname()}:{settings.web_port}"},
        settings)
    membership = Membership()
    register_health(app, {p.handler.consumer: (ts, p.engine) for ts, p in processors.values()},
                    membership, settings.ready_max_lag)

    async def on_assigned(sender: Any, /, *args: Any, signal: Any = None, **kw: Any) -> None:
        """Faust's ``on_partitions_assigned`` (the set of topic-partitions): log them,
        and let each processor take them as its own again (its zombie fence)."""
        tps = [(tp.topic, tp.partition) for tp in (args[0] if args else ())]
        for _, processor in processors.values():
            processor.assigned(tps)
        membership.assigned = True
        log_assignment(tps)

    app.on_partitions_assigned.connect(on_assigned)
    return app


def group_of(settings: Settings, only: Iterable[str]) -> str:
    """The Faust app id, i.e. the consumer group, of a worker running the agents ``only``.

    A worker running every agent uses ``settings.app_id``; one running a subset
    (``--agents``) uses ``<app_id>-<agents>``, so workers running different
    agents never share a group: Faust assigns a group's partitions as if every
    member ran the same agents, and would hand one of them partitions of a topic
    it does not read. Workers running the same agents share their group and
    split its partitions (scale-out).
    """
    names = [n for n in NAMES if n in set(only)]
    return settings.app_id if names == list(NAMES) else "-".join([settings.app_id, *names])


def register_clock(app: Any, engine: Any, settings: Settings) -> None:
    """Write the worker's clock for the ops views at each deadline check."""

    async def record_clock() -> None:
        try:
            await pipeline_clock.record(engine, clock.now(settings))
        except Exception:
            logging.getLogger("dropship").exception("writing the pipeline clock failed")

    app.timer(settings.deadline_check_s, name="pipeline.runtime.clock")(record_clock)


def log_assignment(tps: list[tuple[str, int]]) -> None:
    """Log the partitions this worker now owns, by topic (one line per rebalance)."""
    by_topic: dict[str, list[int]] = {}
    for topic, partition in tps:
        by_topic.setdefault(topic, []).append(partition)
    owned = " ".join(f"{t}{sorted(ps)}" for t, ps in sorted(by_topic.items()))
    logging.getLogger("dropship").info("partitions assigned: %s", owned or "(none)")


def run(settings: Settings, only: tuple[str, ...] = AGENTS) -> None:
    """Create topics, then run the worker until SIGTERM/SIGINT (blocks).

    Steps: 1. make the data folder (one line naming DROPSHIP_DATA_DIR if the
    worker's user cannot); 2. one event loop for everything; 3. ensure topics
    (fails fast if Kafka is unreachable); 4. start the Faust worker on that loop.
    """
    data = settings.worker_data_dir
    try:
        data.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(f"DROPSHIP_DATA_DIR: cannot make {data}: {exc.strerror}; "
                            "set it to a folder the worker's user can write") from None
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(ensure_topics(settings))
    app = build(settings, only)
    logging.getLogger("dropship").info(
        "worker %s: agents=%s kafka=%s web=%s:%d", app.conf.id, ",".join(only),
        settings.kafka_bootstrap_servers, settings.web_bind, settings.web_port,
    )
    worker = Worker(app, loop=loop, loglevel=settings.log_level,
                    stop_timeout_s=settings.stop_timeout_s)
    worker.execute_from_commandline()


class Worker(faust.Worker):
    """A Faust worker whose stop is bounded by a :class:`StopDeadline` (named
    ``Worker`` as Faust's: its log lines keep the ``[^Worker]`` label)."""

    def __init__(self, *args: Any, stop_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stop_deadline = StopDeadline(stop_timeout_s, self.loop)

    async def on_stop(self) -> None:
        """First thing of the worker's stop (mode's ``Service.stop``): start the clock."""
        self.stop_deadline.start()
        await super().on_stop()
