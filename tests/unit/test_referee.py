"""The chaos tier's independent referee (tests/chaos/referee.py), on hand-made runs.

Each invariant holds on a run that keeps it and fires on one that breaks it; the
money rule it writes again gives the docs' worked examples; and it imports nothing
of the agents it judges.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from decimal import Decimal

import pytest

from events.base import Message
from events.fulfillment import (
    OrderStatus,
    OrderStatusChanged,
    RefundIssued,
    SupplierOrderCancelled,
    SupplierOrderLine,
    SupplierOrderRequested,
)
from events.topics import SHOP_ORDERS
from events.types import Address, Money
from simulator.ledger import Books, Parcel, Receipt
from tests.chaos import order_money, referee
from tests.chaos.world_facts import Progress, Seen, Span, Terms, collect
from tests.unit.order_factories import (
    ORDER,
    T0,
    accepted,
    at,
    cancelled,
    dispatched,
    paid,
    placed,
)

HOUR = timedelta(hours=1)
TERMS = Terms(span=Span(T0, 1200.0, T0 + 40 * HOUR), tolerance=2 * HOUR,
              jitter=timedelta(minutes=10), payment_window=6 * HOUR,
              held_payment_window=24 * HOUR, sla_grace=timedelta(minutes=15),
              backorder_window=timedelta(days=14))
SHOP = "shop/acme"


def seen(data: Message, minutes: float = 0, source: str = SHOP) -> Seen:
    return Seen("any", at(minutes), source, data)


def requested(so: str = "so1", minutes: float = 2, ack_h: int = 4) -> Seen:
    when = at(minutes)
    return seen(SupplierOrderRequested(
        supplier_order_id=so, supplier_id="sa", order_id=ORDER,
        ship_to=Address(name="Ada", line1="1 Rd", city="Lyon", country="FR"),
        lines=(SupplierOrderLine(line_id="1", sku="SKU-1", quantity=2),),
        acknowledge_by=when + ack_h * HOUR, dispatch_by=when + 48 * HOUR, requested_at=when),
        minutes, "orders/agent")


def so_cancelled(minutes: float, cause: str = "acknowledge_sla_missed",
                 so: str = "so1") -> Seen:
    return seen(SupplierOrderCancelled(
        supplier_order_id=so, supplier_id="sa", order_id=ORDER, reason="r",
        cause=cause, cancelled_at=at(minutes)), minutes, "orders/agent")  # type: ignore[arg-type]


def status(name: OrderStatus, version: int = 9, reason: str | None = None) -> Seen:
    return seen(OrderStatusChanged(order_id=ORDER, shop_id="acme", version=version,
                                   status=name, reason=reason, changed_at=T0),
                0, "orders/agent")


def refund(amount: str, cause: str = "overpayment", currency: str = "EUR",
           ref: str = "r1") -> Seen:
    return seen(RefundIssued(order_id=ORDER, shop_id="acme", refund_id=ref,
                             cause=cause,  # type: ignore[arg-type]
                             amount=Money(amount=Decimal(amount), currency=currency),
                             issued_at=T0), 0, "orders/agent")


def judged(*events: Seen, books: Books | None = None) -> referee.Ruling:
    return referee.rule(collect(events), books or Books(), TERMS)


def a_good_run() -> list[Seen]:
    """One order of 2 x 10.00 paid, sent to sa after the payment, accepted in time,
    then dispatched (its parcel still on its way: the books say nothing ended)."""
    return [seen(placed()), seen(paid("20.00"), 1), requested(), seen(accepted(
        "so1", "sa", at(30)), 30, "supplier/sa"), seen(dispatched("so1", "sa", when=at(300)),
                                                       300, "supplier/sa"),
            status("dispatched")]


def violated(ruling: referee.Ruling) -> dict[str, list[str]]:
    return {k: v for k, v in ruling.violations.items() if v}


def test_a_run_that_keeps_every_invariant_passes() -> None:
    books = Books()
    books.parcels.append(_parcel())
    ruling = judged(*a_good_run(), books=books)
    assert violated(ruling) == {}
    assert ruling.counts["money exact"] == 1


def test_the_money_rule_gives_the_documented_examples() -> None:
    example = placed(("A", "SKU-A", 3, "9.99"), ("B", "SKU-B", 1, "5.01"),
                     shipping="4.90", tax="7.00", discount="3.00")
    values = order_money.line_values(example)
    assert [(v.goods, v.shipping) for v in values] == [(3339, 419), (559, 71)]
    assert order_money.due(values, {}, {}) == 4388
    assert order_money.due(values, {"A": 1}, {"A": 1}) == 4388 - 1252  # example 2
    # example 4: one unit of A cancelled, one returned (changed mind), B returned defective
    assert order_money.due(values, {"A": 2, "B": 1}, {"A": 1, "B": 1}) == 1393
    assert order_money.split(10, [1, 1, 1]) == [3, 3, 4]  # floors on the running sum


def test_a_supplier_order_before_full_payment_is_caught() -> None:
    run = [seen(placed()), seen(paid("10.00", ref="half"), 1), requested(minutes=2),
           seen(paid("10.00", ref="rest").model_copy(update={"paid_at": at(11)}), 11)]
    assert "with 1000 of 2000 cents paid" in judged(*run).violations["paid_first"][0]
    run[2] = requested(minutes=12)  # after the balance: fine
    assert judged(*run).violations["paid_first"] == []


def test_money_kept_beyond_the_rule_is_caught() -> None:
    over = [seen(placed()), seen(paid("21.00"), 1), status("placed", reason="x")]
    assert "more than its total" in " ".join(judged(*over).violations["money"])
    assert judged(*over, refund("1.00")).violations["money"] == []
    # one unit of two cancelled before anything shipped: 10.00 back, not 9.99
    short = [seen(placed()), seen(paid("20.00"), 1),
             seen(cancelled(**{"1": 1}).model_copy(update={"cancelled_at": at(20)}), 20),
             refund("9.99", "lines_cancelled"), status("placed", reason="x")]
    assert "the rule gives [1000]" in judged(*short).violations["money"][0]


def test_a_payment_in_another_currency_must_be_refunded_whole() -> None:
    run = [seen(placed()), seen(paid("20.00", "USD", ref="usd"), 1), seen(paid("20.00"), 11)]
    assert "not refunded whole" in judged(*run).violations["money"][0]
    assert judged(*run, refund("20.00", "wrong_currency", "USD")).violations["money"] == []


def test_a_silent_supplier_must_be_failed_over_within_the_tolerance() -> None:
    run = [seen(placed()), seen(paid("20.00"), 1), requested(ack_h=4),
           status("sent_to_supplier")]
    assert "never cancelled" in judged(*run).violations["sla"][0]
    due = 2 + 4 * 60 + 15  # requested at minute 2, 4 h to answer, 15 min grace
    assert judged(*run, so_cancelled(due + 30)).violations["sla"] == []
    late = judged(*run, so_cancelled(due + 3 * 60)).violations["sla"]
    assert "cancelled only at" in late[0]
    # behind: a payment that came before the deadline was reacted to 2 h after it
    backlog = [seen(paid("1.00", "USD", ref="x"), due - 1)._replace(id="x", topic=SHOP_ORDERS),
               refund("1.00", "wrong_currency", "USD")._replace(
                   at=at(due + 2 * 60), cause=f"{SHOP}/x")]
    assert judged(*run, *backlog, so_cancelled(due + 3 * 60)).violations["sla"] == []


def test_the_pipeline_is_caught_up_once_every_input_on_the_broker_was_reacted_to() -> None:
    def pair(name: str, sent: float, reacted: float) -> list[Seen]:
        return [Seen(SHOP_ORDERS, at(sent), SHOP, placed(), name),
                Seen("out", at(reacted), "orders/agent", placed(), f"{name}-r",
                     f"{SHOP}/{name}")]

    progress = Progress([*pair("a", 1, 3), *pair("b", 2.5, 4), *pair("c", 4, 6),
                         *pair("d", 9, 9.5)])
    assert progress.caught_up(at(0.5)) == at(0.5)  # nothing waiting yet
    assert progress.caught_up(at(1)) == at(6)  # b and c came before a was answered
    assert progress.caught_up(at(7)) == at(7)
    assert progress.caught_up(at(9)) == at(9.5)


def test_a_failover_before_the_deadline_is_caught_unless_the_answer_came_late() -> None:
    deadline = 2 + 4 * 60  # requested at minute 2 with 4 h to answer
    run = [seen(placed()), seen(paid("20.00"), 1), requested(ack_h=4),
           status("sent_to_supplier")]
    early = judged(*run, so_cancelled(deadline - 30)).violations["sla"]
    assert "cancelled for its acknowledge_sla_missed" in early[0]
    late = seen(accepted("so1", "sa", at(deadline + 5)), deadline + 5, "supplier/sa")
    assert judged(*run, late, so_cancelled(deadline + 5)).violations["sla"] == []


def test_a_supplier_order_answered_in_time_must_not_be_failed_over() -> None:
    run = [*a_good_run()[:4], so_cancelled(5 * 60)]
    assert "though accepted in time" in judged(*run).violations["sla"][0]


def test_an_order_stuck_with_nothing_owed_is_caught() -> None:
    # the supplier's deadline passed long ago, it was failed over, and nothing came since
    run = [seen(placed()), seen(paid("20.00"), 1), requested(), so_cancelled(4 * 60 + 20),
           status("sent_to_supplier")]
    assert "nothing owed" in judged(*run).violations["outcomes"][0]
    assert judged(*run[:-1], status("held_for_ops", reason="re-route bound")
                  ).violations["outcomes"] == []
    unpaid_cancelled = [seen(placed()), seen(paid("20.00"), 1), status("cancelled")]
    assert "without a cause" in judged(*unpaid_cancelled).violations["outcomes"][0]
    assert judged(seen(placed()), status("cancelled")).violations["outcomes"] == []


def test_a_supplier_asked_beyond_its_free_stock_is_caught() -> None:
    books = Books()
    books.receipts.append(Receipt("sa", "so1", ORDER, "FR", T0, T0,
                                  (("SKU-1", 3, 1),), "out_of_stock"))
    assert "more than it had free" in judged(seen(placed()), books=books).violations["stock"][0]
    books.sold("sa", "SKU-1", T0 - HOUR, 2)  # sold elsewhere after the last report it had
    assert judged(seen(placed()), books=books).violations["stock"] == []


def test_the_referee_imports_nothing_of_the_agents() -> None:
    code = ("import sys, tests.chaos.referee; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'agents'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def _parcel() -> Parcel:
    return Parcel("sa", "so1", ORDER, "shp1", at(300), at(3000), at(6000), "on_time",
                  at(3000))


@pytest.mark.parametrize("amount", ["0.001", "1.234"])
def test_amounts_beyond_cents_are_refused(amount: str) -> None:
    with pytest.raises(ValueError, match="two decimals"):
        order_money.cents(Decimal(amount))
