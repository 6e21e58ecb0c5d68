"""``dropship demo``: the pipeline end to end on the embedded stack (entry point).

Until the simulator exists (issue 7) the demo is one scripted order, but every
step is a real event on a real topic, applied by a real worker:
1. bring the embedded stack up (or reuse the one running) and migrate;
2. start a worker process (``dropship worker``) against it;
3. two suppliers publish offers and stock for a sku: the preferred one has none;
4. a shop places an order and pays for it;
5. the pipeline reserves stock at the backup supplier and sends it the order;
6. that supplier accepts, ships with a tracking number, and the parcel arrives;
7. show the order's journey and final state from Postgres;
8. stop the worker, and the stack too if this demo started it (unless ``--keep``).
Returns True if the order was delivered in time.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from agents.core.orders import Order, status_of
from agents.orders import load_order
from events.base import Message
from events.catalog import StockLevelReported, SupplierOfferUpdated
from events.codec import encode, key_of
from events.envelope import CloudEvent, wrap
from events.orders import LineQuantity, OrderLine, OrderPlaced, PaymentConfirmed
from events.suppliers import ShipmentDelivered, ShipmentDispatched, SupplierOrderAccepted
from events.types import Address, Money
from pipeline.db import create_engine
from pipeline.devstack import Stack, down, up
from pipeline.devstack.processes import Proc, free_port
from pipeline.kafka import create_producer, ensure_topics
from pipeline.migrate import upgrade_sync
from pipeline.schema import order_state
from pipeline.settings import Settings


def sample_order(order_id: str, now: datetime | None = None,
                 sku: str = "SKU-MUG") -> CloudEvent:
    """A valid ``OrderPlaced`` CloudEvent as the shop ``demo-shop`` publishes it."""
    now = now or datetime.now(UTC)
    order = OrderPlaced(
        order_id=order_id, shop_id="demo-shop", customer_ref="cust-1",
        ship_to=Address(name="Ada Lovelace", line1="1 Loop Road", city="Lyon",
                        postal_code="69001", country="FR"),
        currency="EUR",
        lines=(OrderLine(line_id="L1", sku=sku, quantity=2,
                         unit_price=Money(amount=Decimal("12.50"), currency="EUR")),),
        placed_at=now,
    )
    return wrap(order, id=str(uuid.uuid4()), source="shop/demo-shop", time=now)


def start_worker(settings: Settings, stack: Stack, log_path: Path) -> Proc:
    """Start ``dropship worker`` as a child process pointed at ``stack``."""
    env = {**os.environ, **stack.env(), "DROPSHIP_WEB_PORT": str(free_port()),
           "DROPSHIP_APP_ID": settings.app_id}
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "worker"], env=env,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
    return Proc.of(popen.pid)


class Script:
    """Shops and suppliers of the demo, publishing on the real topics."""

    def __init__(self, settings: Settings, console: Console) -> None:
        self.settings, self.console = settings, console
        self.run_id = uuid.uuid4().hex[:6]
        self.sku, self.order_id = f"MUG-{self.run_id}", f"demo-{self.run_id}"
        self.producer = create_producer(settings)
        self.engine = create_engine(settings)
        self.seq = 0
        self.seen: str | None = None  # the last status shown

    async def send(self, payload: Message, source: str) -> None:
        self.seq += 1
        event = wrap(payload, id=f"demo-{self.run_id}-{self.seq}", source=source,
                     time=datetime.now(UTC))
        md = await self.producer.send_and_wait(payload.TOPIC, encode(event), key=key_of(event))
        self.console.print(f"  {source:<22} -> {type(payload).__name__:<22} "
                           f"{md.topic}[{md.partition}]@{md.offset}", highlight=False)

    async def order(self) -> Order | None:
        async with self.engine.connect() as conn:
            doc = await conn.scalar(select(order_state.c.state)
                                    .where(order_state.c.order_id == self.order_id))
        return load_order(doc) if doc is not None else None

    async def until(self, what: str, check: Callable[[Order], bool], timeout_s: float) -> Order:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            order = await self.order()
            if order is not None and status_of(order) != self.seen:
                self.seen = status_of(order)
                self.console.print(f"  order {self.order_id} is now [bold]{self.seen}[/bold]")
            if order is not None and check(order):
                return order
            await asyncio.sleep(0.2)
        raise TimeoutError(f"the pipeline did not reach '{what}' within {timeout_s:.0f} s")

    async def play(self, timeout_s: float) -> Order:
        """Steps 3-6 of the module docstring; returns the final order."""
        await self.producer.start()
        try:
            now = datetime.now(UTC)
            for supplier, priority, stock in (("sup-primary", 1, 0), ("sup-backup", 2, 10)):
                await self.send(SupplierOfferUpdated(
                    supplier_id=supplier, sku=self.sku, priority=priority,
                    unit_cost=Money(amount=Decimal("4.20"), currency="EUR"), lead_time_days=2,
                    acknowledge_sla_hours=24, dispatch_sla_hours=48, active=True,
                    updated_at=now), f"supplier/{supplier}")
                await self.send(StockLevelReported(supplier_id=supplier, sku=self.sku,
                                                   available=stock, as_of=now),
                                f"supplier/{supplier}")
            order = sample_order(self.order_id, sku=self.sku)
            await self.send(order.data, "shop/demo-shop")
            await self.send(PaymentConfirmed(
                order_id=self.order_id, amount=Money(amount=Decimal("25.00"), currency="EUR"),
                payment_ref="pay-demo", paid_at=datetime.now(UTC)), "shop/demo-shop")
            routed = await self.until("sent to a supplier",
                                      lambda o: any(so.live for so in o.supplier_orders.values()),
                                      timeout_s)
            so = next(so for so in routed.supplier_orders.values() if so.live)
            supplier, source = so.supplier_id, f"supplier/{so.supplier_id}"
            now = datetime.now(UTC)
            await self.send(SupplierOrderAccepted(order_id=self.order_id, supplier_id=supplier,
                                                  supplier_order_id=so.supplier_order_id,
                                                  accepted_at=now), source)
            await self.send(ShipmentDispatched(
                order_id=self.order_id, supplier_order_id=so.supplier_order_id,
                supplier_id=supplier, shipment_id=f"parcel-{self.run_id}",
                lines=(LineQuantity(line_id="L1", quantity=2),), carrier="La Poste",
                tracking_number=f"6A{self.run_id.upper()}FR", dispatched_at=now), source)
            await self.send(ShipmentDelivered(order_id=self.order_id, supplier_id=supplier,
                                              shipment_id=f"parcel-{self.run_id}",
                                              delivered_at=datetime.now(UTC)), source)
            return await self.until("delivered", lambda o: status_of(o) == "delivered",
                                    timeout_s)
        finally:
            await self.producer.stop()
            await self.engine.dispose()


async def play(settings: Settings, console: Console, timeout_s: float) -> Order:
    """Run the script; clients are built inside the event loop that uses them."""
    return await Script(settings, console).play(timeout_s)


def show(console: Console, order: Order) -> None:
    table = Table(title=f"order {order.order_id}")
    table.add_column("field")
    table.add_column("value")
    table.add_row("status", status_of(order))
    for so in order.supplier_orders.values():
        table.add_row(f"supplier order {so.supplier_order_id[:15]}...",
                      f"{so.supplier_id}: {so.state}")
    for line in order.lines.values():
        table.add_row(f"line {line.line_id} ({line.sku})",
                      f"{line.quantity} ordered, reserved at {dict(line.reserved)}, "
                      f"{line.shipped} shipped, {line.delivered} delivered")
    for shipment in order.shipments.values():
        table.add_row(f"parcel {shipment.shipment_id}",
                      f"{shipment.carrier} {shipment.tracking_number}")
    console.print(table)


def run(settings: Settings, *, keep: bool, timeout_s: float, console: Console) -> bool:
    """The demo (steps in the module docstring)."""
    stack, started = up(settings.state_dir, settings.dev_kafka_port, settings.dev_pg_port)
    console.print(f"stack {'started' if started else 'already running'}: "
                  f"kafka {stack.bootstrap_servers}, postgres 127.0.0.1:{stack.pg_port}")
    live = settings.model_copy(update={"kafka_bootstrap_servers": stack.bootstrap_servers,
                                       "database_url": stack.database_url})
    worker: Proc | None = None
    try:
        upgrade_sync(live)
        asyncio.run(ensure_topics(live))
        console.print("database migrated, topics created")
        worker = start_worker(live, stack, stack.state_dir / "worker.log")
        console.print(f"worker started (pid {worker.pid}, log {stack.state_dir}/worker.log)")
        final = asyncio.run(play(live, console, timeout_s))
        show(console, final)
        return status_of(final) == "delivered"
    finally:
        if worker is not None:
            worker.stop(timeout_s=20)
            console.print("worker stopped")
        if started and not keep:
            down(stack.state_dir)
            console.print("stack stopped (use --keep to leave it running)")
