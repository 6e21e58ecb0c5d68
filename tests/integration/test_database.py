"""Migrations run against the real Postgres; checkpoints and event_log behave."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.runtime.checkpoints import (
    CheckpointConflict,
    LoggedRecord,
    advance_checkpoint,
    load_checkpoint,
    log_records,
)
from pipeline.runtime.db import create_engine
from pipeline.runtime.migrate import downgrade_sync, upgrade_sync
from pipeline.runtime.schema import event_log, metadata, outbox
from pipeline.runtime.settings import Settings
from projections.tables import read_tables, replay_metadata

pytestmark = pytest.mark.integration


def _consumer() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def _code_metadata() -> MetaData:
    """Every table the code queries: runtime tables and the read models."""
    combined = MetaData()
    for md in (metadata, read_tables().metadata, replay_metadata):
        for table in md.tables.values():
            table.to_metadata(combined)
    return combined


async def test_migration_is_at_head_and_matches_the_code(engine: AsyncEngine) -> None:
    def diff(conn: Connection) -> list[object]:
        ctx = MigrationContext.configure(conn, opts={
            "compare_type": True, "include_schemas": True,
            "include_name": lambda name, kind, _: kind != "schema" or name in (None, "read"),
        })
        return list(compare_metadata(ctx, _code_metadata()))

    async with engine.connect() as conn:
        version = await conn.scalar(text("SELECT version_num FROM alembic_version"))
        differences = await conn.run_sync(diff)
    assert version == "0010"  # the newest migration
    assert differences == []


async def test_write_and_read_an_outbox_row(engine: AsyncEngine) -> None:
    event_id = uuid.uuid4()
    async with engine.begin() as conn:
        await conn.execute(outbox.insert().values(
            event_id=event_id, producer="test", topic="fulfillment.decisions",
            key=b"order-1", value=b'{"x": 1}', headers={"content-type": "application/json"},
        ))
    async with engine.connect() as conn:
        row = (await conn.execute(select(outbox).where(outbox.c.event_id == event_id))).one()
    assert row.value == b'{"x": 1}'
    assert row.headers == {"content-type": "application/json"}
    assert row.published_at is None


async def test_checkpoint_moves_forward_by_compare_and_set(engine: AsyncEngine) -> None:
    consumer = _consumer()
    async with engine.begin() as conn:
        assert await load_checkpoint(conn, consumer, "t", 0) == -1
        await advance_checkpoint(conn, consumer, "t", 0, -1, 9)
        await advance_checkpoint(conn, consumer, "t", 0, 9, 15)
    async with engine.connect() as conn:
        assert await load_checkpoint(conn, consumer, "t", 0) == 15
        assert await load_checkpoint(conn, consumer, "t", 1) == -1


async def test_a_stale_writer_fails_and_changes_nothing(engine: AsyncEngine) -> None:
    consumer = _consumer()
    async with engine.begin() as conn:
        await advance_checkpoint(conn, consumer, "t", 0, -1, 10)
    # A zombie that read -1 (or 5) before the owner moved on must fail its commit.
    for stale in (-1, 5):
        with pytest.raises(CheckpointConflict):
            async with engine.begin() as conn:
                await advance_checkpoint(conn, consumer, "t", 0, stale, 20)
    async with engine.connect() as conn:
        assert await load_checkpoint(conn, consumer, "t", 0) == 10


async def test_a_checkpoint_never_moves_back(engine: AsyncEngine) -> None:
    consumer = _consumer()
    async with engine.begin() as conn:
        await advance_checkpoint(conn, consumer, "t", 0, -1, 10)
        with pytest.raises(ValueError, match="forward"):
            await advance_checkpoint(conn, consumer, "t", 0, 10, 3)
    with pytest.raises(Exception, match="checkpoints_offset_check"):
        async with engine.begin() as conn:
            await conn.execute(text(
                "UPDATE checkpoints SET \"offset\" = -5 WHERE consumer = :c"), {"c": consumer})


async def test_event_log_keeps_a_record_once(engine: AsyncEngine) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    recs = [LoggedRecord(topic, 0, i, b"k", f"v{i}".encode(), datetime.now(UTC), f"id{i}",
                         "x.v1", "s") for i in range(5)]
    async with engine.begin() as conn:
        assert await log_records(conn, recs) == 5
    async with engine.begin() as conn:
        assert await log_records(conn, recs[2:]) == 0  # replay changes nothing
    async with engine.connect() as conn:
        rows = (await conn.execute(
            select(event_log.c.offset, event_log.c.value).where(event_log.c.topic == topic)
            .order_by(event_log.c.offset)
        )).all()
    assert [(r.offset, r.value) for r in rows] == [(i, f"v{i}".encode()) for i in range(5)]


def test_migration_0008_keeps_existing_shipments_and_downgrades(
    fresh_database: Callable[[str], Settings],
) -> None:
    """Rows of read.shipments made before 0008 (from raw supplier events) get a state
    and no deadline, so they are never listed late; 0008 goes down and up again."""
    settings = fresh_database("mig8")
    downgrade_sync(settings, "0007")
    dispatched, delivered = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 4, tzinfo=UTC)

    async def sql(*statements: str) -> list[tuple[object, ...]]:
        engine = create_engine(settings)
        try:
            async with engine.begin() as conn:
                rows: list[tuple[object, ...]] = []
                for statement in statements:
                    result = await conn.execute(text(statement), {"a": dispatched,
                                                                   "b": delivered})
                    rows = [tuple(r) for r in result] if result.returns_rows else []
                return rows
        finally:
            await engine.dispose()

    asyncio.run(sql(
        "INSERT INTO read.shipments (supplier_id, shipment_id, order_id, dispatched_at, "
        "delivered_at) VALUES ('s', 'in', 'o', :a, NULL), ('s', 'done', 'o', :a, :b)"))
    upgrade_sync(settings)
    rows = asyncio.run(sql(
        "SELECT shipment_id, state, updated_at, deliver_by, flagged FROM read.shipments "
        "ORDER BY shipment_id"))
    assert rows == [("done", "delivered", delivered, None, False),
                    ("in", "in_transit", dispatched, None, False)]
    assert asyncio.run(sql("SELECT count(*) FROM read.late_shipments")) == [(0,)]
    downgrade_sync(settings, "0007")
    assert asyncio.run(sql("SELECT to_regclass('read.late_shipments')")) == [(None,)]
    upgrade_sync(settings)
    assert asyncio.run(sql("SELECT place FROM read.backorders")) == []
