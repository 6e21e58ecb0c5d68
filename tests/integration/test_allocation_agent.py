"""The allocation agent's batch path (Processor + AllocationHandler) on the embedded
broker and the real Postgres: decisions, dedup, gap repair, zombies, outbox."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from agents.allocation import AllocationHandler, read_states, rules_of
from agents.core.allocation import SkuState
from events.allocation import LineAllocated, LineBackordered
from events.codec import decode, encode, key_of
from events.deadletter import DeadLetter
from events.envelope import CloudEvent, wrap
from events.topics import ALLOCATION, DECISIONS, SUPPLIER_CATALOG
from pipeline.runtime.checkpoints import CheckpointConflict, advance_checkpoint, load_checkpoint
from pipeline.runtime.gaps import KafkaRangeReader
from pipeline.runtime.kafka import create_producer, ensure_topics
from pipeline.runtime.outbox import OutboxRelay
from pipeline.runtime.processor import Processor
from pipeline.runtime.records import Record
from pipeline.runtime.schema import outbox
from pipeline.runtime.settings import Settings
from tests.unit import allocation_factories as f

pytestmark = pytest.mark.integration


class Harness:
    """Publishes real records and runs them through a processor of its own consumer name."""

    def __init__(self, settings: Settings, engine: AsyncEngine) -> None:
        self.settings, self.engine = settings, engine
        self.consumer = f"alloc-test-{uuid.uuid4().hex[:8]}"
        self.sku = f"SKU-{uuid.uuid4().hex[:8]}"
        self.relay = OutboxRelay(engine, self.consumer, settings)
        self.processor = Processor(engine, AllocationHandler(self.consumer, rules_of(settings)),
                                   KafkaRangeReader(settings), self.relay)
        self.seq = 0
        self.started: set[tuple[str, int]] = set()

    def event(self, payload: Any) -> CloudEvent:
        """Wrap a factory payload for this harness's sku, as its publisher would."""
        payload = payload.model_copy(update={"sku": self.sku})
        self.seq += 1
        if payload.SOURCE_KIND == "supplier":
            return wrap(payload, id=f"{self.consumer}-cat-{self.seq}",
                        source=f"supplier/{payload.supplier_id}", time=f.T0)
        return wrap(payload, id=f"{self.consumer}-cmd-{self.seq}", source="dropship/orders",
                    time=f.T0)

    async def publish(self, events: Sequence[CloudEvent]) -> list[Record]:
        producer = create_producer(self.settings)
        await producer.start()
        try:
            records = []
            for e in events:
                value = encode(e)
                md = await producer.send_and_wait(e.data.TOPIC, value, key=key_of(e))
                records.append(Record(md.topic, md.partition, md.offset, key_of(e), value,
                                      md.timestamp))
        finally:
            await producer.stop()
        await self._start_before(records)
        return records

    async def _start_before(self, records: Sequence[Record]) -> None:
        """A new consumer starts at the test's first record, not at offset 0."""
        async with self.engine.begin() as conn:
            for rec in records:
                tp = (rec.topic, rec.partition)
                if tp not in self.started:
                    self.started.add(tp)
                    if rec.offset > 0:
                        await advance_checkpoint(conn, self.consumer, rec.topic, rec.partition,
                                                 -1, rec.offset - 1)

    async def run(self, *payloads: Any) -> list[Any]:
        """Publish and process; return the decisions this batch caused (payloads)."""
        before = await self.outbox_ids()
        await self.processor.process(await self.publish([self.event(p) for p in payloads]))
        return [decode(v).data for i, v in await self.outbox_rows() if i not in before]

    async def outbox_rows(self) -> list[tuple[str, bytes]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(outbox.c.event_id, outbox.c.value)
                                      .where(outbox.c.producer == self.consumer)
                                      .order_by(outbox.c.id))
            return [(str(i), v) for i, v in rows]

    async def outbox_ids(self) -> set[str]:
        return {i for i, _ in await self.outbox_rows()}

    async def state(self) -> SkuState:
        async with self.engine.connect() as conn:
            states = await read_states(conn, [self.sku])
        assert self.sku in states, f"no state for {self.sku}"
        return states[self.sku]


@pytest_asyncio.fixture
async def agent(migrated: Settings, engine: AsyncEngine) -> AsyncIterator[Harness]:
    await ensure_topics(migrated)
    harness = Harness(migrated, engine)
    try:
        yield harness
    finally:
        await harness.relay.close()


def allocated(decisions: Sequence[Any]) -> list[tuple[str, int]]:
    return [(d.supplier_id, d.quantity) for d in decisions if isinstance(d, LineAllocated)]


async def test_primary_out_of_stock_backup_is_chosen(agent: Harness) -> None:
    await agent.run(f.offer("primary", priority=1), f.offer("backup", priority=2),
                    f.stock("primary", 0), f.stock("backup", 10))
    assert allocated(await agent.run(f.alloc("o1", 3))) == [("backup", 3)]


async def test_partial_stock_splits_across_two_suppliers(agent: Harness) -> None:
    await agent.run(f.offer("a", priority=1), f.offer("b", priority=2), f.stock("a", 2),
                    f.stock("b", 10))
    assert allocated(await agent.run(f.alloc("o1", 5))) == [("a", 2), ("b", 3)]
    state = await agent.state()
    assert (state.stock["a"].remaining, state.stock["b"].remaining) == (0, 7)


async def test_backordered_then_a_stock_report_allocates(agent: Harness) -> None:
    await agent.run(f.offer("a"), f.stock("a", 0))
    decisions = await agent.run(f.alloc("o1", 4))
    assert [(d.quantity, d.reason) for d in decisions if isinstance(d, LineBackordered)] == [
        (4, "no_stock")]
    assert allocated(await agent.run(f.stock("a", 6, minute=1))) == [("a", 4)]


async def test_an_excluded_supplier_fails_over_to_the_next(agent: Harness) -> None:
    await agent.run(f.offer("a", priority=1), f.offer("b", priority=2), f.stock("a", 9),
                    f.stock("b", 9), f.alloc("o1", 2))
    decisions = await agent.run(f.rel("o1", supplier="a"), f.alloc("o1", 2, excluded=("a",)))
    assert allocated(decisions) == [("b", 2)]
    assert (await agent.state()).stock["a"].used == 0


async def test_a_report_between_reservation_and_payment_does_not_double_book(
        agent: Harness) -> None:
    await agent.run(f.offer("a"), f.stock("a", 10), f.alloc("o1", 4))
    await agent.run(f.stock("a", 10, minute=2))  # a has not received o1's order yet
    assert (await agent.state()).stock["a"].remaining == 6
    await agent.run(f.commit("o1", "a", 4, minute=3), f.stock("a", 6, minute=4))
    state = await agent.state()
    assert (state.stock["a"].used, state.stock["a"].remaining) == (0, 6)
    assert state.lines[("o1", "1")].reservations[0].committed_at == f.at(3)
    decisions = await agent.run(f.alloc("o2", 1), f.rel("o2", supplier="a", out_of_stock=9),
                                f.alloc("o3", 1))
    assert allocated(decisions) == [("a", 1)]  # o2's; o3 waits for a report after 09:09
    assert (await agent.state()).stock["a"].available == 0


async def test_an_unreachable_supplier_is_skipped_by_landed_cost(agent: Harness) -> None:
    await agent.run(
        f.offer("a", cost="1.00", destinations=(f.dest("DE", "0.10", 2),)),
        f.offer("b", cost="9.00", currency="EUR", destinations=(f.dest("FR", "1.00", 4),)),
        f.offer("c", cost="9.50", currency="USD"), f.stock("a", 9), f.stock("b", 9),
        f.stock("c", 9))
    decisions = await agent.run(f.alloc("o1", 2, country="FR"))
    [only] = [d for d in decisions if isinstance(d, LineAllocated)]
    assert only.supplier_id == "c"  # 9.50 USD < (9.00 + 1.00) EUR = 10.80; a: not to FR
    assert only.shipping_cost is not None
    assert (only.shipping_cost.amount, only.transit_days) == (Decimal(0), None)


async def test_the_same_allocate_line_three_times_allocates_once(agent: Harness) -> None:
    await agent.run(f.offer("a"), f.stock("a", 10))
    command = agent.event(f.alloc("o1", 3))
    records = await agent.publish([command, command])  # published twice: two offsets
    await agent.processor.process(records)
    await agent.processor.process(records[:1])  # and redelivered by Kafka
    rows = await agent.outbox_rows()
    decisions = [decode(v).data for _, v in rows]
    assert allocated(decisions) == [("a", 3)]
    assert (await agent.state()).stock["a"].used == 3
    assert agent.processor.stats.duplicates == 1


async def test_skipped_offsets_are_read_back_and_applied(agent: Harness) -> None:
    await agent.run(f.offer("a"), f.stock("a", 100))
    records = await agent.publish([agent.event(f.alloc(f"o{i}", 1)) for i in range(9)])
    assert len({(r.topic, r.partition) for r in records}) == 1
    await agent.processor.process(records[:3])
    await agent.processor.process(records[6:])  # the consumer "lost" records 3..5
    assert agent.processor.stats.gaps_repaired == 3
    state = await agent.state()
    assert sorted(o for o, _ in state.lines) == [f"o{i}" for i in range(9)]
    async with agent.engine.connect() as conn:
        assert await load_checkpoint(conn, agent.consumer, ALLOCATION,
                                     records[-1].partition) == records[-1].offset


async def test_a_zombie_batch_writes_nothing(agent: Harness) -> None:
    await agent.run(f.offer("a"), f.stock("a", 10))
    records = await agent.publish([agent.event(f.alloc("o1", 2))])
    real = agent.processor.checkpoints

    async def stale(tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        found = await real(tps)
        return {tp: offset - 1 for tp, offset in found.items()}  # read before the owner moved

    async with agent.engine.begin() as conn:  # the new owner already applied the record
        tp = (records[0].topic, records[0].partition)
        done = await load_checkpoint(conn, agent.consumer, *tp)
        await advance_checkpoint(conn, agent.consumer, *tp, done, records[0].offset)
    agent.processor.checkpoints = stale  # type: ignore[method-assign]
    with pytest.raises(CheckpointConflict):
        await agent.processor.process(records)
    assert (await agent.state()).stock["a"].used == 0  # the zombie's allocation rolled back


async def test_decisions_are_published_with_ids_derived_from_their_cause(
    agent: Harness, settings: Settings,
) -> None:
    await agent.run(f.offer("a"), f.stock("a", 5))
    await agent.run(f.alloc("o1", 2))
    async with agent.engine.connect() as conn:
        unsent = await conn.scalar(select(func.count()).where(
            outbox.c.producer == agent.consumer, outbox.c.published_at.is_(None)))
    assert unsent == 0
    rows = dict(await agent.outbox_rows())
    wanted = {v for v in rows.values() if b"dropship.line.allocated.v1" in v}
    assert len(wanted) == 1
    reader = KafkaRangeReader(settings, poll_timeout_ms=300)
    published = {r.value for p in range(settings.kafka_topic_partitions)
                 for r in await reader.read(DECISIONS, p, 0, 10**9)}
    assert wanted <= published


async def test_invalid_input_is_dead_lettered_and_the_batch_goes_on(agent: Harness) -> None:
    await agent.run(f.offer("a"), f.stock("a", 5))
    good = agent.event(f.alloc("o1", 1))
    producer = create_producer(agent.settings)
    await producer.start()
    try:
        md = await producer.send_and_wait(SUPPLIER_CATALOG, b'{"oops": true}', key=b"k")
    finally:
        await producer.stop()
    bad = Record(md.topic, md.partition, md.offset, b"k", b'{"oops": true}', md.timestamp)
    await agent._start_before([bad])
    await agent.processor.process([bad, *await agent.publish([good])])
    values = [v for _, v in await agent.outbox_rows()]
    letters = [d for v in values if isinstance(d := decode(v).data, DeadLetter)]
    assert len(letters) == 1
    assert letters[0].source_offset == md.offset
    assert letters[0].rule == "missing"
    assert allocated([decode(v).data for v in values]) == [("a", 1)]


class FakeConsumer:
    """Faust consumer stand-in: an assignment and fetch high-water marks."""

    def __init__(self, highwaters: dict[tuple[str, int], int]) -> None:
        self.highwaters = highwaters

    def assignment(self) -> set[Any]:
        from faust.types import TP

        return {TP(t, p) for t, p in self.highwaters}

    def highwater(self, tp: Any) -> int:
        return self.highwaters[(tp.topic, tp.partition)]


async def test_a_failed_last_batch_is_recovered_by_the_tail_check(
    agent: Harness, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipeline.runtime.stream import TailCheck, process_safely

    await agent.run(f.offer("a"), f.stock("a", 10))
    records = await agent.publish([agent.event(f.alloc("o1", 2))])

    async def broken(*args: Any) -> Any:
        raise RuntimeError("bug in this batch")

    monkeypatch.setattr(agent.processor.handler, "handle", broken)
    await process_safely(agent.processor, records)  # logged, not raised: Faust moves on
    monkeypatch.undo()
    assert ("o1", "1") not in (await agent.state()).lines

    tp = (records[0].topic, records[0].partition)
    tail = TailCheck(agent.processor, [ALLOCATION])
    consumer = FakeConsumer({tp: records[0].offset + 1})
    assert await tail.run(consumer) == 0  # first sighting: maybe still in flight
    await agent.run(f.stock("a", 11))  # the agent applies other batches: a backlog, no repair
    assert await tail.run(consumer) == 0
    assert ("o1", "1") not in (await agent.state()).lines
    assert await tail.run(consumer) == 1  # idle, no progress since: read back and applied
    assert (await agent.state()).lines[("o1", "1")].allocated == 2
    assert await tail.run(consumer) == 0  # caught up


async def test_the_tail_check_repairs_a_bounded_batch_at_a_time(
    agent: Harness, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stuck partition is read back ``limit`` records at a time, never its whole
    backlog at once, batch after batch in one check while the stream stays stalled."""
    from pipeline.runtime.stream import TailCheck, process_safely

    await agent.run(f.offer("a"), f.stock("a", 10))
    records = await agent.publish([agent.event(f.alloc(f"b{i}", 1)) for i in range(5)])

    async def broken(*args: Any) -> Any:
        raise RuntimeError("bug in this batch")

    monkeypatch.setattr(agent.processor.handler, "handle", broken)
    await process_safely(agent.processor, records)
    monkeypatch.undo()
    reads: list[int] = []
    real_read = agent.processor.reader.read

    async def counted(topic: str, partition: int, start: int, end: int) -> list[Any]:
        reads.append(end - start)
        return await real_read(topic, partition, start, end)

    monkeypatch.setattr(agent.processor.reader, "read", counted)
    tp = (records[0].topic, records[0].partition)
    tail = TailCheck(agent.processor, [ALLOCATION], limit=2)
    consumer = FakeConsumer({tp: records[-1].offset + 1})
    assert await tail.run(consumer) == 0  # first sighting
    assert await tail.run(consumer) == 5  # stuck: all of it, in one check
    assert reads == [2, 2, 1]  # ... two records at a time
    assert {(f"b{i}", "1") for i in range(5)} <= set((await agent.state()).lines)
    assert await tail.run(consumer) == 0  # caught up


async def test_the_range_reader_reads_whole_ranges_or_refuses(agent: Harness) -> None:
    from pipeline.runtime.gaps import GapUnreadable

    records = await agent.publish([agent.event(f.alloc(f"o{i}", 1)) for i in range(6)])
    topic, partition = records[0].topic, records[0].partition
    first, last = records[0].offset, records[-1].offset
    reader = KafkaRangeReader(agent.settings, poll_timeout_ms=100)
    got = await reader.read(topic, partition, first + 1, last)
    assert [r.offset for r in got] == list(range(first + 1, last))
    assert [r.value for r in got] == [r.value for r in records[1:-1]]
    beyond = await reader.read(topic, partition, last, last + 1000)  # stops at the log end
    assert [r.offset for r in beyond] == [last]
    with pytest.raises(GapUnreadable):  # cannot finish in time: refuse, never a partial range
        await KafkaRangeReader(agent.settings, timeout_s=0).read(topic, partition, first,
                                                                 last + 1)
