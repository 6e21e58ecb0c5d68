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
            "(order_id) WHERE o.shop_id LIKE $1 AND s.cancel_cause <> 'order_cancelled'", shops)
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
    finally:
        await conn.close()
    return {"statuses": statuses, "failovers": failovers, "backorders": backorders,
            "shipments": shipments, "away": away,
            "letters": {(r["source_topic"], r["source_partition"], r["source_offset"]):
                        r["original_key"] for r in letters}}


def test_demo_runs_to_its_summary_which_equals_the_read_models(tmp_path: Path) -> None:
    state_dir = make_state_dir("dropship-demo-")
    kafka_port, pg_port = free_port(), free_port()
    env = clean_env(DROPSHIP_STATE_DIR=str(state_dir), DROPSHIP_DEV_KAFKA_PORT=str(kafka_port),
                    DROPSHIP_DEV_PG_PORT=str(pg_port))
    summary_file = tmp_path / "summary.json"
    try:
        result = run_cli("demo", "--orders", "150", "--rate", "25", "--settle", "12",
                         "--seed", "11", "--share", "malformed=0.06",
                         "--summary-json", str(summary_file), env=env, timeout=400)
        out = result.stdout
        assert result.returncode == 0, out[-3000:] + result.stderr
        assert "stack started" in out
        assert "invariants held" in out
        assert "an order that failed over to a backup supplier" in out
        worker_pid = int(re.search(r"worker started \(pid (\d+)", out).group(1))  # type: ignore[union-attr]
        assert start_ticks(worker_pid) is None  # the worker is gone
        assert not accepts_connections(kafka_port)  # and so is the stack
        assert not accepts_connections(pg_port)

        report = json.loads(summary_file.read_text())
        assert report["placed"] == 150
        assert not report["problems"]
        summary, prefix = report["summary"], report["prefix"]

        # Postgres keeps its data folder: bring it back to count for ourselves
        assert run_cli("dev", "up", env=env).returncode == 0
        counted = asyncio.run(_read_models(pg_port, prefix))
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
    finally:
        run_cli("dev", "down", env=env)
        shutil.rmtree(state_dir, ignore_errors=True)
