"""Fixtures of the chaos tests: a stack of their own (they restart its Postgres).

Each test gets a fresh broker and Postgres (started by the same code as
``dropship dev up``), so the checker can read back every record and row of
exactly one run; the stack is stopped afterwards whatever happened.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.devstack import Stack, down, up
from pipeline.runtime.db import create_engine
from pipeline.runtime.kafka import ensure_topics
from pipeline.runtime.migrate import upgrade_sync
from pipeline.runtime.settings import Settings
from tests.helpers import make_state_dir


@dataclass(frozen=True)
class Soak:
    """How big a soak is: orders, faults of each kind, orders per second, clock speed."""

    orders: int
    faults: int
    rate: float
    speed: float


@pytest.fixture
def soak(request: pytest.FixtureRequest) -> Soak:
    """The short soak by default; ``--soak-orders/--soak-faults/--soak-rate`` for the long one."""
    opt = request.config.getoption
    return Soak(int(opt("--soak-orders")), int(opt("--soak-faults")), float(opt("--soak-rate")),
                float(opt("--soak-speed")))


@pytest.fixture
def chaos_stack() -> Iterator[Stack]:
    state_dir = make_state_dir("dropship-chaos-")
    running, _ = up(state_dir, 0, 0)
    keep = bool(os.environ.get("CHAOS_KEEP_STACK"))  # debugging: `dropship dev down` it
    try:
        yield running
    finally:
        if keep:
            print(f"kept the stack: DROPSHIP_STATE_DIR={state_dir}")
        else:
            down(state_dir)
            shutil.rmtree(running.pg_dir, ignore_errors=True)
            shutil.rmtree(state_dir, ignore_errors=True)


@pytest_asyncio.fixture
async def chaos_settings(chaos_stack: Stack) -> Settings:
    settings = Settings(
        _env_file=None, kafka_bootstrap_servers=chaos_stack.bootstrap_servers,
        database_url=chaos_stack.database_url, app_id=f"chaos-{uuid.uuid4().hex[:8]}",
        state_dir=chaos_stack.state_dir)
    await asyncio.to_thread(upgrade_sync, settings)  # alembic runs a loop of its own
    await ensure_topics(settings)
    return settings


@pytest_asyncio.fixture
async def chaos_engine(chaos_settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(chaos_settings)
    try:
        yield engine
    finally:
        await engine.dispose()
