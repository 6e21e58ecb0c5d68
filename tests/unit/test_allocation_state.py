"""The allocation agent's state document: every field survives storage, and documents
written before destinations, commits and the overtake bound still load."""

from __future__ import annotations

from decimal import Decimal

from agents.allocation import dump_state, load_state, rules_of
from agents.core.allocation import SkuState, apply, oversold
from pipeline.settings import Settings
from tests.unit.allocation_factories import RULES, SKU, T0, alloc, at, commit, dest, offer, stock


def test_every_field_survives_storage() -> None:
    state = SkuState(SKU)
    for message in (offer("a", split=False, destinations=(dest("FR", "1.50", 4), dest("*", "3"))),
                    offer("b", priority=2), stock("a", 3), stock("b", 2), alloc("o1", 5),
                    alloc("o2", 1), commit("o2", "a", 1, 1)):
        state, _ = apply(state, message, T0, RULES)
    assert state.lines[("o2", "1")].reservations[0].committed_at == at(1)
    assert load_state(SKU, dump_state(state)) == state


def test_a_document_written_before_format_2_loads() -> None:
    old = {
        "offers": {"a": {"priority": 1, "unit_cost": "5.00", "currency": "EUR",
                         "lead_time_days": 2, "active": True, "allow_split": True,
                         "updated_at": T0.isoformat(), "acknowledge_sla_hours": 24,
                         "dispatch_sla_hours": 48}},
        "stock": {"a": {"available": 10, "as_of": at(5).isoformat(), "used": 3}},
        "lines": [{"order_id": "o1", "line_id": "1", "requested": 7, "arrival": 0,
                   "backordered": 0, "excluded": [], "pinned": None,
                   "reservations": [["a", 4, at(0).isoformat()], ["a", 3, at(5).isoformat()]]}],
        "next_arrival": 1, "version": 4, "clock": at(6).isoformat(),
    }
    state = load_state(SKU, old)
    line = state.lines[("o1", "1")]
    # reserved under an earlier report: counted since; under the current one: not yet
    assert [(r.quantity, r.committed_at) for r in line.reservations] == [(4, at(0)), (3, None)]
    assert (line.ship_to, line.queued_at, line.overtakes) == (None, None, 0)
    assert list(oversold(state)) == []
    state, _ = apply(state, alloc("o2", 2, country="JP"), at(7), RULES)
    assert state.lines[("o2", "1")].reservations[0].quantity == 2  # no destinations: anywhere


def test_rules_come_from_settings() -> None:
    rules = rules_of(Settings(fx_rates="USD=1,EUR=1.08", backorder_overtakes=5))
    assert rules.fx_rates == {"USD": Decimal(1), "EUR": Decimal("1.08")}
    assert rules.backorder_overtakes == 5
