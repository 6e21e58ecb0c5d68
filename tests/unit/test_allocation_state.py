"""The allocation agent's state document: every field survives storage, and documents
written before destinations, commits and the overtake bound still load."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from agents.allocation import _line_changes, dump_line, dump_sku, dump_state, load_state, rules_of
from agents.core.allocation import SkuState, apply, oversold
from pipeline.runtime.settings import Settings
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


def _served_state() -> SkuState:
    state = SkuState(SKU)
    for message in (offer("a"), offer("b", priority=2), stock("a", 3), stock("b", 2),
                    alloc("o1", 4), alloc("o2", 2), commit("o1", "a", 3, 1)):
        state, _ = apply(state, message, T0, RULES)
    return state


def test_a_document_and_its_line_rows_load_as_the_whole_state() -> None:
    state = _served_state()
    doc = dump_sku(state)
    assert "lines" not in doc
    assert doc["format"] == 3
    assert load_state(SKU, doc, [dump_line(ln) for ln in state.lines.values()]) == state


def test_only_the_lines_a_command_touched_are_rewritten() -> None:
    """The core replaces the line objects it changes and shares the rest, so the save
    writes those rows only; a line gone from the state is deleted; a state read from a
    document with its lines inside writes them all (they move to rows)."""
    before = _served_state()
    after, _ = apply(before, alloc("o3", 1), T0, RULES)
    upserts, gone = _line_changes([(before, after)], inline=set())
    assert [(u["order_id"], u["line_id"]) for u in upserts] == [("o3", "1")]
    assert gone == []
    upserts, _ = _line_changes([(before, after)], inline={SKU})
    assert sorted(u["order_id"] for u in upserts) == ["o1", "o2", "o3"]
    dropped = replace(after, lines={k: v for k, v in after.lines.items() if k[0] != "o2"})
    assert _line_changes([(after, dropped)], inline=set()) == ([], [(SKU, "o2", "1")])
