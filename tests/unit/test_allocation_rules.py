"""Each allocation rule, on the pure core (docs/allocation.md has the same examples)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal

from agents.core.allocation import Line, Rules, SkuState, apply, oversold, ranked
from events.allocation import LineAllocated, LineBackordered, LineReleased, SupplierStockChanged
from events.base import Event
from events.types import Money
from tests.unit.allocation_factories import (
    RULES,
    SKU,
    T0,
    alloc,
    at,
    commit,
    dest,
    offer,
    rel,
    stock,
)


def run(*messages: object, state: SkuState | None = None,
        rules: Rules = RULES) -> tuple[SkuState, list[Event]]:
    state = state or SkuState(SKU)
    events: list[Event] = []
    for message in messages:
        state, out = apply(state, message, T0, rules)
        events.extend(out)
        assert list(oversold(state)) == []
    return state, events


def allocations(events: Sequence[Event]) -> list[tuple[str, int]]:
    return [(e.supplier_id, e.quantity) for e in events if isinstance(e, LineAllocated)]


def budget(state: SkuState, supplier: str) -> tuple[int, int, int]:
    s = state.stock[supplier]
    return s.available, s.used, s.remaining


def steps(state: SkuState, supplier: str,
          table: Sequence[tuple[object, tuple[int, int, int]]]) -> SkuState:
    """Apply each row's message and check (available, used, remaining) after it."""
    for n, (message, expected) in enumerate(table, 1):
        state, _ = run(message, state=state)
        assert budget(state, supplier) == expected, f"step {n}"
    return state


# --- ranking -----------------------------------------------------------------

def test_ranking_priority_then_cost_then_lead_time_then_id() -> None:
    state, _ = run(offer("c", priority=2, cost="1.00"), offer("b", priority=1, cost="9.00"),
                   offer("a", priority=1, cost="9.00", lead=1), offer("d", priority=1, cost="3.00"),
                   offer("e", priority=1, cost="3.00"), offer("z", active=False, priority=0))
    assert [o.supplier_id for o in ranked(state, rules=RULES)] == ["d", "e", "a", "b", "c"]


def test_ranking_by_destination_and_landed_cost_across_currencies() -> None:
    """Example (d): a line to FR; USD=1, EUR=1.08, GBP has no rate."""
    state, _ = run(
        offer("a", cost="10.00", currency="EUR", destinations=(dest("FR", "2.00", 3),)),
        offer("b", cost="12.00", currency="USD", destinations=(dest("*", "0.50", 6),)),
        offer("c", cost="5.00", currency="GBP"),
        offer("d", cost="1.00", currency="USD", destinations=(dest("DE"), dest("US"))),
        offer("e", priority=2, cost="1.00", currency="USD"),
        *(stock(s, 10) for s in "abcde"))
    def rank(country: str) -> list[str]:
        return [o.supplier_id for o in ranked(state, Line("x", "1", 1, 0, ship_to=country), RULES)]

    assert rank("FR") == ["b", "a", "c", "e"]  # 12.50, 12.96 (12.00 EUR), no rate, priority 2
    assert rank("DE") == ["d", "b", "c", "e"]  # d ships to DE: 1.00
    _, events = run(alloc("o1", 3, country="FR"), state=state)
    [event] = [e for e in events if isinstance(e, LineAllocated)]
    assert (event.supplier_id, event.shipping_cost, event.transit_days) == (
        "b", Money(amount=Decimal("0.50"), currency="USD"), 6)
    _, events = run(alloc("o2", 1, country="JP"),
                    state=run(offer("b", active=False, minute=1), state=state)[0])
    assert allocations(events) == [("c", 1)]  # no destinations: ships everywhere, free


def test_a_supplier_that_cannot_reach_the_country_is_never_chosen() -> None:
    state, events = run(offer("a", priority=1, destinations=(dest("DE"),)),
                        offer("b", priority=2, destinations=(dest("FR"),)),
                        stock("a", 9), stock("b", 9), alloc("o1", 2, country="FR"))
    assert allocations(events) == [("b", 2)]
    _, events = run(alloc("o2", 1, country="JP"), state=state)
    assert [e.reason for e in events if isinstance(e, LineBackordered)] == ["no_route"]


def test_a_currency_without_a_rate_ranks_after_those_with_one() -> None:
    state, _ = run(offer("a", cost="0.01", currency="GBP"), offer("b", cost="99", currency="EUR"))
    assert [o.supplier_id for o in ranked(state, rules=RULES)] == ["b", "a"]
    assert [o.supplier_id for o in ranked(state, rules=Rules())] == ["a", "b"]  # no rates: id


# --- taking, splitting -----------------------------------------------------------

def test_primary_out_of_stock_backup_is_chosen() -> None:
    _, events = run(offer("primary", priority=1), offer("backup", priority=2),
                    stock("primary", 0), stock("backup", 10), alloc("o1", 3))
    assert allocations(events) == [("backup", 3)]


def test_partial_stock_splits_across_suppliers() -> None:
    _, events = run(offer("a", priority=1), offer("b", priority=2),
                    stock("a", 2), stock("b", 10), alloc("o1", 5))
    assert allocations(events) == [("a", 2), ("b", 3)]


def test_no_split_offer_serves_whole_lines_only() -> None:
    _, events = run(offer("a", priority=1, split=False), offer("b", priority=2),
                    stock("a", 2), stock("b", 10), alloc("o1", 5), alloc("o2", 2))
    assert allocations(events) == [("b", 5), ("a", 2)]


def test_no_split_offer_does_not_finish_a_line_another_supplier_started() -> None:
    """Example (e)."""
    state, events = run(offer("a", priority=1), offer("b", priority=2, split=False),
                        stock("a", 2), stock("b", 10), alloc("o1", 5))
    assert allocations(events) == [("a", 2)]
    assert [(e.quantity, e.reason) for e in events if isinstance(e, LineBackordered)] == [
        (3, "no_stock")]
    state, events = run(alloc("o2", 4), state=state)
    assert allocations(events) == [("b", 4)]  # a has none left; b serves o2 whole
    _, events = run(stock("a", 5, minute=1), state=state)
    assert [(e.order_id, e.supplier_id, e.quantity) for e in events
            if isinstance(e, LineAllocated)] == [("o1", "a", 3)]


# --- backorders ----------------------------------------------------------------

def test_nobody_has_stock_backorder_then_report_allocates() -> None:
    state, events = run(offer("a"), stock("a", 0), alloc("o1", 4))
    assert [(e.quantity, e.reason) for e in events if isinstance(e, LineBackordered)] == [
        (4, "no_stock")]
    state, later = run(stock("a", 3, minute=5), state=state)
    assert allocations(later) == [("a", 3)]
    _, more = run(stock("a", 5, minute=9), state=state)  # 5 free, 3 of them ours, unaccepted
    assert allocations(more) == [("a", 1)]


def test_backorders_are_served_in_arrival_order() -> None:
    state, _ = run(offer("a"), stock("a", 0), alloc("o1", 2), alloc("o2", 2), alloc("o3", 2))
    _, events = run(stock("a", 3, minute=1), state=state)
    assert [(e.order_id, e.quantity) for e in events if isinstance(e, LineAllocated)] == [
        ("o1", 2), ("o2", 1)]


def test_backorder_overtake_bound() -> None:
    """Example (f), with a bound of 2: a (no split) has 3, o1 needs 5."""
    rules = replace(RULES, backorder_overtakes=2)
    state, events = run(offer("a", split=False), stock("a", 3), alloc("o1", 5),
                        alloc("o2", 1), alloc("o3", 1), rules=rules)
    assert allocations(events) == [("a", 1), ("a", 1)]
    assert state.lines[("o1", "1")].overtakes == 2
    state, events = run(alloc("o4", 1), rules=rules, state=state)
    assert allocations(events) == []  # a is kept for o1 now
    state, events = run(stock("a", 5, minute=1), rules=rules, state=state)
    assert allocations(events) == []  # 5 free, 2 of them o2's and o3's: 3 < 5
    _, events = run(stock("a", 8, minute=2), rules=rules, state=state)
    assert [(e.order_id, e.quantity) for e in events if isinstance(e, LineAllocated)] == [
        ("o1", 5), ("o4", 1)]


def test_without_the_bound_a_large_line_waits() -> None:
    rules = replace(RULES, backorder_overtakes=100)
    state, _ = run(offer("a", split=False), stock("a", 3), alloc("o1", 5),
                   *(alloc(f"o{n}", 1) for n in range(2, 5)), rules=rules)
    state, events = run(stock("a", 7, minute=1), alloc("o5", 1), rules=rules, state=state)
    assert [e.order_id for e in events if isinstance(e, LineAllocated)] == ["o5"]
    assert state.lines[("o1", "1")].backordered == 5  # 4 remain, o1 needs 5: it waits on


def test_backorder_reasons() -> None:
    assert run(alloc("o1", 1))[1][0].reason == "no_offer"  # type: ignore[attr-defined]
    _, events = run(offer("a"), stock("a", 9), alloc("o1", 1, excluded=("a",)))
    assert [e.reason for e in events if isinstance(e, LineBackordered)] == [
        "all_suppliers_excluded"]


def test_decisions_carry_when_the_line_was_queued() -> None:
    state, _ = run(offer("a"), stock("a", 1))
    state, first = apply(state, alloc("o1", 3), at(5), RULES)
    _, later = apply(state, stock("a", 9, minute=9), at(20), RULES)
    assert {e.queued_at for e in [*first, *later]
            if isinstance(e, LineAllocated | LineBackordered)} == {at(5)}


# --- failover ----------------------------------------------------------------

def test_excluded_supplier_is_never_chosen_again_for_that_line() -> None:
    state, events = run(offer("a", priority=1), offer("b", priority=2), stock("a", 10),
                        stock("b", 1), alloc("o1", 2))
    assert allocations(events) == [("a", 2)]
    # a rejected the line: the order agent releases a's part and asks again without a.
    state, events = run(rel("o1", supplier="a"), alloc("o1", 2, excluded=("a",)), state=state)
    assert allocations(events) == [("b", 1)]
    state, events = run(stock("a", 50, minute=3), state=state)
    assert allocations(events) == []  # a has stock, but is excluded for this line
    state, events = run(offer("c", priority=3), stock("c", 5), state=state)
    assert allocations(events) == [("c", 1)]


def test_deactivated_supplier_gets_no_new_allocations() -> None:
    state, _ = run(offer("a", priority=1), offer("b", priority=2), stock("a", 9), stock("b", 9))
    _, events = run(offer("a", active=False, minute=1), alloc("o1", 2), state=state)
    assert allocations(events) == [("b", 2)]


def test_a_released_supplier_does_not_take_back_the_lines_backorder() -> None:
    """Failover: a rejected 2 of a line with 3 backordered; the retry inside the
    release must not give a's freed units straight back to the same line."""
    state, _ = run(offer("a", priority=1), offer("b", priority=2), stock("a", 2),
                   stock("b", 0), alloc("o1", 5))
    state, events = run(rel("o1", supplier="a"), state=state)
    assert allocations(events) == []
    assert "a" in state.lines[("o1", "1")].excluded
    _, later = run(stock("b", 100, minute=1), alloc("o1", 2, excluded=("a",)), state=state)
    assert allocations(later) == [("b", 3), ("b", 2)]  # the backorder, then the re-request


# --- stock accounting ---------------------------------------------------------------

def test_a_report_between_reservation_and_payment_does_not_double_book() -> None:
    """Example (a)."""
    state, _ = run(offer("a"))
    steps(state, "a", [
        (stock("a", 10, minute=0), (10, 0, 10)),
        (alloc("o1", 4), (10, 4, 6)),
        (stock("a", 10, minute=2), (10, 4, 6)),  # a has not accepted o1's 4 yet
        (commit("o1", "a", 4, minute=3), (10, 4, 6)),  # accepted after that report
        (stock("a", 6, minute=4), (6, 0, 6)),  # this one counts them
    ])


def test_commit_then_report_and_report_then_commit() -> None:
    """Example (b)."""
    state, _ = run(offer("a"))
    state = steps(state, "a", [
        (stock("a", 10, minute=0), (10, 0, 10)),
        (alloc("o1", 4), (10, 4, 6)),
        (commit("o1", "a", 4, minute=5), (10, 4, 6)),
        (stock("a", 6, minute=6), (6, 0, 6)),
        (alloc("o2", 2), (6, 2, 4)),
        (stock("a", 4, minute=8), (4, 2, 2)),  # a accepted o2 at 7; its CommitLine is late
        (commit("o2", "a", 2, minute=7), (4, 0, 4)),
        (rel("o1"), (4, 0, 4)),  # counted units: a reports them free again itself
        (stock("a", 8, minute=10), (8, 0, 8)),
    ])
    assert state.lines[("o2", "1")].reservations[0].committed_at == at(7)


def test_a_partial_commit_splits_the_reservation() -> None:
    state, _ = run(offer("a"), stock("a", 10), alloc("o1", 4),
                   commit("o1", "a", 1, minute=1), stock("a", 9, minute=2))
    assert [(r.quantity, r.committed_at) for r in state.lines[("o1", "1")].reservations] == [
        (1, at(1)), (3, None)]
    assert budget(state, "a") == (9, 3, 6)
    same, events = run(commit("o9", "a", 1, minute=3), commit("o1", "b", 1, minute=3),
                       state=state)
    assert events == []  # nothing to commit: no-op
    assert same.lines == state.lines


def test_out_of_stock_rejection_zeroes_the_budget_until_a_newer_report() -> None:
    """Example (c)."""
    state, _ = run(offer("a"))
    state = steps(state, "a", [
        (stock("a", 5, minute=0), (5, 0, 5)),
        (alloc("o1", 5), (5, 5, 0)),
        (alloc("o2", 2), (5, 5, 0)),
        (rel("o1", supplier="a", out_of_stock=10), (0, 0, 0)),  # not handed to o2
        (stock("a", 5, minute=5), (0, 0, 0)),  # older than the rejection: ignored
        (stock("a", 3, minute=20), (3, 2, 1)),  # o2 gets 2
    ])
    assert state.lines[("o2", "1")].backordered == 0


def test_a_rejection_at_the_reports_own_instant_zeroes_the_budget_too() -> None:
    state, _ = run(offer("a"), stock("a", 5, minute=3), alloc("o1", 2), alloc("o2", 2),
                   rel("o1", supplier="a", out_of_stock=3))
    assert budget(state, "a") == (0, 2, 0)  # o1's 2 units are not handed on
    assert state.lines[("o2", "1")].allocated == 2  # o2's reservation stands


def test_a_report_lower_than_what_we_hold_allocates_nothing_more() -> None:
    state, _ = run(offer("a"), stock("a", 10), alloc("o1", 8), stock("a", 5, minute=1),
                   alloc("o2", 1))
    assert budget(state, "a") == (5, 8, 0)
    assert state.lines[("o2", "1")].backordered == 1


def test_release_returns_uncounted_units_only() -> None:
    state, _ = run(offer("a"), stock("a", 10), alloc("o1", 4))
    released, events = run(rel("o1", qty=1), state=state)
    assert budget(released, "a") == (10, 3, 7)
    assert [(e.supplier_id, e.quantity) for e in events if isinstance(e, LineReleased)] == [
        ("a", 1)]
    state, _ = run(commit("o1", "a", 3, minute=1), stock("a", 7, minute=2), rel("o1"),
                   state=released)
    assert budget(state, "a") == (7, 0, 7)
    assert ("o1", "1") not in state.lines


def test_accepted_units_released_stay_used_until_the_supplier_reports_again() -> None:
    # a accepted o1's 4 after its report (it holds them), then o1 is failed over: a may
    # ship before it hears of it, so the 4 are not offered to o2 until a reports again
    state, _ = run(offer("a"), stock("a", 10), alloc("o1", 4), commit("o1", "a", 4, minute=1),
                   rel("o1"), alloc("o2", 8))
    assert budget(state, "a") == (10, 10, 0)
    assert state.stock["a"].held_units == 4
    counted_before, _ = run(stock("a", 10, minute=1), state=state)  # as of its acceptance
    assert budget(counted_before, "a") == (10, 10, 0)  # does not count them: still held
    assert state.lines[("o2", "1")].backordered == 2
    assert list(oversold(state)) == []
    state, _ = run(stock("a", 10, minute=3), state=state)  # it gave them back: free again
    assert (budget(state, "a"), state.stock["a"].held) == ((10, 8, 2), ())


def test_an_older_stock_report_is_ignored() -> None:
    state, _ = run(offer("a"), stock("a", 10, minute=5), stock("a", 99, minute=4),
                   stock("a", 99, minute=5))
    assert state.stock["a"].available == 10


def test_an_older_offer_is_ignored() -> None:
    state, _ = run(offer("a", priority=1, minute=5), offer("a", priority=9, minute=1))
    assert state.offers["a"].priority == 1


def test_release_of_a_backordered_line_drops_the_backorder() -> None:
    state, _ = run(offer("a"), stock("a", 1), alloc("o1", 3))
    state, _ = run(rel("o1"), state=state)
    assert ("o1", "1") not in state.lines
    assert state.stock["a"].used == 0
    _, later = run(stock("a", 9, minute=2), state=state)
    assert allocations(later) == []


def test_stock_events_report_every_touched_budget() -> None:
    _, events = run(offer("a", priority=1), offer("b", priority=2), stock("a", 2),
                    stock("b", 5), alloc("o1", 4))
    last = [e for e in events if isinstance(e, SupplierStockChanged)][-2:]
    assert [(e.supplier_id, e.reserved, e.remaining) for e in last] == [("a", 2, 0), ("b", 2, 3)]


def test_decisions_carry_the_lines_backorder_after_them() -> None:
    state, events = run(offer("a"), stock("a", 2), alloc("o1", 5))
    assert [(type(e).__name__, e.backordered_after) for e in events
            if isinstance(e, LineAllocated | LineBackordered)] == [
        ("LineAllocated", 3), ("LineBackordered", 3)]
    _, later = run(stock("a", 3, minute=1), state=state)
    assert [e.backordered_after for e in later if isinstance(e, LineAllocated)] == [2]
