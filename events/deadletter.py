"""``DeadLetter`` on ``fulfillment.dlq`` (key: the refused record's key).

The refused bytes travel base64-encoded. To keep the dead letter itself within
the message size limit, only the first ``MAX_ORIGINAL_BYTES`` are carried
(``truncated`` says so); ``original_size`` and ``original_sha256`` identify the
whole, which the ``dead_letters`` table keeps in full.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Annotated, ClassVar

from pydantic import Field, StringConstraints

from events.base import Event, SourceKind
from events.topics import DLQ
from events.types import TEXT_PATTERN, Id, Timestamp

MAX_ORIGINAL_BYTES = 32 * 1024
#: Subject of a dead letter whose record had no key.
NO_KEY = "-"

Base64 = Annotated[str, StringConstraints(max_length=4 * MAX_ORIGINAL_BYTES // 3 + 4,
                                          pattern=r"^[A-Za-z0-9+/]*={0,2}$")]
ErrorText = Annotated[str, StringConstraints(min_length=1, max_length=2000, pattern=TEXT_PATTERN)]
KeyText = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=TEXT_PATTERN)]


class DeadLetter(Event):
    """A record an agent refused, with where it came from and why."""

    TYPE: ClassVar[str] = "dropship.dead_letter.v1"
    TOPIC: ClassVar[str] = DLQ
    SOURCE_KIND: ClassVar[SourceKind] = "dropship"
    SUBJECT: ClassVar[str] = "original_key"

    original_key: KeyText
    source_topic: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,249}$")]
    source_partition: Annotated[int, Field(ge=0)]
    source_offset: Annotated[int, Field(ge=0)]
    consumer: Id
    error: ErrorText
    rule: Id
    field: Annotated[str, StringConstraints(max_length=200)] | None = None
    original_b64: Base64
    original_size: Annotated[int, Field(ge=0)]
    original_sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    truncated: bool
    dead_lettered_at: Timestamp

    @staticmethod
    def key_text(key: bytes | None) -> str:
        """The subject for a record key: its UTF-8 text, ``hex:...`` if not text, or ``-``."""
        if not key:
            return NO_KEY
        try:
            text = key.decode("utf-8")
        except UnicodeDecodeError:
            return "hex:" + key[:120].hex()
        printable = text.isprintable() and 0 < len(text) <= 256
        return text if printable else "hex:" + key[:120].hex()

    @staticmethod
    def carry(original: bytes) -> dict[str, object]:
        """The ``original_*`` and ``truncated`` fields for ``original`` bytes."""
        kept = original[:MAX_ORIGINAL_BYTES]
        return {
            "original_b64": base64.b64encode(kept).decode("ascii"),
            "original_size": len(original),
            "original_sha256": hashlib.sha256(original).hexdigest(),
            "truncated": len(kept) < len(original),
        }
