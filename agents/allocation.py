"""The allocation agent: a thin adapter from Kafka + Postgres to ``agents.core.allocation``.

Consumes ``fulfillment.allocation`` (AllocateLine, CommitLine, ReleaseLine) and
``supplier.catalog`` (offers, stock reports), both keyed by sku, so every
decision about one sku is taken in one partition by one worker. State of
record: one ``allocation_state`` row per sku, locked (``FOR UPDATE``) for the
batch transaction the :class:`~pipeline.runtime.processor.Processor` runs.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, func, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from agents.core import allocation as core
from events.envelope import CloudEvent
from events.topics import ALLOCATION, SUPPLIER_CATALOG
from pipeline.runtime.records import Incoming, derive, failed
from pipeline.runtime.schema import allocation_lines, allocation_state
from pipeline.runtime.settings import Settings

CONSUMER = "allocation"
TOPICS = (ALLOCATION, SUPPLIER_CATALOG)


# --- state <-> JSON ----------------------------------------------------------

#: 3: lines are rows of ``allocation_lines`` (the document keeps offers, stock and
#: counters); 2: lines inside the document, reservations [supplier, quantity,
#: committed_at | null], lines keep their country, queue time and overtakes;
#: 1 (no "format"): reservations [supplier, quantity, budget_as_of].
FORMAT = 3
WHOLE = 2  # the format of :func:`dump_state`'s whole document (lines inside)


def dump_line(ln: core.Line) -> dict[str, Any]:
    """One line as JSON (a row of ``allocation_lines``, or an entry of a whole document)."""
    return {"order_id": ln.order_id, "line_id": ln.line_id, "requested": ln.requested,
            "arrival": ln.arrival, "backordered": ln.backordered,
            "excluded": sorted(ln.excluded), "pinned": ln.pinned, "ship_to": ln.ship_to,
            "queued_at": ln.queued_at.isoformat() if ln.queued_at else None,
            "overtakes": ln.overtakes,
            "reservations": [[r.supplier_id, r.quantity,
                              r.committed_at.isoformat() if r.committed_at else None]
                             for r in ln.reservations]}


def dump_sku(state: core.SkuState) -> dict[str, Any]:
    """The sku's document without its lines (format 3; the lines are rows)."""
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
        "stock": {sid: {"available": s.available, "as_of": iso(s.as_of), "used": s.used,
                        "held": [[iso(at), n] for at, n in s.held]}
                  for sid, s in sorted(state.stock.items())},
        "next_arrival": state.next_arrival,
        "version": state.version,
        "clock": state.clock.isoformat() if state.clock else None,
    }


def dump_state(state: core.SkuState) -> dict[str, Any]:
    """The whole state as one JSON document, lines inside (format 2; stable: sorted
    keys and lines). What checkers and tests compare; the agent stores
    :func:`dump_sku` and :func:`dump_line` rows instead."""
    return {**dump_sku(state), "format": WHOLE,
            "lines": [dump_line(ln) for _, ln in sorted(state.lines.items())]}


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


def _line(ln: dict[str, Any], stock: dict[str, core.Stock], old: bool) -> core.Line:
    return core.Line(
        ln["order_id"], ln["line_id"], ln["requested"], ln["arrival"],
        _reservations(ln["reservations"], stock, old),
        ln["backordered"], frozenset(ln["excluded"]), ln.get("pinned"), ln.get("ship_to"),
        _ts(ln.get("queued_at")), ln.get("overtakes", 0))


def load_state(sku: str, doc: dict[str, Any],
               lines: list[dict[str, Any]] | None = None) -> core.SkuState:
    """The inverse of :func:`dump_state` (``doc`` holds the lines), or of :func:`dump_sku`
    plus :func:`dump_line` rows (``lines``). Also reads documents written before format 2
    (their lines ship anywhere, have no queue time and no overtakes)."""
    old = doc.get("format", 1) < 2
    offers = {sid: _offer(sid, o) for sid, o in doc["offers"].items()}
    stock = {sid: core.Stock(s["available"], datetime.fromisoformat(s["as_of"]), s["used"],
                             tuple((datetime.fromisoformat(at), n)
                                   for at, n in s.get("held", ())))
             for sid, s in doc["stock"].items()}
    raw = [*doc.get("lines", ()), *(lines or ())]
    return core.SkuState(sku, offers, stock,
                         {(ln["order_id"], ln["line_id"]): _line(ln, stock, old) for ln in raw},
                         doc["next_arrival"], doc.get("version", 0), _ts(doc.get("clock")))


async def _read(conn: AsyncConnection, skus: Iterable[str] | None,
                ) -> tuple[dict[str, core.SkuState], set[str]]:
    """The stored states of ``skus`` (all when None), and the skus whose document
    still holds its lines (written before format 3)."""
    docs = select(allocation_state.c.sku, allocation_state.c.state)
    rows = select(allocation_lines.c.sku, allocation_lines.c.line)
    if skus is not None:
        wanted = set(skus)
        docs = docs.where(allocation_state.c.sku.in_(wanted))
        rows = rows.where(allocation_lines.c.sku.in_(wanted))
    lines: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for sku, line in await conn.execute(rows):
        lines[sku].append(line)
    states: dict[str, core.SkuState] = {}
    inline: set[str] = set()
    for sku, doc in await conn.execute(docs):
        states[sku] = load_state(sku, doc, lines.get(sku))
        if "lines" in doc:
            inline.add(sku)
    return states, inline


async def read_states(conn: AsyncConnection,
                      skus: Iterable[str] | None = None) -> dict[str, core.SkuState]:
    """The stored state of ``skus`` (all when None), lines included; no lock. For
    ops, checkers and tests; the agent itself goes through :class:`StateStore`."""
    return (await _read(conn, skus))[0]


class StateStore:
    """Loads, locks and saves per-sku state for the allocation handler, with a cache.

    Contract: called only inside the batch transaction. :meth:`lock` takes the
    skus' row locks (``FOR UPDATE``, in sku order) and returns their state; a sku
    whose stored ``rev`` is the one this store last wrote (or read) is served
    from memory, any other is read from the database. :meth:`save` writes the
    changed document and only the changed, added or removed line rows, under a
    fresh random ``rev``, and caches the result. If the transaction then fails
    (a checkpoint conflict, a crash), the database keeps the old ``rev``, which no
    longer matches the cache: the next batch reads the stored state again. So
    the cache can never serve a state that was not committed, whoever wrote since.
    """

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._cache: OrderedDict[str, tuple[int, core.SkuState]] = OrderedDict()
        self._inline: set[str] = set()  # read from a document with its lines inside
        self.hits = self.misses = 0

    async def lock(self, conn: AsyncConnection, skus: set[str]) -> dict[str, core.SkuState]:
        """1. lock the rows and read their revs; 2. take cached states whose rev matches;
        3. read the others (document and line rows); missing skus start empty."""
        revs = dict((await conn.execute(
            select(allocation_state.c.sku, allocation_state.c.rev)
            .where(allocation_state.c.sku.in_(skus)).order_by(allocation_state.c.sku)
            .with_for_update())).all())
        states: dict[str, core.SkuState] = {}
        for sku in skus:
            cached = self._cache.get(sku)  # cached revs are never None
            if cached is not None and cached[0] == revs.get(sku):
                states[sku] = cached[1]
                self._cache.move_to_end(sku)
        stale = {sku for sku in revs if sku not in states}
        self.hits += len(states)
        self.misses += len(stale)
        if stale:
            loaded, inline = await _read(conn, stale)
            self._inline |= inline
            states.update(loaded)
            for sku, state in loaded.items():
                if revs[sku] is not None:
                    self._remember(sku, revs[sku], state)
        return {sku: states.get(sku) or core.SkuState(sku) for sku in skus}

    async def save(self, conn: AsyncConnection,
                   changes: Sequence[tuple[core.SkuState, core.SkuState]]) -> None:
        """Write each (before, after) pair: the document, and the line rows that differ
        (a line object the core did not replace is unchanged: the state is immutable)."""
        if not changes:
            return
        revs = {after.sku: secrets.randbits(63) for _, after in changes}
        stmt = insert(allocation_state)
        await conn.execute(stmt.on_conflict_do_update(
            index_elements=[allocation_state.c.sku],
            set_={"state": stmt.excluded.state, "rev": stmt.excluded.rev,
                  "updated_at": func.now()},
        ), [{"sku": a.sku, "state": dump_sku(a), "rev": revs[a.sku]} for _, a in changes])
        upserts, gone = _line_changes(changes, self._inline)
        if upserts:
            ins = insert(allocation_lines)
            await conn.execute(ins.on_conflict_do_update(
                index_elements=[allocation_lines.c.sku, allocation_lines.c.order_id,
                                allocation_lines.c.line_id],
                set_={"line": ins.excluded.line}), upserts)
        if gone:
            await conn.execute(delete(allocation_lines).where(
                tuple_(allocation_lines.c.sku, allocation_lines.c.order_id,
                       allocation_lines.c.line_id).in_(gone)))
        for _, after in changes:
            self._inline.discard(after.sku)
            self._remember(after.sku, revs[after.sku], after)

    def _remember(self, sku: str, rev: int, state: core.SkuState) -> None:
        self._cache[sku] = (rev, state)
        self._cache.move_to_end(sku)
        while len(self._cache) > self.limit:
            self._cache.popitem(last=False)


def _line_changes(changes: Sequence[tuple[core.SkuState, core.SkuState]], inline: set[str],
                  ) -> tuple[list[dict[str, Any]], list[tuple[str, str, str]]]:
    """Rows to upsert and keys to delete. A state first read from a document with its
    lines inside (format < 3) writes all its lines: they move to rows."""
    upserts: list[dict[str, Any]] = []
    gone: list[tuple[str, str, str]] = []
    for before, after in changes:
        moved = before.lines if before.sku in inline else {}
        for key, ln in after.lines.items():
            if key in moved or before.lines.get(key) is not ln:
                upserts.append({"sku": after.sku, "order_id": ln.order_id,
                                "line_id": ln.line_id, "line": dump_line(ln)})
        gone.extend((after.sku, *key) for key in before.lines.keys() - after.lines.keys())
    return upserts, gone


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
        self.store = StateStore()

    async def handle(self, conn: AsyncConnection, batch: Sequence[Incoming]) -> list[CloudEvent]:
        """Steps: 1. lock the skus' rows (state from the cache or the database);
        2. apply each event with the pure core; 3. save the changed rows; 4. return
        the derived events (ids from causes)."""
        before = await self.store.lock(conn, {inc.event.subject for inc in batch})
        states = dict(before)
        out: list[CloudEvent] = []
        for inc in batch:
            sku = inc.event.subject
            states[sku], events = apply_one(states[sku], inc, self.consumer, self.rules)
            out.extend(events)
        await self.store.save(conn, [(before[s], states[s]) for s in sorted(states)
                                     if states[s] is not before[s]])
        return out
