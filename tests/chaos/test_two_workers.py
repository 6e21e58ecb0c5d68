"""Two workers in one consumer group; one is killed and restarted, one paused, mid-run.

Partitions move between them at each fault (the group rebalances), so each
partition's records are applied partly by one worker and partly by the other;
the checker must still find the end state of a crash-free run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from events.topics import SHOP_ORDERS
from pipeline.devstack import Stack
from pipeline.runtime.settings import Settings
from tests.chaos.harness import Fault, run_chaos
from tests.chaos.test_soak import judge, judged

pytestmark = [pytest.mark.chaos, pytest.mark.e2e]
ORDERS, RATE = 600, 40.0


async def test_two_workers_one_killed_and_restarted(
        chaos_stack: Stack, chaos_settings: Settings, chaos_engine: AsyncEngine,
        tmp_path: Path) -> None:
    # down longer than the session timeout: the group gives its partitions to the other
    faults = [Fault(4.0, "kill", worker=1, down_s=15.0), Fault(20.0, "duplicate"),
              Fault(24.0, "pause", worker=0), Fault(36.0, "kill", worker=1)]
    run = await run_chaos(chaos_stack, chaos_settings, chaos_engine, tmp_path,
                          orders=ORDERS, rate=RATE, faults=faults, workers=2, seed=7)
    verdict, ruling = await judge(run, chaos_engine)
    report = judged(run, verdict, ruling)
    assert run.caught_up, f"the pipeline did not catch up\n{report}"
    assert [w.starts for w in run.workers] == [1, 3]
    assert verdict.counts["orders"] == ORDERS
    assert verdict.ok, report
    assert ruling.ok, report
    owned = [owned_partitions(w.log()) for w in run.workers]
    assert owned[0] & owned[1], f"no partition of {SHOP_ORDERS} moved between them: {owned}"


def owned_partitions(log: str) -> set[int]:
    """Every partition of shop.orders a worker's log says it was assigned at some time."""
    found: set[int] = set()
    for listed in re.findall(rf"partitions assigned: .*?{re.escape(SHOP_ORDERS)}\[([\d, ]*)\]",
                             log):
        found |= {int(p) for p in listed.split(",") if p.strip()}
    return found
