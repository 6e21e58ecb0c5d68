"""Records and what is derived from them: plain values, no database, no broker.

Who uses it: the :class:`~pipeline.runtime.processor.Processor` (every agent's
batch path), the agents' adapters (to derive events from a cause) and the pure
tests and checkers, which build :class:`Record` values without importing any
driver. :func:`derive` and :func:`dead_letter` are deterministic: the same
cause or record gives byte-identical events on every re-read, which is what
makes a crash before commit harmless.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from events.base import Message
from events.codec import DecodeError
from events.deadletter import DeadLetter
from events.envelope import CloudEvent, sequence_of, wrap
from events.ids import derived_id
from events.types import EARLIEST_TIME, END_OF_TIME

log = logging.getLogger(__name__)
#: Kafka timestamps (ms) that give an event time the contracts accept; a
#: producer may set any int64, which is clamped into this range.
_TIME_RANGE_MS = (int(EARLIEST_TIME.timestamp() * 1000), int(END_OF_TIME.timestamp() * 1000) - 1)
#: What a dead letter's text may not hold (the Text rule), escaped as ``\xNN``.
_REFUSED_IN_TEXT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]")
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


