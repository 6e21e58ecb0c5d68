"""The read side of issue 15 on real Postgres: read models carry only the supplier facts
the order agent accepted; late shipments by the pipeline's clock; the scorecard's
delivery figures; backorders in the order they will be served; ``dropship ops late``.

Expectations are written by hand here (dates, counts, rates), never computed by the
code under test.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from events.fulfillment import (
    LineStatus,
    OrderStatusChanged,
    ReturnUpdated,
    ShipmentState,
    ShipmentUpdated,
    SupplierOrderLine,
    SupplierOrderRequested,
    SupplierOrderUpdated,
)
from events.orders import LineQuantity
from events.suppliers import (
    ReturnReceived,
    ShipmentDelivered,
    ShipmentDispatched,
    ShipmentFailed,
    SupplierOrderAccepted,
    SupplierOrderRejected,
)
from events.types import Address
from pipeline.runtime.db import create_engine
from pipeline.runtime.settings import Settings
from projections import clock, queries
from projections.tables import read_tables
from tests.helpers import run_cli
from tests.projection_story import Log, failover_story, project_all, snapshot
from tests.unit import order_factories as f

pytestmark = pytest.mark.integration
T = read_tables()
DAY = timedelta(days=1)
#: The pipeline's clock in the late-shipment tests (the factories' T0 + 30 days).
NOW = f.T0 + 30 * DAY
ORDERS = "dropship/orders"


def shipment(order: str, shipment_id: str, state: ShipmentState, deliver_by: datetime,
             changed_at: datetime, supplier: str = "sx", flagged: bool = False,
             delivered_at: datetime | None = None, units: int = 1,
             dispatched_at: datetime | None = None) -> ShipmentUpdated:
    """A ShipmentUpdated expected 2 days (the grace) before ``deliver_by``, dispatched
    ``dispatched_at`` (default 7 days before it is expected)."""
    return ShipmentUpdated(
        order_id=order, shop_id="acme", supplier_id=supplier, supplier_order_id=f"so-{order}",
        shipment_id=shipment_id, carrier="DHL", tracking_number=f"TRK-{shipment_id}",
        lines=(LineQuantity(line_id="1", quantity=units),), state=state,
        dispatched_at=dispatched_at or deliver_by - 9 * DAY, expected_by=deliver_by - 2 * DAY,
        deliver_by=deliver_by, delivered_at=delivered_at,
        exception=state if state in ("lost", "damaged", "returned_to_sender") else None,
        flagged=flagged, reason="shipped after a failover" if flagged else None,
        changed_at=changed_at)


def requested(order: str, supplier: str, so: str, at: datetime) -> SupplierOrderRequested:
    return SupplierOrderRequested(
        supplier_order_id=so, supplier_id=supplier, order_id=order,
        ship_to=Address(name="Ada", line1="1 Rd", city="Lyon", country="FR"),
        lines=(SupplierOrderLine(line_id="1", sku="SKU", quantity=1),),
        acknowledge_by=at + timedelta(hours=4), dispatch_by=at + 2 * DAY, requested_at=at)


def status(order: str, version: int, *lines: tuple[str, str, int, datetime | None],
           late: bool = False) -> OrderStatusChanged:
    """A snapshot whose lines (line id, sku, backordered units, queued_at) wait for stock."""
    return OrderStatusChanged(
        order_id=order, shop_id="acme", version=version, status="paid", late=late,
        lines=tuple(LineStatus(line_id=ln, sku=sku, quantity=units, backordered=units,
                               queued_at=queued) for ln, sku, units, queued in lines),
        changed_at=f.T0)


@pytest_asyncio.fixture(scope="module")
async def engine_of(fresh_database: Callable[[str], Settings]
                    ) -> AsyncIterator[Callable[[str], AsyncEngine]]:
    """Factory: an engine on a fresh database per name (disposed at the end)."""
    engines: list[AsyncEngine] = []

    def make(name: str) -> AsyncEngine:
        engines.append(create_engine(fresh_database(name)))
        return engines[-1]

    yield make
    for engine in engines:
        await engine.dispose()


# --- only accepted facts ------------------------------------------------------------


async def test_refused_supplier_events_change_no_read_model_accepted_facts_do(
    engine_of: Callable[[str], AsyncEngine],
) -> None:
    engine = engine_of("facts")
    log = Log(prefix="facts")
    story = failover_story(log, "fo", "SKU")  # sa rejects, sb ships shp1, rma1 returned
    await project_all(engine, log.records)
    before = await snapshot(engine)
    so_sa = next(str(r[1]) for r in before["supplier_orders"] if r[0] == "sa")
    so_sb = story.so_of("sb")
    late = Log(prefix="raw", offsets=log.offsets)  # continues the log
    # what suppliers said that the order agent refused (no accepted fact follows)
    for raw in (
        SupplierOrderAccepted(order_id="fo", supplier_order_id=so_sa, supplier_id="sa",
                              accepted_at=f.at(5)),
        SupplierOrderRejected(order_id="fo", supplier_order_id=so_sb, supplier_id="sb",
                              reason="other", rejected_at=f.at(5)),
        ShipmentDispatched(order_id="fo", supplier_order_id=so_sa, supplier_id="sa",
                           shipment_id="shpX", lines=(LineQuantity(line_id="1", quantity=2),),
                           carrier="UPS", tracking_number="TRKX", dispatched_at=f.at(5)),
        ShipmentDelivered(order_id="fo", supplier_id="sa", shipment_id="shpX",
                          delivered_at=f.at(6)),
        ShipmentFailed(order_id="fo", supplier_id="sb", shipment_id="shp1", exception="lost",
                       reported_at=f.at(7)),
        ReturnReceived(order_id="fo", rma_id="rmaX", supplier_id="sa",
                       lines=(LineQuantity(line_id="1", quantity=1),), condition="resellable",
                       received_at=f.at(8)),
    ):
        late.put(raw, f"supplier/{raw.supplier_id}", f.at(9))
    await project_all(engine, late.records)  # the projector reads on
    after = await snapshot(engine)
    assert len(after.pop("order_timeline")) == len(before.pop("order_timeline")) + 6
    assert after == before

    accepted = Log(prefix="ok", offsets=late.offsets)
    for fact in (
        SupplierOrderUpdated(order_id="fo", supplier_order_id=so_sa, supplier_id="sa",
                             state="accepted", at=f.at(5), changed_at=f.at(9)),
        shipment("fo", "shpX", "in_transit", f.at(60 * 24 * 9), f.at(9), supplier="sa",
                 flagged=True, units=2),
        ReturnUpdated(order_id="fo", rma_id="rmaX", supplier_id="sa", state="received",
                      condition="resellable", lines=(LineQuantity(line_id="1", quantity=1),),
                      received_at=f.at(8), changed_at=f.at(9)),
    ):
        accepted.put(fact, ORDERS, f.at(9))
    await project_all(engine, accepted.records)
    async with engine.connect() as conn:
        so = (await conn.execute(select(T.supplier_orders).where(
            T.supplier_orders.c.supplier_order_id == so_sa))).one()
        shp = (await conn.execute(select(T.shipments).where(
            T.shipments.c.shipment_id == "shpX"))).one()
        ret = (await conn.execute(select(T.returns).where(T.returns.c.rma_id == "rmaX"))).one()
    assert (so.accepted_at, so.rejected_at, so.reject_reason) == (f.at(5), f.T0, "out_of_stock")
    assert (shp.carrier, shp.tracking_number, shp.lines, shp.units, shp.state, shp.flagged,
            shp.supplier_order_id) == ("DHL", "TRK-shpX", {"1": 2}, 2, "in_transit", True,
                                       "so-fo")
    assert (shp.expected_by, shp.deliver_by, shp.updated_at) == (
        f.at(60 * 24 * 7), f.at(60 * 24 * 9), f.at(9))
    assert (ret.received_at, ret.received_by, ret.state) == (f.at(8), ["sa"], "received")


async def test_the_newest_shipment_update_wins_in_any_order(
    engine_of: Callable[[str], AsyncEngine],
) -> None:
    engine = engine_of("newest")
    deadline = f.at(60 * 24 * 9)
    updates = [  # as the order agent published them, in turn
        shipment("n", "s", "in_transit", deadline, f.at(1)),
        shipment("n", "s", "late", deadline, deadline),
        shipment("n", "s", "late", deadline, deadline, flagged=True),  # same instant
        shipment("n", "s", "delivered", deadline, deadline + DAY, flagged=True,
                 delivered_at=deadline + DAY),
    ]
    rows = []
    for i, order in enumerate(itertools.permutations(updates)):
        log = Log(prefix=f"p{i}")
        for update in order:
            log.put(update.model_copy(update={"order_id": f"n{i}"}), ORDERS, f.T0)
        await project_all(engine, log.records, consumer=f"perm{i}", batch=1 + i % 3)
    async with engine.connect() as conn:
        for r in await conn.execute(select(T.shipments)):
            rows.append((r.state, r.flagged, r.delivered_at, r.updated_at, r.reason))
    assert len(rows) == 24
    assert set(rows) == {("delivered", True, deadline + DAY, deadline + DAY,
                          "shipped after a failover")}


# --- late shipments ------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module")
async def late_db(engine_of: Callable[[str], AsyncEngine]) -> AsyncEngine:
    """Shipments around the pipeline's clock NOW; the late ones are A, G, B, F."""
    engine = engine_of("late")
    log = Log(prefix="late")
    for fact in (
        shipment("o-A", "A", "in_transit", NOW - 3 * DAY, NOW - 9 * DAY),
        shipment("o-B", "B", "in_transit", NOW - DAY, NOW - 9 * DAY),
        shipment("o-C", "C", "in_transit", NOW + DAY, NOW - 9 * DAY),  # not due yet
        shipment("o-D", "D", "delivered", NOW - 5 * DAY, NOW - 6 * DAY,
                 delivered_at=NOW - 6 * DAY),  # delivered in time
        shipment("o-E", "E", "lost", NOW - 4 * DAY, NOW - 5 * DAY),  # failed
        shipment("o-F", "F", "late", NOW + DAY / 2, NOW),  # the agent says late
        shipment("o-G", "G", "late", NOW - 2 * DAY, NOW - 2 * DAY, flagged=True),
        shipment("o-H", "H", "delivered", NOW - 2 * DAY, NOW - DAY,
                 delivered_at=NOW - DAY),  # delivered late: no longer in the list
        status("o-A", 1, late=True),
    ):
        log.put(fact, ORDERS, f.T0)
    await project_all(engine, log.records)
    await clock.record(engine, NOW)
    return engine


async def test_late_view_lists_exactly_the_late_shipments(late_db: AsyncEngine) -> None:
    rows = await queries.late(late_db)
    assert [(r["shipment_id"], r["order_id"], r["state"], r["days_late"], r["flagged"])
            for r in rows] == [
        ("A", "o-A", "in_transit", Decimal("3.0"), False),
        ("G", "o-G", "late", Decimal("2.0"), True),
        ("B", "o-B", "in_transit", Decimal("1.0"), False),
        ("F", "o-F", "late", Decimal("0"), False),
    ]
    a = rows[0]
    assert (a["supplier_id"], a["carrier"], a["tracking_number"], a["lines"], a["shop_id"]) == \
        ("sx", "DHL", "TRK-A", {"1": 1}, "acme")
    assert rows[-1]["shop_id"] is None  # no status snapshot of o-F was seen


def test_ops_late_through_the_cli(late_db: AsyncEngine,
                                  cli_env: Callable[..., dict[str, str]]) -> None:
    env = cli_env(DROPSHIP_DATABASE_URL=late_db.url.render_as_string(hide_password=False))
    result = run_cli("ops", "late", "--json", env=env)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["tracking_number"], r["days_late"]) for r in rows] == [
        ("TRK-A", "3.0"), ("TRK-G", "2.0"), ("TRK-B", "1.0"), ("TRK-F", "0")]
    assert rows[0]["deliver_by"] == (NOW - 3 * DAY).isoformat()
    table = run_cli("ops", "late", env=env)
    assert table.returncode == 0, table.stderr
    assert "late shipments (4)" in table.stdout
    assert table.stdout.index("TRK-A") < table.stdout.index("TRK-B")
    shown = run_cli("order", "show", "o-A", env=env)
    assert shown.returncode == 0, shown.stderr
    assert "LATE" in shown.stdout
    view = json.loads(run_cli("order", "show", "o-A", "--json", env=env).stdout)
    assert (view["order"]["late"], view["shipments"][0]["late"],
            view["shipments"][0]["expected_by"]) == (True, True, (NOW - 5 * DAY).isoformat())


# --- scorecard and backorders ---------------------------------------------------------


def card_shipment(order: str, state: ShipmentState, changed_at: datetime,
                  **more: Any) -> ShipmentUpdated:
    """A shipment of supplier sc dispatched at T0, to be delivered by T0 + 5 days."""
    return shipment(order, f"s-{order}", state, f.T0 + 5 * DAY, changed_at, supplier="sc",
                    dispatched_at=f.T0, **more)


async def test_scorecard_delivery_figures(engine_of: Callable[[str], AsyncEngine]) -> None:
    engine = engine_of("card")
    log = Log(prefix="card")
    d0 = f.T0
    for i in range(4):
        log.put(requested(f"c{i}", "sc", f"so{i}", d0), ORDERS, d0)
    for fact in (  # two answers accepted; a raw acceptance of so2 is not
        SupplierOrderUpdated(order_id="c0", supplier_order_id="so0", supplier_id="sc",
                             state="accepted", at=d0 + timedelta(hours=1), changed_at=d0),
        SupplierOrderUpdated(order_id="c1", supplier_order_id="so1", supplier_id="sc",
                             state="dispatched", at=d0 + DAY, changed_at=d0 + DAY),
        # dispatched d0: delivered in 3 days, by its deadline (d0 + 5 days) ...
        card_shipment("c0", "delivered", d0 + 3 * DAY, delivered_at=d0 + 3 * DAY),
        # ... in 6 days, one day after it
        card_shipment("c1", "delivered", d0 + 6 * DAY, delivered_at=d0 + 6 * DAY),
        card_shipment("c2", "lost", d0 + 2 * DAY, flagged=True),
        card_shipment("c3", "in_transit", d0, flagged=True),
    ):
        log.put(fact, ORDERS, d0)
    log.put(SupplierOrderAccepted(order_id="c2", supplier_order_id="so2", supplier_id="sc",
                                  accepted_at=d0), "supplier/sc", d0)
    await project_all(engine, log.records)
    (card,) = await queries.scorecard(engine)
    # on time: 1 of 2 delivered; transit: (3 + 6) / 2 days; 1 lost; 2 flagged
    assert {k: card[k] for k in (
        "supplier_id", "requested", "accepted", "dispatched", "shipments", "delivered",
        "on_time_delivery_rate", "mean_transit_days", "delivery_exceptions",
        "flagged_shipments")} == {
        "supplier_id": "sc", "requested": 4, "accepted": 1, "dispatched": 1,
        "shipments": 4, "delivered": 2, "on_time_delivery_rate": Decimal("0.5000"),
        "mean_transit_days": Decimal("4.50"), "delivery_exceptions": 1,
        "flagged_shipments": 2}


async def test_backorders_in_the_order_they_will_be_served(
    engine_of: Callable[[str], AsyncEngine],
) -> None:
    engine = engine_of("queue")
    log = Log(prefix="queue")
    t = f.T0
    for snap in (
        status("q1", 1, ("1", "A", 2, t + 2 * DAY), ("2", "A", 1, t + 2 * DAY)),
        status("q2", 1, ("1", "A", 1, t + 2 * DAY)),
        status("q3", 1, ("1", "A", 1, t + DAY), ("2", "B", 3, t + 5 * DAY)),
        status("q4", 1, ("1", "B", 1, t)),
        status("q0", 1, ("1", "A", 1, t + 3 * DAY)),
    ):
        log.put(snap, ORDERS, t)
    await project_all(engine, log.records)
    rows = await queries.backorders(engine)
    assert [(r["sku"], r["place"], r["order_id"], r["line_id"]) for r in rows] == [
        ("A", 1, "q3", "1"), ("A", 2, "q1", "1"), ("A", 3, "q1", "2"), ("A", 4, "q2", "1"),
        ("A", 5, "q0", "1"), ("B", 1, "q4", "1"), ("B", 2, "q3", "2")]
    assert rows[0]["queued_at"] == t + DAY
