"""Records as ``event_log`` rows: every record the projector consumes is kept
verbatim, valid or not, in its batch transaction (Kafka retention is finite;
read models are rebuilt from ``event_log``).
"""

from __future__ import annotations

import json

from events.codec import DecodeError, decode
from events.envelope import CloudEvent
from pipeline.runtime.checkpoints import LoggedRecord
from pipeline.runtime.records import Record


def envelope_fields(value: bytes) -> tuple[str | None, str | None, str | None]:
    """(id, type, subject) of a record value, for indexing ``event_log``.

    A valid event is read with the codec; an invalid one is still archived, with
    whatever of these attributes plain JSON parsing finds (None where absent, or
    where Postgres could not store it as text).
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
        if not isinstance(field, str) or "\x00" in field:  # Postgres text cannot hold NUL
            return None
        try:
            field.encode()
        except UnicodeEncodeError:  # a lone surrogate ("\ud800") is no text either
            return None
        return field[:200]

    return text("id"), text("type"), text("subject")


def logged(record: Record, event: CloudEvent | None = None) -> LoggedRecord:
    """A Kafka record as an ``event_log`` row (no timestamp if Kafka gave none).

    ``event`` is the record already decoded, if it was (saves decoding it again).
    """
    event_id, event_type, subject = (
        (event.id, event.type, event.subject) if event is not None
        else envelope_fields(record.value))
    return LoggedRecord(record.topic, record.partition, record.offset, record.key, record.value,
                        record.time if record.timestamp_ms else None,
                        event_id, event_type, subject)

