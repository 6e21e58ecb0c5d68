"""Random histories never break the allocation invariants, checked against an
independent model of each supplier's real stock (written here, not the core's
accounting).

The model supplier has ``free`` units. It hears of the units the core reserved for
it (its supplier orders), accepts some (``free`` goes down, a CommitLine stamped with
its clock goes into the allocation topic's queue), rejects others (out of stock or
for another reason: a ReleaseLine), restocks, and takes snapshots of ``free`` as
stock reports that reach the core late and out of order. A cancelled line gives the
units it had accepted back to ``free``. The allocation topic is one FIFO queue
(the order agent sends CommitLine and ReleaseLine in order); the catalog topic
delivers reports in any order.

After every step, per supplier: the units the core holds there that the supplier
has not accepted fit in its true ``free`` (so every supplier order would be
accepted: no double-booking).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.allocation import dump_state, load_state
from agents.core.allocation import SkuState, apply, oversold
from events.allocation import LineAllocated
from events.base import Event
from tests.unit.allocation_factories import RULES, SKU, alloc, at, commit, dest, offer, rel, stock

SUPPLIERS = ("a", "b", "c")
ORDERS = ("o1", "o2", "o3", "o4", "o5", "o6")
ROUTES = {"everywhere": (), "FR": (dest("FR", "1.00", 2),), "DE+*": (dest("DE"), dest("*", "3"))}

offer_step = st.tuples(
    st.just("offer"), st.sampled_from(SUPPLIERS), st.integers(0, 2),
    st.sampled_from(["1.00", "2.50"]), st.sampled_from(["EUR", "USD", "GBP"]),
    st.booleans(), st.booleans() | st.just(True), st.sampled_from(sorted(ROUTES)))
accept_step = st.tuples(st.just("accept"), st.sampled_from(SUPPLIERS), st.integers(0, 9),
                        st.integers(1, 6))
step = st.one_of(
    offer_step,
    st.tuples(st.just("alloc"), st.sampled_from(ORDERS), st.integers(1, 6),
              st.sampled_from(["FR", "FR", "DE", "JP"]),
              st.lists(st.sampled_from(SUPPLIERS), max_size=1).map(tuple)),
    st.tuples(st.just("report"), st.sampled_from(SUPPLIERS)),
    st.tuples(st.just("deliver"), st.integers(0, 9)),
    accept_step, accept_step,
    st.tuples(st.just("flush"), st.integers(1, 4)),
    st.tuples(st.just("flush"), st.integers(1, 4)),
    st.tuples(st.just("reject"), st.sampled_from(SUPPLIERS), st.integers(0, 9), st.booleans()),
    st.tuples(st.just("cancel"), st.sampled_from(ORDERS)),
    st.tuples(st.just("restock"), st.sampled_from(SUPPLIERS), st.integers(1, 8)),
)
#: (each supplier's free units at the start, its first offer, then the steps)
histories = st.tuples(st.lists(st.integers(0, 12), min_size=3, max_size=3),
                      st.lists(offer_step, min_size=3, max_size=3),
                      st.lists(step, min_size=25, max_size=60))


def minute_of(when: datetime) -> int:
    return int((when - at(0)).total_seconds()) // 60


@dataclass
class Supplier:
    free: int
    accepted: dict[str, int] = field(default_factory=dict)  # order -> units accepted, live
    rejected: set[str] = field(default_factory=set)  # orders it rejected: never accepted


@dataclass
class World:
    """The suppliers' truth, the topics in flight, and the core's state."""

    suppliers: dict[str, Supplier]
    state: SkuState = field(default_factory=lambda: SkuState(SKU))
    minute: int = 0
    reports: list[Any] = field(default_factory=list)  # catalog topic: any order
    queue: list[Any] = field(default_factory=list)  # allocation topic: FIFO
    closed: set[str] = field(default_factory=set)  # cancelled orders (ids are never reused)
    routes: dict[str, tuple[str, bool]] = field(default_factory=dict)  # offer: route, split
    log: list[Event] = field(default_factory=list)
    reported: dict[str, int] = field(default_factory=dict)  # newest report delivered: minute
    out_of_stock: dict[str, int] = field(default_factory=dict)  # latest rejection delivered

    def core(self, message: object) -> None:
        self.state, events = apply(self.state, message, at(self.minute), RULES)
        self.log.extend(events)
        self.check_decisions(events)

    def held(self, supplier: str, order: str) -> int:
        line = self.state.lines.get((order, "1"))
        return 0 if line is None else sum(r.quantity for r in line.reservations
                                          if r.supplier_id == supplier)

    def pick(self, supplier: str, index: int) -> str | None:
        """One of the supplier's orders it may still answer, by index (None if none)."""
        orders = [o for o in ORDERS if self.held(supplier, o)
                  > self.suppliers[supplier].accepted.get(o, 0)
                  and o not in self.suppliers[supplier].rejected]
        return orders[index % len(orders)] if orders else None

    def step(self, action: tuple[Any, ...]) -> None:
        self.minute += 1
        kind, *args = action
        getattr(self, f"do_{kind}")(*args)

    def do_offer(self, s: str, prio: int, cost: str, cur: str, split: bool, active: bool,
                 route: str) -> None:
        self.routes[s] = (route, split)
        self.core(offer(s, prio, cost, active=active, split=split, minute=self.minute,
                        currency=cur, destinations=ROUTES[route]))

    def do_alloc(self, order: str, qty: int, country: str, excluded: tuple[str, ...]) -> None:
        if order not in self.closed:
            line = self.state.lines.get((order, "1"))
            country = line.ship_to or country if line else country  # one order, one address
            self.queue.append(alloc(order, qty, country=country, excluded=excluded))

    def do_report(self, s: str) -> None:
        self.reports.append(stock(s, self.suppliers[s].free, minute=self.minute))

    def do_deliver(self, index: int) -> None:
        if self.reports:
            report = self.reports.pop(index % len(self.reports))
            s = report.supplier_id
            self.reported[s] = max(minute_of(report.as_of), self.reported.get(s, -1))
            self.core(report)

    def do_accept(self, s: str, index: int, qty: int) -> None:
        order = self.pick(s, index)
        if order is None:
            return
        sup = self.suppliers[s]
        qty = min(qty, self.held(s, order) - sup.accepted.get(order, 0))
        assert sup.free >= qty, f"{s} asked for {qty} units of {order} with {sup.free} free"
        sup.free -= qty
        sup.accepted[order] = sup.accepted.get(order, 0) + qty
        self.queue.append(commit(order, s, qty, self.minute))

    def do_flush(self, n: int) -> None:
        for message in self.queue[:n]:
            if message.TYPE.endswith("release_line.v1"):
                self.cancelled(message.order_id, message.supplier_id)
                if message.out_of_stock_at is not None:
                    self.out_of_stock[message.supplier_id] = minute_of(message.out_of_stock_at)
            self.core(message)
        del self.queue[:n]

    def cancelled(self, order: str, supplier: str | None) -> None:
        """The release reaches the supplier(s) too: accepted units are free again."""
        for s, sup in self.suppliers.items():
            if supplier in (None, s):
                sup.free += sup.accepted.pop(order, 0)

    def do_reject(self, s: str, index: int, out_of_stock: bool) -> None:
        order = self.pick(s, index)
        if order is not None and not self.suppliers[s].accepted.get(order):
            self.suppliers[s].rejected.add(order)
            self.queue.append(rel(order, supplier=s,
                                  out_of_stock=self.minute if out_of_stock else None))

    def do_cancel(self, order: str) -> None:
        if order not in self.closed:
            self.closed.add(order)
            self.queue.append(rel(order))

    def do_restock(self, s: str, n: int) -> None:
        self.suppliers[s].free += n

    # --- the checks ---------------------------------------------------------------

    def check(self) -> None:
        for s, sup in self.suppliers.items():
            unaccepted = sum(max(0, self.held(s, o) - sup.accepted.get(o, 0)) for o in ORDERS)
            assert unaccepted <= sup.free, f"{s}: {unaccepted} unaccepted > {sup.free} free"
        assert list(oversold(self.state)) == []
        for line in self.state.lines.values():  # conservation
            assert line.allocated + line.backordered == line.requested > 0

    def check_decisions(self, events: list[Event]) -> None:
        """Every unit given goes to a supplier that may serve the line (not excluded,
        ships to its country; a no-split offer: the whole rest of a line it alone holds)."""
        for e in events:
            if not isinstance(e, LineAllocated):
                continue
            line = self.state.lines[(e.order_id, e.line_id)]
            assert e.supplier_id not in line.excluded
            assert self.out_of_stock.get(e.supplier_id, -1) < self.reported[e.supplier_id], (
                "units of a supplier that rejected for out of stock, before a newer report")
            route, split = self.routes[e.supplier_id]
            assert route == "everywhere" or line.ship_to == route or (
                route == "DE+*" and line.ship_to is not None), (route, line.ship_to)
            if not split:  # one operation gives a line at most one no-split allocation
                assert e.backordered_after == 0
                assert {r.supplier_id for r in line.reservations} == {e.supplier_id}


def replay(initial: list[int], offers: list[tuple[Any, ...]],
           history: list[tuple[Any, ...]]) -> World:
    world = World({s: Supplier(n) for s, n in zip(SUPPLIERS, initial, strict=True)})
    for s, first in zip(SUPPLIERS, offers, strict=True):
        world.step((first[0], s, *first[2:]))
        world.do_report(s)
        world.do_deliver(-1)
    for action in history:
        world.step(action)
        world.check()
    return world


@settings(max_examples=500, deadline=None)
@given(histories)
def test_no_supplier_is_ever_asked_beyond_its_free_stock(history: Any) -> None:
    replay(*history)


@settings(max_examples=60, deadline=None)
@given(histories)
def test_same_history_same_decisions_and_state_survives_storage(history: Any) -> None:
    first, second = replay(*history), replay(*history)
    assert first.state == second.state
    assert first.log == second.log
    assert load_state(SKU, dump_state(first.state)) == first.state


@settings(max_examples=100, deadline=None)
@given(histories)
def test_cancelling_everything_leaves_nothing_reserved(history: Any) -> None:
    world = replay(*history)
    for order in ORDERS:
        world.do_cancel(order)
    world.do_flush(len(world.queue))
    world.check()
    assert world.state.lines == {}
    # units a supplier had accepted stay used until it reports again (it may ship them
    # before it hears of the cancellation); then nothing is
    assert all(s.used == s.held_units for s in world.state.stock.values())
    assert all(not sup.accepted for sup in world.suppliers.values())
    world.minute += 1
    for s in SUPPLIERS:
        world.do_report(s)
        world.do_deliver(-1)
    assert all(s.used == 0 for s in world.state.stock.values())
