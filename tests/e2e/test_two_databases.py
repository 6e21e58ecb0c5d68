"""One database per agent: allocation state on one Postgres server, order state and
read models on another, everything else unchanged (docs/scaling.md).

The allocation agent uses the common ``DROPSHIP_DATABASE_URL``; the order agent
and the projector name their own (``DROPSHIP_DATABASE_URL_ORDERS``, ``_PROJECTOR``).

Two real servers: the session's and a second one started here by the same code as
``dropship dev up``. ``dropship db upgrade`` migrates both; one ``dropship worker``
runs every agent; the simulator places orders; each table must then hold rows on
the server of its agent only, and orders must flow end to end.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.devstack import Stack
from pipeline.devstack.postgres import SUPERUSER, resolve_install, start_postgres, stop_postgres
from pipeline.devstack.processes import free_port
from tests.helpers import (
    make_state_dir,
    run_cli,
    start_worker,
    stop_worker,
    superuser_row,
    until,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def second_server() -> Iterator[int]:
    """Another PostgreSQL server (database ``dropship``, superuser by trust on loopback)."""
    folder = make_state_dir("dropship-pg2-")
    install, port = resolve_install(), free_port()
    proc = start_postgres(install, folder / "pg", port)
    try:
        yield port
    finally:
        stop_postgres(install, folder / "pg", proc)
        shutil.rmtree(folder, ignore_errors=True)


def _url(port: int, database: str) -> str:
    return f"postgresql+asyncpg://{SUPERUSER}@127.0.0.1:{port}/{database}"


def _counts(port: int, database: str, prefix: str) -> dict[str, Any]:
    row = superuser_row(port, database, f"""
        SELECT (SELECT count(*) FROM allocation_state) AS allocation_state,
               (SELECT count(*) FROM allocation_lines) AS allocation_lines,
               (SELECT count(*) FROM order_state) AS order_state,
               (SELECT count(*) FROM read.order_status WHERE order_id LIKE '{prefix}%')
                   AS order_status,
               (SELECT count(*) FROM read.supplier_orders WHERE order_id LIKE '{prefix}%')
                   AS supplier_orders,
               (SELECT count(*) FROM event_log) AS event_log,
               (SELECT coalesce(array_agg(DISTINCT consumer ORDER BY consumer), '{{}}')
                  FROM checkpoints) AS consumers""")
    return dict(row)


def test_allocation_on_one_server_orders_and_read_models_on_another(
        stack: Stack, second_server: int, cli_env: Callable[..., dict[str, str]],
        tmp_path: Path) -> None:
    main_db = f"two_{uuid.uuid4().hex[:8]}"
    superuser_row(stack.pg_port, "postgres", f'CREATE DATABASE "{main_db}"')
    web = free_port()
    # the common database (the allocation agent's, as it names none) on the second
    # server; the order agent and the projector each name the first server's: ops
    # commands then hold the projector's engine and must find the allocation
    # agent's checkpoints elsewhere
    orders_db = _url(stack.pg_port, main_db)
    env = cli_env(DROPSHIP_DATABASE_URL=_url(second_server, "dropship"),
                  DROPSHIP_DATABASE_URL_ORDERS=orders_db,
                  DROPSHIP_DATABASE_URL_PROJECTOR=orders_db, DROPSHIP_WEB_PORT=str(web))
    migrated = run_cli("db", "upgrade", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert f"databases dropship, {main_db} migrated to head" in migrated.stdout
    log = tmp_path / "worker.log"
    worker = start_worker(env, log)
    try:
        until(lambda: run_cli("health", env=env).returncode == 0, 120, "worker ready")
        sim = run_cli("simulate", "--orders", "15", "--rate", "15", "--speed", "60",
                      "--settle", "8", env=env, timeout=180)
        assert sim.returncode == 0, sim.stderr
        prefix = re.search(r"run (\S+):", sim.stdout)
        assert prefix is not None, sim.stdout
        main = until(lambda: (c := _counts(stack.pg_port, main_db, prefix.group(1)))
                      ["order_status"] == 15 and c["supplier_orders"] > 0 and c,
                      120, "15 orders in read.order_status, supplier orders sent")
        lag = run_cli("ops", "lag", "--json", env=env)
        assert lag.returncode == 0, lag.stderr
        allocation_lag = [r for r in json.loads(lag.stdout) if r["consumer"] == "allocation"]
        assert allocation_lag
        assert max(r["checkpoint"] for r in allocation_lag) >= 0  # read on its own server
    finally:
        assert stop_worker(worker, log) == 0
    pruned = run_cli("retention", "run", env=env)  # each database's own tables
    assert pruned.returncode == 0, pruned.stderr
    assert [ln.split(" rows")[0] for ln in pruned.stdout.splitlines()] == [
        "retention: pruned processed_events 0, outbox 0"] * 2
    other = _counts(second_server, "dropship", prefix.group(1))
    # allocation state only on the second server; orders, read models and the
    # archive only on the first; each agent's checkpoints beside its state
    assert other["allocation_state"] > 0
    assert other["allocation_lines"] > 0
    assert main["allocation_state"] == main["allocation_lines"] == 0
    assert main["order_state"] > 0
    assert other["order_state"] == other["order_status"] == other["event_log"] == 0
    assert main["event_log"] > 0
    assert other["consumers"] == ["allocation"]
    assert "allocation" not in main["consumers"]
    assert {"orders", "projector"} <= set(main["consumers"])
