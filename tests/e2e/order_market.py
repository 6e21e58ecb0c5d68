"""A test market: shops and suppliers that talk to a real worker only through Kafka.

``Tap`` follows the outgoing topics with a group-less consumer; ``Market``
publishes what shops and suppliers publish, with times from the worker's
file clock, and waits for what the pipeline answers.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from agents.allocation import read_states
from agents.core.allocation import SkuState
from agents.core.orders import Order
from agents.orders import load_order
from events.base import Message
from events.catalog import StockLevelReported, SupplierOfferUpdated
from events.codec import DecodeError, decode, encode, key_of
from events.deadletter import DeadLetter
from events.envelope import CloudEvent, wrap
from events.orders import (
    DeliveryConfirmed,
    LineQuantity,
    OrderCancelled,
    OrderLine,
    OrderPlaced,
    PaymentConfirmed,
    ReturnReason,
    ReturnRequested,
)
from events.suppliers import (
    ReturnReceived,
    ShipmentDelivered,
    ShipmentDispatched,
    SupplierOrderAccepted,
    SupplierOrderRejected,
)
from events.topics import DLQ, ORDER_STATUS, SUPPLIER_ORDERS
from events.types import Address, Money
from pipeline.devstack.processes import free_port
from pipeline.entry.registry import topics_of
from pipeline.runtime.clock import set_file_time
from pipeline.runtime.kafka import client_options, create_producer, ensure_topics
from pipeline.runtime.lag import broker_ends, lag_report
from pipeline.runtime.schema import order_state
from pipeline.runtime.settings import Settings
from tests.helpers import start_worker, stop_worker

E = TypeVar("E", bound=Message)
SHOP = "acme"
EnvFactory = Callable[..., dict[str, str]]  # the ``cli_env`` fixture
#: Where every market's worker clock starts.
START = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


@asynccontextmanager
async def running_market(settings: Settings, engine: AsyncEngine, env: EnvFactory,
                         folder: Path, **worker_env: str,
                         ) -> AsyncIterator[tuple[Market, dict[str, str]]]:
    """A worker on a file clock (at :data:`START`) with ``worker_env``, a tap on its
    outgoing topics and a market to drive it: (market, the worker's environment, which
    ``dropship`` commands of the test use too). Stops all three on the way out."""
    await ensure_topics(settings)
    clock = folder / "clock"
    set_file_time(clock, START)
    worker_settings = env(DROPSHIP_CLOCK_FILE=str(clock), DROPSHIP_DEADLINE_CHECK_S="0.2",
                          DROPSHIP_AGENT_BATCH_WITHIN_S="0.05",
                          DROPSHIP_WEB_PORT=str(free_port()), **worker_env)
    worker = start_worker(worker_settings, folder / "worker.log")
    await caught_up(settings, engine)
    tap = Tap(settings)
    market = Market(settings, engine, tap, clock)
    await tap.start()
    await market.start()
    try:
        yield market, worker_settings
    finally:
        await market.stop()
        await tap.stop()
        stop_worker(worker, folder / "worker.log")


#: The agents a market's worker runs: consumer -> topics.
AGENTS = topics_of()


async def caught_up(settings: Settings, engine: AsyncEngine, timeout_s: float = 300.0) -> None:
    """Wait until the worker has applied every record on its topics at the start: an
    earlier test may leave records no worker of its applied (one that ran only the
    projector), and a scenario's waits must not include working off that backlog."""
    topics = {t for ts in AGENTS.values() for t in ts}
    ends = await broker_ends(settings, topics)
    deadline = time.monotonic() + timeout_s
    while True:
        rows = await lag_report(engine, AGENTS, ends, {})
        behind = [r for r in rows if r.lag]
        if not behind:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"worker still behind after {timeout_s:.0f} s: {behind[:3]}")
        await asyncio.sleep(0.5)


class Tap:
    """Every event on the outgoing topics, decoded, as it arrives."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.events: list[CloudEvent] = []
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(**client_options(self.settings), group_id=None,
                                    enable_auto_commit=False)
        await consumer.start()
        parts = [TopicPartition(t, p) for t in (SUPPLIER_ORDERS, ORDER_STATUS, DLQ)
                 for p in range(self.settings.kafka_topic_partitions)]
        consumer.assign(parts)
        for tp in parts:
            consumer.seek(tp, 0)
        self._consumer = consumer
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for r in records:
                    try:
                        self.events.append(decode(r.value))
                    except DecodeError:  # an earlier test's malformed record: not ours
                        continue

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._consumer is not None:
            await self._consumer.stop()

    def of(self, kind: type[E], order_id: str) -> list[E]:
        seen: dict[str, E] = {}  # deduplicated by event id
        for e in self.events:
            if isinstance(e.data, kind) and _order_of(e) == order_id:
                seen.setdefault(e.id, e.data)
        return list(seen.values())


def _order_of(event: CloudEvent) -> str | None:
    if isinstance(event.data, DeadLetter):
        return None
    return getattr(event.data, "order_id", None)


class Market:
    """Shops and suppliers, publishing on the real topics."""

    def __init__(self, settings: Settings, engine: AsyncEngine, tap: Tap, clock: Path) -> None:
        self.settings, self.engine, self.tap, self.clock_path = settings, engine, tap, clock
        self.run = uuid.uuid4().hex[:6]
        self._producer: AIOKafkaProducer | None = None
        self._seq = 0

    async def start(self) -> None:
        self._producer = create_producer(self.settings)
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    # --- time --------------------------------------------------------------
    @property
    def now(self) -> datetime:
        return datetime.fromisoformat(self.clock_path.read_text())

    def advance(self, delta: timedelta) -> None:
        set_file_time(self.clock_path, self.now + delta)

    # --- publishing ------------------------------------------------------------
    def name(self, base: str) -> str:
        return f"{base}-{self.run}"

    async def send(self, payload: Message, source: str, times: int = 1) -> CloudEvent:
        assert self._producer is not None
        self._seq += 1
        event = wrap(payload, id=f"{self.run}-{self._seq}", source=source, time=self.now)
        for _ in range(times):
            await self._producer.send_and_wait(payload.TOPIC, encode(event), key=key_of(event))
        return event

    async def raw(self, topic: str, key: bytes, value: bytes) -> None:
        assert self._producer is not None
        await self._producer.send_and_wait(topic, value, key=key)

    async def catalog(self, sku: str, *suppliers: tuple[str, int, int], ack: int = 24,
                      dispatch: int = 48) -> None:
        """Offers and stock for ``sku``: (supplier, priority, available) each."""
        for supplier, priority, available in suppliers:
            await self.send(SupplierOfferUpdated(
                supplier_id=supplier, sku=sku, priority=priority,
                unit_cost=Money(amount=Decimal("3.00"), currency="EUR"), lead_time_days=1,
                acknowledge_sla_hours=ack, dispatch_sla_hours=dispatch, active=True,
                updated_at=self.now), f"supplier/{supplier}")
            await self.send(StockLevelReported(supplier_id=supplier, sku=sku,
                                               available=available, as_of=self.now),
                            f"supplier/{supplier}")

    def order(self, order_id: str, *lines: tuple[str, str, int, str],
              shipping: str | None = None) -> OrderPlaced:
        return OrderPlaced(
            order_id=order_id, shop_id=SHOP, customer_ref="Ada Lovelace <ada@example.com>",
            ship_to=Address(name="Ada", line1="1 Rd", city="Lyon", country="FR"),
            currency="EUR", placed_at=self.now,
            shipping=Money(amount=Decimal(shipping), currency="EUR") if shipping else None,
            lines=tuple(OrderLine(line_id=i, sku=s, quantity=q,
                                  unit_price=Money(amount=Decimal(p), currency="EUR"))
                        for i, s, q, p in lines))

    async def shop(self, payload: Message, times: int = 1) -> CloudEvent:
        return await self.send(payload, f"shop/{SHOP}", times)

    async def supplier(self, supplier: str, payload: Message, times: int = 1) -> CloudEvent:
        return await self.send(payload, f"supplier/{supplier}", times)

    def payment(self, order_id: str, amount: str, ref: str = "pay-1",
                currency: str = "EUR") -> PaymentConfirmed:
        return PaymentConfirmed(order_id=order_id, payment_ref=ref, paid_at=self.now,
                                amount=Money(amount=Decimal(amount), currency=currency))

    def accept(self, order_id: str, so: str, supplier: str) -> SupplierOrderAccepted:
        return SupplierOrderAccepted(order_id=order_id, supplier_order_id=so,
                                     supplier_id=supplier, accepted_at=self.now)

    def reject(self, order_id: str, so: str, supplier: str) -> SupplierOrderRejected:
        return SupplierOrderRejected(order_id=order_id, supplier_order_id=so,
                                     supplier_id=supplier, reason="out_of_stock",
                                     rejected_at=self.now)

    def ship(self, order_id: str, so: str, supplier: str, shipment: str,
             lines: dict[str, int], tracking: str) -> ShipmentDispatched:
        return ShipmentDispatched(
            order_id=order_id, supplier_order_id=so, supplier_id=supplier,
            shipment_id=shipment, carrier="Colissimo", tracking_number=tracking,
            lines=tuple(LineQuantity(line_id=k, quantity=v) for k, v in lines.items()),
            dispatched_at=self.now)

    def delivered(self, order_id: str, supplier: str, shipment: str) -> ShipmentDelivered:
        return ShipmentDelivered(order_id=order_id, supplier_id=supplier, shipment_id=shipment,
                                 delivered_at=self.now)

    def confirm(self, order_id: str) -> DeliveryConfirmed:
        return DeliveryConfirmed(order_id=order_id, confirmed_at=self.now)

    def cancel(self, order_id: str, lines: dict[str, int] | None = None) -> OrderCancelled:
        """The whole order, or those units of those lines."""
        return OrderCancelled(order_id=order_id, reason="changed mind", cancelled_at=self.now,
                              lines=tuple(LineQuantity(line_id=k, quantity=v)
                                          for k, v in (lines or {}).items()))

    def return_request(self, order_id: str, rma: str, lines: dict[str, int],
                       code: ReturnReason = "changed_mind") -> ReturnRequested:
        return ReturnRequested(order_id=order_id, rma_id=rma, reason="too small",
                               reason_code=code, requested_at=self.now,
                               lines=tuple(LineQuantity(line_id=k, quantity=v)
                                           for k, v in lines.items()))

    def return_received(self, order_id: str, rma: str, supplier: str,
                        lines: dict[str, int]) -> ReturnReceived:
        return ReturnReceived(order_id=order_id, rma_id=rma, supplier_id=supplier,
                              condition="resellable", received_at=self.now,
                              lines=tuple(LineQuantity(line_id=k, quantity=v)
                                          for k, v in lines.items()))

    # --- observing -----------------------------------------------------------------
    async def until(self, what: str, check: Callable[[], Any], timeout_s: float = 30.0) -> Any:
        """Poll ``check`` (sync or async) until it returns something truthy."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = check()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.1)

    async def order_state(self, order_id: str) -> Order | None:
        async with self.engine.connect() as conn:
            doc = await conn.scalar(select(order_state.c.state)
                                    .where(order_state.c.order_id == order_id))
        return load_order(doc) if doc is not None else None

    async def sku_state(self, sku: str) -> SkuState:
        async with self.engine.connect() as conn:
            states = await read_states(conn, [sku])
        assert sku in states
        return states[sku]

    def dead_letters(self, key: str) -> list[DeadLetter]:
        return [e.data for e in self.tap.events
                if isinstance(e.data, DeadLetter) and e.data.original_key == key]
