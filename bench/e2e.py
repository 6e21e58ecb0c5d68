"""End-to-end benchmark: the whole pipeline against a raw aiokafka pass-through, in one run
on one broker and one database.

    .venv/bin/pip install -e '.[bench]'   # matplotlib, py-spy
    .venv/bin/python bench/e2e.py [--orders 100000] [--latency-rate 500] [--latency-s 20]
                                  [--split | --groups projector/allocation/orders]

Starts its own embedded stack (broker + Postgres) in a temporary folder on free ports,
migrates a fresh database, starts one worker (``dropship worker``: all agents in one
process; with ``--split``, one for the projector and one for the allocation and
order agents; with ``--groups``, one process per '/'-separated group of agents,
each its own consumer group) and stops everything at the end. Steps:
1. **throughput**: the simulator's suppliers publish offers and ample stock; its
   shops then place ``--orders`` orders and pay each at once, as fast as the
   producers take them. An order is *completed* when its row in ``read.order_status``
   shows it sent to a supplier (placed, paid, allocated, supplier order requested,
   projected). Figures: orders/s completed, and Kafka messages/s applied by all
   agents together (the sum of their checkpoints' advance).
2. **latency**: orders offered at ``--latency-rate`` per second for ``--latency-s``
   seconds; per order, from the send of its ``OrderPlaced`` to the first poll (every
   ~20 ms) that sees its row sent to a supplier: p50/p95/p99; and per hop (from
   the outbox rows each agent wrote for the order) its wait and its commit + relay,
   then projector + poll (:func:`hops`).
3. **memory**: the worker's RSS (``/proc``) sampled every 0.5 s: at 10k orders
   completed, and the peak at the end.
4. **baseline**: a raw aiokafka consume -> transform (JSON parse, add a field,
   serialise) -> produce pass-through of as many messages as the agents applied in
   step 1, of the same mean size, on the same broker.
Writes ``bench/results/e2e-<time>.json`` and ``.png`` (throughput over time, latency
distribution) and prints a table. Not a test: nothing passes or fails on these figures.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import secrets
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._stack import RESULTS, embedded_stack, rss_bytes
from events.allocation import AllocateLine, LineAllocated
from events.fulfillment import SupplierOrderRequested
from pipeline.devstack.processes import Proc, spawn_worker
from pipeline.entry.registry import CONSUMERS
from pipeline.runtime.db import create_engine
from pipeline.runtime.kafka import client_options, create_producer, ensure_topics
from pipeline.runtime.settings import Settings
from simulator.run import Limits, SimClock, Simulation
from simulator.world import Shares, make_world

SENT = ("sent_to_supplier", "partially_dispatched", "dispatched", "delivered")
#: Every order paid; no cancellations, faults or late payments: the happy path. With a
#: payment window of 100 ms (for the shops' timing only) each pays 1-15 ms after placing.
#: Every order placed, paid in full at once and sent on: no faults, no split or wrong
#: payment, no cancellation (anything else would leave orders short of "sent").
SHARES = Shares(pay=1.0, pay_late=0.0, pay_in_two=0.0, overpay=0.0, wrong_currency=0.0,
                cancel=0.0, cancel_units=0.0, duplicate=0.0, reorder=0.0, malformed=0.0)
PAY_AT_ONCE = timedelta(milliseconds=100)


@dataclass
class Rss:
    """Samples a process's resident set size every ``every`` seconds, in a thread."""

    pids: list[int]
    every: float = 0.5
    samples: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def now(self) -> int:
        """The sum over the worker processes (bytes)."""
        return sum(rss_bytes(pid) for pid in self.pids)

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.wait(self.every):
                try:
                    self.samples.append((time.monotonic(), self.now()))
                except OSError:
                    return
        threading.Thread(target=loop, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def peak(self, until: float | None = None) -> int:
        return max((b for t, b in self.samples if until is None or t <= until), default=0)


async def _scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return await conn.scalar(text(sql), params)


async def _completed(engine: AsyncEngine) -> int:
    return int(await _scalar(engine, "SELECT count(*) FROM read.order_status "
                                     "WHERE status = ANY(:s)", s=list(SENT)))


async def _applied(engine: AsyncEngine) -> int:
    """Records applied by all agents: the sum of their checkpoints (offset + 1)."""
    return int(await _scalar(engine, 'SELECT coalesce(sum("offset" + 1), 0) FROM checkpoints '
                                     "WHERE consumer = ANY(:c)", c=list(CONSUMERS)) or 0)


async def _quiet(engine: AsyncEngine, timeout_s: float, still_s: float = 3.0) -> None:
    """Wait until no agent has applied anything for ``still_s`` (their backlogs of
    step 1 are worked off), so step 2 measures the pipeline, not a queue."""
    last, since, end = -1, time.monotonic(), time.monotonic() + timeout_s
    while time.monotonic() < end:
        applied = await _applied(engine)
        if applied != last:
            last, since = applied, time.monotonic()
        elif time.monotonic() - since >= still_s:
            return
        await asyncio.sleep(0.5)


async def _catalog_projected(engine: AsyncEngine, prefix: str, offers: int) -> None:
    """Wait until every (supplier, sku) of the run has its stock row (the catalog is in)."""
    while int(await _scalar(engine, "SELECT count(*) FROM read.supplier_stock "  # noqa: ASYNC110 (polls Postgres)
                                    "WHERE sku LIKE :p", p=prefix + "%")) < offers:
        await asyncio.sleep(0.2)


async def throughput(settings: Settings, engine: AsyncEngine, orders: int, rss: Rss,
                     timeout_s: float) -> dict[str, Any]:
    """Step 1 (and the 10k memory mark of step 3)."""
    world = make_world(1, f"b{secrets.token_hex(2)}", skus=200, shares=SHARES,
                       stock=(10_000_000, 10_000_000), payment_window=PAY_AT_ONCE,
                       everywhere=True)
    sim = Simulation(settings, world, SimClock(), react=False)
    await sim.start()
    await _catalog_projected(engine, world.prefix, sum(len(s.offers) for s in world.suppliers))
    applied0, t0 = await _applied(engine), time.monotonic()
    placing = asyncio.create_task(sim.place_orders(Limits(orders, None, 0)))
    series: list[dict[str, float]] = []
    at_10k: dict[str, float] = {}
    done = 0
    while done < orders and time.monotonic() - t0 < timeout_s:
        await asyncio.sleep(0.5)
        done, now = await _completed(engine), time.monotonic()
        series.append({"t": now - t0, "completed": done, "placed": sim.tally.orders,
                       "rss": rss.samples[-1][1] if rss.samples else 0})
        if done >= 10_000 and not at_10k:
            at_10k = {"t": now - t0, "rss": rss.now(), "peak": rss.peak()}
        print(f"\r  {now - t0:6.1f} s  placed {sim.tally.orders:>7}  completed {done:>7}",
              end="", flush=True)
    print()
    took = time.monotonic() - t0
    await placing
    await sim.stop()
    applied = await _applied(engine) - applied0
    return {"orders": orders, "completed": done, "seconds": round(took, 2),
            "orders_per_s": round(done / took, 1), "messages": applied,
            "messages_per_s": round(applied / took, 1), "series": series, "at_10k": at_10k}


async def latency(settings: Settings, engine: AsyncEngine, rate: float, seconds: float,
                  timeout_s: float) -> dict[str, Any]:
    """Step 2."""
    world = make_world(2, f"l{secrets.token_hex(2)}", skus=200, shares=SHARES,
                       stock=(10_000_000, 10_000_000), payment_window=PAY_AT_ONCE,
                       everywhere=True)
    sim = Simulation(settings, world, SimClock(), react=False)
    sim.placed_at = {}
    to_wall = time.time() - time.monotonic()  # the database stamps wall-clock times
    seen_wall: dict[str, float] = {}
    await sim.start()
    await _catalog_projected(engine, world.prefix, sum(len(s.offers) for s in world.suppliers))
    placing = asyncio.create_task(sim.place_orders(Limits(None, seconds, rate)))
    seen: dict[str, float] = {}
    deadline = time.monotonic() + seconds + timeout_s
    while time.monotonic() < deadline and (not placing.done() or len(seen) < len(sim.placed_at)):
        pending = [o for o in sim.placed_at if o not in seen][:2000]
        if pending:
            async with engine.connect() as conn:
                found = (await conn.execute(text(
                    "SELECT order_id FROM read.order_status WHERE order_id = ANY(:ids) "
                    "AND status = ANY(:s)"), {"ids": pending, "s": list(SENT)})).scalars().all()
            now = time.monotonic()
            for order_id in found:
                seen[order_id] = now - sim.placed_at[order_id]
                seen_wall[order_id] = now + to_wall
        await asyncio.sleep(0.02)
    await placing
    await sim.stop()
    ms = sorted(v * 1000 for v in seen.values())

    def pct(q: float) -> float:
        return _pct(ms, q) if ms else float("nan")

    placed_wall = {o: t + to_wall for o, t in sim.placed_at.items()}
    return {"offered_per_s": rate, "seconds": seconds, "orders": len(sim.placed_at),
            "completed": len(ms), "p50_ms": pct(0.50), "p95_ms": pct(0.95),
            "p99_ms": pct(0.99), "max_ms": round(ms[-1], 1) if ms else None,
            "latencies_ms": [round(v, 1) for v in ms],
            "hops": await hops(engine, placed_wall, seen_wall)}


#: The hops of an order from placed to visible as sent, by the derived event that
#: ends each: (label, producer, CloudEvents type).
HOPS = (("orders: OrderPlaced -> AllocateLine", "orders", AllocateLine.TYPE),
        ("allocation: AllocateLine -> LineAllocated", "allocation", LineAllocated.TYPE),
        ("orders: LineAllocated -> SupplierOrderRequested", "orders",
         SupplierOrderRequested.TYPE))


async def hops(engine: AsyncEngine, placed: dict[str, float],
               seen: dict[str, float]) -> dict[str, dict[str, float]]:
    """Per hop, percentiles (ms) of its two parts, from the outbox rows each agent wrote
    for the order: **wait** (from the input's publication, or the order's send, to the
    start of the transaction that applied it: consumer fetch, batch window, queueing)
    and **commit + relay** (that transaction and the relay's publication); then
    **projector + poll** (from the last publication to the bench's poll seeing the row).
    Per order, the first row of each type; orders missing a row are left out."""
    ids = [o for o in seen if o in placed]
    async with engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT producer, v->>'type', v#>>'{data,order_id}', "
            "       extract(epoch FROM min(created_at)), extract(epoch FROM min(published_at)) "
            "FROM (SELECT producer, created_at, published_at, "
            "             convert_from(value, 'UTF8')::jsonb AS v FROM outbox) o "
            "WHERE v#>>'{data,order_id}' = ANY(:ids) GROUP BY 1, 2, 3"), {"ids": ids})).all()
    got = {(p, t, o): (float(c), float(s)) for p, t, o, c, s in rows if c and s}
    parts: dict[str, list[float]] = {}
    for order in ids:
        chain, before = [], placed[order]
        for label, producer, kind in HOPS:
            row = got.get((producer, kind, order))
            if row is None:
                break
            chain += [(f"{label}: wait", row[0] - before),
                      (f"{label}: commit + relay", row[1] - row[0])]
            before = row[1]
        else:
            chain.append(("projector + poll", seen[order] - before))
            for name, value in chain:
                parts.setdefault(name, []).append(value * 1000)
    return {name: {"p50_ms": _pct(v, 0.5), "p99_ms": _pct(v, 0.99), "n": len(v)}
            for name, v in parts.items()}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


async def passthrough(settings: Settings, messages: int, size: int) -> dict[str, Any]:
    """Step 4: produce ``messages`` records of ``size`` bytes to bench.in, then time a
    consumer that parses each, adds a field and produces it to bench.out."""
    tin, tout = f"bench.in.{secrets.token_hex(3)}", f"bench.out.{secrets.token_hex(3)}"
    await ensure_topics(settings, (tin, tout))
    body = json.dumps({"id": "x", "data": "y" * max(1, size - 40)}).encode()
    producer = create_producer(settings, linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    try:
        for i in range(messages):
            await producer.send(tin, body, key=str(i % 997).encode())
        await producer.flush()
        consumer = AIOKafkaConsumer(**client_options(settings), group_id=None,
                                    enable_auto_commit=False, fetch_max_bytes=16 << 20,
                                    max_partition_fetch_bytes=4 << 20)
        await consumer.start()
        try:
            parts = [TopicPartition(tin, p) for p in range(settings.kafka_topic_partitions)]
            consumer.assign(parts)
            for tp in parts:
                consumer.seek(tp, 0)
            t0, done = time.monotonic(), 0
            while done < messages:
                batches = await consumer.getmany(timeout_ms=500, max_records=2000)
                for records in batches.values():
                    for rec in records:
                        doc = json.loads(rec.value or b"{}")
                        doc["passed"] = True
                        await producer.send(tout, json.dumps(doc).encode(), key=rec.key)
                        done += 1
            await producer.flush()
            took = time.monotonic() - t0
        finally:
            await consumer.stop()
    finally:
        await producer.stop()
    return {"messages": messages, "size": size, "seconds": round(took, 2),
            "messages_per_s": round(messages / took, 1)}


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    series = result["throughput"]["series"]
    ts = [p["t"] for p in series]
    rates = [0.0] + [(q["completed"] - p["completed"]) / max(1e-3, q["t"] - p["t"])
                     for p, q in itertools.pairwise(series)]
    a.plot(ts, rates, label="orders/s completed")
    a.set_xlabel("seconds")
    a.set_ylabel("orders/s")
    a.set_title(f"throughput ({result['throughput']['orders_per_s']} orders/s mean)")
    rss = a.twinx()
    rss.plot(ts, [p["rss"] / 2**20 for p in series], color="gray", linestyle=":",
             label="worker RSS (MiB)")
    rss.set_ylabel("worker RSS (MiB)")
    a.legend(loc="upper left")
    rss.legend(loc="lower right")
    lat = result["latency"]
    b.hist(lat["latencies_ms"] or [0], bins=60)
    b.set_xlabel("ms from OrderPlaced sent to row sent_to_supplier")
    b.set_title(f"latency at {lat['offered_per_s']:g} orders/s: p50 {lat['p50_ms']} "
                f"p95 {lat['p95_ms']} p99 {lat['p99_ms']} ms")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


async def measure(settings: Settings, args: argparse.Namespace, rss: Rss) -> dict[str, Any]:
    engine = create_engine(settings)
    try:
        print(f"throughput: {args.orders} orders as fast as the pipeline takes them")
        thr = await throughput(settings, engine, args.orders, rss, args.timeout)
        print("waiting for every agent to work off its backlog")
        await _quiet(engine, args.timeout)
        print(f"latency: {args.latency_rate:g} orders/s for {args.latency_s:g} s")
        lat = await latency(settings, engine, args.latency_rate, args.latency_s, args.timeout)
        size = int(await _scalar(engine, "SELECT avg(length(value)) FROM event_log") or 500)
    finally:
        await engine.dispose()
    print(f"baseline: raw pass-through of {thr['messages']} messages of {size} bytes")
    base = await passthrough(settings, max(1, thr["messages"]), size)
    return {"throughput": thr, "latency": lat, "baseline": base}


def report(result: dict[str, Any]) -> None:
    thr, lat, base, mem = (result["throughput"], result["latency"], result["baseline"],
                           result["memory"])
    rows = [
        ("baseline: raw aiokafka pass-through", f"{base['messages_per_s']:,.0f} messages/s"),
        ("pipeline: orders completed", f"{thr['orders_per_s']:,.1f} orders/s "
                                       f"({thr['completed']} in {thr['seconds']} s)"),
        ("pipeline: messages applied by all agents", f"{thr['messages_per_s']:,.0f} messages/s"),
        ("pipeline / baseline (messages/s)", f"{result['ratio']:.3f}"),
        (f"latency at {lat['offered_per_s']:g} orders/s (n={lat['completed']})",
         f"p50 {lat['p50_ms']} ms, p95 {lat['p95_ms']} ms, p99 {lat['p99_ms']} ms"),
        ("worker RSS at 10k orders / peak at the end",
         f"{mem['rss_10k_mib']} MiB / {mem['peak_mib']} MiB"),
    ]
    rows += [(f"  {name}", f"p50 {v['p50_ms']} ms, p99 {v['p99_ms']} ms")
             for name, v in lat.get("hops", {}).items()]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--latency-rate", type=float, default=500.0)
    parser.add_argument("--latency-s", type=float, default=20.0)
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="Longest wait for a phase to complete (seconds).")
    parser.add_argument("--split", action="store_true",
                        help="Run the projector in a worker process of its own (its own "
                             "consumer group) beside one for the allocation and order "
                             "agents, so both cores work; RSS is then their sum. Short "
                             "for --groups projector/allocation,orders.")
    parser.add_argument("--groups", default=None,
                        help="Worker processes by agent group, '/' between processes, "
                             "e.g. projector/allocation/orders (one process per agent). "
                             "Default: one worker running every agent.")
    args = parser.parse_args()
    if args.split:
        args.groups = args.groups or "projector/allocation,orders"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still stop what we started
    with embedded_stack() as emb:
        settings = emb.settings
        workers: list[Proc] = []
        groups: list[str | None] = list(args.groups.split("/")) if args.groups else [None]
        try:
            for n, agents in enumerate(groups):  # each group is its own consumer group
                workers.append(spawn_worker(  # (pipeline.entry.worker.group_of)
                    {**emb.stack.env(), "DROPSHIP_LOG_LEVEL": "warning"},
                    emb.temp / f"worker-{n}.log", agents))
            rss = Rss([w.pid for w in workers])
            rss.start()
            result = asyncio.run(measure(settings, args, rss))
            rss.stop()
        finally:
            for worker in workers:
                worker.stop(timeout_s=30)
    result["ratio"] = round(result["throughput"]["messages_per_s"]
                            / result["baseline"]["messages_per_s"], 4)
    mem10k = result["throughput"]["at_10k"].get("rss")
    result["memory"] = {"rss_10k_mib": round(mem10k / 2**20, 1) if mem10k else None,
                        "peak_mib": round(rss.peak() / 2**20, 1)}
    result["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                         "when": datetime.now(UTC).isoformat(timespec="seconds")}
    result["args"] = vars(args)
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"e2e-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    chart(result, stem.with_suffix(".png"))
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    report(result)
    print(f"wrote {stem}.json and {stem}.png")


if __name__ == "__main__":
    main()
