"""Stock, routing and delivery end to end (issue 15), through a real worker driven only
through Kafka, time moved by the worker's file clock.

Each scenario is one "Done when" line: a refused supplier fact changes no read model;
a stock report between reservation and payment does not double-book; an unreachable
supplier is skipped without a rejection; a parcel past its expected delivery reaches
the shop as an event and shows in ``dropship ops late``; a lost parcel is re-shipped,
then refunded. (A late shipment after a failover cancelling the unshipped replacement
is in ``test_order_lifecycle.py``.)
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from decimal import Decimal

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from events.catalog import Destination, StockLevelReported, SupplierOfferUpdated
from events.fulfillment import (
    OrderStatusChanged,
    RefundIssued,
    ShipmentUpdated,
    SupplierOrderRequested,
    SupplierOrderUpdated,
)
from events.suppliers import ShipmentFailed, SupplierOrderRejected
from events.topics import SUPPLIER_EVENTS
from events.types import Money
from pipeline.runtime.settings import Settings
from tests.e2e.order_market import Market, running_market
from tests.e2e.test_order_lifecycle import read, status, supplier_order
from tests.helpers import run_cli

pytestmark = pytest.mark.e2e
D = Decimal
#: Short SLAs and one re-ship per line, so that deadlines pass within a test.
POLICY = {"DROPSHIP_SLA_GRACE_MINUTES": "0", "DROPSHIP_MAX_RESHIPS_PER_LINE": "1",
          "DROPSHIP_LATE_DELIVERY_GRACE_DAYS": "1"}


@pytest_asyncio.fixture(scope="module")
async def world(migrated: Settings, engine: AsyncEngine,
                cli_env: Callable[..., dict[str, str]],
                tmp_path_factory: pytest.TempPathFactory,
                ) -> AsyncIterator[tuple[Market, dict[str, str]]]:
    async with running_market(migrated, engine, cli_env, tmp_path_factory.mktemp("stock"),
                              **POLICY) as running:
        yield running


async def offer(m: Market, sku: str, supplier: str, priority: int, available: int | None,
                *destinations: tuple[str, str, int], cost: str = "3.00",
                currency: str = "EUR", ack: int = 24, dispatch: int = 48) -> None:
    """An offer shipping to ``destinations`` ((country, shipping cost, transit days)
    each; none: everywhere), then a stock report of ``available`` free units."""
    await m.supplier(supplier, SupplierOfferUpdated(
        supplier_id=supplier, sku=sku, priority=priority,
        unit_cost=Money(amount=D(cost), currency=currency), lead_time_days=1,
        acknowledge_sla_hours=ack, dispatch_sla_hours=dispatch, active=True,
        destinations=tuple(Destination(country=c, shipping_cost=D(s), transit_days=t)
                           for c, s, t in destinations),
        updated_at=m.now))
    if available is not None:
        await report(m, sku, supplier, available)


async def report(m: Market, sku: str, supplier: str, available: int) -> None:
    await m.supplier(supplier, StockLevelReported(supplier_id=supplier, sku=sku,
                                                  available=available, as_of=m.now))


async def shipment(m: Market, order_id: str, shipment_id: str, state: str,
                   ) -> ShipmentUpdated:
    """Once the shop has been told ``shipment_id`` is in ``state``: that event."""
    found: ShipmentUpdated = await m.until(f"{shipment_id} {state}", lambda: next(
        (s for s in m.tap.of(ShipmentUpdated, order_id)
         if s.shipment_id == shipment_id and s.state == state), None))
    return found


async def paid(m: Market, oid: str, sku: str, units: int, price: str = "10.00") -> None:
    await m.shop(m.order(oid, ("1", sku, units, price)))
    await m.shop(m.payment(oid, str(D(price) * units)))


# --- read models carry only accepted facts ------------------------------------------------

async def test_a_refused_shipment_or_return_receipt_changes_no_read_model(
        world: tuple[Market, dict[str, str]]) -> None:
    m, env = world
    oid, sku = m.name("refused"), m.name("LAMP")
    await offer(m, sku, "sa", 1, 10)
    await offer(m, sku, "sb", 2, 10)
    await paid(m, oid, sku, 1)
    so = await supplier_order(m, oid, "sa")
    # sb was never asked: its shipment and a receipt for a return nobody authorized
    await m.supplier("sb", m.ship(oid, so.supplier_order_id, "sb", "px", {"1": 1}, "FAKE1"))
    await m.supplier("sb", m.return_received(oid, "rma-x", "sb", {"1": 1}))
    await m.until("two dead letters", lambda: len(
        [d for d in m.dead_letters(oid) if d.source_topic == SUPPLIER_EVENTS]) >= 2)
    # the real one, accepted: it is what the read models show
    await m.supplier("sa", m.accept(oid, so.supplier_order_id, "sa"))
    await m.supplier("sa", m.ship(oid, so.supplier_order_id, "sa", "p1", {"1": 1}, "REAL1"))
    await shipment(m, oid, "p1", "in_transit")
    rows = await read(m, "SELECT supplier_id, shipment_id, tracking_number, carrier, lines "
                      "FROM read.shipments WHERE order_id = :o", lambda r: len(r) >= 1, o=oid)
    assert [(r.supplier_id, r.shipment_id, r.tracking_number, r.carrier, r.lines)
            for r in rows] == [("sa", "p1", "REAL1", "Colissimo", {"1": 1})]
    sos = await read(m, "SELECT supplier_id, accepted_at FROM read.supplier_orders "
                     "WHERE order_id = :o", lambda r: all(x.accepted_at for x in r), o=oid)
    assert [r.supplier_id for r in sos] == ["sa"]  # no phantom row for sb
    async with m.engine.connect() as conn:  # the accepted facts above came after them
        returns = (await conn.execute(text("SELECT rma_id FROM read.returns "
                                           "WHERE order_id = :o"), {"o": oid})).all()
    assert returns == []
    view = json.loads(run_cli("order", "show", oid, "--json", env=env).stdout)
    shown = json.dumps(view["shipments"]) + json.dumps(view["supplier_orders"])
    assert "REAL1" in shown
    assert "FAKE1" not in shown
    assert '"sb"' not in shown


# --- stock that is never double-booked ---------------------------------------------------

async def test_a_report_between_reservation_and_payment_does_not_double_book(
        world: tuple[Market, dict[str, str]]) -> None:
    m, _ = world
    first, second, sku = m.name("first"), m.name("second"), m.name("VASE")
    await offer(m, sku, "sa", 1, 3)
    await offer(m, sku, "sb", 2, 5)
    await m.shop(m.order(first, ("1", sku, 3, "10.00")))  # reserves sa's 3, not paid yet
    await m.until("first reserved", lambda: _reserved(m, first, "sa", 3))
    m.advance(timedelta(minutes=1))
    await report(m, sku, "sa", 3)  # sa has not heard of the order: its 3 are still free
    await paid(m, second, sku, 3)
    so = await supplier_order(m, second, "sb")  # not sa: its 3 units are taken
    assert [ln.quantity for ln in so.lines] == [3]
    await m.shop(m.payment(first, "30.00"))
    await supplier_order(m, first, "sa")
    sent = [r for o in (first, second) for r in m.tap.of(SupplierOrderRequested, o)]
    assert sum(ln.quantity for r in sent if r.supplier_id == "sa" for ln in r.lines) == 3


async def _reserved(m: Market, oid: str, supplier: str, units: int) -> bool:
    order = await m.order_state(oid)
    return order is not None and order.lines["1"].reserved.get(supplier, 0) == units


async def test_an_out_of_stock_rejection_zeroes_the_budget_until_a_newer_report(
        world: tuple[Market, dict[str, str]]) -> None:
    m, _ = world
    oid, later, sku = m.name("oos"), m.name("oos-later"), m.name("BOWL")
    await offer(m, sku, "sa", 1, 5)
    await offer(m, sku, "sb", 2, 5)
    await paid(m, oid, sku, 2)
    so = await supplier_order(m, oid, "sa")
    await m.supplier("sa", SupplierOrderRejected(
        order_id=oid, supplier_order_id=so.supplier_order_id, supplier_id="sa",
        reason="out_of_stock", rejected_at=m.now))
    await supplier_order(m, oid, "sb")
    await paid(m, later, sku, 1)  # sa's 3 other units are not trusted any more
    await supplier_order(m, later, "sb")
    assert m.tap.of(SupplierOrderRequested, later)[0].supplier_id == "sb"


# --- routing by destination -------------------------------------------------------------

async def test_an_unreachable_supplier_is_skipped_without_a_rejection(
        world: tuple[Market, dict[str, str]]) -> None:
    m, _ = world
    oid, sku = m.name("route"), m.name("DESK")
    await offer(m, sku, "sa", 1, 10, ("DE", "1.00", 2))  # does not ship to France
    await offer(m, sku, "sb", 2, 10, ("FR", "4.00", 3), ("*", "9.00", 9))
    await paid(m, oid, sku, 2)
    so = await supplier_order(m, oid, "sb")
    assert so.supplier_id == "sb"
    order = await m.order_state(oid)
    assert order is not None
    line = order.lines["1"]
    assert (line.reroutes, sorted(line.excluded)) == (0, [])  # no failover was needed
    assert [r.supplier_id for r in m.tap.of(SupplierOrderRequested, oid)] == ["sb"]


# --- late deliveries and delivery exceptions -----------------------------------------------

async def test_a_parcel_past_its_expected_delivery_is_late_for_the_shop_and_ops(
        world: tuple[Market, dict[str, str]]) -> None:
    m, env = world
    oid, sku = m.name("late"), m.name("CLOCK")
    await offer(m, sku, "sa", 1, 10, ("FR", "2.00", 3))
    await paid(m, oid, sku, 1)
    so = await supplier_order(m, oid, "sa")
    await m.supplier("sa", m.accept(oid, so.supplier_order_id, "sa"))
    await m.supplier("sa", m.ship(oid, so.supplier_order_id, "sa", "pl", {"1": 1}, "SLOW1"))
    sent = await shipment(m, oid, "pl", "in_transit")
    assert sent.expected_by - sent.dispatched_at == timedelta(days=3)
    assert sent.deliver_by - sent.expected_by == timedelta(days=1)
    assert (sent.carrier, sent.tracking_number) == ("Colissimo", "SLOW1")
    assert [(ln.line_id, ln.quantity) for ln in sent.lines] == [("1", 1)]
    m.advance(timedelta(days=4, hours=1))
    late = await shipment(m, oid, "pl", "late")
    assert late.tracking_number == "SLOW1"
    flagged = await m.until("late status", lambda: [
        s for s in m.tap.of(OrderStatusChanged, oid) if s.late])
    assert flagged[-1].status == "dispatched"  # the flag, not a status of its own
    await m.until("late in read models", lambda: _late_listed(env, oid))
    await m.supplier("sa", m.delivered(oid, "sa", "pl"))
    await shipment(m, oid, "pl", "delivered")
    done = await status(m, oid, "delivered")
    assert not done.late
    assert [d for d in m.dead_letters(oid) if d.source_topic == SUPPLIER_EVENTS] == []


def _late_listed(env: dict[str, str], oid: str) -> bool:
    result = run_cli("ops", "late", "--json", env=env)
    assert result.returncode == 0, result.stderr
    return [(r["supplier_id"], r["tracking_number"], r["lines"]) for r in
            json.loads(result.stdout) if r["order_id"] == oid] == [("sa", "SLOW1", {"1": 1})]


async def test_a_lost_parcel_is_reshipped_then_refunded(
        world: tuple[Market, dict[str, str]]) -> None:
    m, _ = world
    oid, sku = m.name("lost"), m.name("GLOBE")
    await offer(m, sku, "sa", 1, 10)
    await paid(m, oid, sku, 2)
    first = await supplier_order(m, oid, "sa")
    await m.supplier("sa", m.accept(oid, first.supplier_order_id, "sa"))
    await m.supplier("sa", m.ship(oid, first.supplier_order_id, "sa", "s1", {"1": 2}, "LOST1"))
    await shipment(m, oid, "s1", "in_transit")
    assert [a.state for a in m.tap.of(SupplierOrderUpdated, oid)] == ["accepted", "dispatched"]
    await m.supplier("sa", ShipmentFailed(order_id=oid, supplier_id="sa", shipment_id="s1",
                                          exception="lost", reported_at=m.now))
    await shipment(m, oid, "s1", "lost")
    again = await supplier_order(m, oid, "sa", n=2)  # re-shipped (one re-ship per line)
    assert [ln.quantity for ln in again.lines] == [2]
    await m.supplier("sa", m.accept(oid, again.supplier_order_id, "sa"))
    await m.supplier("sa", m.ship(oid, again.supplier_order_id, "sa", "s2", {"1": 2}, "LOST2"))
    await shipment(m, oid, "s2", "in_transit")
    await m.supplier("sa", ShipmentFailed(order_id=oid, supplier_id="sa", shipment_id="s2",
                                          exception="damaged", reported_at=m.now))
    refunds = await m.until("refund", lambda: m.tap.of(RefundIssued, oid))
    assert [(r.cause, r.amount.amount) for r in refunds] == [("delivery_failed", D("20.00"))]
    assert len(m.tap.of(SupplierOrderRequested, oid)) == 2  # no third parcel
