"""Random sequences of catalog events and commands never break the allocation invariants."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.core.allocation import SkuState, apply, oversold
from events.allocation import ReleaseLine
from events.base import Event
from tests.unit.allocation_factories import SKU, T0, alloc, offer, rel, stock

SUPPLIERS = ("a", "b", "c", "d")
ORDERS = ("o1", "o2", "o3", "o4", "o5")

offers = st.builds(offer, st.sampled_from(SUPPLIERS), priority=st.integers(0, 3),
                   cost=st.sampled_from(["1.00", "2.50", "4.00"]), lead=st.integers(0, 3),
                   active=st.booleans(), split=st.booleans(), minute=st.integers(0, 60))
stocks = st.builds(stock, st.sampled_from(SUPPLIERS), st.integers(0, 20),
                   minute=st.integers(0, 60))
allocations = st.builds(alloc, st.sampled_from(ORDERS), st.integers(1, 12),
                        line=st.sampled_from(["1", "2"]),
                        excluded=st.lists(st.sampled_from(SUPPLIERS), max_size=2).map(tuple))
releases = st.builds(rel, st.sampled_from(ORDERS), line=st.sampled_from(["1", "2"]),
                     supplier=st.none() | st.sampled_from(SUPPLIERS),
                     qty=st.none() | st.integers(1, 12))
messages = st.lists(st.one_of(offers, stocks, allocations, allocations, releases), max_size=60)


def replay(sequence: list[object]) -> tuple[SkuState, list[Event]]:
    state, events = SkuState(SKU), []
    for message in sequence:
        state, out = apply(state, message, T0)
        events.extend(out)
        assert list(oversold(state)) == [], message  # rule 2: never over a budget
        for line in state.lines.values():  # conservation
            assert line.allocated + line.backordered == line.requested
            assert line.requested > 0
            assert not {r.supplier_id for r in line.reservations} - set(state.offers)
    return state, events


@settings(max_examples=300, deadline=None)
@given(messages)
def test_invariants_hold_after_every_step(sequence: list[object]) -> None:
    replay(sequence)


@settings(max_examples=100, deadline=None)
@given(messages)
def test_same_input_same_decisions(sequence: list[object]) -> None:
    assert replay(sequence) == replay(list(sequence))


@settings(max_examples=200, deadline=None)
@given(messages)
def test_releasing_everything_restores_every_budget(sequence: list[object]) -> None:
    state, _ = replay(sequence)
    release_all: list[object] = [
        ReleaseLine(order_id=o, line_id=ln, sku=SKU, reason="all", requested_at=T0)
        for (o, ln) in sorted(state.lines)
    ]
    final, _ = replay([*sequence, *release_all])
    assert final.lines == {}
    assert all(s.used == 0 and s.remaining == s.available for s in final.stock.values())


@settings(max_examples=200, deadline=None)
@given(messages, st.sampled_from(SUPPLIERS))
def test_excluded_supplier_never_gets_new_units_for_the_line(sequence: list[object],
                                                             banned: str) -> None:
    state, _ = replay([*sequence, alloc("o9", 5, excluded=(banned,))])
    state, _ = replay([*sequence, alloc("o9", 5, excluded=(banned,)), stock(banned, 99, 999)])
    line = state.lines.get(("o9", "1"))
    assert line is None or banned not in {r.supplier_id for r in line.reservations}
