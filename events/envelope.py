"""The CloudEvents 1.0 envelope (structured JSON mode) around every message.

A record's value on every topic is one JSON object::

    {"specversion": "1.0", "id": "...", "source": "shop/acme", "type": "dropship.order.placed.v1",
     "time": "2026-11-22T10:00:00Z", "subject": "o-1", "datacontenttype": "application/json",
     "data": {...}}

Rules enforced here (on top of each payload's own):

- ``specversion`` is ``"1.0"``, ``datacontenttype`` is ``"application/json"``;
- ``id``: 1-128 characters of ``A-Z a-z 0-9 . _ : -``; unique per source;
- ``source`` is ``shop/<id>``, ``supplier/<id>``, ``ops/<operator>`` or
  ``dropship/<agent>``, of the kind that may publish ``type`` (``source_kind``);
  a payload's ``shop_id`` or ``supplier_id`` must be the source's id (``source_mismatch``);
- ``type`` is one of :data:`MESSAGE_TYPES` (``unknown_type``);
- ``time`` is RFC 3339 with a timezone;
- ``subject`` equals the payload's subject field (``subject_mismatch``);
- extensions: the distributed-tracing extension (``traceparent``, ``tracestate``),
  and on events the order agent derives, the sequence extension (``sequence``: the
  event's place in its order's history, ``<step>.<n>``, zero-padded so that text
  order is numeric order) and ``causationid`` (``<source>/<id>`` of the event that
  caused it); any other top-level attribute, and any unknown field inside
  ``data``, is refused (``extra_forbidden``). How contracts may evolve within a
  type version: docs/events.md, "Evolving the contracts".
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Final, Literal, cast

from pydantic import ConfigDict, Field, StringConstraints, create_model, model_validator
from pydantic_core import PydanticCustomError

from events.allocation import (
    AllocateLine,
    BackorderDropped,
    CommitLine,
    LineAllocated,
    LineBackordered,
    LineReleased,
    ReleaseLine,
    SupplierStockChanged,
)
from events.base import Message
from events.catalog import StockLevelReported, SupplierOfferUpdated
from events.deadletter import DeadLetter
from events.fulfillment import (
    OrderStatusChanged,
    RefundIssued,
    RefundIssuedV1,
    ReturnAuthorized,
    ReturnUpdated,
    ShipmentUpdated,
    SupplierOrderCancelled,
    SupplierOrderRequested,
    SupplierOrderUpdated,
)
from events.ops import CancelOrder, CloseReturn, ReleasePayment, RerouteLine
from events.orders import (
    DeliveryConfirmed,
    OrderCancelled,
    OrderPlaced,
    PaymentConfirmed,
    ReturnRequested,
)
from events.suppliers import (
    ReturnReceived,
    ShipmentDelivered,
    ShipmentDispatched,
    ShipmentFailed,
    SupplierOrderAccepted,
    SupplierOrderRejected,
)
from events.types import Timestamp, Value

SPECVERSION: Final = "1.0"
DATA_CONTENT_TYPE: Final = "application/json"
CONTENT_TYPE = "application/cloudevents+json"
EVENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
SOURCE_PATTERN = r"^(shop|supplier|ops|dropship)/[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
#: ``<step>.<n>``: 12 and 6 digits (see :func:`sequence_of`).
SEQUENCE_PATTERN = r"^[0-9]{12}\.[0-9]{6}$"
CAUSATION_PATTERN = r"^(shop|supplier|ops|dropship)/[A-Za-z0-9][A-Za-z0-9._:-]{0,63}/" \
                    r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"

#: Every message class, in the order of the topic table.
MESSAGE_CLASSES: tuple[type[Message], ...] = (
    OrderPlaced, PaymentConfirmed, OrderCancelled, ReturnRequested, DeliveryConfirmed,
    SupplierOrderAccepted, SupplierOrderRejected, ShipmentDispatched, ShipmentDelivered,
    ShipmentFailed, ReturnReceived,
    SupplierOfferUpdated, StockLevelReported,
    ReleasePayment, CancelOrder, RerouteLine, CloseReturn,
    AllocateLine, ReleaseLine, CommitLine,
    LineAllocated, LineBackordered, LineReleased, BackorderDropped, SupplierStockChanged,
    SupplierOrderRequested, SupplierOrderCancelled, ReturnAuthorized,
    OrderStatusChanged, RefundIssued, RefundIssuedV1, ShipmentUpdated, SupplierOrderUpdated,
    ReturnUpdated,
    DeadLetter,
)
MESSAGE_TYPES: dict[str, type[Message]] = {cls.TYPE: cls for cls in MESSAGE_CLASSES}
#: Payload fields that must name the publisher given by ``source``.
_PUBLISHER_FIELDS = {"shop": "shop_id", "supplier": "supplier_id"}


class CloudEvent(Value):
    """A CloudEvents 1.0 envelope; :data:`ENVELOPES` holds one subclass per type."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")
    MESSAGE: ClassVar[type[Message]]

    specversion: Literal["1.0"]
    id: Annotated[str, StringConstraints(pattern=EVENT_ID_PATTERN)]
    source: Annotated[str, StringConstraints(pattern=SOURCE_PATTERN)]
    type: str
    time: Timestamp
    subject: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    datacontenttype: Literal["application/json"]
    data: Message
    traceparent: Annotated[str, StringConstraints(max_length=55)] | None = None
    tracestate: Annotated[str, StringConstraints(max_length=512)] | None = None
    sequence: Annotated[str, StringConstraints(pattern=SEQUENCE_PATTERN)] | None = None
    causationid: Annotated[str, StringConstraints(pattern=CAUSATION_PATTERN)] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> CloudEvent:
        kind, _, publisher = self.source.partition("/")
        if kind != self.data.SOURCE_KIND:
            raise PydanticCustomError(
                "source_kind", "{type} is published by a {expected}, not by '{source}'",
                {"type": self.type, "expected": self.data.SOURCE_KIND, "source": self.source},
            )
        field = _PUBLISHER_FIELDS.get(kind)
        if field and getattr(self.data, field, publisher) != publisher:
            raise PydanticCustomError(
                "source_mismatch", "data.{field} '{value}' is not the source's id '{publisher}'",
                {"field": field, "value": getattr(self.data, field), "publisher": publisher},
            )
        if self.data.subject() != self.subject:
            raise PydanticCustomError(
                "subject_mismatch", "subject '{subject}' is not data.{field} '{expected}'",
                {"subject": self.subject, "field": self.data.SUBJECT,
                 "expected": self.data.subject()},
            )
        return self


def _envelope_class(message: type[Message]) -> type[CloudEvent]:
    model = create_model(
        f"{message.__name__}CloudEvent",
        __base__=CloudEvent,
        __doc__=f"CloudEvent carrying {message.__name__}: {(message.__doc__ or '').strip()}",
        type=(Literal[message.TYPE], Field(...)),  # type: ignore[arg-type]
        data=(message, Field(...)),
    )
    model.MESSAGE = message
    return cast(type[CloudEvent], model)


#: CloudEvents ``type`` -> its envelope class.
ENVELOPES: dict[str, type[CloudEvent]] = {
    cls.TYPE: _envelope_class(cls) for cls in MESSAGE_CLASSES
}


def sequence_of(step: int, n: int) -> str:
    """The ``sequence`` extension of the ``n``-th event (1, 2, ...) an order's
    ``step``-th applied event caused (see :mod:`agents.core.orders`)."""
    return f"{step:012d}.{n:06d}"


def parse_sequence(value: str) -> tuple[int, int]:
    """(step, n) of a ``sequence`` extension."""
    step, n = value.split(".")
    return int(step), int(n)


def wrap(data: Message, *, id: str, source: str, time: datetime,
         **extensions: Any) -> CloudEvent:
    """Put ``data`` in its envelope; ``type`` and ``subject`` follow from ``data``.

    Raises pydantic's ValidationError if the envelope breaks a rule (e.g. the
    source may not publish this type).
    """
    envelope = ENVELOPES[data.TYPE]
    return envelope(
        specversion=SPECVERSION, id=id, source=source, type=data.TYPE, time=time,
        subject=data.subject(), datacontenttype=DATA_CONTENT_TYPE, data=data, **extensions,
    )
