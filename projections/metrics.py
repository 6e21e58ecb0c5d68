"""``/metrics`` on the worker's web port, in the Prometheus text format.

Registered by the worker wiring for the agents it runs. A scrape reads:

- per (consumer, topic, partition): the checkpoint, the last offset written and
  the lag (:mod:`pipeline.runtime.lag`); the end comes from the worker's own fetch
  high-water marks for the partitions it owns, else from ``event_log``;
- per agent: events processed, duplicates dropped, dead letters, gaps repaired,
  checkpoint conflicts and database retries since the worker started;
- from the read models: failovers (supplier orders taken away from a supplier),
  re-routes (order lines sent to another supplier) and dead letters stored.

A scrape that cannot reach Postgres answers 503 with one line, never a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine

from events.fulfillment import FAILOVER_CAUSES
from pipeline.runtime.lag import Lag, lag_report, logged_ends
from pipeline.runtime.processor import Processor, Stats
from pipeline.runtime.stream import highwater_of

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
       (SELECT count(*) FROM read.dead_letters)""").bindparams(
    bindparam("causes", value=list(FAILOVER_CAUSES), expanding=True))


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


async def exposition(engine: AsyncEngine, consumer: Any, agents: Agents) -> bytes:
    """The metrics text for one scrape (raises if Postgres is unreachable)."""
    topics = {p.handler.consumer: tuple(ts) for ts, p in agents.values()}
    every = {t for ts in topics.values() for t in ts}
    logged = await logged_ends(engine, every)
    ends = _owned_ends(consumer, every)
    rows = await lag_report(engine, topics, ends, logged)
    async with engine.connect() as conn:
        failovers, reroutes, letters = (await conn.execute(READ_MODEL_FIGURES)).one()
    figures = [
        CounterMetricFamily("dropship_failovers", "Supplier orders failed over away",
                            value=failovers),
        CounterMetricFamily("dropship_reroutes", "Order lines re-routed", value=reroutes),
        GaugeMetricFamily("dropship_dead_letters_stored", "Rows in read.dead_letters",
                          value=letters),
    ]
    registry = CollectorRegistry()
    registry.register(_Snapshot([
        *_lag_families(rows),
        *_stat_families({p.handler.consumer: p.stats for _, p in agents.values()}),
        *figures]))
    return generate_latest(registry)


def register_metrics(app: Any, engine: AsyncEngine, agents: Agents) -> None:
    """Add ``GET /metrics`` to the worker's web server."""

    async def metrics(web: Any, request: Any) -> Any:
        try:
            body = await exposition(engine, getattr(app, "consumer", None), agents)
        except Exception as exc:
            log.warning("/metrics: %s", exc)
            return web.text(f"metrics unavailable: {type(exc).__name__}\n", status=503)
        return web.text(body.decode(), content_type="text/plain; version=0.0.4")

    app.page("/metrics")(metrics)
