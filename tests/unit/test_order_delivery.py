"""Delivery tracking, delivery exceptions, reconciliation of shipments the order no longer
expected, and the supplier facts the order publishes: the worked examples of
docs/order-lifecycle.md ("Delivery"), one test each, plus the edges around them."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from agents.core.order_rules import next_deadline
from events.allocation import AllocateLine, CommitLine, ReleaseLine
from events.fulfillment import (
    OrderStatusChanged,
    RefundIssued,
    ReturnAuthorized,
    ReturnUpdated,
    ShipmentUpdated,
    SupplierOrderCancelled,
    SupplierOrderRequested,
    SupplierOrderUpdated,
)
from tests.unit.order_factories import (
    POLICY,
    T0,
    Flow,
    accepted,
    allocated,
    at,
    backordered,
    cancelled,
    delivered,
    dispatched,
    failed,
    paid,
    placed,
    rejected,
    released,
    return_received,
    return_requested,
)

DAY = 24 * 60  # minutes


def shipped_to_customer(transit: int | None = 3) -> Flow:
    """Line 1 (2 x 10.00) at sa, paid, accepted and shipped as p1 (tracking TRK1) at T0."""
    flow = Flow().do(placed(), allocated("sa", 2, transit=transit), paid())
    so = flow.so_of("sa")
    return flow.do(accepted(so, "sa"), dispatched(so, "sa", shipment="p1"))


# --- example 1: a shipment's expected delivery and deadline ------------------------------

def test_example_1_expected_delivery_and_late_deadline() -> None:
    flow = shipped_to_customer(transit=3)
    [parcel] = flow.sent(ShipmentUpdated, last=True)
    assert (parcel.state, parcel.carrier, parcel.tracking_number) == ("in_transit", "Colissimo",
                                                                      "TRK1")
    assert [(ln.line_id, ln.quantity) for ln in parcel.lines] == [("1", 2)]
    assert parcel.expected_by == T0 + timedelta(days=3)
    assert parcel.deliver_by == T0 + timedelta(days=5)  # + the 2-day late grace
    assert next_deadline(flow.order, POLICY) == T0 + timedelta(days=5)
    flow.tick(5 * DAY - 1)
    assert flow.sent(ShipmentUpdated, last=True) == []
    flow.tick(5 * DAY)
    [late] = flow.sent(ShipmentUpdated, last=True)
    assert late.state == "late"
    assert late.changed_at == T0 + timedelta(days=5)
    [status] = flow.sent(OrderStatusChanged, last=True)
    assert status.late
    assert status.status == "dispatched"
    assert next_deadline(flow.order, POLICY) is None
    flow.do(delivered("p1", "sa", when=at(6 * DAY)), minute=6 * DAY)
    [done] = flow.sent(ShipmentUpdated, last=True)
    assert (done.state, done.delivered_at) == ("delivered", at(6 * DAY))
    [status] = flow.sent(OrderStatusChanged, last=True)
    assert not status.late
    assert status.status == "delivered"


def test_unknown_transit_uses_the_default() -> None:
    flow = shipped_to_customer(transit=None)
    [parcel] = flow.sent(ShipmentUpdated, last=True)
    assert parcel.expected_by == T0 + POLICY.default_transit
    assert parcel.deliver_by == T0 + POLICY.default_transit + POLICY.late_grace


def test_the_slowest_line_sets_the_expected_delivery() -> None:
    flow = Flow().do(placed(("1", "SKU-1", 1, "10.00"), ("2", "SKU-2", 1, "10.00")),
                     allocated("sa", 1, transit=2),
                     allocated("sa", 1, line="2", sku="SKU-2", transit=9), paid())
    so = flow.so_of("sa")
    flow.do(dispatched(so, "sa", qty=1), dispatched(so, "sa", shipment="p2", line="2", qty=1))
    assert [u.expected_by - T0 for u in flow.sent(ShipmentUpdated)] == [timedelta(days=2),
                                                                       timedelta(days=9)]


def test_a_delivered_shipment_never_becomes_late() -> None:
    flow = shipped_to_customer().do(delivered("p1", "sa"), minute=60)
    flow.tick(30 * DAY)
    assert flow.sent(ShipmentUpdated, last=True) == []


# --- example 2: what an acceptance, a dispatch and a rejection publish ---------------------

def test_example_2_acceptance_commits_the_supplier_orders_lines() -> None:
    flow = Flow().do(placed(), allocated("sa", 2), paid())
    so = flow.so_of("sa")
    flow.do(accepted(so, "sa", when=at(5)), minute=7)
    [commit] = flow.sent(CommitLine, last=True)
    assert (commit.supplier_id, commit.line_id, commit.sku, commit.quantity) == (
        "sa", "1", "SKU-1", 2)
    assert (commit.accepted_at, commit.requested_at) == (at(5), at(7))
    [answer] = flow.sent(SupplierOrderUpdated, last=True)
    assert (answer.state, answer.at, answer.supplier_order_id) == ("accepted", at(5), so)
    flow.do(accepted(so, "sa"))  # again: nothing
    assert flow.last == []


def test_a_dispatch_without_acceptance_commits_at_dispatch_time() -> None:
    flow = Flow().do(placed(), allocated("sa", 2), paid())
    so = flow.so_of("sa")
    flow.do(dispatched(so, "sa", qty=1, when=at(9)), minute=10)
    [commit] = flow.sent(CommitLine, last=True)
    assert (commit.quantity, commit.accepted_at) == (2, at(9))  # every unit of the order
    [answer] = flow.sent(SupplierOrderUpdated, last=True)
    assert (answer.state, answer.at) == ("partially_dispatched", at(9))
    flow.do(dispatched(so, "sa", shipment="p2", qty=1))
    assert flow.sent(CommitLine, last=True) == []  # accepted by now
    assert [a.state for a in flow.sent(SupplierOrderUpdated, last=True)] == ["dispatched"]


def test_an_out_of_stock_rejection_zeroes_the_suppliers_budget() -> None:
    flow = Flow().do(placed(), allocated("sa", 2), paid())
    flow.do(rejected(flow.so_of("sa"), "sa", when=at(3)), minute=4)
    [release] = flow.sent(ReleaseLine, last=True)
    assert (release.supplier_id, release.quantity, release.out_of_stock_at) == ("sa", 2, at(3))
    [answer] = flow.sent(SupplierOrderUpdated, last=True)
    assert (answer.state, answer.reason) == ("rejected", "out_of_stock")


def test_other_rejections_do_not_zero_the_budget() -> None:
    flow = Flow().do(placed(), allocated("sa", 2), paid())
    flow.do(rejected(flow.so_of("sa"), "sa", reason="cannot_ship_to_country"))
    [release] = flow.sent(ReleaseLine, last=True)
    assert release.out_of_stock_at is None


def test_refused_supplier_events_publish_no_fact() -> None:
    flow = Flow().do(placed(), allocated("sa", 2), paid())
    so = flow.so_of("sa")
    flow.do(accepted(so, "sb"), dispatched(so, "sb"), dispatched(so, "sa", qty=3))
    assert flow.sent(SupplierOrderUpdated) == []
    assert flow.sent(ShipmentUpdated) == []
    assert flow.sent(CommitLine) == []
    flow.do(dispatched(so, "sa", shipment="p1"), delivered("p1", "sa"),
            return_requested("r1", qty=1))
    flow.do(return_received("r1", "sb"))  # not authorized to sb
    assert flow.refused()
    assert flow.sent(ReturnUpdated) == []
    flow.do(return_received("r1", "sa", resellable=False))
    [receipt] = flow.sent(ReturnUpdated, last=True)
    assert (receipt.rma_id, receipt.supplier_id, receipt.condition) == ("r1", "sa",
                                                                       "not_resellable")


# --- example 3: a lost parcel is sent again, then refunded -----------------------------------

def test_example_3_a_lost_parcel_is_reshipped_then_refunded() -> None:
    flow = Flow().do(placed(("1", "SKU-1", 2, "10.00"), ("2", "SKU-2", 1, "5.00")),
                     allocated("sa", 2), allocated("sb", 1, line="2", sku="SKU-2"),
                     paid("25.00"))
    flow.do(dispatched(flow.so_of("sa"), "sa", shipment="p1", tracking="TRK1"),
            dispatched(flow.so_of("sb"), "sb", shipment="p2", line="2", qty=1,
                       tracking="TRK2"), delivered("p2", "sb"))
    flow.do(failed("p1", "sa", "lost"), minute=60)
    [parcel] = flow.sent(ShipmentUpdated, last=True)
    assert (parcel.state, parcel.exception) == ("lost", "lost")
    [again] = flow.sent(AllocateLine, last=True)
    assert (again.line_id, again.quantity, again.excluded_suppliers) == ("1", 2, ())
    assert flow.sent(RefundIssued, last=True) == []
    line = flow.order.lines["1"]
    assert (line.shipped, line.failed, line.reships, line.cancelled) == (0, 2, 1, 0)
    assert flow.status == "partially_dispatched"
    flow.do(allocated("sa", 2), minute=61)  # the lost parcel's supplier again
    [request] = flow.sent(SupplierOrderRequested, last=True)
    assert [(ln.line_id, ln.quantity) for ln in request.lines] == [("1", 2)]
    flow.do(dispatched(request.supplier_order_id, "sa", shipment="p3", tracking="TRK3"))
    flow.do(failed("p3", "sa", "damaged"), minute=62)  # reships used up: refunded
    assert flow.sent(AllocateLine, last=True) == []
    [refund] = flow.sent(RefundIssued, last=True)
    assert (refund.cause, refund.amount.amount) == ("delivery_failed", Decimal("20.00"))
    assert flow.order.lines["1"].cancelled == 2
    assert flow.status == "partially_refunded"  # line 2 delivered, line 1 refunded


def test_example_4_a_lost_parcel_does_not_block_other_returns() -> None:
    flow = Flow().do(placed(("1", "SKU-1", 2, "10.00"), ("2", "SKU-2", 1, "5.00")),
                     allocated("sa", 2), allocated("sb", 1, line="2", sku="SKU-2"),
                     paid("25.00"))
    flow.do(dispatched(flow.so_of("sa"), "sa", shipment="p1"),
            dispatched(flow.so_of("sb"), "sb", shipment="p2", line="2", qty=1,
                       tracking="TRK2"), delivered("p2", "sb"), failed("p1", "sa"))
    flow.do(return_requested("r1", qty=1, line="2"), minute=60)
    [auth] = flow.sent(ReturnAuthorized, last=True)
    assert (auth.supplier_id, auth.lines[0].line_id) == ("sb", "2")
    assert flow.status == "return_requested"


def test_a_failed_parcel_is_not_delivered_and_a_delivered_one_cannot_fail() -> None:
    flow = shipped_to_customer().do(failed("p1", "sa"))
    flow.do(delivered("p1", "sa"))
    assert flow.refused() == ["shipment p1 was reported lost"]
    flow.do(failed("p1", "sa"))  # reported twice
    assert flow.last == []
    other = shipped_to_customer().do(delivered("p1", "sa"), failed("p1", "sa"))
    assert other.refused() == ["shipment p1 was delivered"]


def test_without_reships_the_units_are_refunded_at_once() -> None:
    from dataclasses import replace

    from agents.core import order_rules

    flow = shipped_to_customer()
    policy = replace(POLICY, max_reships=0)
    order, out = order_rules.decide(flow.order, failed("p1", "sa"), at(60), policy)
    [refund] = [o for o in out if isinstance(o, RefundIssued)]
    assert (refund.cause, refund.amount.amount) == ("delivery_failed", Decimal("20.00"))
    assert order.cancelled
    assert [o for o in out if isinstance(o, AllocateLine)] == []


# --- example 5: events about shipments not known yet are held ------------------------------

def test_example_5_a_delivery_before_its_dispatch_is_held() -> None:
    flow = Flow().do(placed(), allocated("sa", 2), paid())
    so = flow.so_of("sa")
    flow.do(delivered("p1", "sa"), failed("p2", "sa"))
    assert flow.refused() == []
    assert len(flow.order.held) == 2
    flow.do(dispatched(so, "sa", shipment="p1", qty=1), minute=5)
    assert [u.state for u in flow.sent(ShipmentUpdated, last=True)] == ["in_transit",
                                                                       "delivered"]
    assert flow.order.lines["1"].delivered == 1
    assert len(flow.order.held) == 1
    flow.do(dispatched(so, "sa", shipment="p2", qty=1, tracking="TRK2"), minute=6)
    assert [u.state for u in flow.sent(ShipmentUpdated, last=True)] == ["in_transit", "lost"]
    assert flow.order.held == ()


# --- example 6: a failed-over supplier ships after all ----------------------------------------

def failed_over_to_sb() -> tuple[Flow, str, str]:
    """sa missed its acknowledge SLA; sb got the 2 units. Returns (flow, sa's, sb's)."""
    flow = Flow().do(placed(), allocated("sa", 2), paid())
    sa = flow.so_of("sa")
    flow.tick(DAY + 1)  # requested at minute 0 (the payment's step), 24 h to accept
    assert flow.sent(SupplierOrderCancelled, last=True)[0].cause == "acknowledge_sla_missed"
    flow.do(released("sa", 2), allocated("sb", 2), minute=DAY + 2)
    return flow, sa, flow.so_of("sb")


def test_example_6_a_late_shipment_cancels_the_unshipped_replacement() -> None:
    flow, sa, sb = failed_over_to_sb()
    flow.do(dispatched(sa, "sa", shipment="p1", tracking="LATE1"), minute=DAY + 10)
    [superseded] = flow.sent(SupplierOrderCancelled, last=True)
    assert (superseded.supplier_order_id, superseded.cause) == (sb, "superseded")
    [release] = flow.sent(ReleaseLine, last=True)
    assert (release.supplier_id, release.quantity) == ("sb", 2)
    assert flow.sent(AllocateLine, last=True) == [] == flow.sent(SupplierOrderRequested,
                                                                 last=True)
    [parcel] = flow.sent(ShipmentUpdated, last=True)
    assert (parcel.supplier_id, parcel.state, parcel.flagged) == ("sa", "in_transit", False)
    assert flow.status == "dispatched"
    assert flow.order.flag is None
    flow.do(released("sb", 2), delivered("p1", "sa"), minute=DAY + 20)
    assert flow.status == "delivered"
    assert flow.order.lines["1"].allocated == 2


def test_a_late_shipment_before_the_replacement_is_allocated() -> None:
    flow = Flow().do(placed(), allocated("sa", 2), paid())
    sa = flow.so_of("sa")
    flow.tick(DAY + 1)
    flow.do(dispatched(sa, "sa"), minute=DAY + 2)  # sb's LineAllocated still in flight
    flow.do(released("sa", 2), allocated("sb", 2), minute=DAY + 3)
    [give_back] = flow.sent(ReleaseLine, last=True)
    assert (give_back.supplier_id, give_back.quantity) == ("sb", 2)
    assert flow.sent(SupplierOrderRequested, last=True) == []


def test_example_7_both_shipped_flags_the_order_for_ops() -> None:
    flow, sa, sb = failed_over_to_sb()
    flow.do(dispatched(sb, "sb", shipment="p2", tracking="NEW2"), minute=DAY + 5)
    flow.do(dispatched(sa, "sa", shipment="p1", tracking="LATE1"), minute=DAY + 10)
    updates = {u.tracking_number: u for u in flow.sent(ShipmentUpdated, last=True)}
    assert updates["LATE1"].flagged
    assert updates["NEW2"].flagged
    assert flow.sent(SupplierOrderCancelled, last=True) == []  # nothing left to cancel
    reason = flow.order.hold_reason or ""
    assert "LATE1" in reason
    assert "NEW2" in reason
    assert flow.order.held_for_ops
    assert flow.reason == flow.order.flag
    assert flow.status == "dispatched"
    assert flow.order.lines["1"].shipped == 4
    flow.do(delivered("p1", "sa"), delivered("p2", "sb"), minute=DAY + 30)
    assert flow.order.held_for_ops
    assert flow.reason == reason


def test_example_8_a_shipment_after_a_cancellation_is_flagged_and_the_refund_stands() -> None:
    flow = Flow().do(placed(("1", "SKU-1", 3, "10.00")), allocated("sa", 3), paid("30.00"))
    sa = flow.so_of("sa")
    flow.do(cancelled(**{"1": 1}), minute=5)
    assert sum(r.amount.amount for r in flow.sent(RefundIssued)) == Decimal("10.00")
    resent = flow.so_of("sa")  # the 2 units left, sent again
    flow.do(dispatched(sa, "sa", shipment="p1", qty=3, tracking="OLD1"), minute=10)
    [superseded] = flow.sent(SupplierOrderCancelled, last=True)
    assert (superseded.supplier_order_id, superseded.cause) == (resent, "superseded")
    assert flow.sent(RefundIssued, last=True) == []  # the refund stands
    [parcel] = flow.sent(ShipmentUpdated, last=True)
    assert parcel.flagged
    assert "OLD1" in (flow.order.hold_reason or "")
    line = flow.order.lines["1"]
    assert (line.shipped, line.wanted, line.cancelled) == (3, 2, 1)
    assert flow.order.due() == Decimal("20.00")


def test_a_shipment_after_the_whole_order_was_cancelled_is_flagged() -> None:
    flow = Flow().do(placed(), allocated("sa", 2), paid())
    sa = flow.so_of("sa")
    flow.do(cancelled(), minute=5)
    flow.do(dispatched(sa, "sa", tracking="OOPS"), minute=6)
    assert flow.refused() == []
    assert flow.order.flag
    assert "OOPS" in flow.order.flag
    assert flow.status == "cancelled"
    assert flow.sent(ShipmentUpdated, last=True)[0].flagged
    assert flow.sent(RefundIssued, last=True) == []


# --- queued_at --------------------------------------------------------------------------------

def test_queued_at_is_shown_while_units_are_backordered() -> None:
    flow = Flow().do(placed(), backordered(2, queued_at=at(0)))
    [status] = flow.sent(OrderStatusChanged, last=True)
    assert status.lines[0].queued_at == at(0)
    flow.do(allocated("sa", 2, queued_at=at(0)))
    [status] = flow.sent(OrderStatusChanged, last=True)
    assert status.lines[0].queued_at is None
