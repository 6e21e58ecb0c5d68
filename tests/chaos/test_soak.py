"""The chaos soak: orders flow while workers are killed and paused and Postgres restarts.

The short version runs in CI (1,500 orders, 3 faults of each kind); the long one
on demand, e.g. ``pytest tests/chaos -k soak --soak-orders 50000 --soak-faults 10
--soak-speed 120 --timeout 5000`` (docs/reliability.md; ``--timeout`` lifts the
10-minute limit per test). Afterwards two judges rule: the checker
(``tests/chaos/checker.py``) compares the end state with a crash-free replay of the pure
core over the recorded inputs (crash consistency); the referee
(``tests/chaos/referee.py``) checks the business invariants from the simulator's books
and the raw topics only, with rules of its own (the decisions were right).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.devstack import Stack
from pipeline.runtime.settings import Settings
from tests.chaos import checker, referee
from tests.chaos.conftest import Soak
from tests.chaos.harness import KINDS, ChaosRun, policy, run_chaos, schedule

pytestmark = [pytest.mark.chaos, pytest.mark.e2e]
SEED = 20261122


def judged(run: ChaosRun, verdict: checker.Verdict, ruling: referee.Ruling) -> str:
    """The run's figures, the checker's table and the referee's, as the test prints them."""
    faults = ", ".join(f"{k} {n}" for k, n in run.injected.items())
    faults += f" ({run.duplicated} records sent twice)"
    return (f"{run.tally.orders:,} orders, {sum(run.tally.sent.values()):,} records sent "
            f"({run.tally.malformed_count} malformed) in {run.seconds:.0f} s; faults: {faults}\n"
            f"{verdict.table()}\n{ruling.table()}")


async def judge(run: ChaosRun, engine: AsyncEngine) -> tuple[checker.Verdict, referee.Ruling]:
    """Both judges' rulings on a run (printed)."""
    verdict = await checker.check(run.settings, engine, run.record_file, policy())
    ruling = await referee.judge(run.settings, run.books, run.terms())
    print(judged(run, verdict, ruling))
    return verdict, ruling


async def test_chaos_soak_keeps_every_invariant(
        chaos_stack: Stack, chaos_settings: Settings, chaos_engine: AsyncEngine,
        soak: Soak, tmp_path: Path) -> None:
    span_s = soak.orders / soak.rate
    faults = schedule(SEED, soak.faults, span_s)
    run = await run_chaos(chaos_stack, chaos_settings, chaos_engine, tmp_path,
                          orders=soak.orders, rate=soak.rate, faults=faults, seed=SEED,
                          catch_up_s=max(300.0, 2 * span_s), speed=soak.speed,
                          skus=max(40, soak.orders // 50))  # a bigger catalog for more orders
    assert run.injected == dict.fromkeys(KINDS, soak.faults)
    assert run.tally.orders == soak.orders
    verdict, ruling = await judge(run, chaos_engine)
    report = judged(run, verdict, ruling)
    assert run.caught_up, f"the pipeline did not catch up\n{report}"
    assert verdict.counts["orders"] == soak.orders
    assert ruling.counts["orders"] == soak.orders
    assert verdict.ok, report
    assert ruling.ok, report
