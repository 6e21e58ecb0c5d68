"""``/metrics`` on the worker's web port, in the Prometheus text format.

Registered by the worker wiring for the agents it runs. A scrape reads:

- per (consumer, topic, partition), for every partition of the agents' topics:
  the checkpoint, the last offset written and the lag (:mod:`pipeline.runtime.lag`);
  the end comes from the worker's own fetch high-water marks for the partitions
  it owns, and from the broker for the others (:class:`BrokerEnds`, asked at most
  every ``ttl_s``), else from ``event_log``;
- per agent: events processed, duplicates dropped, dead letters, gaps repaired,
  checkpoint conflicts and database retries since the worker started;
- from the read models (workers running the projector only, so a series has one
  source): failovers, re-routes, dead letters stored by rule, stuck orders by
  problem, the oldest backorder's age, late shipments and SLA misses;
- per agent: its outbox rows not yet published and the age of the oldest.

Every series carries ``worker`` (host:web port) and ``group`` (consumer group)
labels, so workers scraped together stay apart. ``deploy/prometheus/rules.yml``
alerts on these; a test checks every name it uses is exported here.

A scrape that cannot reach Postgres answers 503 with one line, never a traceback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine

from events.fulfillment import FAILOVER_CAUSES
from pipeline.runtime.lag import Lag, broker_ends, lag_report, logged_ends
from pipeline.runtime.processor import Processor, Stats
from pipeline.runtime.settings import Settings
from pipeline.runtime.stream import highwater_of
from projections.projector import CONSUMER as PROJECTOR

log = logging.getLogger(__name__)

STAT_HELP = {
    "applied": ("events_processed", "Events applied (first time seen)"),
    "duplicates": ("duplicates", "Events dropped as already applied"),
    "dead_letters": ("dead_letters", "Records dead-lettered"),
    "offset_jumps": ("offset_jumps", "Batches that began beyond checkpoint + 1 (lost records)"),
    "gaps_repaired": ("gaps_repaired", "Records the consumer skipped, read back and applied"),
    "conflicts": ("checkpoint_conflicts", "Batches refused: partition owned elsewhere"),
    "retries": ("db_retries", "Retries after a transient database error"),
}

READ_MODEL_FIGURES = text("""
SELECT (SELECT count(*) FROM read.supplier_orders WHERE cancel_cause IN :causes),
       (SELECT coalesce(sum(reroutes), 0) FROM read.order_lines),
       (SELECT coalesce(json_object_agg(rule, n), '{}') FROM (
            SELECT rule, count(*) AS n FROM read.dead_letters GROUP BY rule) d),
       (SELECT coalesce(json_object_agg(problem, n), '{}') FROM (
            SELECT problem, count(*) AS n FROM read.stuck_orders GROUP BY problem) s),
       (SELECT coalesce(extract(epoch FROM max(waiting)), 0) FROM read.backorders),
       (SELECT count(*) FROM read.late_shipments),
       (SELECT coalesce(json_object_agg(cause, n), '{}') FROM (
            SELECT cancel_cause AS cause, count(*) AS n FROM read.supplier_orders
             WHERE cancel_cause IN ('acknowledge_sla_missed', 'dispatch_sla_missed')
             GROUP BY cancel_cause) m)""").bindparams(
    bindparam("causes", value=list(FAILOVER_CAUSES), expanding=True))

OUTBOX_FIGURES = text("""
SELECT producer, count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)
  FROM outbox WHERE published_at IS NULL AND producer IN :producers GROUP BY producer
""").bindparams(bindparam("producers", expanding=True))

#: the problems of read.stuck_orders, each exported even at zero (an alert's series exists)
STUCK_PROBLEMS = ("held_for_ops", "payment_held", "acknowledge_overdue", "dispatch_overdue")
SLA_CAUSES = ("acknowledge_sla_missed", "dispatch_sla_missed")


class _Snapshot(Collector):
    """Figures gathered once per scrape (collectors cannot await)."""

    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> Any:
        return iter(self.families)


def _lag_families(rows: list[Lag]) -> list[Any]:
    labels = ["consumer", "topic", "partition"]
    checkpoint = GaugeMetricFamily("dropship_consumer_checkpoint",
                                   "Last offset applied (Postgres tracking record)", labels=labels)
    last = GaugeMetricFamily("dropship_partition_last_offset",
                             "Last offset written to the partition", labels=[*labels, "source"])
    lag = GaugeMetricFamily("dropship_consumer_lag", "Records written, not yet applied",
                            labels=labels)
    for r in rows:
        key = [r.consumer, r.topic, str(r.partition)]
        checkpoint.add_metric(key, r.checkpoint)
        if r.last_offset is not None and r.lag is not None:
            last.add_metric([*key, r.source], r.last_offset)
            lag.add_metric(key, r.lag)
    return [checkpoint, last, lag]


def _stat_families(stats: Mapping[str, Stats]) -> list[Any]:
    families = []
    for field, (name, help_text) in STAT_HELP.items():
        family = CounterMetricFamily(f"dropship_{name}", help_text, labels=["consumer"])
        for consumer, s in sorted(stats.items()):
            family.add_metric([consumer], getattr(s, field))
        families.append(family)
    return families


Agents = Mapping[str, tuple[Sequence[str], Processor]]


def _owned_ends(consumer: Any, topics: set[str]) -> dict[tuple[str, int], int]:
    """Last offsets of the partitions this worker owns, from its fetch high-waters."""
    ends = {}
    for tp in (consumer.assignment() if consumer is not None else ()):
        if tp.topic in topics:
            mark = highwater_of(consumer, (tp.topic, tp.partition))
            if mark is not None:
                ends[(tp.topic, tp.partition)] = mark - 1
    return ends


async def _read_model_families(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        (failovers, reroutes, letters, stuck, oldest_backorder, late,
         sla) = (await conn.execute(READ_MODEL_FIGURES)).one()
    by_rule = GaugeMetricFamily("dropship_dead_letters_stored",
                                "Rows in read.dead_letters, by rule", labels=["rule"])
    for rule, n in sorted(letters.items()):
        by_rule.add_metric([rule], n)
    stuck_family = GaugeMetricFamily("dropship_stuck_orders",
                                     "Orders in read.stuck_orders, by problem", labels=["problem"])
    for problem in STUCK_PROBLEMS:
        stuck_family.add_metric([problem], stuck.get(problem, 0))
    misses = CounterMetricFamily("dropship_sla_misses",
                                 "Supplier orders failed over for a missed SLA, by cause",
                                 labels=["cause"])
    for cause in SLA_CAUSES:
        misses.add_metric([cause], sla.get(cause, 0))
    return [
        CounterMetricFamily("dropship_failovers", "Supplier orders failed over away",
                            value=failovers),
        CounterMetricFamily("dropship_reroutes", "Order lines re-routed", value=reroutes),
        by_rule, stuck_family, misses,
        GaugeMetricFamily("dropship_oldest_backorder_seconds",
                          "Age of the longest-waiting backordered line (pipeline clock)",
                          value=float(oldest_backorder)),
        GaugeMetricFamily("dropship_late_shipments",
                          "Shipments past their deliver-by date, not delivered", value=late),
    ]


async def _outbox_families(producers_of: Mapping[AsyncEngine, Sequence[str]]) -> list[Any]:
    """Unsent outbox rows per producer, each read in its own database."""
    rows: dict[str, tuple[int, float]] = {}
    for engine, producers in producers_of.items():
        async with engine.connect() as conn:
            rows |= {p: (n, age) for p, n, age in
                     await conn.execute(OUTBOX_FIGURES, {"producers": list(producers)})}
    unsent = GaugeMetricFamily("dropship_outbox_unsent", "Outbox rows not yet published",
                               labels=["producer"])
    age = GaugeMetricFamily("dropship_outbox_oldest_unsent_seconds",
                            "Age of the oldest outbox row not yet published",
                            labels=["producer"])
    for producer in sorted(p for ps in producers_of.values() for p in ps):
        n, oldest = rows.get(producer, (0, 0.0))
        unsent.add_metric([producer], n)
        age.add_metric([producer], float(oldest))
    return [unsent, age]


def _labelled(families: list[Any], labels: Mapping[str, str]) -> list[Any]:
    """Every sample of ``families`` with ``labels`` added (which worker says so)."""
    for family in families:
        family.samples = [s._replace(labels={**s.labels, **labels}) for s in family.samples]
    return families


class BrokerEnds:
    """The last offset of every partition of some topics, from the broker (a fetch
    high-water mark per partition, :func:`pipeline.runtime.lag.broker_ends`), kept
    for ``ttl_s`` so scrapes do not each open a client; {} while the broker cannot
    be asked (the lag rows then fall back to ``event_log``)."""

    def __init__(self, settings: Settings, ttl_s: float = 15.0) -> None:
        self.settings, self.ttl_s = settings, ttl_s
        self._at, self._ends = -1e9, dict[tuple[str, int], int]()

    async def get(self, topics: set[str]) -> dict[tuple[str, int], int]:
        if time.monotonic() - self._at > self.ttl_s:
            self._ends = await broker_ends(self.settings, sorted(topics), timeout_s=3.0)
            self._at = time.monotonic()
        return self._ends


async def exposition(engine: AsyncEngine, consumer: Any, agents: Agents,
                     labels: Mapping[str, str] | None = None,
                     broker: BrokerEnds | None = None) -> bytes:
    """The metrics text for one scrape (raises if a database is unreachable).
    ``engine`` is the read models' database; each agent's own figures (checkpoints,
    outbox) come from its processor's database."""
    every = {t for ts, _ in agents.values() for t in ts}
    logged = await logged_ends(engine, every)
    others = await broker.get(every) if broker is not None else {}
    ends = {**others, **_owned_ends(consumer, every)}  # our own fetches are the freshest
    by_engine: dict[AsyncEngine, dict[str, tuple[str, ...]]] = {}
    for topics, processor in agents.values():
        by_engine.setdefault(processor.engine, {})[processor.handler.consumer] = tuple(topics)
    rows: list[Lag] = []
    for own, consumers in by_engine.items():  # checkpoints where each agent keeps them
        rows += await lag_report(own, consumers, ends, logged)
    families = [
        *_lag_families(rows),
        *_stat_families({p.handler.consumer: p.stats for _, p in agents.values()}),
        *await _outbox_families({e: sorted(cs) for e, cs in by_engine.items()}),
    ]
    if PROJECTOR in {p.handler.consumer for _, p in agents.values()}:
        families += await _read_model_families(engine)
    registry = CollectorRegistry()
    registry.register(_Snapshot(_labelled(families, labels or {})))
    return generate_latest(registry)


def register_metrics(app: Any, engine: AsyncEngine, agents: Agents,
                     labels: Mapping[str, str] | None = None,
                     settings: Settings | None = None) -> None:
    """Add ``GET /metrics`` to the worker's web server; ``labels`` go on every series;
    with ``settings``, the lag of partitions this worker does not own comes from
    the broker."""
    broker = BrokerEnds(settings) if settings is not None else None

    async def metrics(web: Any, request: Any) -> Any:
        try:
            body = await exposition(engine, getattr(app, "consumer", None), agents, labels,
                                    broker)
        except Exception as exc:
            log.warning("/metrics: %s", exc)
            return web.text(f"metrics unavailable: {type(exc).__name__}\n", status=503)
        return web.text(body.decode(), content_type="text/plain; version=0.0.4")

    app.page("/metrics")(metrics)
