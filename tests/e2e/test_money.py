"""Money end to end: a refund on every path where money was taken and goods will not
arrive, through a real worker driven only through Kafka (shops, suppliers, and ops with
the ``dropship ops`` commands), time moved by the worker's file clock.

Each scenario reads the result twice: from what the shop consumes (``RefundIssued`` and
``OrderStatusChanged`` on ``fulfillment.order-status``) and from the read models ops
query (``read.refunds``, the ledger in ``read.order_status``, ``dropship order show``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from events.codec import encode, key_of
from events.envelope import wrap
from events.fulfillment import (
    OrderStatusChanged,
    RefundIssued,
    SupplierOrderCancelled,
    SupplierOrderRequested,
)
from events.topics import SHOP_ORDERS
from pipeline.runtime.settings import Settings
from tests.e2e.order_market import Market, running_market
from tests.e2e.test_order_lifecycle import read, status, supplier_order
from tests.helpers import run_cli

pytestmark = pytest.mark.e2e
D = Decimal
#: The worker's business settings here: short windows, so that they pass within a test.
WINDOWS = {"DROPSHIP_HELD_PAYMENT_WINDOW_MINUTES": "30", "DROPSHIP_BACKORDER_WINDOW_DAYS": "1",
           "DROPSHIP_MAX_REROUTES_PER_LINE": "1"}


@pytest_asyncio.fixture(scope="module")
async def money(migrated: Settings, engine: AsyncEngine,
                cli_env: Callable[..., dict[str, str]],
                tmp_path_factory: pytest.TempPathFactory,
                ) -> AsyncIterator[tuple[Market, dict[str, str]]]:
    async with running_market(migrated, engine, cli_env, tmp_path_factory.mktemp("money"),
                              **WINDOWS) as running:
        yield running


async def refunds(m: Market, order_id: str, n: int = 1) -> list[RefundIssued]:
    """Once the shop has received ``n`` refunds of the order: all of them."""
    found: list[RefundIssued] = await m.until(
        f"{n} refund(s) of {order_id}",
        lambda: (got := m.tap.of(RefundIssued, order_id)) and len(got) >= n and got)
    return found


async def stored_refunds(m: Market, order_id: str, n: int = 1) -> list[Any]:
    return await read(m, "SELECT cause, amount, lines FROM read.refunds WHERE order_id = :o "
                      "ORDER BY issued_at, refund_id", lambda r: len(r) >= n, o=order_id)


async def ledger(m: Market, order_id: str, **expected: str) -> None:
    """Wait until the order's ledger in the read models shows ``expected``."""
    cols = ", ".join(expected)
    await read(m, f"SELECT {cols} FROM read.order_status WHERE order_id = :o",
               lambda r: bool(r) and all(str(getattr(r[0], k)) == v
                                         for k, v in expected.items()), o=order_id)


def order_show(env: dict[str, str], order_id: str) -> dict[str, Any]:
    result = run_cli("order", "show", order_id, "--json", env=env)
    assert result.returncode == 0, result.stderr
    view: dict[str, Any] = json.loads(result.stdout)
    return view


Line = tuple[str, str, int, str]


async def paid_and_sent(m: Market, oid: str, total: str, *lines: Line,
                        shipping: str | None = None, supplier: str = "sa",
                        ) -> SupplierOrderRequested:
    """Place an order, pay it in full, and wait for its supplier order."""
    await m.shop(m.order(oid, *lines, shipping=shipping))
    await m.shop(m.payment(oid, total))
    return await supplier_order(m, oid, supplier)


async def test_a_paid_order_cancelled_before_dispatch_is_refunded_in_full(
        money: tuple[Market, dict[str, str]]) -> None:
    m, env = money
    oid, sku = m.name("cancel-paid"), m.name("MUG")
    await m.catalog(sku, ("sa", 1, 10))
    await paid_and_sent(m, oid, "29.90", ("1", sku, 2, "12.50"), shipping="4.90")
    await m.shop(m.cancel(oid))
    done = await status(m, oid, "cancelled")
    assert done.ledger is not None
    assert (done.ledger.paid, done.ledger.refunded, done.ledger.outstanding) == (
        D("29.90"), D("29.90"), D("0"))
    [refund] = await refunds(m, oid)
    assert (refund.cause, refund.amount.amount) == ("order_cancelled", D("29.90"))
    assert [c.cause for c in m.tap.of(SupplierOrderCancelled, oid)] == ["order_cancelled"]
    [row] = await stored_refunds(m, oid)
    assert (row.cause, row.amount) == ("order_cancelled", D("29.90"))
    await ledger(m, oid, paid="29.90", refunded="29.90", due="0.00", status="cancelled")
    view = order_show(env, oid)
    assert view["order"]["customer_ref"] == "Ada Lovelace <ada@example.com>"
    assert view["order"]["ship_to"]["city"] == "Lyon"
    assert [r["cause"] for r in view["refunds"]] == ["order_cancelled"]


async def test_the_undispatched_lines_of_a_partly_shipped_order_are_cancelled_and_refunded(
        money: tuple[Market, dict[str, str]]) -> None:
    m, _ = money
    oid, a, b = m.name("partial"), m.name("PEN"), m.name("INK")
    await m.catalog(a, ("sa", 1, 10))
    await m.catalog(b, ("sb", 1, 10))
    await m.shop(m.order(oid, ("1", a, 1, "8.00"), ("2", b, 2, "6.00")))
    await m.shop(m.payment(oid, "20.00"))
    first, second = await supplier_order(m, oid, "sa"), await supplier_order(m, oid, "sb")
    await m.supplier("sa", m.ship(oid, first.supplier_order_id, "sa", "p1", {"1": 1}, "T1"))
    await status(m, oid, "partially_dispatched")
    await m.shop(m.cancel(oid, {"2": 2}))
    [refund] = await refunds(m, oid)
    assert (refund.cause, refund.amount.amount) == ("lines_cancelled", D("12.00"))
    assert [(ln.line_id, ln.units) for ln in refund.lines] == [("2", 2)]
    cancelled = await m.until("sb's order cancelled", lambda: m.tap.of(SupplierOrderCancelled,
                                                                       oid))
    assert [(c.supplier_order_id, c.cause) for c in cancelled] == [
        (second.supplier_order_id, "lines_cancelled")]
    after = await status(m, oid, "dispatched")  # all that is still wanted has shipped
    assert [ln.cancelled for ln in after.lines] == [0, 2]
    await read(m, "SELECT line_id, cancelled, credited FROM read.order_lines WHERE order_id = :o"
               " ORDER BY line_id", lambda r: [(x.line_id, x.cancelled, str(x.credited))
                                               for x in r] == [("1", 0, "0.00"),
                                                               ("2", 2, "12.00")], o=oid)


async def test_a_payment_after_the_payment_window_closed_is_refunded(
        money: tuple[Market, dict[str, str]]) -> None:
    m, _ = money
    oid, sku = m.name("late-pay"), m.name("CUP")
    await m.catalog(sku, ("sa", 1, 4))
    await m.shop(m.order(oid, ("1", sku, 1, "9.00")))
    await status(m, oid, "allocated")
    m.advance(timedelta(minutes=61))
    await status(m, oid, "cancelled")
    await m.shop(m.payment(oid, "9.00"))
    [refund] = await refunds(m, oid)
    assert (refund.cause, refund.amount.amount, refund.payment_ref) == (
        "late_payment", D("9.00"), "pay-1")
    await ledger(m, oid, paid="9.00", refunded="9.00", status="cancelled")
    assert m.tap.of(SupplierOrderRequested, oid) == []


async def test_a_backorder_that_outlives_its_window_is_cancelled_and_refunded(
        money: tuple[Market, dict[str, str]]) -> None:
    m, _ = money
    oid, sku = m.name("waits"), m.name("RARE")
    await m.catalog(sku, ("sa", 1, 0))
    await m.shop(m.order(oid, ("1", sku, 2, "15.00")))
    await m.shop(m.payment(oid, "30.00"))
    waiting = await status(m, oid, "backordered")
    assert waiting.lines[0].backordered == 2
    m.advance(timedelta(days=1, minutes=1))
    done = await status(m, oid, "cancelled")
    assert "backordered for over 1 days" in (done.reason or "")
    [refund] = await refunds(m, oid)
    assert (refund.cause, refund.amount.amount) == ("backorder_expired", D("30.00"))
    await read(m, "SELECT count(*) AS n FROM read.backorders WHERE order_id = :o",
               lambda r: r[0].n == 0, o=oid)
    await m.until("the backorder is dropped", lambda: _no_backorder(m, sku, oid))


async def _no_backorder(m: Market, sku: str, order_id: str) -> bool:
    return (order_id, "1") not in (await m.sku_state(sku)).lines


async def test_ops_give_up_a_held_line_through_the_cli_and_it_is_refunded(
        money: tuple[Market, dict[str, str]]) -> None:
    m, env = money
    oid, sku = m.name("held"), m.name("VASE")
    await m.catalog(sku, ("s1", 1, 5), ("s2", 2, 5))
    await paid_and_sent(m, oid, "40.00", ("1", sku, 2, "20.00"), supplier="s1")
    for n, supplier in enumerate(("s1", "s2"), start=1):  # one re-route allowed here
        so = await supplier_order(m, oid, supplier)
        await m.supplier(supplier, m.reject(oid, so.supplier_order_id, supplier))
        if n == 1:
            await supplier_order(m, oid, "s2")
    await status(m, oid, "held_for_ops")
    result = run_cli("ops", "cancel", oid, "--line", "1=2", "--reason", "nobody has it",
                     "--operator", "alice", env=env)
    assert result.returncode == 0, result.stderr
    assert "sent to ops.commands" in result.stdout
    [refund] = await refunds(m, oid)
    assert (refund.cause, refund.amount.amount) == ("ops_cancelled", D("40.00"))
    done = await status(m, oid, "cancelled")
    assert done.reason == "cancelled by alice: nobody has it"
    await read(m, "SELECT summary FROM read.order_timeline WHERE order_id = :o "
               "AND source = 'ops/alice'", lambda r: [x.summary for x in r] == [
                   "ops: cancel 2 unit(s) of the order (nobody has it)"], o=oid)
    timeline = order_show(env, oid)["timeline"]
    assert [t["source"] for t in timeline].count("ops/alice") == 1


async def test_partial_returns_refund_the_units_by_their_reason(
        money: tuple[Market, dict[str, str]]) -> None:
    m, env = money
    oid, sku = m.name("returns"), m.name("SHOE")
    await m.catalog(sku, ("sa", 1, 10))
    so = await paid_and_sent(m, oid, "36.00", ("1", sku, 3, "10.00"), shipping="6.00")
    await m.supplier("sa", m.ship(oid, so.supplier_order_id, "sa", "p1", {"1": 3}, "T1"))
    await m.supplier("sa", m.delivered(oid, "sa", "p1"))
    await status(m, oid, "delivered")
    await m.shop(m.return_request(oid, "r1", {"1": 1}))  # changed mind: goods only
    await m.until("r1 authorized", lambda: _authorized(m, oid, "r1"))
    await m.supplier("sa", m.return_received(oid, "r1", "sa", {"1": 1}))
    await refunds(m, oid, 1)
    await m.shop(m.return_request(oid, "r2", {"1": 1}, code="defective"))  # and its shipping
    await m.until("r2 authorized", lambda: _authorized(m, oid, "r2"))
    await m.supplier("sa", m.return_received(oid, "r2", "sa", {"1": 1}))
    both = await refunds(m, oid, 2)
    assert [(r.cause, r.rma_id, r.amount.amount) for r in both] == [
        ("return", "r1", D("10.00")), ("return", "r2", D("12.00"))]
    done = await status(m, oid, "partially_refunded")
    assert done.ledger is not None
    assert (done.ledger.paid - done.ledger.refunded, done.ledger.due) == (D("14.00"), D("14.00"))
    rows = await stored_refunds(m, oid, 2)
    assert [(r.cause, r.amount, r.lines[0]["with_shipping"]) for r in rows] == [
        ("return", D("10.00"), False), ("return", D("12.00"), True)]
    view = order_show(env, oid)
    assert (view["order"]["paid"], view["order"]["refunded"]) == ("36.00", "22.00")


async def _authorized(m: Market, order_id: str, rma: str) -> bool:
    order = await m.order_state(order_id)
    return order is not None and rma in order.returns


async def test_short_excess_and_foreign_payments(money: tuple[Market, dict[str, str]]) -> None:
    m, _ = money
    sku = m.name("HAT")
    await m.catalog(sku, ("sa", 1, 10))
    short, over = m.name("short"), m.name("over")
    await m.shop(m.order(short, ("1", sku, 1, "20.00")))
    await m.shop(m.payment(short, "20.00", ref="usd", currency="USD"))  # wrong currency
    await m.shop(m.payment(short, "15.00", ref="eur"))
    held = await status(m, short, "payment_held")
    assert held.reason == "paid 15.00 of 20.00 EUR; waiting for the balance"
    m.advance(timedelta(minutes=31))  # the balance never comes
    await status(m, short, "cancelled")
    got = await refunds(m, short, 2)
    assert [(r.cause, r.amount.amount, r.amount.currency) for r in got] == [
        ("wrong_currency", D("20.00"), "USD"), ("payment_expired", D("15.00"), "EUR")]
    assert m.tap.of(SupplierOrderRequested, short) == []
    await m.shop(m.order(over, ("1", sku, 1, "20.00")))
    await m.shop(m.payment(over, "25.00"))
    [refund] = await refunds(m, over)
    assert (refund.cause, refund.amount.amount) == ("overpayment", D("5.00"))
    await supplier_order(m, over, "sa")
    await ledger(m, over, paid="25.00", refunded="5.00", outstanding="0.00")


async def test_ops_release_a_held_payment_and_close_a_return_through_the_cli(
        money: tuple[Market, dict[str, str]]) -> None:
    m, env = money
    oid, sku = m.name("ops"), m.name("LAMP")
    await m.catalog(sku, ("sa", 1, 10))
    await m.shop(m.order(oid, ("1", sku, 2, "10.00")))
    await m.shop(m.payment(oid, "19.00"))
    await status(m, oid, "payment_held")
    released = run_cli("ops", "release-payment", oid, "--reason", "rounding at checkout",
                       "--operator", "bob", env=env)
    assert released.returncode == 0, released.stderr
    so = await supplier_order(m, oid, "sa")
    await ledger(m, oid, written_off="1.00", due="19.00", outstanding="0.00")
    await m.supplier("sa", m.ship(oid, so.supplier_order_id, "sa", "p1", {"1": 2}, "T1"))
    await m.supplier("sa", m.delivered(oid, "sa", "p1"))
    await status(m, oid, "delivered")
    await m.shop(m.return_request(oid, "r1", {"1": 1}))
    await status(m, oid, "return_requested")
    closed = run_cli("ops", "close-return", oid, "r1", "--refund", "--reason", "parcel lost",
                     env=env)
    assert closed.returncode == 0, closed.stderr
    [refund] = await refunds(m, oid)  # the unit's value: the write-off stays written off
    assert (refund.cause, refund.amount.amount) == ("return", D("10.00"))
    await status(m, oid, "partially_refunded")
    unknown = run_cli("ops", "cancel", "no-such-order", "--reason", "x", env=env)
    assert (unknown.returncode, unknown.stderr) == (
        1, "error: order 'no-such-order' is unknown to the read models\n")


async def test_the_ops_views_wait_by_the_pipelines_clock(
        money: tuple[Market, dict[str, str]]) -> None:
    """The worker's clock runs days ahead of the database's here: waiting time in
    ``ops stuck`` is measured by the worker's."""
    m, env = money
    oid, sku = m.name("stuck"), m.name("BOX")
    await m.catalog(sku, ("sa", 1, 10))
    await m.shop(m.order(oid, ("1", sku, 1, "10.00")))
    await m.shop(m.payment(oid, "4.00"))
    await status(m, oid, "payment_held")
    m.advance(timedelta(minutes=10))
    rows = await m.until("the stuck view", lambda: _stuck(env, oid))
    assert timedelta(minutes=9) < timedelta(seconds=rows[0]["waiting"]) < timedelta(hours=1)


def _stuck(env: dict[str, str], order_id: str) -> list[dict[str, Any]]:
    result = run_cli("ops", "stuck", "--json", env=env)
    assert result.returncode == 0, result.stderr
    return [r for r in json.loads(result.stdout) if r["order_id"] == order_id
            and r["waiting"] >= 9 * 60]


async def test_a_payment_for_an_order_that_was_never_validly_placed_makes_no_order(
        money: tuple[Market, dict[str, str]]) -> None:
    m, env = money
    oid, sku = m.name("invalid"), m.name("GONE")
    placed = m.order(oid, ("1", sku, 1, "5.00"))
    event = wrap(placed, id=f"{oid}-bad", source="shop/acme", time=m.now)
    doc = json.loads(encode(event))
    doc["data"]["lines"][0]["quantity"] = 0  # refused: dead-lettered
    await m.raw(SHOP_ORDERS, key_of(event), json.dumps(doc).encode())
    await m.shop(m.payment(oid, "5.00"))  # held, waiting for an order that never comes
    await m.until("the refusal", lambda: m.dead_letters(oid))
    await read(m, "SELECT count(*) AS n FROM read.order_timeline WHERE order_id = :o",
               lambda r: r[0].n == 1, o=oid)
    shown = run_cli("order", "show", oid, env=env)
    assert (shown.returncode, shown.stderr) == (1, (
        f"error: order '{oid}' is unknown to the read models (1 event(s) name it; none "
        "placed it validly)\n"))
    assert m.tap.of(OrderStatusChanged, oid) == []
