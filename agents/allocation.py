"""The allocation agent: a thin adapter from Kafka + Postgres to ``agents.core.allocation``.

Consumes ``fulfillment.allocation`` (AllocateLine, CommitLine, ReleaseLine) and
``supplier.catalog`` (offers, stock reports), both keyed by sku, so every
decision about one sku is taken in one partition by one worker. State of
record: one ``allocation_state`` row per sku, locked (``FOR UPDATE``) for the
batch transaction the :class:`~pipeline.transactional.Processor` runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from agents.core import allocation as core
from events.envelope import CloudEvent
from events.topics import ALLOCATION, SUPPLIER_CATALOG
from pipeline.schema import allocation_state
from pipeline.settings import Settings
from pipeline.transactional import Incoming, derive, failed

CONSUMER = "allocation"
TOPICS = (ALLOCATION, SUPPLIER_CATALOG)


# --- state <-> JSON ----------------------------------------------------------

#: 2: reservations are [supplier, quantity, committed_at | null] and lines keep their
#: country, queue time and overtakes; 1 (no "format"): [supplier, quantity, budget_as_of].
FORMAT = 2


def dump_state(state: core.SkuState) -> dict[str, Any]:
    """A JSON document of the state (stable: sorted keys and lines)."""
    iso = datetime.isoformat
    return {
        "format": FORMAT,
        "offers": {sid: {"priority": o.priority, "unit_cost": str(o.unit_cost),
                         "currency": o.currency, "lead_time_days": o.lead_time_days,
                         "active": o.active, "allow_split": o.allow_split,
                         "updated_at": iso(o.updated_at),
                         "acknowledge_sla_hours": o.acknowledge_sla_hours,
                         "dispatch_sla_hours": o.dispatch_sla_hours,
                         "destinations": [[c, str(cost), days] for c, (cost, days)
                                          in sorted(o.destinations.items())]}
                   for sid, o in sorted(state.offers.items())},
        "stock": {sid: {"available": s.available, "as_of": iso(s.as_of), "used": s.used}
                  for sid, s in sorted(state.stock.items())},
        "lines": [
            {"order_id": ln.order_id, "line_id": ln.line_id, "requested": ln.requested,
             "arrival": ln.arrival, "backordered": ln.backordered,
             "excluded": sorted(ln.excluded), "pinned": ln.pinned, "ship_to": ln.ship_to,
             "queued_at": iso(ln.queued_at) if ln.queued_at else None,
             "overtakes": ln.overtakes,
             "reservations": [[r.supplier_id, r.quantity,
                               iso(r.committed_at) if r.committed_at else None]
                              for r in ln.reservations]}
            for _, ln in sorted(state.lines.items())
        ],
        "next_arrival": state.next_arrival,
        "version": state.version,
        "clock": state.clock.isoformat() if state.clock else None,
    }


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _offer(sid: str, o: dict[str, Any]) -> core.Offer:
    return core.Offer(sid, o["priority"], Decimal(o["unit_cost"]), o["currency"],
                      o["lead_time_days"], o["active"], o["allow_split"],
                      datetime.fromisoformat(o["updated_at"]), o["acknowledge_sla_hours"],
                      o["dispatch_sla_hours"],
                      {c: (Decimal(cost), days) for c, cost, days in o.get("destinations", [])})


def _reservations(raw: list[list[Any]], stock: dict[str, core.Stock],
                  old: bool) -> tuple[core.Reservation, ...]:
    """Format 1 stored the report a reservation was counted against: one made under its
    supplier's current report was not counted by it (uncommitted); one made under an
    earlier report was counted by every report since, as if accepted at that time."""
    out = []
    for sid, qty, when in raw:
        at = _ts(when)
        if old:
            current = stock.get(sid)
            at = None if current is None or at is None or at >= current.as_of else at
        out.append(core.Reservation(sid, qty, at))
    return tuple(out)


def load_state(sku: str, doc: dict[str, Any]) -> core.SkuState:
    """The inverse of :func:`dump_state`; also reads documents written before format 2
    (their lines ship anywhere, have no queue time and no overtakes)."""
    old = doc.get("format", 1) < FORMAT
    offers = {sid: _offer(sid, o) for sid, o in doc["offers"].items()}
    stock = {sid: core.Stock(s["available"], datetime.fromisoformat(s["as_of"]), s["used"])
             for sid, s in doc["stock"].items()}
    lines = {
        (ln["order_id"], ln["line_id"]): core.Line(
            ln["order_id"], ln["line_id"], ln["requested"], ln["arrival"],
            _reservations(ln["reservations"], stock, old),
            ln["backordered"], frozenset(ln["excluded"]), ln.get("pinned"), ln.get("ship_to"),
            _ts(ln.get("queued_at")), ln.get("overtakes", 0))
        for ln in doc["lines"]
    }
    return core.SkuState(sku, offers, stock, lines, doc["next_arrival"], doc.get("version", 0),
                         _ts(doc.get("clock")))


async def lock_states(conn: AsyncConnection, skus: set[str]) -> dict[str, core.SkuState]:
    """Load and lock the state rows of ``skus`` (missing ones start empty)."""
    rows = await conn.execute(
        select(allocation_state.c.sku, allocation_state.c.state)
        .where(allocation_state.c.sku.in_(skus)).order_by(allocation_state.c.sku)
        .with_for_update()
    )
    found = {sku: load_state(sku, doc) for sku, doc in rows}
    return {sku: found.get(sku) or core.SkuState(sku) for sku in skus}


async def save_states(conn: AsyncConnection, states: Sequence[core.SkuState]) -> None:
    if not states:
        return
    stmt = insert(allocation_state)
    await conn.execute(stmt.on_conflict_do_update(
        index_elements=[allocation_state.c.sku],
        set_={"state": stmt.excluded.state, "updated_at": stmt.excluded.updated_at},
    ), [{"sku": s.sku, "state": dump_state(s)} for s in states])


# --- the handler -----------------------------------------------------------------

def rules_of(settings: Settings) -> core.Rules:
    """The allocation rules from settings: DROPSHIP_FX_RATES ("USD=1,EUR=1.08") and
    DROPSHIP_BACKORDER_OVERTAKES."""
    rates = dict(pair.split("=") for pair in settings.fx_rates.split(","))
    return core.Rules(fx_rates={code: Decimal(value) for code, value in rates.items()},
                      backorder_overtakes=settings.backorder_overtakes)


def apply_one(state: core.SkuState, inc: Incoming, consumer: str,
              rules: core.Rules = core.DEFAULT_RULES) -> tuple[core.SkuState, list[CloudEvent]]:
    """Apply one event to its sku's state: (new state, what it publishes). If the core
    raises (a bug or an unforeseen input), the state stays and the event is dead-lettered.
    Shared by the handler and replaying checkers (which pass the worker's rules)."""
    try:
        new, payloads = core.apply(state, inc.event.data, inc.event.time, rules)
    except Exception as exc:  # park it, go on
        return state, [failed(inc.record, exc, consumer)]
    return new, derive(inc.event, payloads, consumer, time=new.clock,
                       sequence=inc.event.sequence)  # decisions keep their command's place


class AllocationHandler:
    """Applies catalog events and allocation commands to per-sku state, in order."""

    def __init__(self, consumer: str = CONSUMER,
                 rules: core.Rules = core.DEFAULT_RULES) -> None:
        self.consumer, self.rules = consumer, rules

    async def handle(self, conn: AsyncConnection, batch: Sequence[Incoming]) -> list[CloudEvent]:
        """Steps: 1. lock the skus' rows; 2. apply each event with the pure core;
        3. save the changed states; 4. return the derived events (ids from causes)."""
        states = await lock_states(conn, {inc.event.subject for inc in batch})
        changed: dict[str, core.SkuState] = {}
        out: list[CloudEvent] = []
        for inc in batch:
            sku = inc.event.subject
            state, events = apply_one(states[sku], inc, self.consumer, self.rules)
            if state is not states[sku]:
                states[sku] = changed[sku] = state
            out.extend(events)
        await save_states(conn, [changed[s] for s in sorted(changed)])
        return out
