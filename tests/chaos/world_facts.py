"""What an auditor outside the pipeline knows of a run: the raw topics, in simulated time.

Who calls it: the independent referee (``tests/chaos/referee.py``). :func:`read_seen`
reads every record of the topics shops, suppliers and the pipeline's order agent
write, decodes the valid ones with the contracts (``events/``) and stamps each with
its broker timestamp turned into simulated time (:class:`Span`). :func:`collect`
sorts them into one :class:`OrderFacts` per order and one :class:`SoFacts` per
supplier order. Nothing here imports the pipeline's agents, and nothing is
derived: these are the facts as sent, duplicates (the same CloudEvents id) once.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import NamedTuple

from events.base import Message
from events.codec import DecodeError, decode
from events.fulfillment import (
    OrderStatusChanged,
    RefundIssued,
    ReturnAuthorized,
    SupplierOrderCancelled,
    SupplierOrderRequested,
)
from events.orders import OrderCancelled, OrderPlaced, PaymentConfirmed, ReturnRequested
from events.suppliers import (
    ReturnReceived,
    ShipmentDelivered,
    ShipmentDispatched,
    ShipmentFailed,
    SupplierOrderAccepted,
    SupplierOrderRejected,
)
from events.topics import DECISIONS, ORDER_STATUS, SHOP_ORDERS, SUPPLIER_EVENTS, SUPPLIER_ORDERS
from pipeline.runtime.gaps import KafkaRangeReader
from pipeline.runtime.settings import Settings

#: The order agent's inputs whose reactions tell how far it has caught up: what shops
#: and suppliers sent, and the allocation agent's decisions.
INPUTS = (SHOP_ORDERS, SUPPLIER_EVENTS, DECISIONS)
#: The topics the referee reads: the inputs, and what the order agent sent.
TOPICS = (SUPPLIER_ORDERS, SHOP_ORDERS, SUPPLIER_EVENTS, DECISIONS, ORDER_STATUS)


@dataclass(frozen=True)
class Span:
    """The run's simulated clock: ``speed`` simulated seconds per real second from
    ``start`` (a wall-clock time, as the simulator's clock starts), up to ``end``."""

    start: datetime
    speed: float
    end: datetime

    def at(self, timestamp_ms: int) -> datetime:
        """The simulated time of a broker timestamp (milliseconds of wall clock)."""
        real = timestamp_ms / 1000 - self.start.timestamp()
        return self.start + timedelta(seconds=real * self.speed)


@dataclass(frozen=True)
class Terms:
    """The business terms of a run, and how late the pipeline may act under chaos.

    ``tolerance``: how long after a deadline (or after a stock report's publication)
    the pipeline may act, in simulated time; ``jitter``: how long before a deadline a
    payment may still lose the race with the deadline's firing.
    """

    span: Span
    tolerance: timedelta
    jitter: timedelta
    payment_window: timedelta
    held_payment_window: timedelta
    sla_grace: timedelta
    backorder_window: timedelta


class Seen(NamedTuple):
    """One valid event on a topic: when it reached the broker (simulated time), and the
    ``<source>/<id>`` of the event that caused it (CloudEvents ``causationid``)."""

    topic: str
    at: datetime
    source: str
    data: Message
    id: str = ""
    cause: str | None = None


class Progress:
    """How far the pipeline had caught up with the world, read from the topics.

    An input (a shop's or supplier's event, an allocation decision) is reacted to
    when the first event the order agent published with it as its cause reaches the
    broker (inputs it published nothing for are left out). :meth:`caught_up` of a
    moment ``t`` is the first moment from ``t`` on when every input on the broker had
    been reacted to: under a steady backlog, its end.
    """

    def __init__(self, seen: Iterable[Seen]) -> None:
        items = list(seen)
        first: dict[str, datetime] = {}
        for s in items:
            if s.cause is not None and (s.cause not in first or s.at < first[s.cause]):
                first[s.cause] = s.at
        pairs = sorted((s.at, first[f"{s.source}/{s.id}"]) for s in items
                       if s.topic in INPUTS and f"{s.source}/{s.id}" in first)
        self._times = [at for at, _ in pairs]
        self._done: list[datetime] = []
        for _, reacted in pairs:
            self._done.append(max(reacted, self._done[-1]) if self._done else reacted)

    def caught_up(self, t: datetime) -> datetime:
        """The first moment from ``t`` on when the pipeline had reacted to every input
        that had reached the broker (it was caught up: a worker then fires deadlines)."""
        moment, seen = t, bisect.bisect_right(self._times, t)
        while True:
            moment = max(moment, self._done[seen - 1]) if seen else moment
            arrived = bisect.bisect_right(self._times, moment)
            if arrived == seen:
                return moment
            seen = arrived


@dataclass
class SoFacts:
    """One supplier order: the request, the supplier's answers, the pipeline's cancel."""

    request: SupplierOrderRequested
    requested_seen: datetime
    accepted: SupplierOrderAccepted | None = None
    accepted_seen: datetime | None = None
    rejected: SupplierOrderRejected | None = None
    rejected_seen: datetime | None = None
    cancelled: SupplierOrderCancelled | None = None
    cancelled_seen: datetime | None = None
    shipments: list[ShipmentDispatched] = field(default_factory=list)
    shipped_seen: datetime | None = None  # when its first shipment reached the broker


@dataclass
class OrderFacts:
    """One order as the world and the pipeline's outputs tell it."""

    placed: OrderPlaced | None = None
    payments: dict[str, PaymentConfirmed] = field(default_factory=dict)  # by payment_ref
    payment_seen: dict[str, datetime] = field(default_factory=dict)  # reached the broker
    cancels: list[OrderCancelled] = field(default_factory=list)
    returns: dict[str, ReturnRequested] = field(default_factory=dict)  # by rma id
    authorized: list[ReturnAuthorized] = field(default_factory=list)
    received: list[ReturnReceived] = field(default_factory=list)
    shipments: dict[tuple[str, str], ShipmentDispatched] = field(default_factory=dict)
    delivered: set[tuple[str, str]] = field(default_factory=set)  # (supplier, shipment)
    failed: set[tuple[str, str]] = field(default_factory=set)
    supplier_orders: list[str] = field(default_factory=list)
    refunds: list[RefundIssued] = field(default_factory=list)
    status: OrderStatusChanged | None = None  # the last snapshot (highest version)

    def paid(self, currency: str, by: datetime | None = None,
             seen_by: datetime | None = None) -> Decimal:
        """Payments in ``currency`` (each payment_ref once), stamped no later than ``by``
        and on the broker by ``seen_by``."""
        return sum((p.amount.amount for ref, p in self.payments.items()
                    if p.amount.currency == currency and (by is None or p.paid_at <= by)
                    and (seen_by is None or self.payment_seen[ref] <= seen_by)), Decimal(0))

    def first_paid_at(self) -> datetime | None:
        """When the first payment in the order's currency was stamped (None: none came)."""
        assert self.placed is not None
        return min((p.paid_at for p in self.payments.values()
                    if p.amount.currency == self.placed.currency), default=None)

    def refunded(self, currency: str) -> Decimal:
        return sum((r.amount.amount for r in self.refunds if r.amount.currency == currency),
                   Decimal(0))

    def held_units(self) -> dict[str, int]:
        """Per line: units delivered to the customer and not returned to a supplier."""
        units: defaultdict[str, int] = defaultdict(int)
        for key in self.delivered:
            for line in self.shipments[key].lines if key in self.shipments else ():
                units[line.line_id] += line.quantity
        for received in self.received:
            for line in received.lines:
                units[line.line_id] -= line.quantity
        return dict(units)


@dataclass
class Facts:
    orders: dict[str, OrderFacts] = field(default_factory=lambda: defaultdict(OrderFacts))
    supplier_orders: dict[str, SoFacts] = field(default_factory=dict)
    progress: Progress = field(default_factory=lambda: Progress(()))


def collect(seen: Iterable[Seen]) -> Facts:
    """Sort the events into orders and supplier orders (first occurrence wins, as the
    senders never change an id's content)."""
    seen = list(seen)
    facts = Facts(progress=Progress(seen))
    # requests first: answers, cancellations and dispatches attach to them
    for item in sorted(seen, key=lambda s: not isinstance(s.data, SupplierOrderRequested)):
        _SORT.get(type(item.data), _ignore)(facts, item)
    return facts


def _placed(facts: Facts, s: Seen) -> None:
    assert isinstance(s.data, OrderPlaced)
    order = facts.orders[s.data.order_id]
    if order.placed is None and s.source == f"shop/{s.data.shop_id}":
        order.placed = s.data


def _order_of(facts: Facts, s: Seen) -> OrderFacts:
    return facts.orders[s.data.order_id]  # type: ignore[attr-defined]


def _payment(facts: Facts, s: Seen) -> None:
    assert isinstance(s.data, PaymentConfirmed)
    order = _order_of(facts, s)
    if s.data.payment_ref not in order.payments:
        order.payments[s.data.payment_ref] = s.data
        order.payment_seen[s.data.payment_ref] = s.at


def _requested(facts: Facts, s: Seen) -> None:
    assert isinstance(s.data, SupplierOrderRequested)
    so_id = s.data.supplier_order_id
    if so_id not in facts.supplier_orders:
        facts.supplier_orders[so_id] = SoFacts(s.data, s.at)
        _order_of(facts, s).supplier_orders.append(so_id)


def _answer(facts: Facts, s: Seen) -> None:
    so = facts.supplier_orders.get(s.data.supplier_order_id)  # type: ignore[attr-defined]
    if so is None:
        return
    if isinstance(s.data, SupplierOrderAccepted) and so.accepted is None:
        so.accepted, so.accepted_seen = s.data, s.at
    elif isinstance(s.data, SupplierOrderRejected) and so.rejected is None:
        so.rejected, so.rejected_seen = s.data, s.at
    elif isinstance(s.data, SupplierOrderCancelled) and so.cancelled is None:
        so.cancelled, so.cancelled_seen = s.data, s.at


def _dispatched(facts: Facts, s: Seen) -> None:
    assert isinstance(s.data, ShipmentDispatched)
    key = (s.data.supplier_id, s.data.shipment_id)
    order = _order_of(facts, s)
    if key not in order.shipments:
        order.shipments[key] = s.data
        so = facts.supplier_orders.get(s.data.supplier_order_id)
        if so is not None:
            so.shipments.append(s.data)
            so.shipped_seen = min(so.shipped_seen or s.at, s.at)


def _shipment_end(facts: Facts, s: Seen) -> None:
    assert isinstance(s.data, ShipmentDelivered | ShipmentFailed)
    order = _order_of(facts, s)
    ends = order.delivered if isinstance(s.data, ShipmentDelivered) else order.failed
    ends.add((s.data.supplier_id, s.data.shipment_id))


def _status(facts: Facts, s: Seen) -> None:
    assert isinstance(s.data, OrderStatusChanged)
    order = _order_of(facts, s)
    if order.status is None or s.data.version > order.status.version:
        order.status = s.data


def _refund(facts: Facts, s: Seen) -> None:
    assert isinstance(s.data, RefundIssued)
    order = _order_of(facts, s)
    if all(r.refund_id != s.data.refund_id for r in order.refunds):
        order.refunds.append(s.data)


def _return(facts: Facts, s: Seen) -> None:
    assert isinstance(s.data, ReturnRequested)
    _order_of(facts, s).returns.setdefault(s.data.rma_id, s.data)


def _received(facts: Facts, s: Seen) -> None:
    assert isinstance(s.data, ReturnReceived)
    order = _order_of(facts, s)
    if all((r.rma_id, r.supplier_id) != (s.data.rma_id, s.data.supplier_id)
           for r in order.received):
        order.received.append(s.data)


def _cancel(facts: Facts, s: Seen) -> None:
    assert isinstance(s.data, OrderCancelled)
    _order_of(facts, s).cancels.append(s.data)


def _authorized(facts: Facts, s: Seen) -> None:
    assert isinstance(s.data, ReturnAuthorized)
    _order_of(facts, s).authorized.append(s.data)


def _ignore(facts: Facts, s: Seen) -> None:
    return None


_SORT: dict[type[Message], Callable[[Facts, Seen], None]] = {
    OrderPlaced: _placed, PaymentConfirmed: _payment, OrderCancelled: _cancel,
    ReturnRequested: _return, ReturnReceived: _received, ReturnAuthorized: _authorized,
    SupplierOrderRequested: _requested, SupplierOrderAccepted: _answer,
    SupplierOrderRejected: _answer, SupplierOrderCancelled: _answer,
    ShipmentDispatched: _dispatched, ShipmentDelivered: _shipment_end,
    ShipmentFailed: _shipment_end, OrderStatusChanged: _status, RefundIssued: _refund,
}


async def read_seen(settings: Settings, span: Span) -> list[Seen]:
    """Every valid event of :data:`TOPICS`, each CloudEvents (source, id) once, in
    each partition's order; records that do not decode are left out (the shops'
    garbled copies)."""
    reader = KafkaRangeReader(settings, timeout_s=120.0)
    out: list[Seen] = []
    ids: set[tuple[str, str]] = set()
    for topic in TOPICS:
        for partition in range(settings.kafka_topic_partitions):
            for rec in await reader.read(topic, partition, 0, 10**12):
                try:
                    event = decode(rec.value, key=rec.key, topic=topic)
                except DecodeError:
                    continue
                if (event.source, event.id) not in ids:
                    ids.add((event.source, event.id))
                    out.append(Seen(topic, span.at(rec.timestamp_ms or 0), event.source,
                                    event.data, event.id, event.causationid))
    return out
