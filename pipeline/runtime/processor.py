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
5. after commit, the :class:`~pipeline.runtime.outbox.OutboxRelay` publishes
   unsent outbox rows.

A zombie that lost its partitions fails step 4's compare-and-set
(:class:`CheckpointConflict`) and writes nothing. Transient database errors
are retried with backoff, so a Postgres outage pauses consumption and nothing
moves past what is stored.

A cause that is not a record (the order agent's deadline firings) goes through
the same discipline with :meth:`Processor.apply_local`: the same lock, the same
partition locks and zombie fence, its ids in ``processed_events``, its events
in the outbox, all in one transaction, then the relay.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, runtime_checkable

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from events.codec import DecodeError, decode
from events.envelope import CloudEvent
from pipeline.runtime.checkpoints import CheckpointConflict, advance_checkpoint
from pipeline.runtime.outbox import OutboxRelay, write_outbox
from pipeline.runtime.records import TP, Incoming, Record, dead_letter
from pipeline.runtime.schema import checkpoints, processed_events

log = logging.getLogger(__name__)
T = TypeVar("T")
#: The (source, id) of a cause applied in a transaction, as ``processed_events`` keeps it.
CauseKey = tuple[str, str]
#: Work on a cause that is not a record (:meth:`Processor.apply_local`): given the
#: connection and the partitions still owned, change state and return the events
#: derived and the keys of the causes applied, in the order they were applied.
LocalWork = Callable[[AsyncConnection, set[int]],
                     Awaitable[tuple[list[CloudEvent], list[CauseKey]]]]


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

    async def apply_local(self, topics: Iterable[str], partitions: set[int],
                          work: LocalWork) -> int:
        """Apply a cause that is not a record (a deadline firing) on owned partitions.

        Who calls it: the order agent's deadline timer. Guarantees as for a batch:
        state, the causes' ids, the outbox rows commit together or not at all, and
        nothing runs on a partition another worker took over. Returns the number of
        causes applied. Steps:

        1. take :attr:`lock` (never between a batch's dedup and its commit);
        2. in one transaction: :func:`lock_partitions`; keep the partitions
           :meth:`still_ours` for ``topics``; run ``work`` on them; record the
           keys of the causes it applied in ``processed_events`` (their place in
           the apply order among consumed events); queue its events in the outbox;
        3. after commit, flush the relay.

        A failure raises and leaves nothing behind (the transaction rolls back); the
        caller tries again later, and ``work`` decides again from the stored state.
        """
        if not partitions:
            return 0
        async with self.lock:
            applied = await self._commit_local(set(topics), partitions, work)
            if applied and self.relay is not None:
                await self.relay.flush()
        return applied

    async def _commit_local(self, topics: set[str], partitions: set[int],
                            work: LocalWork) -> int:
        consumer = self.handler.consumer
        async with self.engine.begin() as conn:
            await lock_partitions(conn, consumer, partitions)
            owned = await self.still_ours(conn, topics, partitions)
            if not owned:
                return 0
            derived, causes = await work(conn, owned)
            if causes:
                await conn.execute(insert(processed_events).on_conflict_do_nothing(), [
                    {"consumer": consumer, "source": source, "event_id": event_id}
                    for source, event_id in causes])
            await write_outbox(conn, consumer, derived)
        return len(causes)

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


