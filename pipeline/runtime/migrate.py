"""Schema migrations (Alembic), as called by ``dropship db upgrade`` and the tests.

The migration scripts live in ``pipeline/runtime/migrations``; they run as the owner of
the schema objects, ``settings.admin_database_url`` (``DROPSHIP_DATABASE_ADMIN_URL``,
else ``DROPSHIP_DATABASE_URL``), never as the worker's application role.
Concurrent upgrades are serialized by an advisory lock.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config

from pipeline.runtime.settings import Settings

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(settings: Settings) -> Config:
    """An Alembic config for our scripts and the settings' database, as its owner."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", settings.admin_database_url.replace("%", "%%"))
    return cfg


def upgrade_sync(settings: Settings, revision: str = "head") -> None:
    """Migrate to ``revision``. Must not be called from a running event loop."""
    command.upgrade(alembic_config(settings), revision)


#: errors meaning "not accepting connections yet" (refused, starting up, shutting
#: down, too many clients); anything else (a wrong password) fails at once
NOT_YET = (OSError, asyncio.TimeoutError, asyncpg.CannotConnectNowError,
           asyncpg.TooManyConnectionsError, asyncpg.ConnectionDoesNotExistError)


def wait_for_database(settings: Settings, wait_s: float, interval_s: float = 1.0) -> None:
    """Return once the owner's URL accepts a connection; retry ``NOT_YET`` errors for up
    to ``wait_s`` seconds, then raise the last one (called by ``db upgrade --wait-s``,
    e.g. by compose's migrate service while Postgres still runs its init scripts)."""
    url = settings.admin_database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    deadline = time.monotonic() + wait_s

    async def probe() -> None:
        conn = await asyncpg.connect(url, timeout=min(5.0, max(wait_s, 0.5)))
        await conn.close()

    while True:
        try:
            asyncio.run(probe())
            return
        except NOT_YET:
            if time.monotonic() + interval_s > deadline:
                raise
            time.sleep(interval_s)


def downgrade_sync(settings: Settings, revision: str) -> None:
    command.downgrade(alembic_config(settings), revision)


async def upgrade(settings: Settings, revision: str = "head") -> None:
    """Migrate from async code (Alembic runs its own loop in a worker thread)."""
    await asyncio.to_thread(upgrade_sync, settings, revision)
