"""Factories: the records of orders' lives as the projector reads them, made by the
real order core (no broker needed), each at its own topic, partition and offset.

A :class:`Story` feeds shop, supplier and allocation events to the pure order
rules and keeps, in order, every record a real pipeline would write on the
topics the projector consumes: the inputs, the status snapshots, supplier
orders, returns, refunds; plus stock changes and dead letters.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from agents.core.orders import Order, Refused
from events.allocation import SupplierStockChanged
from events.base import Message
from events.codec import DecodeError, encode, key_of
from events.envelope import CloudEvent, wrap
from events.topics import ORDER_STATUS, SHOP_ORDERS
from pipeline.runtime.gaps import KafkaRangeReader
from pipeline.runtime.lag import broker_ends
from pipeline.runtime.processor import Processor
from pipeline.runtime.records import Record, dead_letter, derive
from pipeline.runtime.settings import Settings
from projections.projector import TOPICS, ProjectorHandler
from projections.tables import read_tables
from tests.unit import order_factories as f

PARTITIONS = 3


@dataclass
class Log:
    """Assigns each event a partition (by key) and the next offset there."""

    records: list[Record] = field(default_factory=list)
    offsets: dict[tuple[str, int], int] = field(default_factory=lambda: defaultdict(int))
    seq: int = 0
    prefix: str = "story"

    def put_event(self, event: CloudEvent, time: datetime) -> Record:
        return self.put_raw(event.data.TOPIC, key_of(event), encode(event), time)

    def put(self, payload: Message, source: str, time: datetime) -> Record:
        return self.put_event(self.wrapped(payload, source, time), time)

    def wrapped(self, payload: Message, source: str, time: datetime) -> CloudEvent:
        self.seq += 1
        return wrap(payload, id=f"{self.prefix}-{self.seq}", source=source, time=time)

    def put_raw(self, topic: str, key: bytes, value: bytes, time: datetime) -> Record:
        partition = zlib.crc32(key) % PARTITIONS
        offset = self.offsets[(topic, partition)]
        self.offsets[(topic, partition)] += 1
        rec = Record(topic, partition, offset, key, value, int(time.timestamp() * 1000))
        self.records.append(rec)
        return rec


def _as(msg: Message, **fields: Any) -> Any:
    return msg.model_copy(update=fields)


@dataclass
class Story:
    """One order, driven through the order core; every output goes to the log."""

    log: Log
    order_id: str
    sku: str
    flow: f.Flow = field(init=False)

    def __post_init__(self) -> None:
        self.flow = f.Flow(order=Order(self.order_id))

    def feed(self, msg: Message, source: str, minute: float = 0) -> Story:
        """Apply ``msg`` sent at ``minute``; log it, then what the order agent derives
        from it, as the agent would (at the order's clock, with its step)."""
        msg = _as(msg, order_id=self.order_id)
        time = f.at(minute)
        cause = self.log.wrapped(msg, source, time)
        self.log.put_event(cause, time)
        self.flow.do(msg, minute=minute)
        order = self.flow.order
        outputs = [o for o in self.flow.last if not isinstance(o, Refused)]
        derived = derive(cause, outputs, "orders", time=order.clock, step=order.step)
        for event in derived:
            if event.data.TOPIC in TOPICS:
                self.log.put_event(event, event.time)
        return self

    def so_of(self, supplier: str) -> str:
        return self.flow.so_of(supplier)


def failover_story(log: Log, order_id: str, sku: str) -> Story:
    """Placed, allocated at sa, paid; sa rejects; sb gets it, ships, delivers; one unit
    returned and refunded. Stock changes for both suppliers along the way."""
    s = Story(log, order_id, sku)
    line = ("1", sku, 2, "10.00")
    s.feed(f.placed(line), "shop/acme", 0)
    s.feed(_as(f.allocated("sa", 2, sku=sku)), "dropship/allocation", 0)
    stock(log, "sa", sku, 1, available=5, reserved=2)
    s.feed(f.paid("20.00"), "shop/acme", 1)
    s.feed(f.rejected(s.so_of("sa"), "sa"), "supplier/sa", 2)
    s.feed(f.released("sa", 2, sku=sku), "dropship/allocation", 2)
    s.feed(f.allocated("sb", 2, sku=sku), "dropship/allocation", 2)
    stock(log, "sa", sku, 2, available=5, reserved=0)
    stock(log, "sb", sku, 2, available=9, reserved=2)
    so = s.so_of("sb")
    s.feed(f.accepted(so, "sb"), "supplier/sb", 3)
    s.feed(f.dispatched(so, "sb", shipment="shp1", tracking="TRK1"), "supplier/sb", 60)
    s.feed(f.delivered("shp1", "sb"), "supplier/sb", 600)
    s.feed(f.return_requested("rma1"), "shop/acme", 60 * 24)
    s.feed(f.return_received("rma1", "sb"), "supplier/sb", 60 * 48)
    return s


def backorder_story(log: Log, order_id: str, sku: str) -> Story:
    """Placed and paid; nothing in stock: the line waits as a backorder."""
    s = Story(log, order_id, sku)
    s.feed(f.placed(("1", sku, 3, "4.00")), "shop/acme", 0)
    s.feed(_as(f.backordered(3, sku=sku)), "dropship/allocation", 0)
    s.feed(f.paid("12.00"), "shop/acme", 1)
    return s


def stock(log: Log, supplier: str, sku: str, version: int, available: int,
          reserved: int) -> Record:
    return log.put(SupplierStockChanged(
        supplier_id=supplier, sku=sku, version=version, reported_available=available,
        reserved=reserved, remaining=available - reserved, report_as_of=f.T0,
        changed_at=f.T0), "dropship/allocation", f.T0)


def bad_input(log: Log, order_id: str) -> tuple[Record, Record]:
    """A malformed shop record and the dead letter the order agent writes for it."""
    bad = log.put_raw(SHOP_ORDERS, order_id.encode(), b'{"not": "an event"', f.T0)
    letter = dead_letter(bad, DecodeError("data", "json_invalid", "not JSON"), "orders")
    log.put_event(letter, f.T0)
    return bad, log.records[-1]


def bad_status(log: Log, order_id: str) -> Record:
    """A malformed record on a topic only the projector reads (it dead-letters it)."""
    return log.put_raw(ORDER_STATUS, order_id.encode(), b"\x00garbage", f.T0)


def world(prefix: str, orders: int = 3) -> Log:
    """Several orders' stories interleaved in one log (a small, realistic stream)."""
    log = Log(prefix=prefix)
    for i in range(orders):
        failover_story(log, f"{prefix}-o{i}", f"{prefix}-SKU{i % 2}")
        backorder_story(log, f"{prefix}-b{i}", f"{prefix}-RARE")
        bad_input(log, f"{prefix}-o{i}")
    bad_status(log, f"{prefix}-o0")
    return log


async def snapshot(engine: AsyncEngine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every read model, in primary-key order (for row-by-row comparison)."""
    out = {}
    async with engine.connect() as conn:
        for name, table in read_tables().by_name().items():
            pk = list(table.primary_key.columns)
            out[name] = [tuple(r) for r in await conn.execute(select(table).order_by(*pk))]
    return out


async def project_all(engine: AsyncEngine, records: list[Record],
                      consumer: str = "projector", batch: int = 200) -> Processor:
    """Apply records through the projector on the one machinery, in batches."""
    processor = Processor(engine, ProjectorHandler(consumer), NoKafka())
    for i in range(0, len(records), batch):
        await processor.process(records[i:i + batch])
    return processor


class NoKafka:
    """A range reader for tests that must not need one."""

    async def read(self, topic: str, partition: int, start: int, end: int) -> list[Record]:
        raise AssertionError(f"unexpected gap repair of {topic}[{partition}] {start}..{end}")


async def read_back(settings: Settings, topics: Sequence[str]) -> list[Record]:
    """Every record of ``topics``, as the broker has it now."""
    reader = KafkaRangeReader(settings)
    out: list[Record] = []
    for (topic, partition), last in sorted((await broker_ends(settings, topics)).items()):
        out += await reader.read(topic, partition, 0, last + 1)
    return out
