"""The projector: keeps ``event_log`` and the read models, exactly once.

A raw handler (:class:`pipeline.runtime.processor.RawHandler`) on the one
transaction machinery, so its rows and its (topic, partition, offset)
checkpoints commit together, gaps are repaired and a zombie's batch fails its
compare-and-set. Per batch, inside that transaction:

1. take the rebuild lock in shared mode (``dropship projections rebuild`` takes
   it exclusively for the instant it swaps tables, so no batch straddles a swap);
2. keep every record in ``event_log`` verbatim, valid or not;
3. decode; a record that does not decode is skipped here if another agent of
   ours consumes its topic (that agent dead-letters it), else dead-lettered here;
4. write the rows every event contributes (:mod:`projections.rows`) with the
   guarded upserts of :mod:`projections.store`, all events of the batch in one
   statement per read model; if that fails for a reason that is not transient,
   apply event by event and dead-letter the one that fails, so a poison event
   never stops the projector;
5. complete truncated dead letters from ``event_log`` once both are present.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from events.codec import DecodeError, decode
from events.deadletter import MAX_ORIGINAL_BYTES, DeadLetter
from events.envelope import CloudEvent
from events.topics import (
    DECISIONS,
    DLQ,
    OPS_COMMANDS,
    ORDER_STATUS,
    SHOP_ORDERS,
    STOCK,
    SUPPLIER_CATALOG,
    SUPPLIER_EVENTS,
    SUPPLIER_ORDERS,
)
from pipeline.runtime.checkpoints import log_records
from pipeline.runtime.processor import is_transient
from pipeline.runtime.records import Record, dead_letter, failed
from projections.archive import logged
from projections.rows import Contribution, Position, rows_of
from projections.store import write
from projections.tables import ReadTables, read_tables

log = logging.getLogger(__name__)

CONSUMER = "projector"
#: Everything shops, suppliers and ops write (kept in ``event_log``) and every topic
#: our agents write that a read model is built from.
TOPICS = (SHOP_ORDERS, SUPPLIER_EVENTS, SUPPLIER_CATALOG, OPS_COMMANDS, DECISIONS,
          SUPPLIER_ORDERS, ORDER_STATUS, STOCK, DLQ)
#: Topics no other agent of ours consumes: the projector dead-letters what it cannot read.
OWNED = (SUPPLIER_ORDERS, ORDER_STATUS, STOCK, DLQ)
#: Advisory lock shared by projector batches, taken exclusively by a rebuild's swap.
REBUILD_LOCK = 0x0D50_0002

Decoded = tuple[Record, CloudEvent]


def decoded(records: Sequence[Record], consumer: str
            ) -> tuple[list[Decoded], list[CloudEvent]]:
    """(valid events, dead letters) of a batch (step 3)."""
    good: list[Decoded] = []
    letters: list[CloudEvent] = []
    for rec in records:
        try:
            good.append((rec, decode(rec.value, key=rec.key, topic=rec.topic)))
        except DecodeError as err:
            if rec.topic in OWNED:
                letters.append(dead_letter(rec, err, consumer))
    return good, letters


def contributions(rec: Record, event: CloudEvent) -> list[Contribution]:
    return rows_of(event, Position(rec.topic, rec.partition, rec.offset))


async def project(conn: AsyncConnection, tables: ReadTables, events: Sequence[Decoded],
                  consumer: str, only: Collection[str] | None = None) -> list[CloudEvent]:
    """Write the rows of ``events`` (step 4), to the read models ``only`` if given;
    returns dead letters for poison events."""
    try:
        async with conn.begin_nested():
            await write(conn, tables, [c for rec, ev in events for c in contributions(rec, ev)],
                        only)
        return []
    except Exception as exc:
        if is_transient(exc):
            raise
        log.warning("%s: batch of %d events failed (%s); applying one by one", consumer,
                    len(events), type(exc).__name__)
    letters = []
    for rec, event in events:
        try:
            async with conn.begin_nested():
                await write(conn, tables, contributions(rec, event), only)
        except Exception as exc:
            if is_transient(exc):
                raise
            letters.append(failed(rec, exc, consumer))
    return letters


async def complete_dead_letters(conn: AsyncConnection, tables: ReadTables) -> None:
    """Step 5: a dead letter carries at most 32 KiB of what it refused; the whole
    record, when ``event_log`` has it (same position, same SHA-256), replaces it."""
    dl = tables.dead_letters
    await conn.execute(text(f"""
        UPDATE {dl.schema}.dead_letters d SET payload = l.value, truncated = false
          FROM event_log l
         WHERE d.truncated AND l.topic = d.source_topic AND l.partition = d.source_partition
           AND l."offset" = d.source_offset
           AND encode(sha256(l.value), 'hex') = d.payload_sha256"""))


def _needs_completion(events: Sequence[Decoded], records: Sequence[Record]) -> bool:
    return any(isinstance(ev.data, DeadLetter) and ev.data.truncated for _, ev in events) \
        or any(len(r.value) > MAX_ORIGINAL_BYTES for r in records)


class ProjectorHandler:
    """Raw handler of the projector (steps in the module docstring)."""

    def __init__(self, consumer: str = CONSUMER, tables: ReadTables | None = None) -> None:
        self.consumer = consumer
        self.tables = tables or read_tables()

    async def handle_records(self, conn: AsyncConnection,
                             records: Sequence[Record]) -> list[CloudEvent]:
        await conn.execute(text("SELECT pg_advisory_xact_lock_shared(:k)"), {"k": REBUILD_LOCK})
        events, letters = decoded(records, self.consumer)
        by_position = {(r.topic, r.partition, r.offset): e for r, e in events}
        await log_records(conn, [logged(r, by_position.get((r.topic, r.partition, r.offset)))
                                 for r in records])
        letters += await project(conn, self.tables, events, self.consumer)
        if _needs_completion(events, records):
            await complete_dead_letters(conn, self.tables)
        return letters
