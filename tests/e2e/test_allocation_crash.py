"""Crash test: the allocation worker is SIGKILLed three times while it works through
a stream of commands; afterwards state, decisions and budgets equal a crash-free run.

The crash-free reference is the pure core applied to the same inputs in their
partition order, with the same derived ids (``derive``): the decisions found
on Kafka (deduplicated by id) must be byte-identical to it. Catalog events are
published and applied first, so that only per-partition order matters and the
reference is deterministic.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from agents.allocation import CONSUMER, read_states, rules_of
from agents.core import allocation as core
from events.allocation import AllocateLine, CommitLine, ReleaseLine
from events.codec import decode, encode, key_of
from events.envelope import CloudEvent, wrap
from events.topics import DECISIONS, STOCK
from pipeline.runtime.checkpoints import load_checkpoint
from pipeline.runtime.gaps import KafkaRangeReader
from pipeline.runtime.kafka import create_producer, ensure_topics
from pipeline.runtime.records import derive
from pipeline.runtime.schema import outbox
from pipeline.runtime.settings import Settings
from tests.chaos.harness import Worker
from tests.unit import allocation_factories as f

pytestmark = pytest.mark.e2e

SUPPLIERS = ("sa", "sb", "sc")
N_SKUS, N_COMMANDS = 12, 1200
#: Kill when this share of the commands is applied: always mid-stream, with work left.
KILL_AT = (0.2, 0.45, 0.7)
#: Small batches: many transactions, so a kill lands between or inside them.
BATCH_SIZE = 10


def scenario(run: str, seed: int = 7) -> tuple[list[CloudEvent], list[CloudEvent]]:
    """(catalog events, commands) for this run's skus: deterministic given the seed."""
    rng = random.Random(seed)
    skus = [f"CR-{run}-{i}" for i in range(N_SKUS)]
    catalog: list[CloudEvent] = []
    for sku in skus:
        for n, sup in enumerate(SUPPLIERS):
            offer = f.offer(sup, priority=rng.randint(0, 2), cost=rng.choice(["2.00", "3.00"]),
                            split=rng.random() > 0.2, currency=rng.choice(["EUR", "USD"]),
                            destinations=(f.dest("FR", "0.50", 3),) if sup == "sc" else (),
                            ).model_copy(update={"sku": sku})
            stock = f.stock(sup, rng.randint(5, 60)).model_copy(update={"sku": sku})
            for i, entry in enumerate((offer, stock)):
                catalog.append(wrap(entry, id=f"{run}-cat-{sku}-{n}-{i}",
                                    source=f"supplier/{sup}", time=f.T0))
    commands: list[CloudEvent] = []
    live: list[tuple[str, str]] = []
    for i in range(N_COMMANDS):
        sku = rng.choice(skus)
        roll = rng.random()
        payload: AllocateLine | ReleaseLine | CommitLine
        if live and roll < 0.2:
            order, rsku = live.pop(rng.randrange(len(live)))
            supplier = rng.choice([None, *SUPPLIERS])
            payload = f.rel(order, supplier=supplier, qty=rng.choice([None, 1, 2]),
                            out_of_stock=i // 60 if supplier and rng.random() < 0.3 else None,
                            ).model_copy(update={"sku": rsku})
        elif live and roll < 0.3:  # a supplier accepted units (commit of a line it may not hold)
            order, rsku = rng.choice(live)
            payload = f.commit(order, rng.choice(SUPPLIERS), rng.randint(1, 3), i // 60,
                               ).model_copy(update={"sku": rsku})
        else:
            order = f"o{i}"
            excluded = (rng.choice(SUPPLIERS),) if roll > 0.9 else ()
            payload = f.alloc(order, rng.randint(1, 6), excluded=excluded).model_copy(
                update={"sku": sku})
            live.append((order, sku))
        commands.append(wrap(payload, id=f"{run}-cmd-{i}", source="dropship/orders",
                             time=f.T0 + timedelta(seconds=i)))
    return catalog, commands


def reference(catalog: list[CloudEvent], commands: list[CloudEvent], rules: core.Rules,
              ) -> tuple[dict[str, core.SkuState], dict[str, bytes]]:
    """The crash-free result: states per sku and derived events (id -> bytes)."""
    states: dict[str, core.SkuState] = {}
    derived: dict[str, bytes] = {}
    for event in [*catalog, *commands]:
        sku = event.subject
        state, payloads = core.apply(states.get(sku, core.SkuState(sku)), event.data, event.time,
                                     rules)
        states[sku] = state
        derived.update((e.id, encode(e)) for e in derive(event, payloads, CONSUMER))
    return states, derived


Positions = dict[tuple[str, int], int]


async def publish(settings: Settings, events: list[CloudEvent]) -> tuple[Positions, Positions]:
    """Send in order; return the first and last offsets written per (topic, partition)."""
    producer = create_producer(settings)
    await producer.start()
    first: Positions = {}
    last: Positions = {}
    try:
        futures = [await producer.send(e.data.TOPIC, encode(e), key=key_of(e)) for e in events]
        for future in futures:
            md = await future
            first.setdefault((md.topic, md.partition), md.offset)
            last[(md.topic, md.partition)] = md.offset
    finally:
        await producer.stop()
    return first, last


async def wait_applied(engine: AsyncEngine, last: dict[tuple[str, int], int],
                       timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        async with engine.connect() as conn:
            behind = [tp for tp, offset in last.items()
                      if await load_checkpoint(conn, CONSUMER, *tp) < offset]
            unsent = await conn.scalar(select(func.count()).where(
                outbox.c.producer == CONSUMER, outbox.c.published_at.is_(None)))
        if not behind and unsent == 0:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"worker did not catch up: behind on {behind}, {unsent} unsent")


async def progress(engine: AsyncEngine, first: dict[tuple[str, int], int],
                   last: dict[tuple[str, int], int]) -> float:
    """Share of the published commands the worker has applied."""
    total = sum(last[tp] - first[tp] + 1 for tp in last)
    async with engine.connect() as conn:
        done = 0
        for tp in last:
            checkpoint = await load_checkpoint(conn, CONSUMER, *tp)
            done += max(0, min(checkpoint, last[tp]) - first[tp] + 1)
    return done / total


async def wait_progress(engine: AsyncEngine, first: dict[tuple[str, int], int],
                        last: dict[tuple[str, int], int], share: float) -> float:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        reached = await progress(engine, first, last)
        if reached >= share:
            return reached
        await asyncio.sleep(0.01)
    raise AssertionError(f"worker never reached {share:.0%} of the commands")


async def published_decisions(settings: Settings, skus: set[str]) -> dict[str, bytes]:
    """Every decision or stock event about ``skus`` on Kafka, deduplicated by id."""
    reader = KafkaRangeReader(settings, poll_timeout_ms=500)
    found: dict[str, bytes] = {}
    for topic in (DECISIONS, STOCK):
        for partition in range(settings.kafka_topic_partitions):
            for rec in await reader.read(topic, partition, 0, 10**9):
                event = decode(rec.value)
                if getattr(event.data, "sku", None) in skus:
                    assert found.get(event.id, rec.value) == rec.value, "same id, other bytes"
                    found[event.id] = rec.value
    return found


async def test_sigkill_three_times_changes_nothing(
    migrated: Settings, engine: AsyncEngine, cli_env: Callable[..., dict[str, str]],
    run_id: str, tmp_path: Path,
) -> None:
    await ensure_topics(migrated)
    catalog, commands = scenario(run_id)
    skus = {e.subject for e in catalog}
    worker = Worker("worker", cli_env(DROPSHIP_AGENT_BATCH_SIZE=str(BATCH_SIZE)), tmp_path)
    killed_at: list[float] = []
    try:
        worker.start()
        await wait_applied(engine, (await publish(migrated, catalog))[1], timeout_s=90)
        first, last = await publish(migrated, commands)
        for share in KILL_AT:
            killed_at.append(await wait_progress(engine, first, last, share))
            worker.kill()
            worker.start()
        await wait_applied(engine, last, timeout_s=180)
    finally:
        worker.stop()
    assert worker.starts == 1 + len(KILL_AT)
    assert all(share < 1.0 for share in killed_at), killed_at  # each kill left work undone
    print(f"killed at {', '.join(f'{s:.0%}' for s in killed_at)} of {N_COMMANDS} commands")

    want_states, want_events = reference(catalog, commands, rules_of(migrated))
    async with engine.connect() as conn:
        states = await read_states(conn, skus)
    assert states == want_states  # offers, stock budgets, every reservation and backorder
    assert all(list(core.oversold(s)) == [] for s in states.values())
    got_events = await published_decisions(migrated, skus)
    assert got_events.keys() == want_events.keys()
    assert got_events == want_events  # byte-identical, no decision lost or doubled
