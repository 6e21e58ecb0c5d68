"""The README's first command, `dropship demo`, on its own fresh embedded stack: a short,
seeded run whose summary must equal SQL counts over the read models it leaves behind."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from pipeline.devstack.processes import accepts_connections, free_port, start_ticks
from projections.queries import TIMELINE
from tests.helpers import clean_env, make_state_dir, run_cli

pytestmark = pytest.mark.e2e


async def _read_models(port: int, prefix: str) -> dict[str, Any]:
    """Counts over the read models, written independently of ``queries.run_summary``
    (by shop id and joins, where the summary filters by order id)."""
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres",
                                 database="dropship")
    shops = f"{prefix}-shop-%"
    try:
        statuses = {r["status"]: r["n"] for r in await conn.fetch(
            "SELECT status, count(*) AS n FROM read.order_status WHERE shop_id LIKE $1 "
            "GROUP BY status", shops)}
        failovers = await conn.fetchval(
            "SELECT count(*) FROM read.supplier_orders s JOIN read.order_status o USING "
            "(order_id) WHERE o.shop_id LIKE $1 AND s.cancel_cause IN ('rejected', "
            "'acknowledge_sla_missed', 'dispatch_sla_missed')", shops)
        backorders = await conn.fetchval(
            "SELECT count(*) FROM read.order_lines l JOIN read.order_status o USING (order_id) "
            "WHERE o.shop_id LIKE $1 AND l.backordered > 0 AND o.status <> 'cancelled'", shops)
        shipments = await conn.fetchval(
            "SELECT count(*) FROM read.shipments s JOIN read.order_status o USING (order_id) "
            "WHERE o.shop_id LIKE $1", shops)
        letters = await conn.fetch(
            "SELECT source_topic, source_partition, source_offset, original_key "
            "FROM read.dead_letters")
        away = await conn.fetchval(
            "SELECT coalesce(sum(failovers_away), 0) FROM read.supplier_scorecard "
            "WHERE supplier_id LIKE $1", f"{prefix}-sup-%")
        failed_over = await conn.fetch(
            "SELECT DISTINCT s.order_id FROM read.supplier_orders s JOIN read.order_status o "
            "USING (order_id) WHERE o.shop_id LIKE $1 AND s.cancel_cause IN ('rejected', "
            "'acknowledge_sla_missed', 'dispatch_sla_missed') ORDER BY 1 LIMIT 20", shops)
        timeline = {}
        for row in failed_over:  # as `dropship order show` orders it
            timeline[row["order_id"]] = await conn.fetch(
                TIMELINE.text.replace(":o", "$1"), row["order_id"])
    finally:
        await conn.close()
    return {"statuses": statuses, "failovers": failovers, "backorders": backorders,
            "shipments": shipments, "away": away, "timeline": timeline,
            "letters": {(r["source_topic"], r["source_partition"], r["source_offset"]):
                        r["original_key"] for r in letters}}


def _reads_in_true_order(order_id: str, rows: list[Any]) -> None:
    """The timeline of an order that failed over tells what happened in the order it
    happened: times never go back; nothing reaches a supplier before the payment that
    covered the order; a supplier is never cancelled for not accepting after it accepted;
    a status line's reason is its own transition's, never a failover's carried on."""
    summaries = [r["summary"] for r in rows]
    times = [r["time"] for r in rows]
    assert times == sorted(times), order_id
    paid = next(i for i, s in enumerate(summaries) if s.startswith("payment "))
    sent = [i for i, s in enumerate(summaries) if s.startswith("supplier order ")
            and " sent to " in s]
    assert sent, summaries
    assert min(sent) > paid, summaries
    for i, line in enumerate(summaries):  # never "did not accept" after it accepted
        if "(acknowledge_sla_missed)" in line and "did not accept in time" in line:
            so = line.split()[2]
            assert not [s for s in summaries[:i] if s.endswith(f" accepted {so}")], summaries
    for i, line in enumerate(summaries):  # a failover's reason shows with the failover only
        if line.startswith("status ") and "did not accept" in line:
            assert any("(acknowledge_sla_missed)" in s for s in summaries[max(0, i - 4):i]), \
                summaries


def test_demo_runs_to_its_summary_which_equals_the_read_models(tmp_path: Path) -> None:
    state_dir = make_state_dir("dropship-demo-")
    kafka_port, pg_port = free_port(), free_port()
    env = clean_env(DROPSHIP_STATE_DIR=str(state_dir), DROPSHIP_DEV_KAFKA_PORT=str(kafka_port),
                    DROPSHIP_DEV_PG_PORT=str(pg_port))
    summary_file = tmp_path / "summary.json"
    try:
        result = run_cli("demo", "--orders", "150", "--rate", "25", "--settle", "12",
                         "--seed", "11", "--share", "malformed=0.06", "--keep",
                         "--summary-json", str(summary_file), env=env, timeout=400)
        out = result.stdout
        assert result.returncode == 0, out[-3000:] + result.stderr
        assert "stack started" in out
        assert "invariants held" in out
        assert "an order that failed over to a backup supplier" in out
        worker_pid = int(re.search(r"worker started \(pid (\d+)", out).group(1))  # type: ignore[union-attr]
        assert start_ticks(worker_pid) is None  # the worker is gone

        report = json.loads(summary_file.read_text())
        assert report["placed"] == 150
        assert not report["problems"]
        summary, prefix = report["summary"], report["prefix"]
        books = report["books"]  # the simulated suppliers' own records
        assert books["requests"] == sum(books["decisions"].values()) > 0
        assert "unexplained" not in books["over_asks_by_explanation"]
        assert not books["cannot_ship"]
        assert books["fates_sent"].get("on_time", 0) > 0
        if report["deliveries"] is not None:  # read.shipments tracks deliveries
            assert report["deliveries"]["delivered_late"] <= books["fates_sent"].get("late", 0)

        # --keep left the stack running: count for ourselves
        counted = asyncio.run(_read_models(pg_port, prefix))
        assert counted["timeline"], "the demo showed an order's timeline"
        for order_id, rows in counted["timeline"].items():
            _reads_in_true_order(order_id, rows)
        assert summary["statuses"] == counted["statuses"]
        assert summary["orders"] == sum(counted["statuses"].values()) == 150
        assert summary["failovers"] == counted["failovers"] == counted["away"] > 0
        assert summary["backorders"] == counted["backorders"]
        assert summary["shipments"] == counted["shipments"] > 0
        malformed = {tuple(m[:3]) for m in report["malformed"]}
        kinds = {k: n for k, n in report["faults"].items() if k not in ("duplicate", "reorder")}
        assert len(malformed) == sum(kinds.values()) > 0  # the seeded run sends some
        assert malformed <= set(counted["letters"])  # every malformed one dead-lettered
        ours = [k for k in counted["letters"].values() if k.startswith(prefix)]
        assert summary["dead_letters"] == len(ours) >= len(malformed)
        assert run_cli("dev", "down", env=env).returncode == 0
        assert not accepts_connections(kafka_port)  # the stack is gone
        assert not accepts_connections(pg_port)
    finally:
        run_cli("dev", "down", env=env)
        shutil.rmtree(state_dir, ignore_errors=True)
