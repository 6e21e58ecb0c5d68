"""Allocation state as rows (migration 0009) and the worker's state cache, on the real
Postgres: a batch writes only what changed, a cache never serves a state another
writer replaced or a transaction that rolled back, and old documents migrate both ways."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from agents.allocation import StateStore, dump_state, load_state, read_states
from agents.core.allocation import SkuState, apply
from pipeline.runtime.db import create_engine
from pipeline.runtime.migrate import downgrade_sync, upgrade_sync
from pipeline.runtime.schema import allocation_lines, allocation_state
from pipeline.runtime.settings import Settings
from tests.unit.allocation_factories import RULES, T0, alloc, offer, rel, stock

pytestmark = pytest.mark.integration


def _sku() -> str:
    return f"SKU-{uuid.uuid4().hex[:8]}"


def _step(state: SkuState, *messages: Any) -> SkuState:
    for message in messages:
        state, _ = apply(state, message.model_copy(update={"sku": state.sku}), T0, RULES)
    return state


async def _write(store: StateStore, engine: AsyncEngine, sku: str, *messages: Any) -> SkuState:
    """One batch as the handler runs it: lock, apply, save, commit."""
    async with engine.begin() as conn:
        before = (await store.lock(conn, {sku}))[sku]
        after = _step(before, *messages)
        await store.save(conn, [(before, after)])
    return after


async def _line_rows(conn: AsyncConnection, sku: str) -> int:
    return int(await conn.scalar(select(func.count()).select_from(allocation_lines)
                                 .where(allocation_lines.c.sku == sku)) or 0)


async def test_a_batch_writes_the_document_and_one_row_per_line(engine: AsyncEngine) -> None:
    sku, store = _sku(), StateStore()
    state = await _write(store, engine, sku, offer("a"), stock("a", 5),
                         alloc("o1", 2), alloc("o2", 1))
    async with engine.connect() as conn:
        doc = await conn.scalar(select(allocation_state.c.state)
                                .where(allocation_state.c.sku == sku))
        assert doc is not None
        assert "lines" not in doc
        assert await _line_rows(conn, sku) == 2
        assert (await read_states(conn, [sku]))[sku] == state
    assert (store.hits, store.misses) == (0, 0)  # a new sku: no row to read


async def test_the_cache_serves_what_this_store_wrote_and_nothing_else(
    engine: AsyncEngine,
) -> None:
    """Two stores stand for two workers the sku's partition moves between."""
    sku, mine, theirs = _sku(), StateStore(), StateStore()
    await _write(mine, engine, sku, offer("a"), stock("a", 5), alloc("o1", 2))
    await _write(mine, engine, sku, alloc("o2", 1))
    assert mine.hits == 1  # the second batch did not re-read its own write
    # another writer takes the sku: ours must read its state, not our cached one
    theirs_state = await _write(theirs, engine, sku, alloc("o3", 1))
    assert theirs.misses == 1
    after = await _write(mine, engine, sku, alloc("o4", 1))
    assert mine.misses == 1
    assert set(after.lines) == {("o1", "1"), ("o2", "1"), ("o3", "1"), ("o4", "1")}
    assert set(theirs_state.lines) < set(after.lines)


async def test_a_rolled_back_batch_leaves_no_trace_in_the_cache(engine: AsyncEngine) -> None:
    sku, store = _sku(), StateStore()
    committed = await _write(store, engine, sku, offer("a"), stock("a", 5), alloc("o1", 2))

    async with engine.connect() as conn:  # a batch whose commit never comes
        trans = await conn.begin()       # (e.g. the checkpoint compare-and-set lost)
        before = (await store.lock(conn, {sku}))[sku]
        await store.save(conn, [(before, _step(before, alloc("ghost", 3)))])
        await trans.rollback()
    async with engine.begin() as conn:
        state = (await store.lock(conn, {sku}))[sku]
    assert state == committed  # read again: the ghost line was never committed
    assert ("ghost", "1") not in state.lines
    async with engine.connect() as conn:
        assert (await read_states(conn, [sku]))[sku] == committed


async def test_a_released_line_row_is_deleted(engine: AsyncEngine) -> None:
    sku, store = _sku(), StateStore()
    await _write(store, engine, sku, offer("a"), stock("a", 5), alloc("o1", 2), alloc("o2", 1))
    after = await _write(store, engine, sku, rel("o1"))
    assert set(after.lines) == {("o2", "1")}
    async with engine.connect() as conn:
        assert await _line_rows(conn, sku) == len(after.lines)
        assert (await read_states(conn, [sku]))[sku] == after


def test_documents_with_lines_inside_migrate_up_and_down(
    fresh_database: Callable[[str], Settings],
) -> None:
    """A format-2 document (lines inside) written before 0009 loads unchanged, moves its
    lines to rows on the first write, and downgrading folds the rows back."""
    settings = fresh_database("mig9")
    downgrade_sync(settings, "0008")
    sku = _sku()
    old = _step(SkuState(sku), offer("a"), stock("a", 4), alloc("o1", 3), alloc("o2", 2))

    async def run(step: Callable[[AsyncEngine], Any]) -> Any:
        engine = create_engine(settings)
        try:
            return await step(engine)
        finally:
            await engine.dispose()

    async def put_old(engine: AsyncEngine) -> None:
        async with engine.begin() as conn:
            await conn.execute(allocation_state.insert().values(sku=sku, state=dump_state(old)))

    asyncio.run(run(put_old))
    upgrade_sync(settings)
    store = StateStore()

    async def first_write(engine: AsyncEngine) -> tuple[SkuState, SkuState, int]:
        async with engine.connect() as conn:
            loaded = (await read_states(conn, [sku]))[sku]
        await _write(store, engine, sku, alloc("o3", 1))
        async with engine.connect() as conn:
            return loaded, (await read_states(conn, [sku]))[sku], await _line_rows(conn, sku)

    loaded, written, rows = asyncio.run(run(first_write))
    assert loaded == old
    assert written == _step(old, alloc("o3", 1))
    assert rows == 3  # the two old lines moved to rows with the new one
    downgrade_sync(settings, "0008")

    async def folded(engine: AsyncEngine) -> SkuState:
        async with engine.connect() as conn:
            doc = (await conn.execute(text("SELECT state FROM allocation_state WHERE sku = :s"),
                                      {"s": sku})).scalar_one()
        assert doc["format"] == 2
        return load_state(sku, doc)

    assert asyncio.run(run(folded)) == written
    upgrade_sync(settings)
