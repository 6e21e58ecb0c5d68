"""Recovery benchmark: how long after a worker is killed with SIGKILL its partitions
are served again, on the embedded stack, per group-membership setting.

    .venv/bin/python bench/recovery.py [--session 6,3] [--trials 3] [--rate 300]

Per setting and trial, in a database of its own: two ``dropship worker --agents
projector`` in one consumer group while records of orders' lives arrive steadily
on every partition of the projector's topics that the stories use (``--rate``
records/s); once both hold partitions and apply, one is killed with SIGKILL. The
**recovery time** of a partition it owned is the time from the kill until that
partition's checkpoint (the tracking record in Postgres) moves again, i.e. the
survivor applies a record there; the trial's figure is the slowest partition.

Baseline in the same run: the default session timeout (``DROPSHIP_KAFKA_SESSION_TIMEOUT_S``
= 6 s): the group coordinator only evicts a silent member after it, then the
survivor rejoins and takes the partitions over. Prints per setting the trials'
recovery times and the survivor's "partitions assigned" log time after the kill.
Every process started here is stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import sys
import time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._stack import embedded_stack
from pipeline.devstack.processes import Proc, spawn_worker
from pipeline.runtime.db import create_engine
from pipeline.runtime.kafka import create_producer
from pipeline.runtime.schema import checkpoints
from pipeline.runtime.settings import Settings
from tests.helpers import new_database
from tests.projection_story import Log, backorder_story, failover_story

TP = tuple[str, int]


async def traffic(settings: Settings, rate: float, stop: asyncio.Event) -> None:
    """Records of orders' lives at ``rate`` per second until ``stop``."""
    producer = create_producer(settings)
    await producer.start()
    log, n, sent, t0 = Log(prefix=f"rec{time.time_ns() % 10**6}"), 0, 0, time.monotonic()
    try:
        while not stop.is_set():
            if not log.records:
                failover_story(log, f"{log.prefix}-o{n}", f"{log.prefix}-S{n % 20}")
                backorder_story(log, f"{log.prefix}-b{n}", f"{log.prefix}-R{n % 5}")
                n += 1
            rec = log.records.pop(0)
            await producer.send(rec.topic, rec.value, key=rec.key, partition=rec.partition)
            sent += 1
            ahead = sent / rate - (time.monotonic() - t0)
            if ahead > 0:
                await asyncio.sleep(ahead)
    finally:
        await producer.stop()


async def applied(engine: AsyncEngine) -> dict[TP, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(checkpoints.c.topic, checkpoints.c.partition,
                                         checkpoints.c.offset)
                                  .where(checkpoints.c.consumer == "projector"))
        return {(t, p): o for t, p, o in rows}


def assigned_at(log: Path) -> float | None:
    """Wall-clock time of the last ``partitions assigned:`` line of a worker's log."""
    import datetime as dt

    stamps = re.findall(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\][^\n]*partitions assigned:",
                        log.read_text(errors="replace"))
    if not stamps:
        return None
    return dt.datetime.strptime(stamps[-1], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def owned(log: Path) -> set[TP]:
    """The partitions of the last ``partitions assigned:`` line of a worker's log."""
    lines = [ln for ln in log.read_text(errors="replace").splitlines()
             if "partitions assigned:" in ln]
    if not lines:
        return set()
    found = set()
    for topic, parts in re.findall(r"([\w.-]+)\[([\d, ]+)\]", lines[-1].split("assigned:")[1]):
        found |= {(topic, int(p)) for p in parts.split(",")}
    return found


async def trial(settings: Settings, session_s: float, rate: float, work: Path, n: int
                ) -> tuple[float, float | None]:
    engine = create_engine(settings)
    env = {"DROPSHIP_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
           "DROPSHIP_DATABASE_URL": settings.database_url,
           "DROPSHIP_APP_ID": f"recovery-{n}-{time.time_ns() % 10**6}",
           "DROPSHIP_STATE_DIR": str(work),
           "DROPSHIP_KAFKA_SESSION_TIMEOUT_S": str(session_s),
           "DROPSHIP_KAFKA_HEARTBEAT_INTERVAL_S": str(min(1.0, session_s / 4))}
    logs = [work / f"trial{n}-w{i}.log" for i in range(2)]
    workers: list[Proc] = []
    stop = asyncio.Event()
    flow = asyncio.create_task(traffic(settings, rate, stop))
    try:
        workers = [spawn_worker(env, log, agents="projector") for log in logs]
        deadline = time.monotonic() + 120
        while not (owned(logs[0]) and owned(logs[1])) or len(await applied(engine)) < 3:
            assert time.monotonic() < deadline, "workers never both held partitions"
            await asyncio.sleep(0.2)
        await asyncio.sleep(3)  # steady state
        victim = {tp for tp in owned(logs[0]) if tp[1] < 3}  # the stories use 3 partitions
        before = await applied(engine)
        t0, wall0 = time.monotonic(), time.time()
        os.kill(workers[0].pid, signal.SIGKILL)
        waiting = {tp for tp in victim if tp in before}
        took = 0.0
        while waiting:
            assert time.monotonic() - t0 < 120, f"not served again: {sorted(waiting)}"
            now = await applied(engine)
            moved = {tp for tp in waiting if now.get(tp, -1) > before[tp]}
            if moved:
                took = time.monotonic() - t0
                waiting -= moved
            await asyncio.sleep(0.05)
        at = assigned_at(logs[1])
        return took, (at - wall0 if at is not None and at > wall0 else None)
    finally:
        stop.set()
        await flow
        for w in workers:
            w.stop()
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--session", default="6,3",
                        help="Session timeouts to compare, seconds, comma-separated.")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--rate", type=float, default=300.0)
    args = parser.parse_args()
    results: dict[float, list[float]] = {}
    assigned: dict[float, list[float]] = {}
    with embedded_stack("dropship-bench-recovery-") as emb:
        n = 0
        for _ in range(args.trials):
            for session_s in (float(s) for s in args.session.split(",")):
                n += 1
                settings = new_database(emb.settings, "recovery")
                took, rejoined = asyncio.run(
                    trial(settings, session_s, args.rate, emb.temp, n))
                results.setdefault(session_s, []).append(took)
                if rejoined is not None:
                    assigned.setdefault(session_s, []).append(rejoined)
                print(f"session timeout {session_s:g} s: served again {took:.2f} s after "
                      f"SIGKILL (survivor's new assignment logged at "
                      f"{rejoined if rejoined is not None else float('nan'):.2f} s)", flush=True)
    print("\nsession timeout  recovery after SIGKILL (s): median, each trial;"
          " survivor's new assignment (median)")
    for session_s, times in results.items():
        rejoin = assigned.get(session_s)
        print(f"{session_s:>13g} s  {statistics.median(times):6.2f}   "
              + ", ".join(f"{t:.2f}" for t in times)
              + (f";  {statistics.median(rejoin):.2f}" if rejoin else ""))


if __name__ == "__main__":
    main()
