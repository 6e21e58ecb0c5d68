"""What every ``dropship`` command module shares: one-line failures and a database
engine for one command (imported by the entry points ``cli``, ``ops_cli``, ``ops_levers``).

Contract: :func:`fail` prints ``error: <message>`` on stderr and exits non-zero, never
a traceback; :func:`with_engine` runs one piece of async work with an engine it
creates and always disposes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import typer
from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.runtime.db import create_engine
from pipeline.runtime.settings import Settings, load_settings

err = Console(stderr=True, highlight=False, soft_wrap=True)
T = TypeVar("T")


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr, then exit ``code``."""
    err.print(f"error: {message}", markup=False)
    raise typer.Exit(code)


def with_engine(work: Callable[[AsyncEngine], Awaitable[T]],
                settings: Settings | None = None, admin: bool = False,
                agent: str | None = "projector") -> T:
    """Run ``work`` with an engine on ``agent``'s database (default: the projector's,
    where the read models are; None: ``settings.database_url`` as given), as the
    application role, or as the schema owner with ``admin`` (DDL: ``projections
    rebuild``)."""
    async def run() -> T:
        chosen = settings or load_settings()
        engine = create_engine(chosen.of_agent(agent) if agent else chosen, admin=admin)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    return asyncio.run(run())
