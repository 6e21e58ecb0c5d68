"""Base classes of the event payloads (the CloudEvents ``data``).

Every message class declares, as class variables:

- ``TYPE``: its CloudEvents ``type``, ``dropship.<entity>.<happened>.v<N>``;
- ``TOPIC``: the one topic it travels on;
- ``SOURCE_KIND``: who may publish it: ``shop``, ``supplier``, ``ops`` (an
  operator, by name) or ``dropship`` (our agents); the envelope's ``source``
  must be ``<kind>/<id>``;
- ``SUBJECT``: the payload field whose value is the envelope's ``subject`` and
  the Kafka key.

Events are named in the past tense (``OrderPlaced``), commands in the
imperative (``AllocateLine``).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from events.types import Value

SourceKind = Literal["shop", "supplier", "ops", "dropship"]


class Message(Value):
    """A payload carried in a CloudEvent's ``data``."""

    TYPE: ClassVar[str]
    TOPIC: ClassVar[str]
    SOURCE_KIND: ClassVar[SourceKind]
    SUBJECT: ClassVar[str]

    def subject(self) -> str:
        """The envelope subject (and Kafka key) of this message."""
        return str(getattr(self, self.SUBJECT))


class Event(Message):
    """Something that happened (past tense)."""


class Command(Message):
    """Something an agent is asked to do (imperative)."""
