"""The one transaction machinery of every agent: tracking records, dedup, outbox, gap repair.

An agent is a :class:`Handler` (what to do with a batch of decoded events,
inside a transaction) run by a :class:`Processor`. Per batch of Kafka records:

1. group by (topic, partition); read each checkpoint; drop records at or
   below it (redeliveries);
2. **repair gaps**: offsets between checkpoint + 1 and the batch that the
   consumer never handed us (faust-streaming can skip records on rebalance,
   DESIGN.md "Faust's limits") are read with a group-less consumer and applied
   first, so the checkpoint never passes a record that was not applied;
3. decode each record with the codec; a refused one becomes a ``DeadLetter``;
4. in **one Postgres transaction**: drop events already applied (by
   CloudEvents source + id), let the handler update its state rows and return
   derived events, write them and the dead letters to the outbox, and move
   every checkpoint forward by compare-and-set from the value read in step 1;
5. after commit, the :class:`OutboxRelay` publishes unsent outbox rows.

A zombie that lost its partitions fails step 4's compare-and-set
(:class:`CheckpointConflict`) and writes nothing. Transient database errors
are retried with backoff, so a Postgres outage pauses consumption and nothing
moves past what is stored.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar, runtime_checkable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from sqlalchemy import bindparam, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from events.base import Message
from events.codec import DecodeError, decode, encode, key_of
from events.deadletter import DeadLetter
from events.envelope import CloudEvent, sequence_of, wrap
from events.ids import derived_id
from events.types import EARLIEST_TIME, END_OF_TIME
from pipeline.checkpoints import CheckpointConflict, advance_checkpoint
from pipeline.kafka import client_options, create_producer
from pipeline.schema import checkpoints, outbox, processed_events
from pipeline.settings import Settings

log = logging.getLogger(__name__)
#: Kafka timestamps (ms) that give an event time the contracts accept; a
#: producer may set any int64, which is clamped into this range.
_TIME_RANGE_MS = (int(EARLIEST_TIME.timestamp() * 1000), int(END_OF_TIME.timestamp() * 1000) - 1)
#: What a dead letter's text may not hold (the Text rule), escaped as ``\xNN``.
_REFUSED_IN_TEXT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]")
T = TypeVar("T")
TP = tuple[str, int]


@dataclass(frozen=True)
class Record:
    """One Kafka record as the machinery sees it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int | None = None

    @property
    def time(self) -> datetime:
        """The record's Kafka timestamp (deterministic across re-reads), clamped to
        the times events may carry (1970 to 2999)."""
        low, high = _TIME_RANGE_MS
        return datetime.fromtimestamp(min(max(self.timestamp_ms or 0, low), high) / 1000, UTC)


@dataclass(frozen=True)
class Incoming:
    """A record that decoded to a valid event."""

    record: Record
    event: CloudEvent


class Handler(Protocol):
    """What an agent does with a batch, inside the batch transaction."""

    #: Names the checkpoints, the dedup namespace, the outbox producer and the
    #: source ``dropship/<consumer>`` of derived events.
    consumer: str

    async def handle(self, conn: AsyncConnection, batch: Sequence[Incoming]) -> list[CloudEvent]:
        """Apply new events (in order) to state rows; return the events they cause."""
        ...


@runtime_checkable
class RawHandler(Protocol):
    """A handler that takes every record as it is and decodes by itself (the
    projector). What it returns are dead letters, counted as such in its stats."""

    consumer: str

    async def handle_records(self, conn: AsyncConnection,
                             records: Sequence[Record]) -> list[CloudEvent]:
        ...


class RangeReader(Protocol):
    async def read(self, topic: str, partition: int, start: int, end: int) -> list[Record]:
        """Records with ``start <= offset < end`` that exist on the broker."""
        ...


class Cause(Protocol):
    """What a derived event's id and time come from: a consumed event, or a deadline."""

    @property
    def source(self) -> str: ...
    @property
    def id(self) -> str: ...
    @property
    def time(self) -> datetime: ...


def derive(cause: Cause, payloads: Sequence[Message], consumer: str, *,
           time: datetime | None = None, step: int | None = None,
           sequence: str | None = None) -> list[CloudEvent]:
    """Wrap payloads caused by ``cause``: ids from the cause, at ``time`` (default: the
    cause's time; an agent passes its state's clock, never earlier).

    The id depends on the consumer, the cause's (source, id) and the payload's
    position and type, so two agents deriving from one cause never collide, and
    reprocessing the same cause from the same state yields byte-identical events.
    Each event also carries the ``causationid`` of its cause and a ``sequence``: with
    ``step`` (the order agent's step that applied the cause), ``<step>.<n>``; with
    ``sequence`` (an agent answering a command that carries an order's sequence, as
    the allocation agent does), that same place, so an order's timeline shows the
    answer right after the step that asked. With neither, no extension.
    """
    cause_ref = f"{consumer}|{cause.source}/{cause.id}"
    causation = f"{cause.source}/{cause.id}"

    def place(i: int) -> dict[str, str]:
        if step is not None:
            return {"sequence": sequence_of(step, i + 1), "causationid": causation}
        if sequence is not None:
            return {"sequence": sequence, "causationid": causation}
        return {}

    return [
        wrap(p, id=derived_id(cause_ref, f"{i}:{p.TYPE}"), source=f"dropship/{consumer}",
             time=time or cause.time, **place(i))
        for i, p in enumerate(payloads)
    ]


def dead_letter(record: Record, error: DecodeError, consumer: str, index: int = 0,
                original: Message | None = None) -> CloudEvent:
    """The DLQ event for a refused record (id from its position: stable on re-reads).

    ``index`` tells apart several refusals caused by one record; ``original`` is
    an event that was held and is refused now that ``record`` released it: the
    dead letter then carries that event (its topic, its JSON), at ``record``'s position.
    """
    value = original.model_dump_json().encode() if original is not None else record.value
    letter = DeadLetter(
        original_key=DeadLetter.key_text(record.key),
        source_topic=original.TOPIC if original is not None else record.topic,
        source_partition=record.partition, source_offset=record.offset, consumer=consumer,
        error=_escaped(str(error))[:2000], rule=error.rule[:64],
        field=_escaped(error.field)[:200],
        dead_lettered_at=record.time, **DeadLetter.carry(value),  # type: ignore[arg-type]
    )
    ref = f"{record.topic}/{record.partition}/{record.offset}"
    return wrap(letter, id=derived_id(ref, f"dead_letter:{consumer}:{index}"),
                source=f"dropship/{consumer}", time=record.time)


def _escaped(text: str) -> str:
    """``text`` with the characters dead letters may not carry written as ``\\xNN``
    (a refused record's own bytes can end up in the error message)."""
    return _REFUSED_IN_TEXT.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def failed(record: Record, exc: Exception, consumer: str) -> CloudEvent:
    """The DLQ event for a record whose handling raised: the pipeline goes on."""
    log.exception("%s: %s[%d]@%d could not be applied; dead-lettered", consumer,
                  record.topic, record.partition, record.offset)
    return dead_letter(record, DecodeError("data", "handler_error",
                                           f"{type(exc).__name__}: {exc}"[:1500]), consumer)


@dataclass
class Stats:
    """Counters of one processor (exported as metrics by the projections issue)."""

    batches: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    offset_jumps: int = 0   # batches whose first record lay beyond checkpoint + 1
    gaps_repaired: int = 0  # records of those jumps read back from Kafka and applied
    conflicts: int = 0
    retries: int = 0


TRANSIENT = (OperationalError, InterfaceError, ConnectionError, OSError)


def is_transient(exc: BaseException) -> bool:
    """A database error worth retrying (connection lost, server restarting)."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, TRANSIENT)


async def retrying(what: str, attempt: Callable[[], Awaitable[T]], stats: Stats,
                   max_delay_s: float = 5.0) -> T:
    """Run ``attempt`` until it succeeds, backing off on transient database errors."""
    delay = 0.1
    while True:
        try:
            return await attempt()
        except Exception as exc:
            if not is_transient(exc):
                raise
            stats.retries += 1
            log.warning("%s: database unavailable (%s); retrying in %.1fs",
                        what, type(exc).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay_s)


@dataclass
class Processor:
    """Runs a :class:`Handler` over batches of records (steps in the module docstring)."""

    engine: AsyncEngine
    handler: Handler | RawHandler
    reader: RangeReader
    relay: OutboxRelay | None = None
    stats: Stats = field(default_factory=Stats)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: (topic, partition) -> last offset this worker committed since it was assigned it
    committed: dict[TP, int] = field(default_factory=dict)

    async def process(self, records: Sequence[Record]) -> None:
        """Apply a batch exactly once. Raises CheckpointConflict if a partition moved on.

        One batch at a time per processor (:attr:`lock`): the agent's stream, the
        tail check and the order agent's deadlines take turns, so the order in
        ``processed_events.seq`` is the order in which state was changed.
        """
        async with self.lock:
            await self._process(records)

    async def _process(self, records: Sequence[Record]) -> None:
        by_tp: dict[TP, dict[int, Record]] = defaultdict(dict)
        for rec in records:
            by_tp[(rec.topic, rec.partition)][rec.offset] = rec
        done = await retrying(self.handler.consumer, lambda: self.checkpoints(list(by_tp)),
                              self.stats)
        fresh: list[Record] = []
        for tp, recs in sorted(by_tp.items()):
            fresh.extend(await self._complete(tp, done[tp], recs))
        if fresh:
            await retrying(self.handler.consumer, lambda: self._commit(fresh, done), self.stats)
        if self.relay is not None:
            await retrying(self.handler.consumer, self.relay.flush, self.stats)

    async def checkpoints(self, tps: list[TP]) -> dict[TP, int]:
        """This handler's checkpoint of each (topic, partition); -1 where none."""
        found = {tp: -1 for tp in tps}
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(
                checkpoints.c.topic, checkpoints.c.partition, checkpoints.c.offset,
            ).where(checkpoints.c.consumer == self.handler.consumer,
                    checkpoints.c.topic.in_({t for t, _ in tps})))
            for topic, partition, offset in rows:
                if (topic, partition) in found:
                    found[(topic, partition)] = offset
        return found

    async def _complete(self, tp: TP, done: int, recs: dict[int, Record]) -> list[Record]:
        """The records past ``done`` in offset order, with any gap read back from Kafka."""
        offsets = sorted(o for o in recs if o > done)
        if not offsets:
            return []
        missing = set(range(done + 1, offsets[-1] + 1)) - set(offsets)
        if missing:
            found = await self.reader.read(tp[0], tp[1], min(missing), max(missing) + 1)
            repaired = [r for r in found if r.offset in missing]
            self.stats.offset_jumps += 1
            self.stats.gaps_repaired += len(repaired)
            log.warning("%s: %s[%d] offsets %d..%d were skipped by the consumer; "
                        "repaired %d records from Kafka", self.handler.consumer, tp[0], tp[1],
                        min(missing), max(missing), len(repaired))
            recs = {**recs, **{r.offset: r for r in repaired}}
        return [recs[o] for o in sorted(o for o in recs if o > done)]

    def _decode(self, records: Sequence[Record]) -> tuple[list[Incoming], list[CloudEvent]]:
        good, bad = [], []
        for rec in records:
            try:
                good.append(Incoming(rec, decode(rec.value, key=rec.key, topic=rec.topic)))
            except DecodeError as err:
                bad.append(dead_letter(rec, err, self.handler.consumer))
        return good, bad

    async def _commit(self, fresh: list[Record], done: dict[TP, int]) -> None:
        async with self.engine.begin() as conn:
            await lock_partitions(conn, self.handler.consumer, {r.partition for r in fresh})
            if isinstance(self.handler, RawHandler):
                derived = await self.handler.handle_records(conn, fresh)
                self.stats.applied += len(fresh)
                self.stats.dead_letters += len(derived)
            else:
                derived = await self._apply_events(conn, self.handler, fresh)
            await write_outbox(conn, self.handler.consumer, derived)
            # ``fresh`` is in offset order within each partition: the last one wins.
            last = {(rec.topic, rec.partition): rec.offset for rec in fresh}
            for (topic, partition), offset in sorted(last.items()):
                try:
                    await advance_checkpoint(conn, self.handler.consumer, topic, partition,
                                             done[(topic, partition)], offset)
                except CheckpointConflict:
                    self.stats.conflicts += 1
                    raise
        self.committed.update(last)
        self.stats.batches += 1

    def assigned(self, tps: Iterable[TP]) -> None:
        """Faust gave this worker ``tps`` (again): what others committed there is ours now."""
        for tp in tps:
            self.committed.pop(tp, None)

    async def still_ours(self, conn: AsyncConnection, topics: Iterable[str],
                         partitions: set[int]) -> set[int]:
        """The partitions on which nobody else committed since this worker last did.

        Call inside a transaction holding :func:`lock_partitions` for them. A
        partition on which another worker moved a checkpoint past this worker's
        last commit (since its last assignment) belongs to that worker now: this
        one is a zombie there and must not act on it (the order agent's deadlines).
        """
        topics = tuple(topics)  # iterated once per partition below
        stored = {(t, p): o for t, p, o in await conn.execute(
            select(checkpoints.c.topic, checkpoints.c.partition, checkpoints.c.offset)
            .where(checkpoints.c.consumer == self.handler.consumer,
                   checkpoints.c.topic.in_(topics),
                   checkpoints.c.partition.in_(partitions)))}
        return {p for p in partitions
                if all(stored.get((t, p), -1) <= self.committed.get((t, p), 1 << 62)
                       for t in topics)}

    async def _apply_events(self, conn: AsyncConnection, handler: Handler,
                            fresh: list[Record]) -> list[CloudEvent]:
        """Decode, dead-letter the refused, drop the already applied, handle the rest."""
        incoming, letters = self._decode(fresh)
        new = await self._first_seen(conn, incoming)
        derived = await handler.handle(conn, new) if new else []
        self.stats.applied += len(new)
        self.stats.duplicates += len(incoming) - len(new)
        self.stats.dead_letters += len(letters)
        return [*derived, *letters]

    async def _first_seen(self, conn: AsyncConnection,
                          incoming: list[Incoming]) -> list[Incoming]:
        """The events not applied before (by source + id), first occurrence only."""
        unique: dict[tuple[str, str], Incoming] = {}
        for inc in incoming:
            unique.setdefault((inc.event.source, inc.event.id), inc)
        if not unique:
            return []
        rows = [{"consumer": self.handler.consumer, "source": s, "event_id": i}
                for s, i in unique]
        result = await conn.execute(  # executemany: one cached statement (see log_records)
            insert(processed_events).on_conflict_do_nothing()
            .returning(processed_events.c.source, processed_events.c.event_id), rows)
        new_keys = {(s, i) for s, i in result}
        return [inc for key, inc in unique.items() if key in new_keys]


async def lock_partitions(conn: AsyncConnection, consumer: str, partitions: Iterable[int]) -> None:
    """Take ``consumer``'s transaction-scoped lock on each partition, in order.

    One transaction per (agent, partition) at a time, across workers: a batch and
    a deadline firing of one partition never interleave, so the order of
    ``processed_events.seq`` is the order in which state changed, and a zombie's
    late transaction waits for the owner's instead of overtaking it.
    """
    for partition in sorted(set(partitions)):
        await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:c), :p)"),
                           {"c": consumer, "p": partition})


async def write_outbox(conn: AsyncConnection, producer: str, events: Sequence[CloudEvent]) -> None:
    """Queue events for publishing, in order; an event already queued is left alone."""
    if not events:
        return
    rows = [{"event_id": e.id, "producer": producer, "topic": e.data.TOPIC,
             "key": key_of(e), "value": encode(e)} for e in events]
    await conn.execute(insert(outbox).on_conflict_do_nothing(), rows)


@dataclass
class OutboxRelay:
    """Publishes a producer's unsent outbox rows in id order, then marks them sent.

    At-least-once: a crash between send and mark re-sends on the next flush, and
    consumers drop the duplicate by event id. One flush at a time per producer
    (a transaction-scoped advisory lock on its name), across workers and within
    one, so rows go out strictly in id order and one key's events never overtake
    each other.
    """

    engine: AsyncEngine
    producer_name: str
    settings: Settings
    batch_size: int = 1000
    published: int = 0
    _producer: AIOKafkaProducer | None = None
    _closed: bool = False
    #: one flush at a time in this process (the batch path and the deadline timer
    #: share a relay); close waits for the flush in progress
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def close(self) -> None:
        """Stop publishing: 1. later flushes publish nothing (their rows stay in the
        outbox for the next start); 2. the flush in progress ends its round of rows;
        3. the producer stops."""
        self._closed = True
        async with self._lock:
            if self._producer is not None:
                await self._producer.stop()
                self._producer = None

    async def flush(self) -> int:
        """Publish everything pending; return how many rows were sent (0 once closed)."""
        async with self._lock:
            return await self._flush()

    async def _flush(self) -> int:
        sent = 0
        while not self._closed:
            if self._producer is None:
                producer = create_producer(self.settings)
                await producer.start()
                self._producer = producer
            producer = self._producer
            async with self.engine.begin() as conn:
                await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:p))"),
                                   {"p": f"outbox:{self.producer_name}"})
                rows = (await conn.execute(
                    select(outbox.c.id, outbox.c.topic, outbox.c.key, outbox.c.value)
                    .where(outbox.c.producer == self.producer_name,
                           outbox.c.published_at.is_(None))
                    .order_by(outbox.c.id).limit(self.batch_size)
                )).all()
                if not rows:
                    break
                futures = [await producer.send(r.topic, r.value, key=r.key) for r in rows]
                await asyncio.gather(*futures)
                await conn.execute(
                    update(outbox).where(outbox.c.id.in_(bindparam("ids", expanding=True)))
                    .values(published_at=datetime.now(UTC)), {"ids": [r.id for r in rows]},
                )
            sent += len(rows)
        self.published += sent
        return sent


class GapUnreadable(Exception):
    """A range could not be read back in time; the batch is retried later."""


@dataclass
class KafkaRangeReader:
    """Reads offset ranges with a group-less consumer (assign + seek): gap repair.

    Reads until its position reaches ``end``, or the partition's high-water mark
    (nothing beyond it exists yet). Offsets inside the range that it passed
    without a record do not exist (transaction markers, compaction). If neither
    is reached within ``timeout_s``, it raises :class:`GapUnreadable` rather
    than return part of the range: the checkpoint must never pass a record that
    was not read.
    """

    settings: Settings
    poll_timeout_ms: int = 500
    timeout_s: float = 30.0

    async def read(self, topic: str, partition: int, start: int, end: int) -> list[Record]:
        consumer = AIOKafkaConsumer(**client_options(self.settings), group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        try:
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, start)
            out: list[Record] = []
            deadline = asyncio.get_running_loop().time() + self.timeout_s
            while True:
                position = await consumer.position(tp)
                highwater = consumer.highwater(tp)
                if position >= end or (highwater is not None and position >= highwater):
                    return out
                if asyncio.get_running_loop().time() > deadline:
                    raise GapUnreadable(f"{topic}[{partition}] {start}..{end - 1}: read up to "
                                        f"{position} in {self.timeout_s:.0f} s")
                batch = await consumer.getmany(tp, timeout_ms=self.poll_timeout_ms,
                                               max_records=1000)
                msgs: list[Any] = batch.get(tp, [])
                out.extend(Record(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp)
                           for m in msgs if start <= m.offset < end)
        finally:
            await _stop_quietly(consumer)


async def _stop_quietly(consumer: AIOKafkaConsumer) -> None:
    """Stop a consumer. aiokafka can leak a CancelledError of its own coordinator
    task when stopped right after start; only our own cancellation propagates."""
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
