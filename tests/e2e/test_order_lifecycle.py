"""The order lifecycle end to end: a real worker, driven only through Kafka topics
as shops and suppliers would, with time moved by the worker's file clock.

Each scenario asserts the final order state (Postgres) and the events on the
outgoing topics (supplier orders, order status, dead letters).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from agents.core.order_status import status_of
from events.fulfillment import (
    OrderStatusChanged,
    RefundIssued,
    ReturnAuthorized,
    ShipmentUpdated,
    SupplierOrderCancelled,
    SupplierOrderRequested,
)
from events.topics import SUPPLIER_EVENTS
from pipeline.runtime.settings import Settings
from tests.e2e.order_market import Market, running_market

pytestmark = pytest.mark.e2e


@pytest_asyncio.fixture(scope="module")
async def market(migrated: Settings, engine: AsyncEngine,
                 cli_env: Callable[..., dict[str, str]],
                 tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Market]:
    async with running_market(migrated, engine, cli_env, tmp_path_factory.mktemp("orders"),
                              DROPSHIP_SLA_GRACE_MINUTES="0") as (shops, _):
        yield shops


async def status(m: Market, order_id: str, expected: str) -> OrderStatusChanged:
    """Wait until the order shows ``expected`` both in Postgres and on the status topic."""
    async def both() -> OrderStatusChanged | None:
        order = await m.order_state(order_id)
        published = m.tap.of(OrderStatusChanged, order_id)
        if order and status_of(order) == expected and published \
                and published[-1].status == expected:
            return published[-1]
        return None

    result: OrderStatusChanged = await m.until(f"{order_id} {expected}", both)
    return result


async def read(m: Market, sql: str, check: Callable[[list[Any]], bool],
               **params: object) -> list[Any]:
    """Poll a query over the read models until ``check`` accepts its rows."""
    async def rows() -> list[Any] | None:
        async with m.engine.connect() as conn:
            got = list((await conn.execute(text(sql), params)).all())
        return got if check(got) else None

    result: list[Any] = await m.until(f"read models: {sql[:60]}", rows)
    return result


async def supplier_order(m: Market, order_id: str, supplier: str,
                         n: int = 1) -> SupplierOrderRequested:
    """The n-th supplier order of ``order_id`` sent to ``supplier``."""
    def find() -> SupplierOrderRequested | None:
        got = [r for r in m.tap.of(SupplierOrderRequested, order_id) if r.supplier_id == supplier]
        return got[n - 1] if len(got) >= n else None

    result: SupplierOrderRequested = await m.until(f"supplier order to {supplier}", find)
    return result


async def test_happy_path(market: Market) -> None:
    m, oid, sku = market, market.name("happy"), market.name("MUG")
    await m.catalog(sku, ("sa", 1, 10))
    await m.shop(m.order(oid, ("1", sku, 2, "12.50")))
    await status(m, oid, "allocated")
    assert m.tap.of(SupplierOrderRequested, oid) == []  # not before payment
    await m.shop(m.payment(oid, "25.00"))
    so = await supplier_order(m, oid, "sa")
    await status(m, oid, "sent_to_supplier")
    await m.supplier("sa", m.accept(oid, so.supplier_order_id, "sa"))
    await m.supplier("sa", m.ship(oid, so.supplier_order_id, "sa", "p1", {"1": 2}, "TRK42"))
    shipped = await status(m, oid, "dispatched")
    assert shipped.tracking_numbers == ("TRK42",)
    await m.supplier("sa", m.delivered(oid, "sa", "p1"))
    done = await status(m, oid, "delivered")
    assert [(ln.shipped, ln.delivered, ln.suppliers) for ln in done.lines] == [(2, 2, ("sa",))]
    order = (await read(m, "SELECT * FROM read.order_status WHERE order_id = :o",
                        lambda r: bool(r) and r[0].status == "delivered", o=oid))[0]
    assert (str(order.total), order.currency, order.tracking_numbers) == ("25.00", "EUR", ["TRK42"])
    assert None not in (order.placed_at, order.paid_at, order.allocated_at, order.dispatched_at,
                        order.delivered_at)
    await read(m, "SELECT carrier, tracking_number, units FROM read.shipments WHERE order_id = :o "
               "AND delivered_at IS NOT NULL", lambda r: [tuple(x) for x in r] == [
                   ("Colissimo", "TRK42", 2)], o=oid)
    timeline = await read(m, "SELECT event_type FROM read.order_timeline WHERE order_id = :o",
                          lambda r: len(r) >= 12, o=oid)
    assert {"dropship.order.placed.v1", "dropship.line.allocated.v1",
            "dropship.supplier_order.requested.v1", "dropship.shipment.delivered.v1",
            "dropship.order.status_changed.v1"} <= {t.event_type for t in timeline}


async def test_primary_out_of_stock_backup_gets_the_order(market: Market) -> None:
    m, oid, sku = market, market.name("backup"), market.name("TEE")
    await m.catalog(sku, ("primary", 1, 0), ("backup", 2, 5))
    await m.shop(m.order(oid, ("1", sku, 1, "9.00")))
    await m.shop(m.payment(oid, "9.00"))
    assert (await supplier_order(m, oid, "backup")).lines[0].quantity == 1
    assert [r.supplier_id for r in m.tap.of(SupplierOrderRequested, oid)] == ["backup"]


async def test_rejection_and_missed_slas_reroute(market: Market) -> None:
    m, sku = market, market.name("CAP")
    await m.catalog(sku, ("s1", 1, 5), ("s2", 2, 5), ("s3", 3, 5), ("s4", 4, 5),
                    ack=2, dispatch=6)
    rejected, silent, slow = m.name("rej"), m.name("silent"), m.name("slow")
    for oid in (rejected, silent, slow):
        await m.shop(m.order(oid, ("1", sku, 1, "5.00")))
        await m.shop(m.payment(oid, "5.00"))
    so = await supplier_order(m, rejected, "s1")
    await m.supplier("s1", m.reject(rejected, so.supplier_order_id, "s1"))
    assert (await supplier_order(m, rejected, "s2")).supplier_id == "s2"

    slow_so = await supplier_order(m, slow, "s1")
    await m.supplier("s1", m.accept(slow, slow_so.supplier_order_id, "s1"))
    await m.until("slow accepted", lambda: _accepted(m, slow))
    await supplier_order(m, silent, "s1")
    m.advance(timedelta(hours=2, minutes=1))  # silent's s1 never accepts within its 2 h
    await supplier_order(m, silent, "s2")
    cancelled = m.tap.of(SupplierOrderCancelled, silent)
    assert [(c.supplier_id, "accept" in c.reason) for c in cancelled] == [("s1", True)]
    assert m.tap.of(SupplierOrderCancelled, slow) == []  # accepted: only dispatch counts

    m.advance(timedelta(hours=4))  # 6 h after the request, slow has not dispatched
    await supplier_order(m, slow, "s2")
    first = m.tap.of(SupplierOrderCancelled, slow)[0]
    assert (first.supplier_id, "dispatch" in first.reason) == ("s1", True)
    line = (await m.until("slow re-routed", lambda: [
        s for s in m.tap.of(OrderStatusChanged, slow) if s.lines[0].reroutes]))[-1].lines[0]
    assert line.reroutes == 1
    causes = await read(m, "SELECT order_id, supplier_id, cancel_cause FROM read.supplier_orders "
                        "WHERE order_id IN (:a, :b, :c) AND supplier_id = 's1' "
                        "ORDER BY order_id",
                        lambda r: len(r) == 3 and all(x.cancel_cause for x in r),
                        a=rejected, b=silent, c=slow)
    assert {(o, s, c) for o, s, c in causes} == {
        (rejected, "s1", "rejected"), (silent, "s1", "acknowledge_sla_missed"),
        (slow, "s1", "dispatch_sla_missed")}
    await read(m, "SELECT reroutes FROM read.order_lines WHERE order_id = :o",
               lambda r: [x.reroutes for x in r] == [1], o=slow)


async def _accepted(m: Market, order_id: str) -> bool:
    order = await m.order_state(order_id)
    return order is not None and any(so.state == "accepted"
                                     for so in order.supplier_orders.values())


async def test_split_order_shipped_in_two_parcels(market: Market) -> None:
    m, oid, sku = market, market.name("split"), market.name("BAG")
    await m.catalog(sku, ("sa", 1, 1), ("sb", 2, 5))
    await m.shop(m.order(oid, ("1", sku, 3, "4.00")))
    await m.shop(m.payment(oid, "12.00"))
    a, b = await supplier_order(m, oid, "sa"), await supplier_order(m, oid, "sb")
    assert (a.lines[0].quantity, b.lines[0].quantity) == (1, 2)
    await m.supplier("sa", m.ship(oid, a.supplier_order_id, "sa", "pa", {"1": 1}, "TA1"))
    await status(m, oid, "partially_dispatched")
    await m.supplier("sb", m.ship(oid, b.supplier_order_id, "sb", "pb", {"1": 2}, "TB1"))
    shipped = await status(m, oid, "dispatched")
    assert sorted(shipped.tracking_numbers) == ["TA1", "TB1"]
    await m.shop(m.confirm(oid))
    await status(m, oid, "delivered")
    await read(m, "SELECT supplier_id, units FROM read.shipments WHERE order_id = :o "
               "ORDER BY supplier_id", lambda r: [tuple(x) for x in r] == [("sa", 1), ("sb", 2)],
               o=oid)
    await read(m, "SELECT allocations FROM read.order_lines WHERE order_id = :o",
               lambda r: [x.allocations for x in r] == [{"sa": 1, "sb": 2}], o=oid)


async def test_cancel_before_and_after_dispatch(market: Market) -> None:
    m, sku = market, market.name("PEN")
    await m.catalog(sku, ("sa", 1, 10))
    early, late = m.name("early"), m.name("late")
    for oid in (early, late):
        await m.shop(m.order(oid, ("1", sku, 2, "1.00")))
        await m.shop(m.payment(oid, "2.00"))
        await supplier_order(m, oid, "sa")
    await m.shop(m.cancel(early))
    await status(m, early, "cancelled")
    assert [c.supplier_id for c in m.tap.of(SupplierOrderCancelled, early)] == ["sa"]
    so = await supplier_order(m, late, "sa")
    await m.supplier("sa", m.ship(late, so.supplier_order_id, "sa", "p1", {"1": 2}, "T1"))
    await status(m, late, "dispatched")
    await m.shop(m.cancel(late))
    refused = await m.until("refusal", lambda: [
        s for s in m.tap.of(OrderStatusChanged, late) if "request a return" in (s.reason or "")])
    assert refused[-1].status == "dispatched"
    stock = await m.until("stock released", lambda: _used(m, sku, expected=2))
    assert stock


async def _used(m: Market, sku: str, expected: int) -> bool:
    return (await m.sku_state(sku)).stock["sa"].used == expected  # only the late order's 2


async def test_never_paid_is_cancelled_at_the_payment_window(market: Market) -> None:
    m, oid, sku = market, market.name("unpaid"), market.name("CUP")
    await m.catalog(sku, ("sa", 1, 4))
    await m.shop(m.order(oid, ("1", sku, 3, "2.00")))
    await status(m, oid, "allocated")
    m.advance(timedelta(minutes=61))
    done = await status(m, oid, "cancelled")
    assert "not paid" in (done.reason or "")
    await read(m, "SELECT last_reason FROM read.order_status WHERE order_id = :o "
               "AND status = 'cancelled' AND cancelled_at IS NOT NULL",
               lambda r: bool(r) and "not paid" in r[0].last_reason, o=oid)
    await m.until("stock released", lambda: _remaining(m, sku, 4))


async def _remaining(m: Market, sku: str, expected: int) -> bool:
    return (await m.sku_state(sku)).stock["sa"].remaining == expected


async def test_return_in_window_refunded_and_restocked_late_return_refused(
    market: Market,
) -> None:
    m, sku = market, market.name("HAT")
    await m.catalog(sku, ("sa", 1, 10))
    good, late = m.name("ret"), m.name("lateret")
    for oid in (good, late):
        await m.shop(m.order(oid, ("1", sku, 2, "7.50")))
        await m.shop(m.payment(oid, "15.00"))
        so = await supplier_order(m, oid, "sa")
        await m.supplier("sa", m.ship(oid, so.supplier_order_id, "sa", "p-" + oid, {"1": 2}, "T"))
        await m.supplier("sa", m.delivered(oid, "sa", "p-" + oid))
        await status(m, oid, "delivered")
    await m.shop(m.return_request(good, "rma-1", {"1": 1}))
    auth = await m.until("authorization", lambda: m.tap.of(ReturnAuthorized, good))
    assert (auth[0].supplier_id, auth[0].lines[0].quantity) == ("sa", 1)
    used_before = (await m.sku_state(sku)).stock["sa"].used
    await m.supplier("sa", m.return_received(good, "rma-1", "sa", {"1": 1}))
    refund = await m.until("refund", lambda: m.tap.of(RefundIssued, good))
    assert (refund[0].amount.amount, refund[0].amount.currency) == (Decimal("7.50"), "EUR")
    await status(m, good, "partially_refunded")  # one of its two units came back
    await read(m, "SELECT r.state, r.authorized_by, f.amount FROM read.returns r "
               "JOIN read.refunds f ON f.order_id = r.order_id AND f.rma_id = r.rma_id "
               "WHERE r.order_id = :o", lambda r: [(x.state, x.authorized_by, str(x.amount))
                                                   for x in r] == [("refunded", ["sa"], "7.50")],
               o=good)
    await m.until("restocked", lambda: _used(m, sku, used_before - 1))

    m.advance(timedelta(days=31))
    await m.shop(m.return_request(late, "rma-2", {"1": 1}))
    refused = await m.until("late return refused", lambda: [
        s for s in m.tap.of(OrderStatusChanged, late) if "return window" in (s.reason or "")])
    assert refused[-1].status == "delivered"
    assert m.tap.of(ReturnAuthorized, late) == []


async def test_payment_before_order_and_every_event_twice(market: Market) -> None:
    m, oid, sku = market, market.name("early-pay"), market.name("KEY")
    await m.catalog(sku, ("sa", 1, 10))
    await m.shop(m.payment(oid, "6.00"), times=2)
    await m.shop(m.order(oid, ("1", sku, 3, "2.00")), times=2)
    so = await supplier_order(m, oid, "sa")
    await m.supplier("sa", m.accept(oid, so.supplier_order_id, "sa"), times=2)
    await m.supplier("sa", m.ship(oid, so.supplier_order_id, "sa", "p1", {"1": 3}, "T1"), times=2)
    await m.supplier("sa", m.delivered(oid, "sa", "p1"), times=2)
    done = await status(m, oid, "delivered")
    assert done.lines[0].shipped == 3  # not 6
    assert len(m.tap.of(SupplierOrderRequested, oid)) == 1
    assert (await m.sku_state(sku)).stock["sa"].used == 3
    rows = await read(m, "SELECT event_id, source FROM read.order_timeline WHERE order_id = :o",
                      lambda r: len(r) >= 10, o=oid)
    assert len(rows) == len({tuple(r) for r in rows})  # each event once, though sent twice
    await read(m, "SELECT shipped FROM read.order_lines WHERE order_id = :o",
               lambda r: [x.shipped for x in r] == [3], o=oid)


async def test_shipment_from_the_wrong_supplier_is_dead_lettered(market: Market) -> None:
    m, oid, sku = market, market.name("wrong"), market.name("LAMP")
    await m.catalog(sku, ("sa", 1, 10), ("sb", 2, 10))
    await m.shop(m.order(oid, ("1", sku, 1, "30.00")))
    await m.shop(m.payment(oid, "30.00"))
    so = await supplier_order(m, oid, "sa")
    await m.supplier("sb", m.ship(oid, so.supplier_order_id, "sb", "px", {"1": 1}, "FAKE"))
    letters = await m.until("dead letter", lambda: [
        d for d in m.dead_letters(oid) if d.source_topic == SUPPLIER_EVENTS])
    assert "was not routed to sb" in letters[0].error
    order = await m.order_state(oid)
    assert order is not None
    assert status_of(order) == "sent_to_supplier"
    assert order.lines["1"].shipped == 0
    stored = await read(m, "SELECT source_topic, error, payload FROM read.dead_letters "
                        "WHERE original_key = :o", lambda r: bool(r), o=oid)
    assert "was not routed to sb" in stored[0].error
    assert b"FAKE" in stored[0].payload


def _parcels(m: Market, order_id: str, state: str) -> list[ShipmentUpdated]:
    return [u for u in m.tap.of(ShipmentUpdated, order_id) if u.state == state]


async def test_late_shipment_after_failover_cancels_the_replacement(market: Market) -> None:
    m, oid, sku = market, market.name("lateship"), market.name("BOWL")
    await m.catalog(sku, ("sa", 1, 5), ("sb", 2, 5), ack=2)
    await m.shop(m.order(oid, ("1", sku, 1, "6.00")))
    await m.shop(m.payment(oid, "6.00"))
    first = await supplier_order(m, oid, "sa")
    m.advance(timedelta(hours=2, minutes=1))  # sa never accepts within its 2 h
    replacement = await supplier_order(m, oid, "sb")
    await m.supplier("sa", m.ship(oid, first.supplier_order_id, "sa", "p1", {"1": 1}, "LATE1"))
    cancelled = await m.until("superseded", lambda: [
        c for c in m.tap.of(SupplierOrderCancelled, oid) if c.cause == "superseded"])
    assert cancelled[0].supplier_order_id == replacement.supplier_order_id
    await status(m, oid, "dispatched")
    [parcel] = await m.until("accepted", lambda: _parcels(m, oid, "in_transit"))
    assert (parcel.supplier_id, parcel.flagged) == ("sa", False)
    assert m.dead_letters(oid) == []
    assert len(m.tap.of(SupplierOrderRequested, oid)) == 2  # nothing asked again
