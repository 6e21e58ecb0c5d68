"""The validating publisher behind ``dropship publish`` (for shops' and suppliers' integrators).

Contract:
1. every non-blank line of the input is decoded with the one codec, for the
   given topic (type must travel on it; the key will be the subject);
2. if any line is refused and ``skip_invalid`` is false, **nothing** is sent;
3. otherwise the valid lines are sent, in file order, each with its subject as
   the key and its original bytes as the value, and each is acknowledged
   (``acks=all``) before the outcome is reported.
The caller gets one :class:`LineOutcome` per line.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from events.codec import MAX_EVENT_BYTES, DecodeError, decode, key_of
from events.envelope import CloudEvent
from events.topics import ALL_TOPICS
from pipeline.runtime.kafka import create_producer
from pipeline.runtime.settings import Settings


@dataclass(frozen=True)
class LineOutcome:
    """What became of one input line."""

    line_no: int
    raw: bytes
    event: CloudEvent | None = None
    error: DecodeError | None = None
    partition: int | None = None
    offset: int | None = None

    @property
    def sent(self) -> bool:
        return self.offset is not None

    def describe(self, topic: str) -> str:
        if self.error is not None:
            return f"line {self.line_no}: refused: {self.error}"
        assert self.event is not None
        head = f"line {self.line_no}: {self.event.type} id={self.event.id} key={self.event.subject}"
        if self.sent:
            return f"{head}: sent to {topic}[{self.partition}] @ {self.offset}"
        return f"{head}: valid, not sent"


def check_lines(lines: Iterable[bytes], topic: str) -> list[LineOutcome]:
    """Decode every non-blank line for ``topic``; nothing is sent here."""
    if topic not in ALL_TOPICS:
        raise ValueError(f"unknown topic '{topic}'; known: {', '.join(ALL_TOPICS)}")
    outcomes = []
    for line_no, line in enumerate(lines, start=1):
        raw = line.rstrip(b"\r\n")
        if not raw.strip():
            continue
        try:
            event = decode(raw, topic=topic)
        except DecodeError as err:
            outcomes.append(LineOutcome(line_no, raw, error=err))
        else:
            outcomes.append(LineOutcome(line_no, raw, event=event))
    return outcomes


async def send_valid(settings: Settings, topic: str,
                     outcomes: list[LineOutcome]) -> list[LineOutcome]:
    """Send the valid lines in order, each acknowledged; return updated outcomes."""
    producer = create_producer(settings, max_request_size=MAX_EVENT_BYTES * 2)
    await producer.start()
    try:
        futures = [
            (o, await producer.send(topic, o.raw, key=key_of(o.event)))
            for o in outcomes if o.event is not None
        ]
        sent = {}
        for outcome, future in futures:
            md = await future
            sent[outcome.line_no] = LineOutcome(outcome.line_no, outcome.raw, outcome.event,
                                                None, md.partition, md.offset)
    finally:
        await producer.stop()
    return [sent.get(o.line_no, o) for o in outcomes]


async def publish(settings: Settings, topic: str, lines: Iterable[bytes],
                  skip_invalid: bool = False) -> list[LineOutcome]:
    """Steps 1-3 of the module contract."""
    outcomes = check_lines(lines, topic)
    if any(o.error for o in outcomes) and not skip_invalid:
        return outcomes
    return await send_valid(settings, topic, outcomes)
