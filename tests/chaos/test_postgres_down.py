"""Postgres stops for 20 s under a running worker: it waits, retries, and resumes.

While the database is down nothing can be stored, so nothing may be taken as
consumed: the consumer group's committed offsets must not pass what Postgres
holds (checkpoint + 1). The worker logs each retry, backing off, stays up, and
once Postgres is back applies every order sent during the outage, exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from events.codec import encode, key_of
from events.topics import SHOP_ORDERS
from pipeline.devstack import Stack
from pipeline.devstack.stack import restart_postgres
from pipeline.runtime.clock import set_file_time
from pipeline.runtime.kafka import client_options, create_producer
from pipeline.runtime.schema import order_state
from pipeline.runtime.settings import Settings
from tests.chaos.harness import Worker, worker_env
from tests.helpers import sample_order

pytestmark = [pytest.mark.chaos, pytest.mark.e2e]
BEFORE, DURING, DOWN_S = 50, 50, 20.0


async def publish(settings: Settings, ids: list[str]) -> None:
    producer = create_producer(settings)
    await producer.start()
    try:
        for oid in ids:
            event = sample_order(oid)
            await (await producer.send(SHOP_ORDERS, encode(event), key=key_of(event)))
    finally:
        await producer.stop()


async def count(engine: AsyncEngine, prefix: str) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(order_state)
                                     .where(order_state.c.order_id.like(f"{prefix}-%"))) or 0)


async def wait_count(engine: AsyncEngine, prefix: str, n: int, worker: Worker) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert worker.alive, worker.log()[-3000:]
        with contextlib.suppress(Exception):  # Postgres may still be coming back
            if await count(engine, prefix) >= n:
                return
        await asyncio.sleep(0.5)
    raise AssertionError(f"fewer than {n} orders applied:\n{worker.log()[-3000:]}")


async def committed(settings: Settings, group: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets on shop.orders (-1: none); joins no group."""
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        found = {}
        for p in range(partitions):
            offset = await consumer.committed(TopicPartition(SHOP_ORDERS, p))
            found[p] = -1 if offset is None else offset
        return found
    finally:
        await consumer.stop()


async def test_postgres_down_20s_pauses_consumption_and_loses_nothing(
        chaos_stack: Stack, chaos_settings: Settings, chaos_engine: AsyncEngine,
        tmp_path: Path) -> None:
    prefix = f"pgdown-{uuid.uuid4().hex[:6]}"
    clock = tmp_path / "clock"
    set_file_time(clock, datetime.now(UTC))
    app_id = f"pgdown-{uuid.uuid4().hex[:6]}"
    worker = Worker("worker", worker_env(chaos_stack, app_id, clock), tmp_path)
    worker.start()
    try:
        await publish(chaos_settings, [f"{prefix}-{i}" for i in range(BEFORE)])
        await wait_count(chaos_engine, prefix, BEFORE, worker)
        async with chaos_engine.connect() as conn:
            stored: dict[int, int] = dict((await conn.execute(text(
                "SELECT partition, \"offset\" FROM checkpoints "
                "WHERE consumer = 'orders' AND topic = :t"), {"t": SHOP_ORDERS})).all())
        outage = asyncio.create_task(asyncio.to_thread(restart_postgres, chaos_stack, "fast",
                                                       DOWN_S))
        await asyncio.sleep(2.0)
        await publish(chaos_settings, [f"{prefix}-{BEFORE + i}" for i in range(DURING)])
        seen: list[dict[int, int]] = []
        while not outage.done():
            seen.append(await committed(chaos_settings, app_id,
                                        chaos_settings.kafka_topic_partitions))
            await asyncio.sleep(2.0)
        await outage
        assert worker.alive, "the worker exited while Postgres was down"
        await wait_count(chaos_engine, prefix, BEFORE + DURING, worker)
    finally:
        worker.stop()
    assert len(seen) >= 5
    for offsets in seen:  # nothing was taken as consumed beyond what Postgres holds
        assert all(o <= stored.get(p, -1) + 1 for p, o in offsets.items()), (offsets, stored)
    log = worker.log()
    delays = [float(d) for d in re.findall(r"database unavailable \(\w+\); retrying in "
                                           r"([\d.]+)s", log)]
    assert len(delays) >= 4, log[-3000:]
    assert delays[:3] == sorted(delays[:3])  # backing off...
    assert max(delays) >= 1.6  # ...up to seconds between tries
    async with chaos_engine.connect() as conn:
        applied = await conn.scalar(text(
            "SELECT count(*) FROM processed_events WHERE consumer = 'orders' "
            "AND source = 'shop/demo-shop'"))
    assert applied == BEFORE + DURING  # each order applied once



STOP_TIMEOUT_S = 5.0


async def _wait_logged(worker: Worker, text_: str, timeout_s: float = 15.0) -> None:
    for _ in range(int(timeout_s / 0.2)):
        if text_ in worker.log():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{text_!r} never logged:\n{worker.log()[-3000:]}")


async def _sigterm(worker: Worker) -> tuple[int, float, str]:
    """SIGTERM ``worker``; (exit code, seconds it took, its log)."""
    assert worker.proc is not None
    asked = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(worker.proc.wait, STOP_TIMEOUT_S + 20)
    log = (worker.log_dir / f"{worker.name}-{worker.starts}.log").read_text(errors="replace")
    return code, time.monotonic() - asked, log


async def test_a_worker_stopped_during_an_outage_exits_within_its_stop_timeout(
        chaos_stack: Stack, chaos_settings: Settings, chaos_engine: AsyncEngine,
        tmp_path: Path) -> None:
    """SIGTERM ends a worker whatever it waits on, and the next one loses nothing.

    1. Postgres stopped, a batch retrying: the worker stops at once.
    2. The broker frozen (SIGSTOP): Faust's stop waits on it without a limit; the
       worker exits once ``DROPSHIP_STOP_TIMEOUT_S`` has passed, saying what was
       still running.
    3. Everything back: the next worker applies every order exactly once.
    """
    prefix = f"pgstop-{uuid.uuid4().hex[:6]}"
    clock = tmp_path / "clock"
    set_file_time(clock, datetime.now(UTC))
    env = {**worker_env(chaos_stack, f"pgstop-{uuid.uuid4().hex[:6]}", clock),
           "DROPSHIP_STOP_TIMEOUT_S": f"{STOP_TIMEOUT_S:g}"}
    worker = Worker("worker", env, tmp_path)
    worker.start()
    outage = None
    try:
        await publish(chaos_settings, [f"{prefix}-{i}" for i in range(10)])
        await wait_count(chaos_engine, prefix, 10, worker)
        outage = asyncio.create_task(asyncio.to_thread(restart_postgres, chaos_stack, "fast",
                                                       8.0))
        await asyncio.sleep(1.0)
        await publish(chaos_settings, [f"{prefix}-{10 + i}" for i in range(10)])
        await _wait_logged(worker, "database unavailable")
        during_outage = await _sigterm(worker)
        await outage
        outage = None
        worker.start()
        await wait_count(chaos_engine, prefix, 20, worker)
        os.kill(chaos_stack.broker.pid, signal.SIGSTOP)
        try:
            broker_frozen = await _sigterm(worker)
        finally:
            os.kill(chaos_stack.broker.pid, signal.SIGCONT)
        await publish(chaos_settings, [f"{prefix}-{20 + i}" for i in range(10)])
        worker.start()
        await wait_count(chaos_engine, prefix, 30, worker)
    finally:
        worker.stop()
        if outage is not None:
            await outage
    code, took, log = during_outage
    assert (code, "did not stop within" in log) == (0, False), log[-3000:]
    assert took < STOP_TIMEOUT_S
    code, took, log = broker_frozen
    assert code == 0, log[-3000:]
    assert STOP_TIMEOUT_S <= took < STOP_TIMEOUT_S + 20
    assert f"worker did not stop within {STOP_TIMEOUT_S:.0f} s" in log
    assert "Still running:" in log
    async with chaos_engine.connect() as conn:
        applied = await conn.scalar(text(
            "SELECT count(*) FROM processed_events WHERE consumer = 'orders' "
            "AND source = 'shop/demo-shop'"))
    assert applied == 30  # each order applied once (this test's stack is its own)
