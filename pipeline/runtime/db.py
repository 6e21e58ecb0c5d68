"""Database wiring: the one place an engine is built from settings.

Nothing connects at import time; :func:`create_engine` returns a lazily
connecting engine. Callers own the engine and ``await engine.dispose()`` it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from pipeline.runtime.settings import Settings


def create_engine(settings: Settings, admin: bool = False) -> AsyncEngine:
    """An asyncpg engine for ``settings.database_url`` (the application role), or with
    ``admin`` for ``settings.admin_database_url`` (the schema owner: DDL); pool
    pre-ping on. Raises SettingsError if the admin URL names another database."""
    return create_async_engine(
        settings.admin_database_url if admin else settings.database_url,
        pool_size=settings.database_pool_size,
        pool_pre_ping=True,
    )


@asynccontextmanager
async def agent_engine(settings: Settings, agent: str,
                       shared: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """``agent``'s database (``DROPSHIP_DATABASE_URL_<AGENT>``, else the common one):
    ``shared`` if that is where it points, else a short-lived engine of its own,
    disposed on exit. For commands that hold one engine (the read models') and
    must read an agent's checkpoints or applied ids where they live."""
    own = settings.of_agent(agent)
    if make_url(own.database_url) == shared.url:
        yield shared
        return
    engine = create_engine(own)
    try:
        yield engine
    finally:
        await engine.dispose()


@asynccontextmanager
async def one_at_a_time(engine: AsyncEngine, key: int) -> AsyncIterator[bool]:
    """Hold the session advisory lock ``key`` for the block, if no one else holds it:
    yields whether we got it (the caller refuses or skips when not), and lets go of
    it on exit. Used by the jobs that must never run twice at once (rebuild,
    retention)."""
    async with engine.connect() as guard:
        ours = bool(await guard.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}))
        try:
            yield ours
        finally:
            if ours:
                await guard.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            await guard.commit()
