"""Operators' commands on ``ops.commands`` (key: order id), published by ``dropship ops``.

Ops move an order only through these commands, which the order agent applies
under the same exactly-once machinery as every other event; the envelope's
``source`` is ``ops/<operator>``, so the timeline names who did what. The ops
database role stays read-only.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, model_validator

from events.base import Command, SourceKind
from events.orders import MAX_LINES, LineQuantity, check_unique_lines
from events.topics import OPS_COMMANDS
from events.types import Id, Text, Timestamp


class _OpsCommand(Command):
    TOPIC: ClassVar[str] = OPS_COMMANDS
    SOURCE_KIND: ClassVar[SourceKind] = "ops"
    SUBJECT: ClassVar[str] = "order_id"


class ReleasePayment(_OpsCommand):
    """Accept what was paid for an order whose payment is held (short) as payment in
    full: the outstanding amount is written off and the order goes to suppliers."""

    TYPE: ClassVar[str] = "dropship.ops.release_payment.v1"

    order_id: Id
    reason: Text
    requested_at: Timestamp


class CancelOrder(_OpsCommand):
    """Cancel an order (no ``lines``) or those units of those lines, refunding what was
    paid for them: also how ops give up on a line held for ops."""

    TYPE: ClassVar[str] = "dropship.ops.cancel_order.v1"

    order_id: Id
    lines: Annotated[tuple[LineQuantity, ...], Field(max_length=MAX_LINES)] = ()
    reason: Text
    requested_at: Timestamp

    @model_validator(mode="after")
    def _unique_lines(self) -> CancelOrder:
        check_unique_lines(self.lines)
        return self


class RerouteLine(_OpsCommand):
    """Send every unit of a line not yet shipped to ``supplier_id``: units at other
    suppliers are taken back from them, a backorder or a hold ends."""

    TYPE: ClassVar[str] = "dropship.ops.reroute_line.v1"

    order_id: Id
    line_id: Id
    supplier_id: Id
    reason: Text
    requested_at: Timestamp


class CloseReturn(_OpsCommand):
    """End a return whose goods never came back to (all) its suppliers: with
    ``refund``, the units still expected are refunded as if received; without, the
    customer keeps them and nothing is refunded for them."""

    TYPE: ClassVar[str] = "dropship.ops.close_return.v1"

    order_id: Id
    rma_id: Id
    refund: bool
    reason: Text
    requested_at: Timestamp
