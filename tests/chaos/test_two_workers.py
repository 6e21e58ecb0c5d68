"""Two workers in one consumer group; one is killed and restarted, one paused, mid-run.

Partitions move between them at each fault (the group rebalances), so each
partition's records are applied partly by one worker and partly by the other;
the checker must still find the end state of a crash-free run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.devstack import Stack
from pipeline.settings import Settings
from tests.chaos.harness import Fault, run_chaos
from tests.chaos.test_soak import judge, judged

pytestmark = [pytest.mark.chaos, pytest.mark.e2e]
ORDERS, RATE = 1000, 40.0


async def test_two_workers_one_killed_and_restarted(
        chaos_stack: Stack, chaos_settings: Settings, chaos_engine: AsyncEngine,
        tmp_path: Path) -> None:
    faults = [Fault(6.0, "kill", worker=1), Fault(14.0, "pause", worker=0),
              Fault(20.0, "kill", worker=1)]
    run = await run_chaos(chaos_stack, chaos_settings, chaos_engine, tmp_path,
                          orders=ORDERS, rate=RATE, faults=faults, workers=2, seed=7)
    assert run.caught_up
    assert [w.starts for w in run.workers] == [1, 3]
    verdict = await judge(run, chaos_engine)
    assert verdict.counts["orders"] == ORDERS
    assert verdict.ok, judged(run, verdict)
    async with chaos_engine.connect() as conn:  # work was shared, not done by one alone
        owners = (await conn.execute(text(
            "SELECT count(DISTINCT consumer) FROM checkpoints"))).scalar_one()
    assert owners == 3
    logs = [w.log() for w in run.workers]
    assert all("checkpoint" in log or "assigned" in log.lower() for log in logs)
