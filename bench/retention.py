"""Retention benchmark: table sizes and throughput over a long run, with the retention
on, against the same run with it off, on the same database server.

    .venv/bin/python bench/retention.py [--events 1000000] [--baseline 200000]
                                        [--window-s 30] [--prune-every 50000]

Starts an embedded stack (broker + Postgres) in a temporary folder. Each run
works in a database of its own and drives realistic records (orders' lives from
the projector's test stories: every topic the projector reads, ~34 records per
order, duplicates and malformed input included) through the one transaction
machinery twice per batch, as the workers do:

- the **projector** (``Processor(ProjectorHandler)``): ``event_log`` row per record,
  read models, checkpoint;
- a **pass-through agent** (``Processor`` with a handler deriving one event per
  event it applies): a ``processed_events`` row per event, an ``outbox`` row per
  derived event, checkpoint; its ``OutboxRelay`` publishes them to the broker
  and marks them sent, as a worker's relay does.

Runs:

1. **retention off** (``--baseline`` events): what the tables hold without it;
2. **retention on** (``--events``): windows of ``--window-s`` seconds for
   ``processed_events``, sent ``outbox`` rows and ``event_log``, pruned
   (``pipeline.runtime.retention.prune``, what ``dropship retention run`` runs)
   every ``--prune-every`` events.

Every ``--stretch`` events (100,000) it prints, per run, rows and bytes (with indexes) of the
three tables and the events/s of that stretch; at the end, the largest sizes seen
with retention on against the sizes the baseline reached, and the last
stretch's events/s over the first's. Every process started is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._stack import embedded_stack
from events.allocation import SupplierStockChanged
from events.envelope import CloudEvent
from pipeline.runtime.db import create_engine
from pipeline.runtime.outbox import OutboxRelay
from pipeline.runtime.processor import Processor
from pipeline.runtime.records import Incoming, Record, derive
from pipeline.runtime.retention import prune, sizes
from pipeline.runtime.settings import Settings
from projections.projector import ProjectorHandler
from tests.helpers import new_database
from tests.projection_story import Log, NoKafka, backorder_story, bad_input, failover_story

TABLES = ("processed_events", "outbox", "event_log")


class PassThrough:
    """An agent that derives one event per event it applies (a stock change, the
    allocation agent's most frequent output); the dedup, outbox and checkpoint are
    the machinery's, as for every agent."""

    consumer = "bench-pass"

    async def handle(self, conn: AsyncConnection, batch: Sequence[Incoming]) -> list[CloudEvent]:
        return [e for n, inc in enumerate(batch) for e in derive(inc.event, [
            SupplierStockChanged(supplier_id="s1", sku=inc.event.subject or "sku",
                                 version=n + 1, reported_available=10, reserved=0,
                                 remaining=10, report_as_of=inc.event.time,
                                 changed_at=inc.event.time)], self.consumer)]


def stream(prefix: str, total: int, orders_per_chunk: int = 300) -> Iterator[list[Record]]:
    """Records of orders' lives, chunk by chunk, offsets continuing per partition."""
    log, produced, n = Log(prefix=prefix), 0, 0
    while produced < total:
        for _ in range(orders_per_chunk):
            failover_story(log, f"{prefix}-o{n}", f"{prefix}-SKU{n % 50}")
            backorder_story(log, f"{prefix}-b{n}", f"{prefix}-RARE{n % 7}")
            bad_input(log, f"{prefix}-o{n}")
            n += 1
        chunk, log.records = log.records[:total - produced], []
        produced += len(chunk)
        yield chunk


def _fmt(table_sizes: dict[str, tuple[int, int]]) -> str:
    return "  ".join(f"{t} {r:>9,} rows {b / 2**20:7.1f} MiB" for t, (r, b) in
                     table_sizes.items())


async def run(settings: Settings, total: int, batch: int, retention: Settings | None,
              prune_every: int, label: str, stretch: int) -> list[dict[str, Any]]:
    engine = create_engine(settings)
    projector = Processor(engine, ProjectorHandler(), NoKafka())
    agent = Processor(engine, PassThrough(), NoKafka())
    relay = OutboxRelay(engine, PassThrough.consumer, settings)
    marks: list[dict[str, Any]] = []
    done, since_prune, t0 = 0, 0, time.perf_counter()
    try:
        for chunk in stream(f"{label}{uuid.uuid4().hex[:4]}", total):
            for i in range(0, len(chunk), batch):
                part = chunk[i:i + batch]
                await projector.process(part)
                await agent.process(part)
                await relay.flush()
                done += len(part)
                since_prune += len(part)
                if retention is not None and since_prune >= prune_every:
                    await prune(engine, retention)
                    since_prune = 0
                if done // stretch > len(marks):
                    marks.append(await _mark(engine, done, t0, marks, stretch))
                    print(f"{label:>4} {done:>9,} events {marks[-1]['per_s']:>7,.0f}/s  "
                          f"{_fmt(marks[-1]['sizes'])}", flush=True)
    finally:
        await relay.close()
        await engine.dispose()
    return marks


async def _mark(engine: AsyncEngine, done: int, t0: float, marks: list[dict[str, Any]],
                stretch: int) -> dict[str, Any]:
    now = time.perf_counter()
    last = marks[-1]["at"] if marks else t0
    return {"events": done, "at": now, "per_s": stretch / (now - last),
            "sizes": await sizes(engine, TABLES)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--baseline", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--window-s", type=float, default=30.0)
    parser.add_argument("--prune-every", type=int, default=50_000)
    parser.add_argument("--stretch", type=int, default=100_000,
                        help="Print sizes and events/s every this many events.")
    args = parser.parse_args()
    with embedded_stack("dropship-bench-retention-") as emb:
        base = emb.settings
        off = asyncio.run(run(new_database(base, "ret"), args.baseline, args.batch, None,
                              args.prune_every, "off", args.stretch))
        hours = args.window_s / 3600
        on_settings = new_database(base, "ret")
        retention = on_settings.model_copy(update={
            "retention_processed_events_hours": hours, "retention_outbox_hours": hours,
            "retention_event_log_hours": hours})
        on = asyncio.run(run(on_settings, args.events, args.batch, retention,
                             args.prune_every, "on", args.stretch))
    print(f"\nretention windows {args.window_s:g} s, pruned every {args.prune_every:,} events")
    print(f"{'table':<18}{'off: rows at end':>18}{'off: MiB':>10}"
          f"{'on: max rows':>14}{'on: max MiB':>13}{'on: rows at end':>17}")
    for t in TABLES:
        end_off = off[-1]["sizes"][t]
        most = max(m["sizes"][t][0] for m in on)
        most_b = max(m["sizes"][t][1] for m in on)
        print(f"{t:<18}{end_off[0]:>18,}{end_off[1] / 2**20:>10.1f}{most:>14,}"
              f"{most_b / 2**20:>13.1f}{on[-1]['sizes'][t][0]:>17,}")
    print(f"events/s with retention on: first stretch {on[0]['per_s']:,.0f}, last "
          f"{on[-1]['per_s']:,.0f} (last / first {on[-1]['per_s'] / on[0]['per_s']:.2f}); "
          f"off: first {off[0]['per_s']:,.0f}, last {off[-1]['per_s']:,.0f}")


if __name__ == "__main__":
    main()
