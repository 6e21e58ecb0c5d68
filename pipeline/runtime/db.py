"""Database wiring: the one place an engine is built from settings.

Nothing connects at import time; :func:`create_engine` returns a lazily
connecting engine. Callers own the engine and ``await engine.dispose()`` it.
"""

from __future__ import annotations

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
