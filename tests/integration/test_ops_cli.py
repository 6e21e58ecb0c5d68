"""``dropship order show`` and ``dropship ops ...`` as ops run them, on a database the
projector filled from a known story, and the embedded broker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from events.codec import decode, encode
from events.envelope import wrap
from events.topics import SHOP_ORDERS
from pipeline.runtime.db import create_engine
from pipeline.runtime.kafka import ensure_topics
from pipeline.runtime.settings import Settings
from tests.helpers import run_cli
from tests.projection_story import project_all, read_back, world
from tests.unit import order_factories as f

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ops_env(fresh_database: Callable[[str], Settings],
            cli_env: Callable[..., dict[str, str]]) -> dict[str, str]:
    settings = fresh_database("ops")

    async def fill() -> None:
        engine = create_engine(settings)
        try:
            await project_all(engine, world("ops").records)
        finally:
            await engine.dispose()

    asyncio.run(fill())
    return cli_env(DROPSHIP_DATABASE_URL=settings.database_url)


def _json(env: dict[str, str], *args: str) -> Any:
    result = run_cli(*args, "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_order_show(ops_env: dict[str, str]) -> None:
    view = _json(ops_env, "order", "show", "ops-o1")
    assert (view["order"]["status"], view["order"]["total"]) == ("partially_refunded", "20.00")
    assert (view["order"]["paid"], view["order"]["refunded"]) == ("20.00", "10.00")
    assert [(r["cause"], r["amount"]) for r in view["refunds"]] == [("return", "10.00")]
    assert [ln["allocations"] for ln in view["lines"]] == [{"sb": 1}]  # one unit restocked
    assert [so["cancel_cause"] for so in view["supplier_orders"]] == ["rejected", None]
    (shipment,) = view["shipments"]
    assert (shipment["carrier"], shipment["tracking_number"], shipment["lines"],
            shipment["units"], shipment["state"], shipment["late"], shipment["flagged"]) == (
        "Colissimo", "TRK1", {"1": 2}, 2, "delivered", False, False)
    assert shipment["expected_by"] is not None
    assert view["timeline"][0]["summary"].startswith("placed: 1 line(s), 20.00 EUR")
    table = run_cli("order", "show", "ops-o1", env=ops_env)
    assert table.returncode == 0
    assert "partially_refunded" in table.stdout
    assert "Ada, 1 Rd, Lyon, FR" in table.stdout  # the ship-to address
    assert "TRK1" in table.stdout


def test_unknown_order_is_one_line_and_exit_1(ops_env: dict[str, str]) -> None:
    result = run_cli("order", "show", "no-such-order", env=ops_env)
    assert result.returncode == 1
    assert result.stderr == "error: order 'no-such-order' is unknown to the read models\n"


def test_backorders_suppliers_and_dead_letters(ops_env: dict[str, str]) -> None:
    backorders = _json(ops_env, "ops", "backorders")
    assert sorted(b["order_id"] for b in backorders) == [f"ops-b{i}" for i in range(3)]
    assert [b["place"] for b in backorders] == [1, 2, 3]  # one sku, in serving order
    listed = run_cli("ops", "backorders", env=ops_env)
    assert "in the order they will be served: per sku by queued_at" in listed.stdout
    card = {s["supplier_id"]: s for s in _json(ops_env, "ops", "suppliers")}
    assert (card["sa"]["failovers_away"], card["sb"]["on_time_dispatch_rate"]) == (3, "1.0000")
    assert (card["sb"]["shipments"], card["sb"]["delivered"], card["sa"]["shipments"]) == \
        (3, 3, 0)
    assert "supplier deliveries" in run_cli("ops", "suppliers", env=ops_env).stdout
    letters = _json(ops_env, "ops", "dead-letters")
    assert len(letters) == 3
    assert {d["rule"] for d in letters} == {"json_invalid"}
    assert _json(ops_env, "ops", "stuck") == []


def test_replay_refuses_an_invalid_message_and_publishes_a_fixed_one(
    ops_env: dict[str, str], migrated: Settings, tmp_path: Path,
) -> None:
    letter = _json(ops_env, "ops", "dead-letters")[0]
    refused = run_cli("ops", "dead-letters", "--replay", letter["id"], env=ops_env)
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: the message is still invalid: ")
    fixed = tmp_path / "fixed.json"
    event = f.placed().model_copy(update={"order_id": "ops-fixed"})
    fixed.write_bytes(encode(wrap(event, id="fixed-1", source="shop/acme", time=f.T0)))
    asyncio.run(ensure_topics(migrated))
    replayed = run_cli("ops", "dead-letters", "--replay", letter["id"], "--file", str(fixed),
                       env=ops_env)
    assert replayed.returncode == 0, replayed.stderr
    assert f"replayed {letter['id']} as event fixed-1 to shop.orders" in replayed.stdout
    on_topic = asyncio.run(read_back(migrated, [SHOP_ORDERS]))
    assert any(decode(r.value).id == "fixed-1" for r in on_topic if b"fixed-1" in r.value)


def test_lag_reports_checkpoints_against_the_log(ops_env: dict[str, str]) -> None:
    rows = _json(ops_env, "ops", "lag")
    projector = [r for r in rows if r["consumer"] == "projector"
                 and r["topic"] == "fulfillment.order-status"]
    assert projector
    assert any(r["checkpoint"] >= 0 for r in projector)  # the story's partitions
    assert {r["source"] for r in projector} <= {"broker", "event_log"}
    assert all(r["lag"] is not None and r["lag"] >= 0 for r in projector)
