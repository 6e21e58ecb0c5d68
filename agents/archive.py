"""The archive agent: keeps every input record in ``event_log``, exactly once.

Consumes the topics written by shops and suppliers (``events.topics.INPUT_TOPICS``)
through the one transaction machinery (:mod:`pipeline.transactional`) as a raw
handler: every record is kept verbatim, valid or not (the agents that act on
the records dead-letter the invalid ones), in the same transaction as the
checkpoint, with gaps repaired. ``event_log`` is what projections are rebuilt from.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from events.codec import DecodeError, decode
from events.envelope import CloudEvent
from events.topics import INPUT_TOPICS
from pipeline.checkpoints import LoggedRecord, log_records
from pipeline.transactional import Record

CONSUMER = "archive"
TOPICS = INPUT_TOPICS


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


def logged(record: Record) -> LoggedRecord:
    """A Kafka record as an ``event_log`` row (no timestamp if Kafka gave none)."""
    event_id, event_type, subject = envelope_fields(record.value)
    return LoggedRecord(record.topic, record.partition, record.offset, record.key, record.value,
                        record.time if record.timestamp_ms else None,
                        event_id, event_type, subject)


class ArchiveHandler:
    """Raw handler: writes every record of the batch to ``event_log``."""

    def __init__(self, consumer: str = CONSUMER) -> None:
        self.consumer = consumer

    async def handle_records(self, conn: AsyncConnection,
                             records: Sequence[Record]) -> list[CloudEvent]:
        await log_records(conn, [logged(r) for r in records])
        return []
