"""The archive agent: keeps every input record in ``event_log``, exactly once.

Consumes the topics written by shops and suppliers (``events.topics.INPUT_TOPICS``)
in batches. Per batch, one Postgres transaction (see :func:`apply_batch`):
1. per (topic, partition), read the checkpoint and drop records at or below it;
2. insert the rest into ``event_log`` (``ON CONFLICT DO NOTHING``);
3. advance the checkpoint by compare-and-set to the batch's last offset.
If the compare-and-set fails (another worker took the partition and moved the
checkpoint), the whole transaction rolls back and the batch is left to its owner.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from events.codec import DecodeError, decode
from pipeline.checkpoints import (
    CheckpointConflict,
    LoggedRecord,
    advance_checkpoint,
    load_checkpoint,
    log_records,
)

CONSUMER = "archive"
BATCH_SIZE = 500
BATCH_WITHIN_S = 0.2

log = logging.getLogger(__name__)


def envelope_fields(value: bytes) -> tuple[str | None, str | None, str | None]:
    """(id, type, subject) of a record value, for indexing ``event_log``.

    A valid event is read with the codec; an invalid one is still archived, with
    whatever of these attributes plain JSON parsing finds (None where absent).
    """
    try:
        event = decode(value)
    except DecodeError:
        pass
    else:
        return event.id, event.type, event.subject
    try:
        doc = json.loads(value)
    except ValueError:
        return None, None, None
    if not isinstance(doc, dict):
        return None, None, None

    def text(name: str) -> str | None:
        field = doc.get(name)
        return field[:200] if isinstance(field, str) else None

    return text("id"), text("type"), text("subject")


def to_record(topic: str, partition: int, offset: int, key: bytes | None, value: bytes,
              timestamp_s: float | None) -> LoggedRecord:
    event_id, event_type, subject = envelope_fields(value)
    ts = datetime.fromtimestamp(timestamp_s, UTC) if timestamp_s else None
    return LoggedRecord(topic, partition, offset, key, value, ts, event_id, event_type, subject)


async def apply_batch(engine: AsyncEngine, records: Sequence[LoggedRecord],
                      consumer: str = CONSUMER) -> int:
    """Apply one batch in one transaction (steps in the module docstring).

    Returns the number of records newly logged. Raises CheckpointConflict if
    another worker moved a checkpoint meanwhile (nothing is written then).
    """
    by_tp: dict[tuple[str, int], list[LoggedRecord]] = defaultdict(list)
    for rec in records:
        by_tp[(rec.topic, rec.partition)].append(rec)
    written = 0
    async with engine.begin() as conn:
        for (topic, partition), recs in sorted(by_tp.items()):
            done = await load_checkpoint(conn, consumer, topic, partition)
            fresh = [r for r in recs if r.offset > done]
            if not fresh:
                continue
            written += await log_records(conn, fresh)
            await advance_checkpoint(conn, consumer, topic, partition, done,
                                     max(r.offset for r in fresh))
    return written


def records_of(events: Iterable[Any]) -> list[LoggedRecord]:
    """Faust events -> records (reads only ``event.message``)."""
    out = []
    for event in events:
        msg = event.message
        out.append(to_record(msg.topic, msg.partition, msg.offset, msg.key, msg.value,
                             msg.timestamp))
    return out


def register(app: Any, topic: Any, engine: AsyncEngine) -> Any:
    """Declare the archive agent on ``app`` over ``topic``; returns the agent."""

    async def archive(stream: Any) -> None:
        async for batch in stream.take_events(BATCH_SIZE, within=BATCH_WITHIN_S):
            records = records_of(batch)
            try:
                written = await apply_batch(engine, records)
            except CheckpointConflict as err:
                log.warning("archive: batch skipped, partition owned elsewhere: %s", err)
                continue
            log.debug("archive: %d records, %d new", len(records), written)

    return app.agent(topic, name="archive")(archive)
