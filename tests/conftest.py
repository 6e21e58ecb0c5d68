"""Shared fixtures: the embedded stack (started by the same code as ``dropship dev up``),
settings pointing at it, a migrated database, and factories.

The stack is started once per test session in a fresh state folder on free
ports, and stopped at the end; a run never touches a developer's own
``.dropship/`` stack. Every run uses fresh consumer group ids (``app_id``).
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.devstack import Stack, down, up
from pipeline.runtime.db import create_engine
from pipeline.runtime.settings import Settings
from tests.helpers import clean_env, make_state_dir, new_database


def pytest_addoption(parser: pytest.Parser) -> None:
    """The chaos soak's size: the short one in CI by default (tests/chaos)."""
    group = parser.getgroup("dropship chaos soak")
    group.addoption("--soak-orders", default="1500", help="orders the chaos soak places")
    group.addoption("--soak-faults", default="3", help="faults of each kind it injects")
    group.addoption("--soak-rate", default="40", help="orders per second it places")
    group.addoption("--soak-speed", default="1200",
                    help="simulated seconds per real second (slower: fewer deadlines expire "
                         "while a long soak's backlog waits)")
    group.addoption("--bites", action="store_true",
                    help="also run the referee's bite tests: the chaos run with a bug "
                         "planted in a shared core (tests/chaos/test_referee_bites.py)")


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """The embedded broker + Postgres for the whole session (real processes)."""
    state_dir = make_state_dir()
    running, _ = up(state_dir, 0, 0)
    try:
        yield running
    finally:
        down(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def settings(stack: Stack, run_id: str) -> Settings:
    """Settings reaching the test stack, with a consumer-group prefix unique to this run."""
    return Settings(
        _env_file=None,
        kafka_bootstrap_servers=stack.bootstrap_servers,
        database_url=stack.database_url,  # the owner: tests set up and inspect anything
        database_admin_url=None,  # never a developer's own, from the environment
        app_id=f"test-{run_id}",
        kafka_session_timeout_s=6.0,
        kafka_heartbeat_interval_s=1.0,
        state_dir=stack.state_dir,
    )


@pytest.fixture(scope="session")
def migrated(settings: Settings) -> Settings:
    """The settings, after ``dropship db upgrade`` has run against the test database."""
    from pipeline.runtime.migrate import upgrade_sync

    upgrade_sync(settings)
    return settings


@pytest_asyncio.fixture(scope="session")
async def engine(migrated: Settings) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(migrated)
    try:
        yield eng
    finally:
        await eng.dispose()


@pytest.fixture(scope="session")
def cli_env(stack: Stack, run_id: str) -> Callable[..., dict[str, str]]:
    """Factory: an environment for a ``dropship`` subprocess pointed at the test stack,
    as the application role (``stack.env()``). A ``DROPSHIP_DATABASE_URL`` given in
    ``extra`` is also the admin URL, unless ``extra`` names one: the stack's
    ``dev.env`` (read through ``DROPSHIP_STATE_DIR``) would otherwise send admin
    commands to the stack's own database."""

    def make(**extra: str) -> dict[str, str]:
        if "DROPSHIP_DATABASE_URL" in extra:
            extra.setdefault("DROPSHIP_DATABASE_ADMIN_URL", extra["DROPSHIP_DATABASE_URL"])
        return clean_env(**{**stack.env(),
                            "DROPSHIP_APP_ID": f"test-{run_id}-{uuid.uuid4().hex[:6]}", **extra})

    return make


@pytest.fixture(scope="session")
def fresh_database(migrated: Settings) -> Callable[[str], Settings]:
    """Factory: settings for a new, migrated database on the session's Postgres
    (for tests that compare whole tables, or two runs side by side)."""
    def make(prefix: str) -> Settings:
        # in a thread of its own: callable from async tests (it runs event loops)
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(new_database, migrated, prefix).result()

    return make
