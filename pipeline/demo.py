"""``dropship demo``: the pipeline end to end on the embedded stack (entry point).

Until the simulator exists (issue 7) the demo is small but real:
1. bring the embedded stack up (or reuse the one running) and migrate;
2. start a worker process (``dropship worker``) against it;
3. publish one sample ``OrderPlaced`` CloudEvent to ``shop.orders`` as a shop would;
4. wait until the pipeline has recorded it in Postgres, and show its status;
5. stop the worker, and the stack too if this demo started it (unless ``--keep``).
Returns True if the order reached Postgres in time.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from events.codec import encode, key_of
from events.envelope import CloudEvent, wrap
from events.orders import OrderLine, OrderPlaced
from events.topics import SHOP_ORDERS
from events.types import Address, Money
from pipeline.checkpoints import load_checkpoint
from pipeline.db import create_engine
from pipeline.devstack import Stack, down, up
from pipeline.devstack.processes import Proc, free_port
from pipeline.kafka import create_producer, ensure_topics
from pipeline.migrate import upgrade_sync
from pipeline.schema import event_log
from pipeline.settings import Settings


def sample_order(order_id: str, now: datetime | None = None) -> CloudEvent:
    """A valid ``OrderPlaced`` CloudEvent as the shop ``demo-shop`` publishes it."""
    now = now or datetime.now(UTC)
    order = OrderPlaced(
        order_id=order_id, shop_id="demo-shop", customer_ref="cust-1",
        ship_to=Address(name="Ada Lovelace", line1="1 Loop Road", city="Lyon",
                        postal_code="69001", country="FR"),
        currency="EUR",
        lines=(OrderLine(line_id="L1", sku="SKU-MUG", quantity=2,
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


async def publish(settings: Settings, order: CloudEvent) -> tuple[int, int]:
    producer = create_producer(settings)
    await producer.start()
    try:
        md = await producer.send_and_wait(SHOP_ORDERS, encode(order), key=key_of(order))
        return md.partition, md.offset
    finally:
        await producer.stop()


async def wait_recorded(settings: Settings, event_id: str, timeout_s: float) -> dict[str, Any]:
    """Poll ``event_log`` for ``event_id``; return its row plus the checkpoint, or {}."""
    engine = create_engine(settings)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            async with engine.connect() as conn:
                row = (await conn.execute(
                    select(event_log).where(event_log.c.event_id == event_id)
                )).mappings().first()
                if row is not None:
                    ckpt = await load_checkpoint(conn, "archive", row["topic"], row["partition"])
                    return {**row, "checkpoint": ckpt}
            await asyncio.sleep(0.25)
        return {}
    finally:
        await engine.dispose()


def show(console: Console, order: CloudEvent, found: dict[str, Any]) -> None:
    table = Table(title=f"order {order.subject}")
    table.add_column("field")
    table.add_column("value")
    table.add_row("status", "RECEIVED: recorded by the pipeline in Postgres (event_log)")
    table.add_row("event", f"{found['event_type']} id={found['event_id']}")
    table.add_row("kafka position", f"{found['topic']}[{found['partition']}] @ {found['offset']}")
    table.add_row("archive checkpoint", str(found["checkpoint"]))
    table.add_row("recorded at", str(found["recorded_at"]))
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
        order = sample_order(f"demo-{uuid.uuid4().hex[:8]}")
        partition, offset = asyncio.run(publish(live, order))
        console.print(f"shop published OrderPlaced {order.subject} -> "
                      f"{SHOP_ORDERS}[{partition}] @ {offset}")
        found = asyncio.run(wait_recorded(live, order.id, timeout_s))
        if found:
            show(console, order, found)
        return bool(found)
    finally:
        if worker is not None:
            worker.stop(timeout_s=20)
            console.print("worker stopped")
        if started and not keep:
            down(stack.state_dir)
            console.print("stack stopped (use --keep to leave it running)")
