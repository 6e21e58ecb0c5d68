"""``dropship demo``: the whole pipeline doing its job, on the embedded stack (entry point).

Steps:
1. bring the embedded stack up (or reuse the one running), migrate, create topics;
2. start a worker (``dropship worker``) whose deadlines follow the demo's simulated
   clock (``DROPSHIP_CLOCK_FILE``; by default one real second is 20 simulated minutes);
3. run the simulator: shops and suppliers as Kafka clients, seeded, placing
   orders at a bounded rate up to a count, then living on for ``settle`` seconds
   (suppliers ship, parcels arrive, customers return things), under a live view
   drawn from the read models;
4. stop the simulator and wait until every consumer has caught up;
5. print the summary from the read models (what ``dropship ops ...`` shows), the
   late deliveries and delivery exceptions and how they ended (``read.shipments``),
   the suppliers' books (requests beyond free stock, explained or not; out-of-stock
   rejections by explanation; parcels by fate) and one order that failed over to a
   backup supplier, with its timeline;
6. check the invariants: no oversell, every order finished or waiting for an
   explained reason, every order placed is known, every malformed message
   dead-lettered, no supplier asked for units beyond its free stock unless explained
   by report lag or a race (from the simulator's books), no supplier asked to ship
   to a country it does not serve;
7. stop the worker, and the stack if this demo started it (unless ``--keep``).
Returns True only if every check of step 6 held.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.devstack import down, up
from pipeline.devstack.processes import Proc, spawn_worker
from pipeline.entry.catchup import backlog
from pipeline.entry.render import order_parts, plain, table
from pipeline.runtime.clock import set_file_time
from pipeline.runtime.db import create_engine
from pipeline.runtime.kafka import ensure_topics
from pipeline.runtime.migrate import upgrade_sync
from pipeline.runtime.settings import Settings
from projections import invariants, queries
from simulator.run import Limits, SimClock, Simulation, Tally
from simulator.world import Shares, make_world


@dataclass(frozen=True)
class DemoOptions:
    orders: int = 300
    rate: float = 10.0          # orders per real second
    settle_s: float = 30.0      # simulated life after the last order, in real seconds
    speed: float = 1200.0       # simulated seconds per real second
    seed: int = 7
    keep: bool = False
    timeout_s: float = 120.0    # longest wait for the pipeline to catch up
    shares: dict[str, float] = field(default_factory=dict)
    summary_json: Path | None = None


#: Business settings of the demo's worker: at 1200x a real second is 20 minutes, so the
#: payment window and the hold timeout get room for the pipeline's own latency.
PAYMENT_WINDOW = timedelta(hours=6)
#: Carriers deliver the same day (offers state 0 transit days; those that state none get
#: the default, 1 day) and a parcel is late 3 h after its expected delivery, so that
#: deliveries, late ones and delivery exceptions happen within the demo's simulated day.
TRANSIT_DAYS = (0, 0)
LATE_GRACE = timedelta(hours=3)
DEFAULT_TRANSIT = timedelta(days=1)
DEMO_ENV = {"DROPSHIP_PAYMENT_WINDOW_MINUTES": f"{PAYMENT_WINDOW.total_seconds() / 60:g}",
            "DROPSHIP_HELD_EVENT_TIMEOUT_MINUTES": "720", "DROPSHIP_DEADLINE_CHECK_S": "0.25",
            "DROPSHIP_LATE_DELIVERY_GRACE_DAYS": f"{LATE_GRACE / timedelta(days=1):g}",
            "DROPSHIP_DEFAULT_TRANSIT_DAYS": f"{DEFAULT_TRANSIT.days}"}
#: Real seconds a supplier's answer may spend in transit (the pipeline's and the
#: simulator's latency) before its deadline fails it over: simulated minutes at the
#: demo's speed (``DROPSHIP_SLA_GRACE_MINUTES``).
TRANSIT_S = 5.0


def demo_env(speed: float) -> dict[str, str]:
    """The demo worker's settings at ``speed`` simulated seconds per real second."""
    return {**DEMO_ENV, "DROPSHIP_SLA_GRACE_MINUTES": f"{TRANSIT_S * speed / 60:g}"}


@dataclass
class Outcome:
    summary: dict[str, Any]
    verdict: invariants.Verdict
    tally: Tally
    missing_dead_letters: list[tuple[str, int, int, str]]
    failed_over: dict[str, Any] | None
    prefix: str
    books: dict[str, Any] = field(default_factory=dict)
    deliveries: dict[str, Any] | None = None

    @property
    def problems(self) -> list[str]:
        found = []
        if self.verdict.oversold:
            found.append(f"{len(self.verdict.oversold)} (supplier, sku) budgets off contract")
        if self.verdict.unexplained:
            ids = ", ".join(r["order_id"] for r in self.verdict.unexplained[:5])
            found.append(f"{len(self.verdict.unexplained)} orders stuck without reason ({ids})")
        if self.summary["orders"] != self.tally.orders:
            found.append(f"{self.tally.orders} orders placed but {self.summary['orders']} known")
        if self.missing_dead_letters:
            found.append(f"{len(self.missing_dead_letters)} malformed messages not dead-lettered")
        for name, rows in (("money", self.verdict.money), ("timing", self.verdict.timing)):
            if rows:
                first = ", ".join(f"{r['order_id']}: {r['problem']}" for r in rows[:3])
                found.append(f"{len(rows)} {name} problems ({first})")
        if unexplained := self.books.get("unexplained"):
            first = ", ".join(f"{so} at {sup} short {short}" for sup, so, short in unexplained[:3])
            found.append(f"{len(unexplained)} supplier orders asked beyond the supplier's free "
                         f"stock, not explained by report lag or a race ({first})")
        if cannot := self.books.get("cannot_ship"):
            first = ", ".join(f"{so} to {country}" for _, so, country in cannot[:3])
            found.append(f"{len(cannot)} supplier orders sent to a supplier that does not ship "
                         f"to the country ({first})")
        return found


class Driver:
    """Steps 3-6, inside one event loop (clients are built in the loop that uses them)."""

    def __init__(self, settings: Settings, options: DemoOptions, clock_file: Path,
                 console: Console) -> None:
        self.settings, self.options, self.console = settings, options, console
        self.prefix = f"d{options.seed}-{secrets.token_hex(2)}"
        self.world = make_world(options.seed, self.prefix, payment_window=PAYMENT_WINDOW,
                                shares=Shares().with_overrides(options.shares),
                                transit_days=TRANSIT_DAYS, delivery_grace=LATE_GRACE,
                                default_transit=DEFAULT_TRANSIT)
        self.clock = SimClock(options.speed, file=clock_file)
        self.engine: AsyncEngine = create_engine(settings)
        self.sim = Simulation(settings, self.world, self.clock,
                              report_latency=timedelta(seconds=TRANSIT_S * options.speed))
        self.t0 = time.monotonic()
        self.phase = "starting"
        self.last: tuple[float, int] = (self.t0, 0)

    async def run(self) -> Outcome:
        try:
            await self.sim.start()
            with Live(console=self.console, refresh_per_second=4, transient=False) as live:
                placing = asyncio.create_task(self.sim.place_orders(Limits(
                    orders=self.options.orders, duration_s=None, rate=self.options.rate)))
                self.phase = "shops placing orders"
                while not placing.done():
                    live.update(await self.view())
                    await asyncio.sleep(0.5)
                await placing
                self.phase = "suppliers shipping, customers receiving"
                until = time.monotonic() + self.options.settle_s
                while time.monotonic() < until:
                    live.update(await self.view())
                    await asyncio.sleep(0.5)
                tally = await self.sim.stop()
                self.phase = "pipeline catching up"
                await self.catch_up(live)
                live.update(await self.view())
            return await self.outcome(tally)
        finally:
            await self.engine.dispose()

    async def catch_up(self, live: Live) -> None:
        deadline, quiet = time.monotonic() + self.options.timeout_s, 0
        while time.monotonic() < deadline and quiet < 3:
            left = await backlog(self.settings, self.engine)
            quiet = quiet + 1 if left == 0 else 0
            live.update(await self.view())
            await asyncio.sleep(0.5)
        if quiet < 3:
            raise TimeoutError(
                f"the pipeline did not catch up within {self.options.timeout_s:.0f} s")

    async def view(self) -> Group:
        summary = await queries.run_summary(self.engine, self.prefix)
        counts: dict[str, int] = summary["statuses"]
        now, seen = time.monotonic(), summary["orders"]
        rate = (seen - self.last[1]) / max(1e-3, now - self.last[0])
        self.last = (now, seen)
        head = Table.grid(padding=(0, 2))
        head.add_row(f"[bold]{self.phase}[/]", f"simulated time {self.clock.now():%a %H:%M}",
                     f"{now - self.t0:.0f} s")
        head.add_row(f"orders placed {self.sim.tally.orders}", f"known to ops {seen}",
                     f"{rate:.0f} orders/s into the read models")
        head.add_row(f"failovers {summary['failovers']}", f"backorders {summary['backorders']}",
                     f"dead letters {summary['dead_letters']}")
        status = table("orders by status", [{"status": s, "orders": n}
                                            for s, n in sorted(counts.items())],
                       ("status", "orders"))
        return Group(head, status)

    async def outcome(self, tally: Tally) -> Outcome:
        summary = await queries.run_summary(self.engine, self.prefix)
        verdict = await invariants.check(self.engine, self.prefix, self.clock.now(),
                                         payment_window=PAYMENT_WINDOW,
                                         grace=timedelta(seconds=10 * self.options.speed))
        async with self.engine.connect() as conn:
            kept = {(t, p, o) for t, p, o in await conn.execute(text(
                "SELECT source_topic, source_partition, source_offset FROM read.dead_letters"))}
        missing = [m for m in tally.malformed if m[:3] not in kept]
        order_id = await queries.failed_over_order(self.engine, self.prefix)
        view = None if order_id is None else await queries.order_view(self.engine, order_id)
        return Outcome(summary, verdict, tally, missing, view, self.prefix,
                       self.sim.books.summary(), await deliveries(self.engine, self.prefix))


#: Whether read.shipments has the order agent's delivery tracking (issue 15's columns).
TRACKED = text("""
SELECT count(*) = 4 FROM information_schema.columns
 WHERE table_schema = 'read' AND table_name = 'shipments'
   AND column_name IN ('state', 'deliver_by', 'exception', 'flagged')""")
#: Every shipment of the run, whether it was delivered after its deadline, and for one
#: that failed whether a later shipment of its order went out (re-shipped), a later
#: supplier order was requested (re-ship on its way) or a delivery_failed refund issued.
SHIPMENTS = text("""
SELECT h.state, h.flagged, h.exception IS NOT NULL AS failed,
       coalesce(h.delivered_at > h.deliver_by, false) AS delivered_late,
       EXISTS (SELECT 1 FROM read.shipments r WHERE r.order_id = h.order_id
                  AND r.dispatched_at > h.dispatched_at) AS reshipped,
       EXISTS (SELECT 1 FROM read.supplier_orders s WHERE s.order_id = h.order_id
                  AND s.requested_at > h.dispatched_at) AS reship_requested,
       EXISTS (SELECT 1 FROM read.refunds f WHERE f.order_id = h.order_id
                  AND f.cause = 'delivery_failed') AS refunded
  FROM read.shipments h
 WHERE h.order_id LIKE :p""")


async def deliveries(engine: AsyncEngine, prefix: str) -> dict[str, Any] | None:
    """Late deliveries and delivery exceptions as the read models show them, and how
    they ended; None while ``read.shipments`` lacks the delivery-tracking columns."""
    async with engine.connect() as conn:
        if not await conn.scalar(TRACKED):
            return None
        rows = (await conn.execute(SHIPMENTS, {"p": queries.like(prefix)})).mappings().all()
    failed = [r for r in rows if r["failed"]]
    return {
        "by_state": dict(Counter(r["state"] for r in rows)),
        "delivered_late": sum(r["delivered_late"] for r in rows),
        "still_late": sum(r["state"] == "late" for r in rows),
        "flagged": sum(bool(r["flagged"]) for r in rows),
        "failed": len(failed),
        "failed_reshipped": sum(r["reshipped"] for r in failed),
        "failed_reship_requested": sum(r["reship_requested"] and not r["reshipped"]
                                       for r in failed),
        "failed_refunded": sum(r["refunded"] for r in failed),
    }


def show(console: Console, out: Outcome) -> None:
    s = out.summary
    console.print(f"\n[bold]summary[/] of run {out.prefix} (the figures of `dropship ops`):")
    console.print(table("orders by status", [{"status": k, "orders": v}
                                             for k, v in s["statuses"].items()],
                        ("status", "orders")))
    console.print(f"failovers {s['failovers']} ({s['orders_failed_over']} orders), "
                  f"backorders {s['backorders']}, stuck {s['stuck']}, shipments "
                  f"{s['shipments']}, returns {s['returns']}, dead letters {s['dead_letters']} "
                  f"({', '.join(f'{k}: {v}' for k, v in s['dead_letters_by_rule'].items())})")
    console.print(table("supplier scorecard", s["suppliers"], (
        "supplier_id", "requested", "accepted", "rejected", "acknowledge_sla_misses",
        "dispatch_sla_misses", "on_time_dispatch_rate", "failovers_away", "returns_rate")))
    show_deliveries(console, out)
    waiting = ", ".join(f"{k}: {v}" for k, v in sorted(out.verdict.waiting.items()))
    console.print(f"orders by state: {waiting}")
    sent = out.tally
    console.print(f"the simulator sent {sum(sent.sent.values())} messages for {sent.orders} "
                  f"orders; faults injected: {dict(sent.faults) or 'none'}")
    if out.failed_over is None:
        console.print("no order failed over this time (try more orders or another --seed)")
    else:
        order_id = out.failed_over["order"]["order_id"]
        console.print(f"\n[bold]an order that failed over to a backup supplier[/]: {order_id}")
        for part in order_parts(order_id, out.failed_over, compact=True):
            console.print(part)


def show_deliveries(console: Console, out: Outcome) -> None:
    """Late deliveries and exceptions (read models), and the suppliers' books."""
    b, d = out.books, out.deliveries
    if d is None:
        console.print("late deliveries: read.shipments has no delivery tracking yet; "
                      "the carriers' side is below")
    else:
        console.print(
            f"late deliveries: {d['delivered_late']} delivered late, {d['still_late']} still "
            f"late; delivery exceptions {d['failed']}: re-shipped {d['failed_reshipped']}, "
            f"re-ship requested {d['failed_reship_requested']}, refunded "
            f"{d['failed_refunded']}; flagged for ops {d['flagged']}; shipments by state: "
            + ", ".join(f"{k}: {v}" for k, v in sorted(d["by_state"].items())))
    fates = ", ".join(f"{k}: {v}" for k, v in sorted(b["fates_sent"].items()))
    console.print(f"carriers (the simulator's books): {b['parcels']} parcels, ended {fates or '-'}"
                  f"; {b['shipped_after_cancel']} shipped after an SLA cancellation")
    decisions = ", ".join(f"{k}: {v}" for k, v in sorted(b["decisions"].items()))
    oos = ", ".join(f"{k}: {v}" for k, v in sorted(b["out_of_stock_by_explanation"].items()))
    over = ", ".join(f"{k}: {v}" for k, v in sorted(b["over_asks_by_explanation"].items()))
    console.print(f"suppliers' books: {b['requests']} requests ({decisions}); asked beyond free "
                  f"stock {b['over_asks']} ({over or 'none'}); out-of-stock rejections by "
                  f"explanation: {oos or 'none'}; {b['sold_elsewhere']} units sold elsewhere")


def run(settings: Settings, options: DemoOptions, console: Console) -> bool:
    """The demo (steps in the module docstring)."""
    if not console.is_terminal:  # a log or a pipe: wide enough for the tables
        console = Console(width=130, highlight=False)
    stack, started = up(settings.state_dir, settings.dev_kafka_port, settings.dev_pg_port)
    console.print(f"stack {'started' if started else 'already running'}: "
                  f"kafka {stack.bootstrap_servers}, postgres 127.0.0.1:{stack.pg_port}")
    # the demo itself (migrations, summary) is the owner; the worker is the app role
    live = settings.model_copy(update={"kafka_bootstrap_servers": stack.bootstrap_servers,
                                       "database_url": stack.database_url,
                                       "database_admin_url": None})
    clock_file = stack.state_dir / "demo-clock"
    worker: Proc | None = None
    try:
        upgrade_sync(live)
        asyncio.run(ensure_topics(live))
        console.print("database migrated, topics created")
        set_file_time(clock_file, datetime.now(UTC))  # the worker reads it from the start
        worker = spawn_worker({**stack.env(), **demo_env(options.speed),
                               "DROPSHIP_APP_ID": live.app_id,
                               "DROPSHIP_CLOCK_FILE": str(clock_file)},
                              stack.state_dir / "worker.log")
        console.print(f"worker started (pid {worker.pid}, log {stack.state_dir}/worker.log); "
                      f"1 real second = {options.speed / 60:g} simulated minutes")
        out = asyncio.run(Driver(live, options, clock_file, console).run())
        show(console, out)
        if options.summary_json is not None:
            options.summary_json.write_text(json.dumps(plain({
                "prefix": out.prefix, "summary": out.summary, "placed": out.tally.orders,
                "sent": dict(out.tally.sent), "faults": dict(out.tally.faults),
                "malformed": out.tally.malformed, "waiting": dict(out.verdict.waiting),
                "books": out.books, "deliveries": out.deliveries,
                "problems": out.problems}), indent=2))
        for problem in out.problems:
            console.print(f"[bold red]invariant broken[/]: {problem}")
        if not out.problems:
            console.print("[bold green]invariants held[/]: no oversell, every order finished or "
                          "waiting for a stated reason, nothing lost, every malformed message "
                          "dead-lettered, refunded <= paid and every cancelled order refunded, "
                          "no supplier order before payment, no failover of a supplier that "
                          "accepted in time, no supplier asked beyond its free stock (bar "
                          "report lag and races), none asked to ship where it does not")
        return not out.problems
    finally:
        if worker is not None:
            worker.stop(timeout_s=20)
            console.print("worker stopped")
        if started and not options.keep:
            down(stack.state_dir)
            console.print("stack stopped (use --keep to leave it running)")
