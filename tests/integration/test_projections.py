"""The projector on real Postgres: rows, idempotence, order guards, rebuild, ops role.

Each test module works in a database of its own (``fresh_database``), so whole
tables can be compared row by row.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import subprocess
import sys
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from decimal import Decimal

import asyncpg
import pytest
import pytest_asyncio
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from events.codec import DecodeError, decode
from events.deadletter import DeadLetter
from events.envelope import CloudEvent
from events.fulfillment import OrderStatusChanged
from pipeline.runtime.db import create_engine
from pipeline.runtime.records import Record
from pipeline.runtime.schema import outbox
from pipeline.runtime.settings import Settings
from projections.queries import order_view
from projections.tables import read_tables
from tests.helpers import clean_env
from tests.projection_story import Log, Story, project_all, snapshot, stock, world
from tests.unit import order_factories as f

pytestmark = pytest.mark.integration
T = read_tables()


@pytest.fixture(scope="module")
def db(fresh_database: Callable[[str], Settings]) -> Settings:
    return fresh_database("proj")


@pytest_asyncio.fixture(scope="module")
async def live(db: Settings) -> AsyncIterator[tuple[AsyncEngine, Log]]:
    """The world's records applied once by the projector."""
    engine = create_engine(db)
    log = world("w")
    await project_all(engine, log.records)
    try:
        yield engine, log
    finally:
        await engine.dispose()


async def _one(engine: AsyncEngine, query: object) -> dict[str, object]:
    async with engine.connect() as conn:
        row = (await conn.execute(query)).one()  # type: ignore[call-overload]
    return dict(row._mapping)


async def test_each_read_model_shows_the_story(live: tuple[AsyncEngine, Log]) -> None:
    engine, _ = live
    order = await _one(engine, select(T.order_status).where(T.order_status.c.order_id == "w-o0"))
    assert (order["status"], order["suppliers"], order["tracking_numbers"]) == \
        ("partially_refunded", ["sb"], ["TRK1"])  # one of two units came back
    assert (order["paid"], order["refunded"], order["due"], order["customer_ref"]) == (
        Decimal("20.00"), Decimal("10.00"), Decimal("10.00"), "c1")
    assert order["ship_to"] == {"name": "Ada", "line1": "1 Rd", "city": "Lyon", "country": "FR"}
    assert (str(order["total"]), order["currency"], order["lines"], order["units"]) == \
        ("20.00", "EUR", 1, 2)
    assert order["placed_at"] == f.T0
    assert order["paid_at"] == f.at(1)
    assert order["dispatched_at"] == f.at(60)
    assert order["delivered_at"] == f.at(600)
    assert order["cancelled_at"] is None
    line = await _one(engine, select(T.order_lines).where(T.order_lines.c.order_id == "w-o0"))
    assert (line["allocations"], line["reroutes"], line["shipped"], line["returned"]) == \
        ({"sb": 1}, 1, 2, 1)  # the returned unit went back to stock
    async with engine.connect() as conn:
        sos = (await conn.execute(select(
            T.supplier_orders.c.supplier_id, T.supplier_orders.c.cancel_cause,
            T.supplier_orders.c.accepted_at.is_not(None)).where(
            T.supplier_orders.c.order_id == "w-o0").order_by("supplier_id"))).all()
        assert [tuple(r) for r in sos] == [("sa", "rejected", False), ("sb", None, True)]
        ret = (await conn.execute(select(T.returns).where(T.returns.c.order_id == "w-o0"))).one()
        assert (ret.state, ret.authorized_by, ret.received_by) == ("refunded", ["sb"], ["sb"])
        refunds = (await conn.execute(select(T.refunds).where(
            T.refunds.c.order_id == "w-o0"))).all()
        assert [(r.cause, str(r.amount), r.rma_id, r.lines) for r in refunds] == [
            ("return", "10.00", "rma1",
             [{"line_id": "1", "units": 1, "amount": "10.00", "with_shipping": False}])]
        ship = (await conn.execute(select(T.shipments))).all()
        assert sorted((s.order_id, s.tracking_number, s.units) for s in ship) == [
            (f"w-o{i}", "TRK1", 2) for i in range(3)]
        stock_sa = (await conn.execute(select(T.supplier_stock).where(
            T.supplier_stock.c.supplier_id == "sa", T.supplier_stock.c.sku == "w-SKU0"))).one()
        assert (stock_sa.version, stock_sa.reserved, stock_sa.remaining) == (2, 0, 5)
        backorders = (await conn.execute(text(
            "SELECT order_id, backordered FROM read.backorders ORDER BY order_id"))).all()
        assert [tuple(r) for r in backorders] == [(f"w-b{i}", 3) for i in range(3)]
        card = {r.supplier_id: r for r in await conn.execute(text(
            "SELECT * FROM read.supplier_scorecard"))}
        assert (card["sa"].requested, card["sa"].rejected, card["sa"].failovers_away) == (3, 3, 3)
        assert (card["sb"].accepted, card["sb"].dispatched, card["sb"].returns) == (3, 3, 3)
        letters = (await conn.execute(select(T.dead_letters.c.source_topic,
                                             T.dead_letters.c.rule))).all()
        assert sorted(tuple(r) for r in letters) == [("shop.orders", "json_invalid")] * 3
        own = (await conn.execute(select(outbox.c.topic).where(
            outbox.c.producer == "projector"))).all()
        assert [r.topic for r in own] == ["fulfillment.dlq"]  # the garbage on order-status


async def test_timeline_has_every_event_once_in_order(live: tuple[AsyncEngine, Log]) -> None:
    engine, log = live
    expected = {event.id for event in _decoded(log)
                if getattr(event.data, "order_id", None) == "w-o0"
                and not isinstance(event.data, DeadLetter)}
    view = await order_view(engine, "w-o0")  # what `dropship order show` prints
    assert view is not None
    rows = view["timeline"]
    ids = [r["event_id"] for r in rows]
    assert len(ids) == len(set(ids))
    assert set(ids) == expected
    assert len(ids) > 20
    assert rows[0]["summary"].startswith("placed: 1 line(s), 20.00 EUR")
    assert [r["summary"] for r in rows if r["type"] == OrderStatusChanged.TYPE][-1] == \
        "status return_requested -> partially_refunded"
    assert [r["step"] for r in rows if r["step"] is not None] == sorted(
        r["step"] for r in rows if r["step"] is not None)  # in the order's steps


async def test_replaying_every_event_changes_no_row(live: tuple[AsyncEngine, Log]) -> None:
    engine, log = live
    before = await snapshot(engine)
    await project_all(engine, log.records, consumer="replayer", batch=37)
    assert await snapshot(engine) == before


async def test_an_older_or_resent_event_does_not_overwrite(
    live: tuple[AsyncEngine, Log],
) -> None:
    engine, log = live
    before = await snapshot(engine)
    late = Log(prefix="late", offsets=defaultdict(int, log.offsets))  # continues the log
    late.put(OrderStatusChanged(order_id="w-o0", shop_id="acme", version=2, status="paid",
                                changed_at=f.at(5000)), "dropship/orders", f.at(5000))
    stock(late, "sa", "w-SKU0", 1, available=100, reserved=0)
    late.put(f.accepted("x", "sb").model_copy(update={
        "order_id": "w-o0", "supplier_order_id": _so(before, "w-o0", "sb"),
        "accepted_at": f.at(9000)}), "supplier/sb", f.at(9000))
    await project_all(engine, late.records)
    after = await snapshot(engine)
    timeline = after.pop("order_timeline")
    assert len(timeline) == len(before.pop("order_timeline")) + 2  # both are in the timeline
    assert after == before  # and change nothing else


def _decoded(log: Log) -> list[CloudEvent]:
    out = []
    for rec in log.records:
        with contextlib.suppress(DecodeError):
            out.append(decode(rec.value))
    return out


def _so(snap: dict[str, list[tuple[object, ...]]], order_id: str, supplier: str) -> str:
    return next(str(r[1]) for r in snap["supplier_orders"] if r[0] == supplier
                and r[2] == order_id)


def _interleaved(records: list[Record], seed: int) -> list[Record]:
    """The records in a random order that keeps each partition's order (what Kafka keeps)."""
    queues: dict[tuple[str, int], list[Record]] = defaultdict(list)
    for rec in records:
        queues[(rec.topic, rec.partition)].append(rec)
    rng, out = random.Random(seed), []
    while queues:
        tp = rng.choice(sorted(queues))
        out.append(queues[tp].pop(0))
        if not queues[tp]:
            del queues[tp]
    return out


async def test_any_interleaving_of_topics_gives_the_same_rows(
    fresh_database: Callable[[str], Settings],
) -> None:
    log = world("i")
    engines = [create_engine(fresh_database(f"order{i}")) for i in range(4)]
    try:
        await project_all(engines[0], log.records)
        reference = await snapshot(engines[0])
        for seed, engine in enumerate(engines[1:]):
            await project_all(engine, _interleaved(log.records, seed), batch=7 + seed)
            assert await snapshot(engine) == reference, f"seed {seed}"
    finally:
        for engine in engines:
            await engine.dispose()


async def test_rebuild_equals_live_while_views_keep_answering(
    fresh_database: Callable[[str], Settings], cli_env: Callable[..., dict[str, str]],
) -> None:
    settings = fresh_database("rebuild")
    engine = create_engine(settings)
    try:
        await project_all(engine, world("r", orders=120).records, batch=500)
        live = await snapshot(engine)
        env = cli_env(DROPSHIP_DATABASE_URL=settings.database_url)
        rebuild = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pipeline.entry.cli", "projections", "rebuild", env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        answers = 0
        while rebuild.returncode is None:
            async with engine.connect() as conn:  # fails if a query ever errors
                assert await conn.scalar(text("SELECT count(*) FROM read.backorders")) == 120
                assert await conn.scalar(text("SELECT count(*) FROM read.order_status")) == 240
            answers += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(rebuild.wait(), 0.01)
        output = (await rebuild.stdout.read()).decode() if rebuild.stdout else ""
        assert rebuild.returncode == 0, output
        assert "rebuilt order_status" in output
        assert answers > 3
        assert await snapshot(engine) == live
    finally:
        await engine.dispose()


async def test_ops_role_reads_the_read_models_and_nothing_else(db: Settings) -> None:
    url = make_url(db.database_url)
    conn = await asyncpg.connect(host=url.host, port=url.port, user="dropship_ops",
                                 database=url.database)
    try:
        await conn.fetch("SELECT * FROM read.order_status LIMIT 1")
        await conn.fetch("SELECT * FROM read.stuck_orders LIMIT 1")
        for statement in (
            "INSERT INTO read.order_status (order_id) VALUES ('x')",
            "UPDATE read.order_status SET status = 'x'",
            "DELETE FROM read.dead_letters",
            "TRUNCATE read.order_timeline",
            "SELECT * FROM order_state LIMIT 1",
            "SELECT * FROM checkpoints LIMIT 1",
            "SELECT * FROM read_rebuild.order_status LIMIT 1",
            "CREATE TABLE read.mine (x int)",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
    finally:
        await conn.close()


def test_stuck_view_names_the_overdue_supplier(db: Settings) -> None:
    async def check() -> None:
        engine = create_engine(db)
        log = Log(prefix="stuck")

        month_ago = -60 * 24 * 30  # minutes before the factories' T0: deadlines are past
        s = Story(log, "stuck-1", "STK")
        s.feed(f.placed(("1", "STK", 1, "5.00")), "shop/acme", month_ago)
        s.feed(f.allocated("sz", 1, sku="STK"), "dropship/allocation", month_ago)
        s.feed(f.paid("5.00"), "shop/acme", month_ago + 1)
        try:
            await project_all(engine, log.records, consumer="stuck")  # offsets start at 0
            async with engine.connect() as conn:
                rows = (await conn.execute(text(
                    "SELECT problem, reason, waiting FROM read.stuck_orders "
                    "WHERE order_id = 'stuck-1' ORDER BY problem"))).all()
        finally:
            await engine.dispose()
        assert [r.problem for r in rows] == ["acknowledge_overdue", "dispatch_overdue"]
        assert rows[0].reason.startswith("sz has not accepted supplier order so-")
        assert rows[0].waiting > timedelta(0)

    asyncio.run(check())


def test_cli_reports_a_database_that_is_down_in_one_line() -> None:
    from pipeline.devstack.processes import free_port

    env = clean_env(DROPSHIP_DATABASE_URL=f"postgresql+asyncpg://x@127.0.0.1:{free_port()}/x")
    for args in (("order", "show", "o-1"), ("ops", "stuck"), ("ops", "suppliers")):
        result = subprocess.run([sys.executable, "-m", "pipeline.entry.cli", *args], env=env,
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1
        assert result.stderr.startswith("error: cannot connect")
        assert "Traceback" not in result.stderr

