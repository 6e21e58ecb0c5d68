"""Run the market against the real topics: every shop and supplier is its own Kafka client.

Who calls it: ``dropship simulate``, ``dropship demo`` and ``bench/e2e.py``.
:class:`Simulation` guarantees:
1. :meth:`~Simulation.start` starts one producer per shop and per supplier, and
   (when actors react) one consumer per actor reading only its own records: a
   supplier its supplier orders (key: its id), a shop its orders' status;
2. suppliers then publish offers and stock, and restock every few simulated hours;
3. :meth:`~Simulation.place_orders` places orders at the rate asked (0: as fast as
   the producers take them), up to a count or a duration;
4. everything planned is sent when the simulated clock reaches it, stamped with
   the planned time, so the same seed gives the same events;
5. :meth:`~Simulation.stop` flushes and stops every client it started. Every record
   sent is acknowledged (``acks=all``) and tallied by type and fault; the positions
   of malformed ones are kept (``Tally.malformed``), and with ``record`` every
   record goes to a JSON-lines file (what issue tests check the pipeline against).
A send the broker refuses raises out of :meth:`~Simulation.stop`.
"""

from __future__ import annotations

import asyncio
import base64
import heapq
import itertools
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import RecordMetadata

from events.codec import DecodeError, decode
from events.fulfillment import (
    OrderStatusChanged,
    ReturnAuthorized,
    SupplierOrderCancelled,
    SupplierOrderRequested,
)
from events.topics import ORDER_STATUS, SUPPLIER_ORDERS
from pipeline.runtime.clock import set_file_time
from pipeline.runtime.kafka import client_options, create_producer
from pipeline.runtime.settings import Settings
from simulator.ledger import Books
from simulator.messages import Later, Send
from simulator.shops import Shop
from simulator.suppliers import REPORT_EVERY, Supplier
from simulator.world import World


class SimClock:
    """Simulated time: ``speed`` simulated seconds per real second from ``start``.

    With a ``file`` it also drives the workers' deadlines (``DROPSHIP_CLOCK_FILE``).
    """

    def __init__(self, speed: float = 1.0, start: datetime | None = None,
                 file: Path | None = None) -> None:
        self.speed, self.file = speed, file
        self.start = start or datetime.now(UTC)
        self._t0 = time.monotonic()
        if file is not None:
            set_file_time(file, self.start)

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self._t0) * self.speed)

    def real_seconds_until(self, moment: datetime) -> float:
        return max(0.0, (moment - self.now()).total_seconds() / self.speed)

    def tick(self) -> None:
        if self.file is not None:
            set_file_time(self.file, self.now())


@dataclass
class Tally:
    """What the simulation sent, and what it knows went wrong on purpose."""

    sent: Counter[str] = field(default_factory=Counter)      # by event type
    faults: Counter[str] = field(default_factory=Counter)    # duplicate, reorder, malformed kinds
    malformed: list[tuple[str, int, int, str]] = field(default_factory=list)  # topic, p, offset
    orders: int = 0
    received: int = 0  # records the actors consumed as theirs
    unsent: int = 0    # planned for later than the end of the run

    @property
    def malformed_count(self) -> int:
        return len(self.malformed)


@dataclass(frozen=True)
class Limits:
    orders: int | None = 500
    duration_s: float | None = 60.0
    rate: float = 20.0  # orders per real second; 0 = as fast as the producers take them


class _Actor:
    """One client's producer (and, when reacting, consumer)."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self.consumer: AIOKafkaConsumer | None = None


class Simulation:
    """Steps 1-5 of the module docstring. Build it inside the loop that runs it."""

    def __init__(self, settings: Settings, world: World, clock: SimClock, *,
                 react: bool = True, record: Path | None = None,
                 report_latency: timedelta = timedelta(0)) -> None:
        self.settings, self.world, self.clock, self.react = settings, world, clock, react
        self.shops = [Shop(world, p) for p in world.shops]
        #: the suppliers' books (simulator/ledger.py): what each was asked, with what free;
        #: ``report_latency``: how long a published stock report may take to be applied
        self.books = Books(latency=report_latency)
        self.suppliers = [Supplier(world, p, self.books) for p in world.suppliers]
        self.tally = Tally()
        self.started_at = self.clock.now()
        self._actors: dict[str, _Actor] = {}
        self._agenda: list[tuple[datetime, int, str, Later]] = []
        self._seq = itertools.count()
        self._pending: set[asyncio.Future[RecordMetadata]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._errors: list[BaseException] = []
        self._record: IO[str] | None = record.open("a") if record else None
        self._closing = False
        #: order id -> time.monotonic() when its placement was handed to the producer
        #: (kept only when set to a dict: the benchmark's latency clock)
        self.placed_at: dict[str, float] | None = None

    # --- life cycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Steps 1-2."""
        names = [s.source for s in self.shops] + [s.source for s in self.suppliers]
        for name in names:
            producer = create_producer(self.settings, linger_ms=5)
            await producer.start()
            self._actors[name] = _Actor(producer)
        if self.react:
            for shop in self.shops:
                self._follow(shop.source, ORDER_STATUS, self._shop_record(shop))
            for supplier in self.suppliers:
                self._follow(supplier.source, SUPPLIER_ORDERS, self._supplier_record(supplier))
        now = self.clock.now()
        for i, supplier in enumerate(self.suppliers):
            for send in supplier.opening(now):
                await self._send(supplier.source, send)
            first = now + REPORT_EVERY * (i + 1) / len(self.suppliers)
            self._plan(supplier.source, [Later(first, supplier.restock)])
        self._tasks.append(asyncio.create_task(self._run_agenda()))

    async def stop(self) -> Tally:
        """Step 5: stop consuming and planning, flush, stop every client."""
        self._closing = True
        self.tally.unsent = len(self._agenda)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.flush()
        for actor in self._actors.values():
            if actor.consumer is not None:
                await actor.consumer.stop()
            await actor.producer.stop()
        if self._record is not None:
            self._record.close()
        if self._errors:
            raise self._errors[0]
        return self.tally

    async def flush(self) -> None:
        """Wait until every record sent so far is acknowledged."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    # --- placing orders -------------------------------------------------------------

    async def place_orders(self, limits: Limits) -> int:
        """Step 3; returns the number of orders placed."""
        t0, n = time.monotonic(), 0
        while not self._closing:
            elapsed = time.monotonic() - t0
            if (limits.orders is not None and n >= limits.orders) or (
                    limits.duration_s is not None and elapsed >= limits.duration_s):
                break
            if limits.rate > 0 and n >= elapsed * limits.rate:
                await asyncio.sleep(min(0.05, (n - elapsed * limits.rate) / limits.rate))
                continue
            shop = self.shops[n % len(self.shops)]
            now = self.clock.now()
            self.books.placed[shop.order_id(self.tally.orders)] = now
            plan = shop.place(self.tally.orders, now)
            if self.placed_at is not None:
                self.placed_at[shop.order_id(self.tally.orders)] = time.monotonic()
            self.tally.orders += 1
            n += 1
            await self._do(shop.source, plan)
            if limits.rate <= 0 and n % 200 == 0:
                await asyncio.sleep(0)
        return n

    # --- the agenda ---------------------------------------------------------------

    def _plan(self, actor: str, plan: list[Later]) -> None:
        for later in plan:
            heapq.heappush(self._agenda, (later.at, next(self._seq), actor, later))

    async def _do(self, actor: str, plan: list[Later]) -> None:
        """Run what is due now at once; put the rest on the agenda."""
        now = self.clock.now()
        for later in plan:
            if later.at <= now:
                sends, more = later.act(later.at)
                for send in sends:
                    await self._send(actor, send)
                self._plan(actor, more)
            else:
                self._plan(actor, [later])

    async def _run_agenda(self) -> None:
        while True:
            self.clock.tick()
            now = self.clock.now()
            while self._agenda and self._agenda[0][0] <= now:
                _, _, actor, later = heapq.heappop(self._agenda)
                await self._do(actor, [later])
            wait = self.clock.real_seconds_until(self._agenda[0][0]) if self._agenda else 0.05
            await asyncio.sleep(min(0.05, wait))

    # --- Kafka --------------------------------------------------------------------

    async def _send(self, actor: str, send: Send) -> None:
        future = await self._actors[actor].producer.send(send.topic, send.value, key=send.key)
        self.tally.sent[send.type] += 1
        if send.fault is not None:
            self.tally.faults[send.fault] += 1
        self._pending.add(future)
        future.add_done_callback(lambda f: self._acked(f, send))

    def _acked(self, future: asyncio.Future[RecordMetadata], send: Send) -> None:
        self._pending.discard(future)
        if future.cancelled() or future.exception() is not None:
            self._errors.append(future.exception() or asyncio.CancelledError())
            return
        md = future.result()
        if send.fault is not None and send.fault not in ("duplicate", "reorder"):
            self.tally.malformed.append((md.topic, md.partition, md.offset, send.fault))
        if self._record is not None:
            self._record.write(json.dumps({
                "topic": md.topic, "partition": md.partition, "offset": md.offset,
                "key": send.key.decode(errors="replace"),
                "value": base64.b64encode(send.value).decode(), "type": send.type,
                "fault": send.fault}) + "\n")

    def _follow(self, actor: str, topic: str, handle: Any) -> None:
        consumer = AIOKafkaConsumer(**client_options(self.settings), group_id=None,
                                    enable_auto_commit=False)
        self._actors[actor].consumer = consumer
        self._tasks.append(asyncio.create_task(self._consume(actor, consumer, topic, handle)))

    async def _consume(self, actor: str, consumer: AIOKafkaConsumer, topic: str,
                       handle: Any) -> None:
        await consumer.start()
        parts = [TopicPartition(topic, p) for p in range(self.settings.kafka_topic_partitions)]
        consumer.assign(parts)
        for tp in parts:
            consumer.seek(tp, 0)
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=500)
            for records in batches.values():
                for record in records:
                    plan = handle(record.key or b"", record.value or b"")
                    if plan is not None:
                        self.tally.received += 1
                        await self._do(actor, plan)

    def _shop_record(self, shop: Shop) -> Any:
        def handle(key: bytes, value: bytes) -> list[Later] | None:
            if not shop.owns(key):
                return None
            event = _decoded(value)
            if event is None or not isinstance(event.data, OrderStatusChanged):
                return None
            return shop.on_status(event.data)
        return handle

    def _supplier_record(self, supplier: Supplier) -> Any:
        own = supplier.id.encode()

        def handle(key: bytes, value: bytes) -> list[Later] | None:
            if key != own:
                return None
            event = _decoded(value)
            if event is None:
                return None
            data = event.data
            if isinstance(data, SupplierOrderRequested):
                return supplier.on_request(data, self.clock.now())
            if isinstance(data, SupplierOrderCancelled):
                supplier.on_cancelled(data)
            elif isinstance(data, ReturnAuthorized):
                return supplier.on_return(data)
            return []
        return handle


def _decoded(value: bytes) -> Any:
    try:
        return decode(value)
    except DecodeError:
        return None

