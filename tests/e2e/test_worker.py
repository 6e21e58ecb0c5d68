"""`dropship worker` as users run it: loopback-only web server, events reach Postgres."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from events.topics import SHOP_ORDERS, SUPPLIER_CATALOG
from pipeline.devstack.processes import free_port
from pipeline.runtime.checkpoints import load_checkpoint
from pipeline.runtime.kafka import create_producer
from pipeline.runtime.schema import event_log
from pipeline.runtime.settings import Settings
from tests.helpers import order_event, start_worker, stop_worker

pytestmark = pytest.mark.e2e


@pytest.fixture
def worker(
    cli_env: Callable[..., dict[str, str]], migrated: Settings,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """A `dropship worker` process with default web settings but a free port."""
    web_port = free_port()
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    proc = start_worker(cli_env(DROPSHIP_WEB_PORT=str(web_port)), log_path)
    try:
        yield proc, web_port, log_path
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        print(log_path.read_text()[-3000:])


def _listening(pid: int) -> set[tuple[str, int]]:
    conns = psutil.Process(pid).net_connections(kind="inet")
    return {(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN}


def _wait_listening(pid: int, port: int, timeout_s: float = 60.0) -> set[tuple[str, int]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = _listening(pid)
        if any(p == port for _, p in found):
            return found
        time.sleep(0.2)
    raise AssertionError(f"worker never listened on port {port}")


async def _publish(settings: Settings, records: list[tuple[str, bytes, bytes]]) -> list[
        tuple[str, int, int]]:
    producer = create_producer(settings)
    await producer.start()
    try:
        positions = []
        for topic, key, value in records:
            md = await producer.send_and_wait(topic, value, key=key)
            positions.append((topic, md.partition, md.offset))
        return positions
    finally:
        await producer.stop()


async def _wait_logged(engine: AsyncEngine, positions: list[tuple[str, int, int]],
                       timeout_s: float = 60.0) -> dict[tuple[str, int, int], bytes]:
    wanted = set(positions)
    found: dict[tuple[str, int, int], bytes] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(
                event_log.c.topic, event_log.c.partition, event_log.c.offset, event_log.c.value,
            ).where(event_log.c.topic.in_({t for t, _, _ in wanted})))).all()
        found = {(r.topic, r.partition, r.offset): r.value for r in rows
                 if (r.topic, r.partition, r.offset) in wanted}
        if len(found) == len(wanted):
            return found
        await asyncio.sleep(0.3)
    raise AssertionError(f"only {len(found)} of {len(wanted)} records reached event_log")


async def test_default_worker_listens_on_loopback_only_and_logs_every_input(
    worker: tuple[subprocess.Popen[bytes], int, Path], migrated: Settings, engine: AsyncEngine,
) -> None:
    proc, web_port, log_path = worker
    listening = _wait_listening(proc.pid, web_port)
    assert listening, "the worker opened no listening socket"
    assert all(ip in ("127.0.0.1", "::1") for ip, _ in listening), listening

    orders = [order_event(f"o-{uuid.uuid4().hex[:8]}") for _ in range(40)]
    records = [(SHOP_ORDERS, o["subject"].encode(), json.dumps(o).encode()) for o in orders]
    records.append((SHOP_ORDERS, b"junk", b"\x00not json at all"))
    records.append((SUPPLIER_CATALOG, b"SKU-1", b'{"id": "cat-1", "type": "x"}'))
    positions = await _publish(migrated, records)

    logged = await _wait_logged(engine, positions)
    assert [logged[p] for p in positions] == [value for _, _, value in records]
    async with engine.connect() as conn:
        for topic, partition, offset in positions:
            assert await load_checkpoint(conn, "projector", topic, partition) >= offset

    assert stop_worker(proc, log_path) == 0
