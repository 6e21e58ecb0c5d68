"""The README's first command, `dropship demo`, on its own fresh embedded stack."""

from __future__ import annotations

import re
import shutil

import pytest

from pipeline.devstack.processes import accepts_connections, free_port, start_ticks
from tests.helpers import clean_env, make_state_dir, run_cli

pytestmark = pytest.mark.e2e


def test_demo_runs_end_to_end_and_stops_what_it_started() -> None:
    state_dir = make_state_dir("dropship-demo-")
    kafka_port, pg_port = free_port(), free_port()
    env = clean_env(DROPSHIP_STATE_DIR=str(state_dir), DROPSHIP_DEV_KAFKA_PORT=str(kafka_port),
                    DROPSHIP_DEV_PG_PORT=str(pg_port))
    try:
        result = run_cli("demo", env=env, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        out = result.stdout
        assert "stack started" in out
        assert re.search(r"supplier/sup-backup\s+-> ShipmentDispatched", out)
        assert "is now sent_to_supplier" in out
        assert "is now delivered" in out
        assert "sup-backup: dispatched" in out  # the primary had no stock: the backup shipped
        worker_pid = int(re.search(r"worker started \(pid (\d+)", out).group(1))  # type: ignore[union-attr]
        assert start_ticks(worker_pid) is None  # the worker is gone
        assert not accepts_connections(kafka_port)
        assert not accepts_connections(pg_port)
        assert not (state_dir / "stack.json").exists()
    finally:
        run_cli("dev", "down", env=env)
        shutil.rmtree(state_dir, ignore_errors=True)
