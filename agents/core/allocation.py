"""Allocation decisions for one sku: pure functions over plain state (no I/O).

The allocation agent calls these with the state it loaded for a sku and the
command or catalog event it consumed; each returns the new state and the
events to publish. Nothing here reads a clock: :func:`apply` runs each
operation at ``max(cause time, the sku's clock)`` and keeps that as the sku's
clock, so no decision is stamped earlier than anything the sku had applied.
The rules (ranking, splitting, failover, backorders, stock accounting) are
documented with worked examples in ``docs/allocation.md``.

Stock accounting: a supplier's budget for the sku is its latest stock report
(``available`` as of ``as_of``); every reservation made under that report counts
against it (``used``), and ``used <= available`` always holds. A reservation
remembers the report it came from, so a release gives units back only to that
budget: units reserved before the latest report were already deducted by the
supplier when it reported.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal

from events.allocation import (
    AllocateLine,
    BackorderDropped,
    BackorderReason,
    LineAllocated,
    LineBackordered,
    LineReleased,
    ReleaseLine,
    SupplierStockChanged,
)
from events.base import Event
from events.catalog import StockLevelReported, SupplierOfferUpdated
from events.types import Money

LineKey = tuple[str, str]  # (order id, line id)


@dataclass(frozen=True)
class Offer:
    supplier_id: str
    priority: int
    unit_cost: Decimal
    currency: str
    lead_time_days: int
    active: bool
    allow_split: bool
    updated_at: datetime
    acknowledge_sla_hours: int = 24
    dispatch_sla_hours: int = 72


@dataclass(frozen=True)
class Stock:
    """A supplier's latest report and what was reserved against it."""

    available: int
    as_of: datetime
    used: int = 0

    @property
    def remaining(self) -> int:
        return self.available - self.used


@dataclass(frozen=True)
class Reservation:
    supplier_id: str
    quantity: int
    budget_as_of: datetime  # the report whose budget the units came from


@dataclass(frozen=True)
class Line:
    order_id: str
    line_id: str
    requested: int
    arrival: int  # position in the sku's queue: backorders are served in this order
    reservations: tuple[Reservation, ...] = ()
    backordered: int = 0
    excluded: frozenset[str] = frozenset()
    pinned: str | None = None  # ops re-routed the line: only this supplier serves it

    @property
    def allocated(self) -> int:
        return sum(r.quantity for r in self.reservations)


@dataclass(frozen=True)
class SkuState:
    sku: str
    offers: dict[str, Offer] = field(default_factory=dict)
    stock: dict[str, Stock] = field(default_factory=dict)
    lines: dict[LineKey, Line] = field(default_factory=dict)
    next_arrival: int = 0
    version: int = 0  # stock changes published so far (SupplierStockChanged.version)
    clock: datetime | None = None  # the latest time applied (see the module docstring)


Decision = tuple[SkuState, list[Event]]


# --- ranking -----------------------------------------------------------------

def ranked(state: SkuState, excluded: frozenset[str] = frozenset(),
           pinned: str | None = None) -> list[Offer]:
    """Active, non-excluded offers (only ``pinned``'s, if given), best first.

    Key: priority, then unit cost (only when every active offer is in one
    currency, since costs in different currencies are not comparable without
    rates), then lead time, then supplier id (a total, deterministic order).
    """
    all_active = [o for o in state.offers.values() if o.active]
    comparable = len({o.currency for o in all_active}) <= 1
    active = [o for o in all_active if o.supplier_id not in excluded
              and pinned in (None, o.supplier_id)]

    def key(o: Offer) -> tuple[int, Decimal, int, str]:
        return (o.priority, o.unit_cost if comparable else Decimal(0), o.lead_time_days,
                o.supplier_id)

    return sorted(active, key=key)


def backorder_reason(state: SkuState, excluded: frozenset[str],
                     pinned: str | None = None) -> BackorderReason:
    active = [o for o in state.offers.values() if o.active and pinned in (None, o.supplier_id)]
    if not active:
        return "no_offer"
    if all(o.supplier_id in excluded for o in active):
        return "all_suppliers_excluded"
    return "no_stock"


# --- filling -----------------------------------------------------------------

@dataclass
class _Fill:
    """Mutable scratch of one operation: the state being built and its events."""

    state: SkuState
    now: datetime
    events: list[Event] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)

    def take(self, line: Line, need: int) -> tuple[Line, int]:
        """Reserve up to ``need`` units for ``line`` from the ranked suppliers."""
        for offer in ranked(self.state, line.excluded, line.pinned):
            if need == 0:
                break
            stock = self.state.stock.get(offer.supplier_id)
            if stock is None or stock.remaining <= 0:
                continue
            qty = min(need, stock.remaining)
            if not offer.allow_split and qty < need:
                continue  # this supplier serves the whole rest of the line or nothing
            self._set_stock(offer.supplier_id, replace(stock, used=stock.used + qty))
            line = replace(line, reservations=(*line.reservations,
                                               Reservation(offer.supplier_id, qty, stock.as_of)))
            need -= qty
            self.events.append(LineAllocated(
                order_id=line.order_id, line_id=line.line_id, sku=self.state.sku,
                supplier_id=offer.supplier_id, quantity=qty,
                unit_cost=Money(amount=offer.unit_cost, currency=offer.currency),
                acknowledge_sla_hours=offer.acknowledge_sla_hours,
                dispatch_sla_hours=offer.dispatch_sla_hours,
                allocated_at=self.now,
            ))
        return line, need

    def retry_backorders(self) -> None:
        """Serve backordered lines, oldest first, from whatever stock is free."""
        waiting = sorted((ln for ln in self.state.lines.values() if ln.backordered),
                         key=lambda ln: ln.arrival)
        for line in waiting:
            filled, still = self.take(line, line.backordered)
            if still != line.backordered:
                self._set_line(replace(filled, backordered=still))

    def _set_stock(self, supplier_id: str, stock: Stock) -> None:
        self.state = replace(self.state, stock={**self.state.stock, supplier_id: stock})
        self.touched.add(supplier_id)

    def _set_line(self, line: Line) -> None:
        key = (line.order_id, line.line_id)
        lines = dict(self.state.lines)
        if line.requested == 0:
            lines.pop(key, None)
        else:
            lines[key] = line
        self.state = replace(self.state, lines=lines)

    def done(self) -> Decision:
        """The final state and events, with one stock event per touched supplier.

        Line decisions get the line's final backordered units (0 once the line is gone).
        """
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


# --- operations ----------------------------------------------------------------

def apply_offer(state: SkuState, event: SupplierOfferUpdated, now: datetime) -> Decision:
    """Record a supplier's offer (older than the stored one: ignored), then serve backorders."""
    current = state.offers.get(event.supplier_id)
    if current is not None and event.updated_at < current.updated_at:
        return state, []
    offer = Offer(event.supplier_id, event.priority, event.unit_cost.amount,
                  event.unit_cost.currency, event.lead_time_days, event.active,
                  event.allow_split, event.updated_at, event.acknowledge_sla_hours,
                  event.dispatch_sla_hours)
    fill = _Fill(replace(state, offers={**state.offers, event.supplier_id: offer}), now)
    fill.retry_backorders()
    return fill.done()


def apply_stock(state: SkuState, event: StockLevelReported, now: datetime) -> Decision:
    """A new budget from a stock report (not newer than the stored one: ignored).

    Reservations made under earlier reports stay, but no longer count against
    the new budget. Then backorders are served.
    """
    current = state.stock.get(event.supplier_id)
    if current is not None and event.as_of <= current.as_of:
        return state, []
    fill = _Fill(state, now)
    fill._set_stock(event.supplier_id, Stock(event.available, event.as_of))
    fill.retry_backorders()
    return fill.done()


def allocate(state: SkuState, cmd: AllocateLine, now: datetime) -> Decision:
    """Reserve ``cmd.quantity`` more units for a line; backorder what nobody can fill.

    The line's excluded suppliers grow by ``cmd.excluded_suppliers`` and are never
    chosen for it again, unless ops pin the line to one of them (``cmd.supplier_id``):
    then only that supplier serves the line, now and for its backorder, until a
    command without a supplier unpins it.
    """
    key = (cmd.order_id, cmd.line_id)
    existing = state.lines.get(key)
    excluded = frozenset(cmd.excluded_suppliers)
    if existing is None:
        line = Line(cmd.order_id, cmd.line_id, cmd.quantity, state.next_arrival,
                    excluded=excluded)
        state = replace(state, next_arrival=state.next_arrival + 1)
    else:
        line = replace(existing, requested=existing.requested + cmd.quantity,
                       excluded=existing.excluded | excluded)
    line = replace(line, pinned=cmd.supplier_id,
                   excluded=line.excluded - {cmd.supplier_id} if cmd.supplier_id else line.excluded)
    fill = _Fill(state, now)
    line, short = fill.take(line, cmd.quantity)
    if short:
        line = replace(line, backordered=line.backordered + short)
        fill.events.append(LineBackordered(
            order_id=cmd.order_id, line_id=cmd.line_id, sku=state.sku, quantity=short,
            reason=backorder_reason(fill.state, line.excluded, line.pinned), backordered_at=now,
        ))
    fill._set_line(line)
    return fill.done()


def release(state: SkuState, cmd: ReleaseLine, now: datetime) -> Decision:
    """Give back a line's units: all, or up to ``cmd.quantity``, or only ``cmd.supplier_id``'s,
    or (``cmd.backorder_only``) only backordered units.

    Without a supplier, backordered units go first, then reservations, newest
    first. Released units return to the budget they came from; the line asks
    for that much less. Releasing a supplier's units also excludes that supplier
    for the line (it rejected, missed its SLA, or the units came back), so the
    backorder retry that follows cannot hand them straight back. Freed stock then
    serves backorders. Unknown lines: no-op.
    """
    line = state.lines.get((cmd.order_id, cmd.line_id))
    if cmd.backorder_only and cmd.supplier_id is None:
        return _drop_backorder(state, line, cmd, now)
    if line is None:
        return state, []
    if cmd.supplier_id is not None:
        line = replace(line, excluded=line.excluded | {cmd.supplier_id})
    budget = cmd.quantity if cmd.quantity is not None else line.requested
    fill = _Fill(state, now)
    dropped_backorder = 0
    if cmd.supplier_id is None:
        dropped_backorder = min(budget, line.backordered)
        budget -= dropped_backorder
    kept: list[Reservation] = []
    for res in reversed(line.reservations):
        if budget == 0 or (cmd.supplier_id is not None and res.supplier_id != cmd.supplier_id):
            kept.append(res)
            continue
        qty = min(budget, res.quantity)
        budget -= qty
        _return_units(fill, res, qty)
        fill.events.append(LineReleased(
            order_id=line.order_id, line_id=line.line_id, sku=state.sku,
            supplier_id=res.supplier_id, quantity=qty, reason=cmd.reason, released_at=now,
        ))
        if qty < res.quantity:
            kept.append(replace(res, quantity=res.quantity - qty))
    released = sum(e.quantity for e in fill.events if isinstance(e, LineReleased))
    fill._set_line(replace(
        line, reservations=tuple(reversed(kept)), backordered=line.backordered - dropped_backorder,
        requested=line.requested - released - dropped_backorder,
    ))
    fill.retry_backorders()
    return fill.done()


def _drop_backorder(state: SkuState, line: Line | None, cmd: ReleaseLine,
                    now: datetime) -> Decision:
    """A ``backorder_only`` release: drop up to ``cmd.quantity`` backordered units (all
    without one); always answered, even for a line that is gone."""
    dropped = 0 if line is None else min(cmd.quantity or line.backordered, line.backordered)
    fill = _Fill(state, now)
    if line is not None and dropped:
        fill._set_line(replace(line, backordered=line.backordered - dropped,
                               requested=line.requested - dropped))
    fill.events.append(BackorderDropped(
        order_id=cmd.order_id, line_id=cmd.line_id, sku=state.sku,
        requested=max(1, cmd.quantity or dropped), quantity=dropped, reason=cmd.reason,
        dropped_at=now))
    return fill.done()


def _return_units(fill: _Fill, res: Reservation, qty: int) -> None:
    stock = fill.state.stock.get(res.supplier_id)
    if stock is not None and stock.as_of == res.budget_as_of:
        fill._set_stock(res.supplier_id, replace(stock, used=stock.used - qty))


def apply(state: SkuState, message: object, now: datetime) -> Decision:
    """Dispatch one consumed message to its operation, at ``max(now, the sku's clock)``,
    which becomes the sku's clock; other types change nothing."""
    if state.clock is not None and state.clock > now:
        now = state.clock
    state = replace(state, clock=now)
    if isinstance(message, AllocateLine):
        return allocate(state, message, now)
    if isinstance(message, ReleaseLine):
        return release(state, message, now)
    if isinstance(message, StockLevelReported):
        return apply_stock(state, message, now)
    if isinstance(message, SupplierOfferUpdated):
        return apply_offer(state, message, now)
    return state, []


def oversold(state: SkuState) -> Iterable[str]:
    """Suppliers whose budget is broken (for checks and tests): used > available,
    or ``used`` differing from the reservations counted against the current report."""
    for supplier_id, stock in state.stock.items():
        counted = sum(r.quantity for ln in state.lines.values() for r in ln.reservations
                      if r.supplier_id == supplier_id and r.budget_as_of == stock.as_of)
        if stock.used > stock.available or stock.used != counted or stock.used < 0:
            yield supplier_id
