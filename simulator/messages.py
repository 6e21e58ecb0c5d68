"""What simulated actors send, and the ways a shop's integration garbles a message."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from events.base import Message
from events.codec import encode, key_of
from events.envelope import wrap

#: The kinds of malformed message a shop sends (see :func:`garble`).
MALFORMED_KINDS = ("truncated", "zero_quantity", "unknown_currency", "missing_ship_to",
                   "not_json")


@dataclass(frozen=True)
class Send:
    """One Kafka record an actor sends: a valid event, or a malformed one (``fault``)."""

    topic: str
    key: bytes
    value: bytes
    type: str
    event_id: str | None
    fault: str | None = None  # "duplicate", "reorder", or a MALFORMED_KINDS entry


@dataclass(frozen=True)
class Later:
    """Something an actor will do ``at`` (simulated time): ``act`` returns what to send
    and what to do later still, given the time it actually runs."""

    at: datetime
    act: Callable[[datetime], tuple[list[Send], list[Later]]]


def envelope(message: Message, event_id: str, source: str, time: datetime,
             fault: str | None = None) -> Send:
    event = wrap(message, id=event_id, source=source, time=time)
    return Send(message.TOPIC, key_of(event), encode(event), message.TYPE, event_id, fault)


def garble(valid: Send, rng: random.Random) -> Send:
    """A broken copy of ``valid`` (an ``OrderPlaced``) under a new id, as a buggy shop
    integration would send it: each kind breaks one rule of the contract."""
    kind = rng.choice(MALFORMED_KINDS)
    event_id = f"{valid.event_id}.bad"
    doc = json.loads(valid.value)
    doc["id"] = event_id
    if kind == "truncated":
        value = json.dumps(doc).encode()[: len(valid.value) // 2]
    elif kind == "not_json":
        value = b"order;" + valid.key + b";\xff\xfe"
    else:
        if kind == "zero_quantity":
            doc["data"]["lines"][0]["quantity"] = 0
        elif kind == "unknown_currency":
            doc["data"]["currency"] = "XXX"
        else:
            del doc["data"]["ship_to"]
        value = json.dumps(doc).encode()
    return Send(valid.topic, valid.key, value, valid.type, event_id, kind)
