"""Each allocation rule, on the pure core (docs/allocation.md has the same examples)."""

from __future__ import annotations

from collections.abc import Sequence

from agents.core.allocation import SkuState, apply, oversold, ranked
from events.allocation import LineAllocated, LineBackordered, LineReleased, SupplierStockChanged
from events.base import Event
from tests.unit.allocation_factories import SKU, T0, alloc, offer, rel, stock


def run(*messages: object, state: SkuState | None = None) -> tuple[SkuState, list[Event]]:
    state = state or SkuState(SKU)
    events: list[Event] = []
    for message in messages:
        state, out = apply(state, message, T0)
        events.extend(out)
        assert list(oversold(state)) == []
    return state, events


def allocations(events: Sequence[Event]) -> list[tuple[str, int]]:
    return [(e.supplier_id, e.quantity) for e in events if isinstance(e, LineAllocated)]


def test_ranking_priority_then_cost_then_lead_time_then_id() -> None:
    state, _ = run(offer("c", priority=2, cost="1.00"), offer("b", priority=1, cost="9.00"),
                   offer("a", priority=1, cost="9.00", lead=1), offer("d", priority=1, cost="3.00"),
                   offer("e", priority=1, cost="3.00"), offer("z", active=False, priority=0))
    assert [o.supplier_id for o in ranked(state)] == ["d", "e", "a", "b", "c"]


def test_costs_in_different_currencies_do_not_decide() -> None:
    state, _ = run(offer("a", cost="9.00", currency="EUR"), offer("b", cost="1.00", currency="USD"))
    assert [o.supplier_id for o in ranked(state)] == ["a", "b"]  # falls through to supplier id


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


def test_nobody_has_stock_backorder_then_report_allocates() -> None:
    state, events = run(offer("a"), stock("a", 0), alloc("o1", 4))
    assert [(e.quantity, e.reason) for e in events if isinstance(e, LineBackordered)] == [
        (4, "no_stock")]
    _, later = run(stock("a", 3, minute=5), state=state)
    assert allocations(later) == [("a", 3)]
    _, more = run(stock("a", 5, minute=9), state=run(stock("a", 3, minute=5), state=state)[0])
    assert allocations(more) == [("a", 1)]


def test_backorders_are_served_in_arrival_order() -> None:
    state, _ = run(offer("a"), stock("a", 0), alloc("o1", 2), alloc("o2", 2), alloc("o3", 2))
    _, events = run(stock("a", 3, minute=1), state=state)
    assert [(e.order_id, e.quantity) for e in events if isinstance(e, LineAllocated)] == [
        ("o1", 2), ("o2", 1)]


def test_backorder_reasons() -> None:
    assert run(alloc("o1", 1))[1][0].reason == "no_offer"  # type: ignore[attr-defined]
    _, events = run(offer("a"), stock("a", 9), alloc("o1", 1, excluded=("a",)))
    assert [e.reason for e in events if isinstance(e, LineBackordered)] == [
        "all_suppliers_excluded"]


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


def test_release_returns_units_to_the_budget_they_came_from() -> None:
    state, _ = run(offer("a"), stock("a", 10), alloc("o1", 4))
    assert state.stock["a"].remaining == 6
    released, events = run(rel("o1", qty=1), state=state)
    assert released.stock["a"].remaining == 7
    released_units = [(e.supplier_id, e.quantity) for e in events if isinstance(e, LineReleased)]
    assert released_units == [("a", 1)]
    # After a new report, units reserved under the old one go back to no budget.
    state, _ = run(stock("a", 5, minute=1), state=released)
    state, _ = run(rel("o1"), state=state)
    assert state.stock["a"].remaining == 5
    assert ("o1", "1") not in state.lines


def test_an_older_stock_report_is_ignored() -> None:
    state, _ = run(offer("a"), stock("a", 10, minute=5), stock("a", 99, minute=4),
                   stock("a", 99, minute=5))
    assert state.stock["a"].available == 10


def test_an_older_offer_is_ignored() -> None:
    state, _ = run(offer("a", priority=1, minute=5), offer("a", priority=9, minute=1))
    assert state.offers["a"].priority == 1


def test_deactivated_supplier_gets_no_new_allocations() -> None:
    state, _ = run(offer("a", priority=1), offer("b", priority=2), stock("a", 9), stock("b", 9))
    _, events = run(offer("a", active=False, minute=1), alloc("o1", 2), state=state)
    assert allocations(events) == [("b", 2)]


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
    _, later = run(stock("a", 2, minute=1), state=state)
    assert [e.backordered_after for e in later if isinstance(e, LineAllocated)] == [1]


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
