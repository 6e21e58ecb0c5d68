"""The order agent: a thin adapter from Kafka + Postgres to ``agents.core.order_rules``.

Consumes ``shop.orders``, ``supplier.events`` (delivery exceptions,
``ShipmentFailed``, included), ``fulfillment.decisions`` and ``ops.commands``,
all keyed by order id, so one worker owns every event of an order. Publishes
what the rules derive, each on its own type's topic: commands to the allocation
agent (``AllocateLine``, ``ReleaseLine``, ``CommitLine``), supplier orders, and on
``fulfillment.order-status`` the status snapshots, refunds and the supplier facts
the order accepted (``ShipmentUpdated``, ``SupplierOrderUpdated``,
``ReturnUpdated``). What a step derives is stamped with the order's clock and carries its
step (the ``sequence`` and ``causationid`` extensions: the timeline's order). State of
record: one ``order_state`` row per order (the document, the next deadline,
the order's partition), locked ``FOR UPDATE`` in the batch transaction of the
:class:`~pipeline.runtime.processor.Processor`. Deadlines are fired by
:class:`DeadlineRunner` through the same discipline (state + outbox in one
transaction) for the partitions this worker owns.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from agents.core import order_rules
from agents.core.orders import Held, Order, Output, Policy, Refused
from events.base import Message
from events.codec import DecodeError
from events.envelope import MESSAGE_TYPES, CloudEvent
from events.topics import DECISIONS, OPS_COMMANDS, SHOP_ORDERS, SUPPLIER_EVENTS
from pipeline.runtime.processor import CauseKey, Processor
from pipeline.runtime.records import Incoming, dead_letter, derive, failed
from pipeline.runtime.schema import order_state
from pipeline.runtime.settings import Settings
from pipeline.runtime.stream import highwater_of

log = logging.getLogger(__name__)

CONSUMER = "orders"
TOPICS = (SHOP_ORDERS, SUPPLIER_EVENTS, DECISIONS, OPS_COMMANDS)
_ORDER = TypeAdapter(Order)


def policy_of(settings: Settings) -> Policy:
    return Policy(
        payment_window=timedelta(minutes=settings.payment_window_minutes),
        return_window=timedelta(days=settings.return_window_days),
        max_reroutes=settings.max_reroutes_per_line,
        hold_timeout=timedelta(minutes=settings.held_event_timeout_minutes),
        max_held=settings.max_held_events_per_order,
        held_payment_window=timedelta(minutes=settings.held_payment_window_minutes),
        backorder_window=timedelta(days=settings.backorder_window_days),
        sla_grace=timedelta(minutes=settings.sla_grace_minutes),
        default_transit=timedelta(days=settings.default_transit_days),
        late_grace=timedelta(days=settings.late_delivery_grace_days),
        max_reships=settings.max_reships_per_line,
    )


# --- state <-> JSON -------------------------------------------------------------

def dump_order(order: Order) -> dict[str, Any]:
    """The order as a JSON document; held messages keep their type to be rebuilt."""
    doc: dict[str, Any] = _ORDER.dump_python(replace(order, held=()), mode="json")
    for line in doc["lines"].values():  # sets as sorted lists: the same order gives
        line["excluded"] = sorted(line["excluded"])  # the same document in any process
    for ret in doc["returns"].values():
        ret["received"] = sorted(ret["received"])
    doc["held"] = [{"type": h.message.TYPE, "data": h.message.model_dump(mode="json"),
                    "time": h.time.isoformat(), "held_at": h.held_at.isoformat(),
                    "sender": h.sender}
                   for h in order.held]
    return doc


def load_order(doc: dict[str, Any]) -> Order:
    held = tuple(
        Held(MESSAGE_TYPES[h["type"]].model_validate_json(json.dumps(h["data"])),
             datetime.fromisoformat(h["time"]), datetime.fromisoformat(h["held_at"]),
             h.get("sender"))
        for h in doc.get("held", ()))
    order = _ORDER.validate_python({**doc, "held": ()})
    return replace(order, held=held)


async def lock_orders(conn: AsyncConnection, order_ids: set[str]) -> dict[str, Order]:
    rows = await conn.execute(
        select(order_state.c.order_id, order_state.c.state)
        .where(order_state.c.order_id.in_(order_ids)).order_by(order_state.c.order_id)
        .with_for_update())
    found = {oid: load_order(doc) for oid, doc in rows}
    return {oid: found.get(oid) or Order(oid) for oid in order_ids}


async def save_orders(conn: AsyncConnection, orders: Sequence[tuple[Order, int]],
                      policy: Policy) -> None:
    if not orders:
        return
    stmt = insert(order_state)
    await conn.execute(stmt.on_conflict_do_update(
        index_elements=[order_state.c.order_id],
        set_={"state": stmt.excluded.state, "next_deadline": stmt.excluded.next_deadline,
              "updated_at": stmt.excluded.updated_at}),
        [{"order_id": o.order_id, "partition": p, "state": dump_order(o),
          "next_deadline": order_rules.next_deadline(o, policy)} for o, p in orders])


# --- events -> decisions -----------------------------------------------------------

def _order_id(message: Message) -> str:
    return str(getattr(message, "order_id"))  # noqa: B009 (every consumed type has one)


def messages_of(outputs: list[Output]) -> list[Message]:
    return [o for o in outputs if not isinstance(o, Refused)]


def events_of(inc: Incoming, order: Order, outputs: list[Output],
              consumer: str) -> list[CloudEvent]:
    """What applying ``inc`` (giving ``order``) publishes: its derived messages at the
    order's clock and step, then one dead letter per refusal (at ``inc``'s position).
    Shared by the handler and replaying checkers."""
    refusals = [o for o in outputs if isinstance(o, Refused)]
    return [*derive(inc.event, messages_of(outputs), consumer, time=order.clock,
                    step=order.step),
            *(dead_letter(inc.record, DecodeError("data", "refused", r.reason), consumer,
                          index=i, original=r.held) for i, r in enumerate(refusals))]


class OrderHandler:
    """Applies shop, supplier and allocation events to per-order state, in order."""

    def __init__(self, policy: Policy, consumer: str = CONSUMER) -> None:
        self.policy = policy
        self.consumer = consumer

    async def handle(self, conn: AsyncConnection, batch: Sequence[Incoming]) -> list[CloudEvent]:
        """Steps: 1. lock the orders' rows; 2. decide each event in order; 3. save the
        changed orders with their next deadline; 4. return derived events and the
        dead letters of refused events."""
        orders = await lock_orders(conn, {_order_id(inc.event.data) for inc in batch})
        partitions: dict[str, int] = {}
        out: list[CloudEvent] = []
        for inc in batch:
            oid = _order_id(inc.event.data)
            try:
                orders[oid], outputs = order_rules.decide(orders[oid], inc.event.data,
                                                          inc.event.time, self.policy,
                                                          inc.event.source)
            except Exception as exc:  # a bug or an unforeseen input: park it, go on
                out.append(failed(inc.record, exc, self.consumer))
                continue
            partitions[oid] = inc.record.partition
            out += events_of(inc, orders[oid], outputs, self.consumer)
        await save_orders(conn, [(orders[o], p) for o, p in sorted(partitions.items())],
                          self.policy)
        return out


class DeadlineRunner:
    """Fires due deadlines of the orders in the partitions this worker owns: the
    :data:`~pipeline.runtime.processor.LocalWork` of the order agent's processor.

    Per call (inside the processor's transaction, partitions locked and fenced):
    locks up to ``limit`` due rows (``SKIP LOCKED``, so two workers never fire the
    same order at once), applies ``due`` at each deadline instant up to now, saves,
    and returns the outputs with one cause key per firing. Derived ids come from
    (order, deadline instant): a crash before commit re-fires byte-identically.
    """

    def __init__(self, policy: Policy, clock: Callable[[], datetime],
                 consumer: str = CONSUMER, limit: int = 200) -> None:
        self.policy, self.clock = policy, clock
        self.consumer, self.limit = consumer, limit

    async def __call__(self, conn: AsyncConnection, partitions: set[int],
                       ) -> tuple[list[CloudEvent], list[CauseKey]]:
        """Fire what is due in ``partitions``: (events, (source, id) of each firing)."""
        now = self.clock()
        rows = (await conn.execute(
            select(order_state.c.order_id, order_state.c.partition, order_state.c.state)
            .where(order_state.c.partition.in_(partitions), order_state.c.next_deadline <= now)
            .order_by(order_state.c.next_deadline).limit(self.limit)
            .with_for_update(skip_locked=True))).all()
        changed, out, fired = [], [], []
        for _, partition, doc in rows:
            order, events, instants = self._fire(load_order(doc), now)
            changed.append((order, partition))
            out += events
            fired += [(CLOCK_SOURCE, clock_event_id(order.order_id, at, n)) for at, n in instants]
        await save_orders(conn, changed, self.policy)
        return out, fired

    def _fire(self, order: Order, now: datetime,
              ) -> tuple[Order, list[CloudEvent], list[tuple[datetime, int]]]:
        """Fire each deadline instant up to ``now``: (order, events, (instant, n) fired)."""
        out: list[CloudEvent] = []
        instants: list[tuple[datetime, int]] = []
        deadline = order_rules.next_deadline(order, self.policy)
        while deadline is not None and deadline <= now:
            order, outputs, n = order_rules.fire(order, deadline, self.policy)
            if n < 0:  # nothing to do at this instant
                break
            instants.append((deadline, n))
            out += fired_events(order, deadline, n, outputs, self.consumer)
            following = order_rules.next_deadline(order, self.policy)
            if following == deadline:  # nothing changed at this instant: stop
                break
            deadline = following
        return order, out, instants


#: The CloudEvents source of deadline firings in ``processed_events``.
CLOCK_SOURCE = "dropship/clock"


def clock_event_id(order_id: str, instant: datetime, n: int) -> str:
    """The ``processed_events`` id of the ``n``-th firing of ``order_id``'s deadlines,
    at ``instant`` (see :func:`agents.core.order_rules.fire`)."""
    return f"{instant.isoformat()}|{n}|{order_id}"


def parse_clock_event_id(event_id: str) -> tuple[str, datetime, int]:
    """(order id, instant, n) of a :func:`clock_event_id`."""
    instant, n, order_id = event_id.split("|", 2)
    return order_id, datetime.fromisoformat(instant), int(n)


def deadline_cause(order_id: str, instant: datetime, n: int) -> DeadlineCause:
    """What the events of the order's ``n``-th firing derive their ids from."""
    return DeadlineCause(f"deadline:{order_id}:{instant.strftime('%Y%m%dT%H%M%S.%fZ')}:{n}",
                         instant)


def fired_events(order: Order, instant: datetime, n: int, outputs: list[Output],
                 consumer: str) -> list[CloudEvent]:
    """What the order's ``n``-th firing, at ``instant``, publishes (at the order's clock
    and step). Shared by the deadline runner and replaying checkers."""
    return derive(deadline_cause(order.order_id, instant, n), messages_of(outputs), consumer,
                  time=order.clock, step=order.step)


@dataclass(frozen=True)
class DeadlineCause:
    """The cause of deadline outputs for :func:`derive`: the clock at an instant."""

    id: str
    time: datetime
    source: str = CLOCK_SOURCE


#: How recent a partition's fetched high-water mark must be for its deadlines to fire
#: (the client long-polls every partition it fetches at least twice a second).
FRESH_S = 1.0


async def caught_up(processor: Processor, consumer: Any, partitions: set[int]) -> set[int]:
    """The partitions whose every input topic is applied up to its high-water mark.

    A deadline must not beat an event already waiting in Kafka (a payment sent a
    minute before the window closed, read late because the worker lags). So the
    high-water mark must have been fetched within :data:`FRESH_S`: under a backlog
    Faust stops fetching a partition, and its last mark would not count what was
    written since. Where the mark is unknown or older, the partition waits.
    """
    wanted = [(topic, p) for p in partitions for topic in TOPICS]
    done = await processor.checkpoints(wanted)
    ready = set(partitions)
    for topic, p in wanted:
        highwater = highwater_of(consumer, (topic, p), fresh_s=FRESH_S)
        if highwater is None or done[(topic, p)] < highwater - 1:
            ready.discard(p)
    return ready


def register_deadlines(app: Any, runner: DeadlineRunner, processor: Processor,
                       every_s: float) -> None:
    """A Faust timer firing due deadlines, through the order agent's processor, for
    the partitions this worker owns and has caught up on."""

    async def fire_deadlines() -> None:
        owned = {tp.partition for tp in app.consumer.assignment() if tp.topic == SHOP_ORDERS}
        try:
            ready = await caught_up(processor, app.consumer, owned)
            await processor.apply_local(TOPICS, ready, runner)
        except Exception:
            log.exception("orders: firing deadlines failed; retried at the next tick")

    app.timer(every_s, name="orders.deadlines")(fire_deadlines)
