"""The money rules of docs/order-lifecycle.md ("Money"), one test per worked example, and a
refund on every path where money was taken and goods will not arrive.

The example order (as in the docs): line A 3 x 9.99, line B 1 x 5.01, shipping 4.90,
tax 7.00, discount 3.00: total 43.88 EUR.
"""

from __future__ import annotations

from decimal import Decimal

from agents.core import money
from events.allocation import AllocateLine, ReleaseLine
from events.fulfillment import (
    OrderStatusChanged,
    RefundIssued,
    SupplierOrderCancelled,
    SupplierOrderRequested,
)
from tests.unit.order_factories import (
    Flow,
    accepted,
    allocated,
    any_of,
    backordered,
    cancelled,
    close_return,
    delivered,
    dispatched,
    ops_cancel,
    paid,
    placed,
    rejected,
    release_payment,
    released,
    reroute,
    return_received,
    return_requested,
)

D = Decimal


def example() -> Flow:
    return Flow().do(placed(("A", "SKU-A", 3, "9.99"), ("B", "SKU-B", 1, "5.01"),
                            shipping="4.90", tax="7.00", discount="3.00"))


def reserved(flow: Flow) -> Flow:
    return flow.do(allocated("sa", 3, line="A", sku="SKU-A"),
                   allocated("sb", 1, line="B", sku="SKU-B"))


def paid_example() -> Flow:
    return reserved(example()).do(paid("43.88"), minute=1)


def refunds(flow: Flow, last: bool = False) -> list[tuple[str, Decimal]]:
    return [(r.cause, r.amount.amount) for r in flow.sent(RefundIssued, last=last)]


def ledger(flow: Flow) -> dict[str, Decimal]:
    snapshot = any_of(flow.sent(OrderStatusChanged))
    assert snapshot.ledger is not None
    return {k: v for k, v in snapshot.ledger.model_dump().items() if k != "currency"}


# --- worked example 1: the split -------------------------------------------------------

def test_example_1_discount_tax_and_shipping_split_over_the_lines() -> None:
    flow = example()
    a, b = flow.order.lines["A"], flow.order.lines["B"]
    assert (a.goods, a.shipping, b.goods, b.shipping) == (
        D("33.39"), D("4.19"), D("5.59"), D("0.71"))
    status = any_of(flow.sent(OrderStatusChanged))
    assert [ln.value for ln in status.lines] == [D("37.58"), D("6.30")]
    assert ledger(flow)["total"] == D("43.88") == a.goods + a.shipping + b.goods + b.shipping


def test_example_1_units_of_a_line_add_up_to_its_value() -> None:
    assert [money.units_value(419, 3, n, 1) for n in range(3)] == [139, 140, 140]
    assert money.units_value(419, 3, 0, 3) == 419
    assert money.split(300, [2997, 501]) == [257, 43]


# --- worked example 2: cancel one unit of a paid order -----------------------------------

def test_example_2_cancelling_one_unit_refunds_its_goods_and_shipping() -> None:
    flow = paid_example().do(cancelled(A=1), minute=2)
    assert refunds(flow, last=True) == [("lines_cancelled", D("12.52"))]
    refund = any_of(flow.sent(RefundIssued))
    assert [(ln.line_id, ln.units, ln.amount, ln.with_shipping) for ln in refund.lines] == [
        ("A", 1, D("12.52"), True)]
    cancel = any_of(flow.sent(SupplierOrderCancelled, last=True))
    assert (cancel.supplier_id, cancel.cause) == ("sa", "lines_cancelled")
    assert [(r.supplier_id, r.quantity) for r in flow.sent(ReleaseLine, last=True)] == [("sa", 1)]
    again = any_of(flow.sent(SupplierOrderRequested, last=True))  # the rest, sent again
    assert (again.supplier_id, [(ln.line_id, ln.quantity) for ln in again.lines]) == (
        "sa", [("A", 2)])
    assert flow.status == "sent_to_supplier"
    assert (ledger(flow)["due"], ledger(flow)["refunded"]) == (D("31.36"), D("12.52"))


# --- worked examples 3-4: returns ------------------------------------------------------------

def delivered_rest(flow: Flow) -> Flow:
    flow.do(dispatched(flow.so_of("sa"), "sa", shipment="pa", line="A", qty=2),
            dispatched(flow.so_of("sb"), "sb", shipment="pb", line="B", qty=1),
            delivered("pa", "sa"), delivered("pb", "sb"), minute=60)
    assert flow.status in ("delivered", "partially_refunded")
    return flow


def test_examples_3_4_returns_refund_goods_and_shipping_by_reason() -> None:
    flow = delivered_rest(paid_example().do(cancelled(A=1), minute=2))
    flow.do(return_requested("r1", qty=1, line="A"), return_received("r1", "sa", line="A"),
            minute=120)
    assert refunds(flow, last=True) == [("return", D("11.13"))]  # changed mind: no shipping
    assert flow.status == "partially_refunded"
    flow.do(return_requested("r2", qty=1, line="B", code="defective"),
            return_received("r2", "sb", line="B"), minute=180)
    assert refunds(flow, last=True) == [("return", D("6.30"))]  # seller's fault: shipping too
    book = ledger(flow)
    assert (book["paid"], book["refunded"], book["due"]) == (D("43.88"), D("29.95"), D("13.93"))
    # what the customer kept: one unit of A (11.13) and A's shipping but the cancelled unit's
    assert book["paid"] - book["refunded"] == D("11.13") + D("2.80")
    assert flow.status == "partially_refunded"


def test_returning_one_of_ten_units_is_a_partial_refund() -> None:
    flow = Flow().do(placed(("1", "SKU-1", 10, "3.00")), allocated("sa", 10), paid("30.00"))
    flow.do(dispatched(flow.so_of("sa"), "sa", qty=10), delivered("shp1", "sa"),
            return_requested("r1", qty=1), return_received("r1", "sa"), minute=5)
    assert refunds(flow) == [("return", D("3.00"))]
    assert flow.status == "partially_refunded"


def test_units_may_be_returned_before_the_rest_of_the_order_arrives() -> None:
    flow = Flow().do(placed(("1", "SKU-1", 1, "10.00"), ("2", "SKU-2", 1, "5.00")),
                     allocated("sa", 1), allocated("sb", 1, line="2", sku="SKU-2"),
                     paid("15.00"))
    flow.do(dispatched(flow.so_of("sa"), "sa", qty=1), delivered("shp1", "sa"), minute=5)
    flow.do(return_requested("r1", qty=1), minute=10)
    assert flow.status == "return_requested"
    flow.do(return_received("r1", "sa"), minute=20)
    assert refunds(flow) == [("return", D("10.00"))]


# --- worked examples 5-7: payments -------------------------------------------------------------

def test_example_5_an_overpayment_is_refunded_at_once() -> None:
    flow = reserved(example()).do(paid("50.00"), minute=1)
    assert refunds(flow) == [("overpayment", D("6.12"))]
    assert any_of(flow.sent(RefundIssued)).payment_ref == "p1"
    assert flow.status == "sent_to_supplier"


def test_example_6_a_short_payment_expires_cancelled_and_refunded() -> None:
    flow = reserved(example()).do(paid("40.00"), minute=1)
    assert flow.status == "payment_held"
    assert flow.reason == "paid 40.00 of 43.88 EUR; waiting for the balance"
    assert ledger(flow)["outstanding"] == D("3.88")
    flow.tick(1 + 24 * 60 - 1)
    assert flow.status == "payment_held"
    flow.tick(1 + 24 * 60)
    assert flow.status == "cancelled"
    assert refunds(flow) == [("payment_expired", D("40.00"))]
    assert {r.supplier_id for r in flow.sent(ReleaseLine)} == {None}  # everything released


def test_example_7_ops_release_a_short_payment_and_write_off_the_rest() -> None:
    flow = reserved(example()).do(paid("40.00"), minute=1).do(release_payment(), minute=2)
    assert flow.status == "sent_to_supplier"
    assert "payment released by alice" in (any_of(flow.sent(OrderStatusChanged)).reason or "")
    book = ledger(flow)
    assert (book["written_off"], book["due"], book["outstanding"]) == (
        D("3.88"), D("40.00"), D("0.00"))


def test_a_payment_confirmed_twice_counts_once_and_a_conflicting_one_is_refused() -> None:
    flow = reserved(example()).do(paid("40.00"), paid("40.00"), minute=1)
    assert ledger(flow)["paid"] == D("40.00")
    flow.do(paid("3.88"), minute=2)
    assert flow.refused() == ["payment p1 was already confirmed for 40.00 EUR"]
    flow.do(paid("3.88", ref="p2"), minute=3)
    assert flow.status == "sent_to_supplier"


# --- refunds where goods will not arrive ------------------------------------------------------

def test_cancelling_a_paid_order_before_dispatch_refunds_everything() -> None:
    flow = paid_example().do(cancelled(), minute=2)
    assert flow.status == "cancelled"
    assert refunds(flow) == [("order_cancelled", D("43.88"))]
    assert sorted(c.supplier_id for c in flow.sent(SupplierOrderCancelled)) == ["sa", "sb"]


def test_cancelling_a_partly_shipped_order_refunds_the_units_not_shipped() -> None:
    flow = paid_example()
    flow.do(dispatched(flow.so_of("sa"), "sa", shipment="pa", line="A", qty=1), minute=5)
    flow.do(cancelled(), minute=6)
    assert refunds(flow) == [("order_cancelled", D("22.26") + D("2.79") + D("6.30"))]
    assert [(r.supplier_id, r.quantity) for r in flow.sent(ReleaseLine, last=True)] == [
        ("sa", 2), ("sb", 1)]
    assert flow.sent(SupplierOrderRequested, last=True) == []  # nothing left to send
    assert flow.status == "dispatched"
    assert "not cancelled: 1 of line A" in (flow.reason or "")


def test_a_backorder_past_its_window_is_cancelled_and_refunded() -> None:
    flow = example().do(allocated("sa", 3, line="A", sku="SKU-A"),
                        backordered(1, line="B", sku="SKU-B"), paid("43.88"), minute=1)
    assert flow.status == "sent_to_supplier"
    flow.tick(14 * 24 * 60 - 1)
    assert flow.sent(RefundIssued) == []
    flow.tick(14 * 24 * 60 + 1)
    assert refunds(flow) == [("backorder_expired", D("6.30"))]
    release = any_of(flow.sent(ReleaseLine))
    assert (release.line_id, release.quantity, release.backorder_only) == ("B", 1, True)
    assert flow.order.lines["B"].cancelled == 1
    assert flow.status == "sent_to_supplier"


def held_line() -> Flow:
    flow = paid_example()  # POLICY: 2 re-routes, the third rejection holds the line
    for n, supplier in enumerate(("sa", "s1", "s2")):
        flow.do(rejected(flow.so_of(supplier), supplier), released(supplier, 3, line="A",
                                                                   sku="SKU-A"), minute=2 + n)
        if n < 2:
            flow.do(allocated(f"s{n + 1}", 3, line="A", sku="SKU-A"), minute=2 + n)
    assert flow.order.lines["A"].held
    assert flow.status == "held_for_ops"
    return flow


def test_ops_give_up_a_held_line_and_it_is_refunded() -> None:
    flow = held_line().do(ops_cancel(A=3), minute=10)
    assert refunds(flow) == [("ops_cancelled", D("37.58"))]
    assert "cancelled by alice: giving up" in (flow.reason or "")
    assert flow.status == "sent_to_supplier"  # line B goes on


def test_ops_reroute_a_held_line_to_a_named_supplier() -> None:
    flow = held_line().do(reroute("A", "s9"), minute=10)
    request = any_of(flow.sent(AllocateLine, last=True))
    assert (request.supplier_id, request.quantity) == ("s9", 3)
    assert not flow.order.lines["A"].held
    flow.do(allocated("s9", 3, line="A", sku="SKU-A"), minute=11)
    assert any_of(flow.sent(SupplierOrderRequested, last=True)).supplier_id == "s9"


def test_ops_close_a_return_with_or_without_refund() -> None:
    def returned() -> Flow:
        return delivered_rest(paid_example().do(cancelled(A=1), minute=2)).do(
            return_requested("r1", qty=2, line="A"), minute=70)

    kept = returned().do(close_return("r1", refund=False), minute=80)
    assert kept.sent(RefundIssued, last=True) == []
    assert kept.status == "partially_refunded"  # the cancelled unit was refunded
    assert kept.order.lines["A"].returned == 0
    refunded = returned().do(close_return("r1", refund=True), minute=80)
    assert refunds(refunded, last=True) == [("return", D("22.26"))]


# --- what shops see -------------------------------------------------------------------------

def test_a_rejection_never_shows_an_earlier_status() -> None:
    flow = paid_example()
    flow.do(rejected(flow.so_of("sa"), "sa"), released("sa", 3, line="A", sku="SKU-A"),
            allocated("s2", 3, line="A", sku="SKU-A"), minute=3)
    after = [s.status for s in flow.sent(OrderStatusChanged)][4:]
    assert set(after) == {"sent_to_supplier"}
    assert len(after) == 2  # the rejection, then the re-route (the release showed nothing new)
    assert [s.reason for s in flow.sent(OrderStatusChanged)][4:] == ["sa rejected: out_of_stock",
                                                                     None]


def test_an_order_placed_again_with_other_content_is_refused() -> None:
    flow = example().do(placed(("A", "SKU-A", 1, "1.00")))
    assert flow.refused() == ["order o1 was already placed with other content; "
                              "an order cannot be changed by placing it again"]


def test_derived_events_are_never_stamped_before_the_orders_clock() -> None:
    flow = reserved(example())
    flow.do(paid("43.88"), minute=30)  # the payment comes at 9:30 ...
    flow.do(accepted(flow.so_of("sa"), "sa"), minute=0)  # ... an answer stamped 9:00 after it
    late = allocated("sc", 1, line="B", sku="SKU-B")  # and a decision caused at 9:00
    flow.do(rejected(flow.so_of("sb"), "sb"), minute=0).do(late, minute=0)
    request = any_of(flow.sent(SupplierOrderRequested, last=True))
    assert request.supplier_id == "sc"
    assert request.requested_at.minute == 30
    assert all(s.changed_at.minute == 30 for s in flow.sent(OrderStatusChanged)[3:])
