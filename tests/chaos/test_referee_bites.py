"""The independent referee bites where the replay checker cannot.

A bug planted in a core the agents and the replay checker share
(``tests/chaos/planted.py``) runs in the workers and in the checker alike: the
checker's crash-free replay of the same wrong core agrees with what the workers did,
so it passes. The referee, with rules of its own, must fail the run on the
invariant the bug breaks. On demand (about a minute each): ``pytest
tests/chaos/test_referee_bites.py --bites``; CI runs the referee's unit tests
(``tests/unit/test_referee.py``) and the soak instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.devstack import Stack
from pipeline.runtime.settings import Settings
from tests.chaos import planted
from tests.chaos.harness import run_chaos
from tests.chaos.test_soak import judge, judged

pytestmark = [pytest.mark.chaos, pytest.mark.e2e]
ORDERS, RATE, SEED = 400, 40.0, 20261203


@pytest.fixture(autouse=True)
def _on_demand(request: pytest.FixtureRequest) -> None:
    if not request.config.getoption("--bites"):
        pytest.skip("on demand: --bites")


@pytest.mark.parametrize(("bug", "invariant"), [("half_payment", "paid_first"),
                                                ("no_shipping_credit", "money")])
async def test_a_bug_in_a_shared_core_passes_the_checker_and_fails_the_referee(
        bug: str, invariant: str, chaos_stack: Stack, chaos_settings: Settings,
        chaos_engine: AsyncEngine, tmp_path: Path) -> None:
    unplant = planted.plant(bug)  # the checker replays the same wrong core
    try:
        run = await run_chaos(chaos_stack, chaos_settings, chaos_engine, tmp_path,
                              orders=ORDERS, rate=RATE, faults=[], seed=SEED,
                              extra_env=planted.worker_env(bug))
        verdict, ruling = await judge(run, chaos_engine)
    finally:
        unplant()
    report = judged(run, verdict, ruling)
    assert run.caught_up, report
    assert verdict.ok, f"the checker saw the bug: {report}"
    assert ruling.violations[invariant], f"the referee missed the bug: {report}"
