"""The order agent stores orders as JSON and gets back exactly what it stored."""

from __future__ import annotations

import json

from agents.orders import dump_order, load_order
from tests.unit.order_factories import (
    Flow,
    allocated,
    delivered,
    dispatched,
    paid,
    placed,
    rejected,
    return_requested,
)


def _round_trip(flow: Flow) -> None:
    doc = json.loads(json.dumps(dump_order(flow.order)))  # as Postgres JSONB gives it back
    assert load_order(doc) == flow.order


def test_a_busy_order_survives_json() -> None:
    flow = Flow().do(placed(("1", "SKU-1", 2, "10.00"), ("2", "SKU-2", 1, "0.99")),
                     allocated("sa", 1), allocated("sb", 1), paid("20.99"))
    flow.do(rejected(flow.so_of("sb"), "sb"), allocated("sc", 1), allocated("sa", 1, line="2",
                                                                           sku="SKU-2"))
    flow.do(dispatched(flow.so_of("sa"), "sa", shipment="p1", qty=1), delivered("p1", "sa"))
    flow.do(return_requested("rma1", qty=1))
    _round_trip(flow)


def test_held_events_survive_json() -> None:
    flow = Flow().do(paid("20.00"))
    assert flow.order.held
    _round_trip(flow)


def test_parcels_late_failed_and_flagged_survive_json() -> None:
    from tests.unit.order_factories import at, failed

    flow = Flow().do(placed(("1", "SKU-1", 2, "10.00")), allocated("sa", 2, transit=3,
                                                                   queued_at=at(0)),
                     paid("20.00"))
    first = flow.so_of("sa")
    flow.do(dispatched(first, "sa", shipment="p1", qty=1), failed("p1", "sa"))
    flow.do(allocated("sa", 1), dispatched(first, "sa", shipment="p2", qty=1, tracking="T2"))
    flow.tick(60 * 24 * 6)  # p2 late (3 + 2 days); the re-shipment's dispatch SLA fails over
    assert flow.order.shipments["sa/p2"].late
    assert flow.order.shipments["sa/p1"].exception == "lost"
    assert flow.order.lines["1"].transit == {"sa": 3}
    _round_trip(flow)
