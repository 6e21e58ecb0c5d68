"""Allocation decisions for one sku: pure functions over plain state (no I/O).

The allocation agent calls these with the state it loaded for a sku and the
command or catalog event it consumed; each returns the new state and the
events to publish. Nothing here reads a clock: :func:`apply` runs each
operation at ``max(cause time, the sku's clock)`` and keeps that as the sku's
clock, so no decision is stamped earlier than anything the sku had applied.
The rules (ranking, splitting, failover, backorders and their overtake bound,
stock accounting) are documented with worked examples in ``docs/allocation.md``.

Stock accounting (the stock contract): a supplier's budget for the sku is its
latest stock report, ``available`` units free as of ``as_of`` after every supplier
order the supplier had accepted by then. ``used`` is the units of live
reservations at that supplier the report does not count: not accepted
(``committed_at`` None) or accepted after ``as_of``. What may still be allocated
there is ``max(0, available - used)``. ``used`` is kept incrementally: a new report
recomputes it; a reservation adds to it; a CommitLine accepted by ``as_of``, or
the release of an uncounted reservation, takes from it. An out-of-stock rejection
makes the budget 0 as of the rejection, until a later report.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from agents.core.allocation_model import (
    DEFAULT_RULES,
    LineKey,
    Offer,
    Reservation,
    Rules,
    SkuState,
    Stock,
    backorder_reason,
    candidates,
    oversold,
    ranked,
    uncounted,
    usable,
)
from agents.core.allocation_model import Line as Line
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
from events.base import Event
from events.catalog import StockLevelReported, SupplierOfferUpdated
from events.types import Money

__all__ = ["DEFAULT_RULES", "Decision", "Line", "LineKey", "Offer", "Reservation", "Rules",
           "SkuState", "Stock", "allocate", "apply", "apply_offer", "apply_stock",
           "candidates", "commit", "oversold", "ranked", "release"]

Decision = tuple[SkuState, list[Event]]


# --- filling -----------------------------------------------------------------

@dataclass
class _Fill:
    """Mutable scratch of one operation: the state being built and its events."""

    state: SkuState
    now: datetime
    rules: Rules
    events: list[Event] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)
    overtakes: dict[LineKey, int] = field(default_factory=dict)  # counts changed so far
    usable: dict[LineKey, frozenset[str]] = field(default_factory=dict)

    def take(self, line: Line, need: int, blocked: set[str]) -> tuple[Line, int, set[str]]:
        """Reserve up to ``need`` units for ``line`` from its ranked candidates, never from
        ``blocked`` suppliers (kept for a line ahead); returns the suppliers taken from."""
        taken: set[str] = set()
        holders = {r.supplier_id for r in line.reservations}
        for offer, route in candidates(self.state, line, self.rules):
            stock = self.state.stock.get(offer.supplier_id)
            if need == 0 or offer.supplier_id in blocked or stock is None:
                continue
            qty = min(need, stock.remaining)
            split = bool(holders - {offer.supplier_id}) or qty < need
            if qty <= 0 or (split and not offer.allow_split):
                continue  # a no-split offer serves the whole rest of a line it alone holds
            self._set_stock(offer.supplier_id, replace(stock, used=stock.used + qty))
            line = replace(line, reservations=(*line.reservations,
                                               Reservation(offer.supplier_id, qty)))
            need -= qty
            holders.add(offer.supplier_id)
            taken.add(offer.supplier_id)
            self.events.append(LineAllocated(
                order_id=line.order_id, line_id=line.line_id, sku=self.state.sku,
                supplier_id=offer.supplier_id, quantity=qty,
                unit_cost=Money(amount=offer.unit_cost, currency=offer.currency),
                shipping_cost=Money(amount=route.shipping_cost, currency=offer.currency),
                transit_days=route.transit_days,
                acknowledge_sla_hours=offer.acknowledge_sla_hours,
                dispatch_sla_hours=offer.dispatch_sla_hours,
                queued_at=line.queued_at, allocated_at=self.now,
            ))
        return line, need, taken

    def count(self, key: LineKey) -> int:
        return self.overtakes.get(key, self.state.lines[key].overtakes)

    def could(self, line: Line) -> frozenset[str]:
        """The suppliers that could serve ``line``'s backorder (cached per operation)."""
        if line.key not in self.usable:
            self.usable[line.key] = usable(self.state, line, self.rules)
        return self.usable[line.key]

    def overtook(self, ahead: list[Line], taken: set[str], blocked: set[str]) -> None:
        """A later line took from ``taken``: each waiting line ahead that could use one of
        them counts an overtake; at the bound its suppliers are kept for it."""
        for waiting in ahead if taken else ():
            if self.could(waiting) & taken:
                self.overtakes[waiting.key] = self.count(waiting.key) + 1
                if self.overtakes[waiting.key] >= self.rules.backorder_overtakes:
                    blocked |= self.could(waiting)

    def ahead_of(self, line: Line) -> tuple[list[Line], set[str]]:
        """The waiting lines that arrived before ``line``, and the suppliers kept for
        those of them at the overtake bound."""
        ahead = [o for o in self.state.lines.values() if o.backordered and o.arrival < line.arrival]
        blocked: set[str] = set()
        for other in ahead:
            if self.count(other.key) >= self.rules.backorder_overtakes:
                blocked |= self.could(other)
        return ahead, blocked

    def retry_backorders(self) -> None:
        """Serve backordered lines in arrival order from whatever stock is free, keeping
        the overtake bound (docs/allocation.md, "Backorders")."""
        waiting = sorted((ln for ln in self.state.lines.values() if ln.backordered),
                         key=lambda ln: ln.arrival)
        ahead: list[Line] = []
        blocked: set[str] = set()
        for line in waiting:
            filled, still, taken = self.take(line, line.backordered, blocked)
            if taken:
                self.overtook(ahead, taken, blocked)
                filled = replace(filled, backordered=still)
                self._set_line(filled)
            if still:
                ahead.append(filled)
                if self.count(filled.key) >= self.rules.backorder_overtakes:
                    blocked |= self.could(filled)

    def _set_stock(self, supplier_id: str, stock: Stock) -> None:
        self.state = replace(self.state, stock={**self.state.stock, supplier_id: stock})
        self.touched.add(supplier_id)

    def _set_line(self, line: Line) -> None:
        lines = dict(self.state.lines)
        if line.requested == 0:
            lines.pop(line.key, None)
        else:
            lines[line.key] = line if line.backordered else replace(line, overtakes=0)
        if not line.backordered:  # served: a later wait counts afresh
            self.overtakes.pop(line.key, None)
        self.state = replace(self.state, lines=lines)

    def done(self) -> Decision:
        """The final state and events, with one stock event per touched supplier.

        Line decisions get the line's final backordered units (0 once the line is gone).
        """
        if self.overtakes:
            lines = dict(self.state.lines)
            for key, n in self.overtakes.items():
                if key in lines and lines[key].backordered:
                    lines[key] = replace(lines[key], overtakes=n)
            self.state = replace(self.state, lines=lines)
        for i, event in enumerate(self.events):
            if isinstance(event, LineAllocated | LineBackordered | LineReleased
                          | BackorderDropped):
                line = self.state.lines.get((event.order_id, event.line_id))
                after = line.backordered if line is not None else 0
                self.events[i] = event.model_copy(update={"backordered_after": after})
        if self.touched:
            self.state = replace(self.state, version=self.state.version + 1)
        for supplier_id in sorted(self.touched):
            stock = self.state.stock[supplier_id]
            self.events.append(SupplierStockChanged(
                supplier_id=supplier_id, sku=self.state.sku, version=self.state.version,
                reported_available=stock.available, reserved=stock.used,
                remaining=stock.remaining, report_as_of=stock.as_of, changed_at=self.now,
            ))
        return self.state, self.events


def _new_budget(fill: _Fill, supplier_id: str, available: int, as_of: datetime) -> None:
    """Replace a supplier's budget; ``used`` is recomputed against the new time, and
    released units it had accepted stay held unless the new report counts them."""
    old = fill.state.stock.get(supplier_id)
    stock = Stock(available, as_of)
    stock = replace(stock, held=tuple(h for h in (old.held if old else ())
                                      if not stock.counts_accepted(h[0])))
    used = uncounted(fill.state, supplier_id, stock) + stock.held_units
    fill._set_stock(supplier_id, replace(stock, used=used))


# --- operations ----------------------------------------------------------------

def apply_offer(state: SkuState, event: SupplierOfferUpdated, now: datetime,
                rules: Rules = DEFAULT_RULES) -> Decision:
    """Record a supplier's offer (older than the stored one: ignored), then serve backorders."""
    current = state.offers.get(event.supplier_id)
    if current is not None and event.updated_at < current.updated_at:
        return state, []
    offer = Offer(event.supplier_id, event.priority, event.unit_cost.amount,
                  event.unit_cost.currency, event.lead_time_days, event.active,
                  event.allow_split, event.updated_at, event.acknowledge_sla_hours,
                  event.dispatch_sla_hours,
                  {d.country: (d.shipping_cost, d.transit_days) for d in event.destinations})
    fill = _Fill(replace(state, offers={**state.offers, event.supplier_id: offer}), now, rules)
    fill.retry_backorders()
    return fill.done()


def apply_stock(state: SkuState, event: StockLevelReported, now: datetime,
                rules: Rules = DEFAULT_RULES) -> Decision:
    """A new budget from a stock report (not newer than the applied one: ignored):
    ``used`` becomes the live reserved units the report does not count. Then
    backorders are served."""
    current = state.stock.get(event.supplier_id)
    if current is not None and event.as_of <= current.as_of:
        return state, []
    fill = _Fill(state, now, rules)
    _new_budget(fill, event.supplier_id, event.available, event.as_of)
    fill.retry_backorders()
    return fill.done()


def allocate(state: SkuState, cmd: AllocateLine, now: datetime,
             rules: Rules = DEFAULT_RULES) -> Decision:
    """Reserve ``cmd.quantity`` more units for a line, with what it already waits for
    (so a no-split offer sees the whole rest of the line); backorder what nobody can
    fill (``LineBackordered`` names the units newly backordered).

    The line's excluded suppliers grow by ``cmd.excluded_suppliers`` and are never
    chosen for it again, unless ops pin the line to one of them (``cmd.supplier_id``):
    then only that supplier serves the line, now and for its backorder, until a
    command without a supplier unpins it. Suppliers kept for a waiting line ahead
    at its overtake bound are not used.
    """
    existing = state.lines.get((cmd.order_id, cmd.line_id))
    excluded = frozenset(cmd.excluded_suppliers)
    if existing is None:
        line = Line(cmd.order_id, cmd.line_id, cmd.quantity, state.next_arrival,
                    excluded=excluded, queued_at=now)
        state = replace(state, next_arrival=state.next_arrival + 1)
    else:
        line = replace(existing, requested=existing.requested + cmd.quantity,
                       excluded=existing.excluded | excluded)
    line = replace(line, pinned=cmd.supplier_id, ship_to=cmd.ship_to_country,
                   excluded=line.excluded - {cmd.supplier_id} if cmd.supplier_id else line.excluded)
    fill = _Fill(state, now, rules)
    ahead, blocked = fill.ahead_of(line)
    waited = line.backordered
    line, short, taken = fill.take(line, cmd.quantity + waited, blocked)
    fill.overtook(ahead, taken, blocked)
    line = replace(line, backordered=short)
    if short > waited:
        fill.events.append(LineBackordered(
            order_id=cmd.order_id, line_id=cmd.line_id, sku=state.sku, quantity=short - waited,
            reason=backorder_reason(fill.state, line), queued_at=line.queued_at,
            backordered_at=now,
        ))
    fill._set_line(line)
    return fill.done()


def commit(state: SkuState, cmd: CommitLine, now: datetime,
           rules: Rules = DEFAULT_RULES) -> Decision:
    """The supplier accepted up to ``cmd.quantity`` reserved units of the line at
    ``cmd.accepted_at``: its oldest uncommitted reservations there are marked so
    (split if partly). If the current report is as of ``accepted_at`` or later, it
    already counts them: ``used`` goes down and backorders are served. Unknown line
    or nothing left to commit: no-op, no events (a CommitLine is not answered)."""
    line = state.lines.get((cmd.order_id, cmd.line_id))
    if line is None:
        return state, []
    left, kept = cmd.quantity, []
    for res in line.reservations:
        if left == 0 or res.supplier_id != cmd.supplier_id or res.committed_at is not None:
            kept.append(res)
            continue
        qty = min(left, res.quantity)
        left -= qty
        kept.append(replace(res, quantity=qty, committed_at=cmd.accepted_at))
        if qty < res.quantity:
            kept.append(replace(res, quantity=res.quantity - qty))
    committed = cmd.quantity - left
    if committed == 0:
        return state, []
    fill = _Fill(state, now, rules)
    fill._set_line(replace(line, reservations=tuple(kept)))
    stock = state.stock.get(cmd.supplier_id)
    if stock is not None and cmd.accepted_at < stock.as_of:
        fill._set_stock(cmd.supplier_id, replace(stock, used=stock.used - committed))
        fill.retry_backorders()
    return fill.done()


def release(state: SkuState, cmd: ReleaseLine, now: datetime,
            rules: Rules = DEFAULT_RULES) -> Decision:
    """Give back a line's units: all, or up to ``cmd.quantity``, or only ``cmd.supplier_id``'s,
    or (``cmd.backorder_only``) only backordered units.

    With ``cmd.out_of_stock_at`` not earlier than the supplier's report (a rejection
    at the report's own instant is the later fact: the supplier said it after the
    report), first its budget becomes 0 as of that time (until a later report), so
    its units never go straight to a waiting line. Without a supplier, backordered
    units go first, then reservations, newest first. A released reservation the
    current report does not count gives its units back (``used`` goes down), unless
    the supplier had accepted it: it may ship before it hears of the release, so the
    units stay used (``held``) until its next report (not for ``cmd.returned``: units
    back on its shelf from a return); a counted one gives nothing (the supplier
    reports cancelled units again itself).
    The line asks for that much less.
    Releasing a supplier's units also excludes that supplier for the line (it
    rejected, missed its SLA, or the units came back), so the backorder retry that
    follows cannot hand them straight back. Freed stock then serves backorders.
    Unknown lines: no-op (except the out-of-stock budget).
    """
    line = state.lines.get((cmd.order_id, cmd.line_id))
    if cmd.backorder_only and cmd.supplier_id is None:
        return _drop_backorder(state, line, cmd, now, rules)
    fill = _Fill(state, now, rules)
    out = state.stock.get(cmd.supplier_id or "")
    if cmd.supplier_id and cmd.out_of_stock_at and (out is None
                                                    or cmd.out_of_stock_at >= out.as_of):
        _new_budget(fill, cmd.supplier_id, 0, cmd.out_of_stock_at)
    if line is None:
        return fill.done() if fill.touched else (state, [])
    if cmd.supplier_id is not None:
        line = replace(line, excluded=line.excluded | {cmd.supplier_id})
    budget = cmd.quantity if cmd.quantity is not None else line.requested
    dropped_backorder = 0
    if cmd.supplier_id is None:
        dropped_backorder = min(budget, line.backordered)
        budget -= dropped_backorder
    kept: list[Reservation] = []
    released = 0
    for res in reversed(line.reservations):
        if budget == 0 or (cmd.supplier_id is not None and res.supplier_id != cmd.supplier_id):
            kept.append(res)
            continue
        qty = min(budget, res.quantity)
        budget -= qty
        released += qty
        _return_units(fill, res, qty, cmd.returned)
        fill.events.append(LineReleased(
            order_id=line.order_id, line_id=line.line_id, sku=state.sku,
            supplier_id=res.supplier_id, quantity=qty, reason=cmd.reason, released_at=now,
        ))
        if qty < res.quantity:
            kept.append(replace(res, quantity=res.quantity - qty))
    fill._set_line(replace(
        line, reservations=tuple(reversed(kept)), backordered=line.backordered - dropped_backorder,
        requested=line.requested - released - dropped_backorder,
    ))
    fill.retry_backorders()
    return fill.done()


def _drop_backorder(state: SkuState, line: Line | None, cmd: ReleaseLine,
                    now: datetime, rules: Rules) -> Decision:
    """A ``backorder_only`` release: drop up to ``cmd.quantity`` backordered units (all
    without one); always answered, even for a line that is gone."""
    dropped = 0 if line is None else min(cmd.quantity or line.backordered, line.backordered)
    fill = _Fill(state, now, rules)
    if line is not None and dropped:
        fill._set_line(replace(line, backordered=line.backordered - dropped,
                               requested=line.requested - dropped))
    fill.events.append(BackorderDropped(
        order_id=cmd.order_id, line_id=cmd.line_id, sku=state.sku,
        requested=max(1, cmd.quantity or dropped), quantity=dropped, reason=cmd.reason,
        dropped_at=now))
    return fill.done()


def _return_units(fill: _Fill, res: Reservation, qty: int, returned: bool = False) -> None:
    """Released units the report does not count come back, unless the supplier had
    accepted them (and they did not come back to it: ``returned``): those stay used
    (``held``) until its next report."""
    stock = fill.state.stock.get(res.supplier_id)
    if stock is None or stock.counts(res):
        return
    if res.committed_at is not None and not returned:
        fill._set_stock(res.supplier_id, replace(stock, held=(*stock.held,
                                                              (res.committed_at, qty))))
    else:
        fill._set_stock(res.supplier_id, replace(stock, used=stock.used - qty))


def apply(state: SkuState, message: object, now: datetime,
          rules: Rules = DEFAULT_RULES) -> Decision:
    """Dispatch one consumed message to its operation, at ``max(now, the sku's clock)``,
    which becomes the sku's clock; other types change nothing."""
    if state.clock is not None and state.clock > now:
        now = state.clock
    state = replace(state, clock=now)
    if isinstance(message, AllocateLine):
        return allocate(state, message, now, rules)
    if isinstance(message, ReleaseLine):
        return release(state, message, now, rules)
    if isinstance(message, CommitLine):
        return commit(state, message, now, rules)
    if isinstance(message, StockLevelReported):
        return apply_stock(state, message, now, rules)
    if isinstance(message, SupplierOfferUpdated):
        return apply_offer(state, message, now, rules)
    return state, []
