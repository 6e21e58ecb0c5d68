"""Allocation benchmark: the allocation agent (exactly-once through Postgres) against a
textbook Faust agent with a Table (``bench/faust_table_agent.py``), on the same commands,
broker and database, in one run; both checked against the pure core.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/allocation.py [--commands 50000] [--skus 200] [--suppliers 3]
                                         [--seed 1] [--rounds 1]

Steps:
1. start an embedded stack (broker + Postgres) on free ports in a temporary folder,
   migrate it, create the topics;
2. generate the workload (``bench/allocation_workload.py``, deterministic given
   ``--seed``): the initial catalog of ``--skus`` x ``--suppliers`` offers and stock
   reports, then ``--commands`` ``AllocateLine`` with commits, rejections (failovers),
   cancellations and expired backorders, and periodic stock reports mixed in, all
   CloudEvents as the suppliers and the order agent send them, keyed by sku on
   ``supplier.catalog`` and ``fulfillment.allocation``;
3. per round (``--rounds``; the order of the contenders alternates), run each
   contender alone on a fresh copy of the workload (:func:`run_contender`): its new
   consumer group is committed at the end of the input topics; the initial catalog
   is published and the contender started; once it has applied the catalog, the
   rest is published while it works, and measured until every event is applied:
   - **agent**: ``dropship worker --agents allocation``, default settings (batches
     of ``DROPSHIP_AGENT_BATCH_SIZE``=500), emptied state tables (``allocation_state``,
     ``allocation_lines``, ``processed_events``, ``outbox``) and its checkpoints set where this copy
     begins. Progress: those checkpoints; decisions: its outbox rows for
     ``fulfillment.decisions``; the order it applied events in: ``processed_events``;
   - **faust table**: ``bench/faust_table_agent.py`` with its own app id (consumer
     group, table changelog) and output topics. Progress and order: its log of
     applied records; decisions: its output topic;
4. check each run against the reference (``allocation_workload.verdict``): the pure
   core applied in the order that run applied the events gives byte-identical
   decisions, and that order is a legal merge of the partitions;
5. print per run: commands, seconds from the first command applied to the last,
   decisions/s (commands applied per second: each command is answered by a decision),
   the ratio agent / faust table of the same round, ms per command for each tenth of
   the commands and the last tenth's over the first's, CPU seconds of the contender,
   Postgres (postmaster and backends) and the broker over that time; with
   ``--profile``, where each contender's time goes (py-spy); write
   ``bench/results/allocation-<time>.json``. Exit 1 if a contender disagrees with
   the reference.

Every wait is bounded (``--timeout`` per run, ``--stall`` without progress) and every
process started here is stopped by its PID at the end, also on error or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.allocation import CONSUMER, rules_of
from bench._stack import (
    RESULTS,
    Embedded,
    cpu_seconds,
    embedded_stack,
    profile_shares,
    rss_mib,
    start_profile,
    tree_cpu_seconds,
)
from bench.allocation_workload import (
    Decisions,
    Position,
    Tenths,
    Verdict,
    Workload,
    generate,
    tenths,
    verdict,
)
from bench.faust_table_agent import ENV_APP_ID, ENV_LOG, ENV_OUTPUT, parse_applied
from events.codec import encode, key_of
from events.topics import ALLOCATION, DECISIONS, SUPPLIER_CATALOG
from pipeline.devstack.processes import Proc, free_port, spawn, wait_until
from pipeline.runtime.db import create_engine
from pipeline.runtime.gaps import KafkaRangeReader
from pipeline.runtime.kafka import client_options, create_producer, ensure_topics
from pipeline.runtime.settings import Settings

AGENT, FAUST = "agent", "faust table"
INPUTS = (ALLOCATION, SUPPLIER_CATALOG)
FAUST_AGENT = Path(__file__).resolve().parent / "faust_table_agent.py"
POLL_S = 0.1
TTY = sys.stdout.isatty()
#: py-spy samples by the deepest frame that matches (``--profile``)
PROFILE_CATEGORIES = (
    ("load_state (agents/allocation.py", "state JSON (load_state, dump_state)"),
    ("dump_state (agents/allocation.py", "state JSON (load_state, dump_state)"),
    ("PickleCodec", "state pickle (table changelog)"),
    ("agents/core/", "pure core (core.apply)"),
    ("decode (events/codec.py", "decode (events.codec)"),
    ("derive (pipeline/runtime/records.py", "envelopes (derive, encode)"),
    ("encode (events/codec.py", "envelopes (derive, encode)"),
    ("sqlalchemy/", "SQL (SQLAlchemy, asyncpg)"),
    ("asyncpg/", "SQL (SQLAlchemy, asyncpg)"),
    ("aiokafka/", "Kafka client (aiokafka)"),
    ("faust/", "Faust, mode"),
    ("mode/", "Faust, mode"),
    ("selectors.py", "waiting (select)"),
    ("asyncio/", "asyncio loop"),
)


class BenchError(Exception):
    """A contender failed to finish (exited, stalled, timed out)."""


@dataclass(frozen=True)
class Sample:
    t: float
    commands: int
    catalog: int
    cpu: float  # the contender's
    pg_cpu: float
    broker_cpu: float


@dataclass
class Run:
    contender: str
    round: int
    app_id: str
    commands: int
    samples: list[Sample] = field(default_factory=list)
    tenths: Tenths | None = None
    verdict: Verdict | None = None
    rss_mib: float = 0.0
    broker_rss_mib: float = 0.0
    ratio: float | None = None
    profiler: Proc | None = None
    profile: dict[str, float] = field(default_factory=dict)

    @property
    def per_s(self) -> float:
        assert self.tenths is not None
        return self.commands / self.tenths.seconds

    def window(self) -> tuple[Sample, Sample]:
        """The samples at the start of the measured time and at its end."""
        assert self.tenths is not None
        start = max((s for s in self.samples if s.t <= self.tenths.start), key=lambda s: s.t)
        end = next(s for s in self.samples if s.commands >= self.commands)
        return start, end

    def summary(self) -> dict[str, Any]:
        assert self.tenths is not None
        assert self.verdict is not None
        a, b = self.window()
        return {
            "contender": self.contender, "round": self.round, "app_id": self.app_id,
            "commands": self.commands, "seconds": round(self.tenths.seconds, 2),
            "decisions_per_s": round(self.per_s, 1), "ratio": self.ratio,
            "ms_per_command_by_tenth": self.tenths.ms_per_command,
            "last_over_first_tenth": round(self.tenths.growth, 2),
            "cpu_s": round(b.cpu - a.cpu, 1), "postgres_cpu_s": round(b.pg_cpu - a.pg_cpu, 1),
            "broker_cpu_s": round(b.broker_cpu - a.broker_cpu, 1),
            "rss_peak_mib": self.rss_mib, "broker_rss_mib_after": self.broker_rss_mib,
            "agrees": self.verdict.agrees, "problems": self.verdict.problems,
            "decisions": self.verdict.decisions, "profile_percent": self.profile,
            "progress": [[round(s.t, 2), s.commands] for s in self.samples[::5]],
        }


# --- publishing -----------------------------------------------------------------------------

Wire = tuple[str, bytes, bytes]  # topic, key, value


class Topics:
    """What this benchmark published: the next offset of each partition (the input topics
    hold our records only; the embedded broker's "latest" offsets are not trusted)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ends: dict[tuple[str, int], int] = {}

    async def publish(self, records: Sequence[Wire]) -> list[Position]:
        """Send ``records`` in order; return where each one landed."""
        producer = create_producer(self.settings, linger_ms=5, max_batch_size=256 * 1024)
        await producer.start()
        try:
            futures = [await producer.send(topic, value, key=key)
                       for topic, key, value in records]
            landed = [await f for f in futures]
        finally:
            await producer.stop()
        for md in landed:
            self.ends[(md.topic, md.partition)] = max(md.offset + 1,
                                                      self.ends.get((md.topic, md.partition), 0))
        return [(md.topic, md.partition, md.offset) for md in landed]

    async def start_group_at_end(self, group: str) -> dict[tuple[str, int], int]:
        """Commit ``group``'s offsets of the input topics at their current ends, so that a
        contender of that group reads only the copy of the workload published next."""
        starts = {(t, p): self.ends.get((t, p), 0) for t in INPUTS
                  for p in range(self.settings.kafka_topic_partitions)}
        consumer = AIOKafkaConsumer(**client_options(self.settings), group_id=group,
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign([TopicPartition(t, p) for t, p in starts])
            await consumer.commit({TopicPartition(t, p): OffsetAndMetadata(offset, "")
                                   for (t, p), offset in starts.items()})
        finally:
            await consumer.stop()
        return starts


# --- watching a contender -------------------------------------------------------------------

async def watch(run: Run, proc: Proc, emb: Embedded, commands_total: int, catalog_total: int,
                progress: Callable[[], Awaitable[tuple[int, int]]], args: argparse.Namespace,
                log_path: Path, samples: list[Sample]) -> None:
    """Poll ``progress`` (commands, catalog events applied) every 0.1 s into ``samples``
    until the totals are reached; raise BenchError if the contender exits, stalls or
    runs out of time."""
    began = last_move = time.monotonic()
    last = (-1, -1)
    shown = 0.0
    while True:
        now = time.monotonic()
        commands, events = await progress()
        samples.append(Sample(now - began, commands, events, cpu_seconds(proc.pid),
                              tree_cpu_seconds(emb.stack.postgres.pid),
                              cpu_seconds(emb.stack.broker.pid)))
        if commands_total and args.profile and run.profiler is None and commands > 0:
            run.profiler = start_profile(proc.pid, RESULTS / f"allocation-{run.app_id}.py-spy")
        if commands >= commands_total and events >= catalog_total:
            return
        if (commands, events) != last:
            last, last_move = (commands, events), now
        failure = ("exited" if not proc.alive()
                   else f"made no progress for {args.stall:g} s" if now - last_move > args.stall
                   else f"did not finish in {args.timeout:g} s" if now - began > args.timeout
                   else None)
        if failure:
            raise BenchError(f"{run.contender} {failure} at {commands}/{commands_total} "
                             f"commands, {events}/{catalog_total} catalog events; "
                             f"{log_path}:\n{_tail(log_path)}")
        if now - shown >= (1.0 if TTY else 10.0):
            shown = now
            what = (f"{commands}/{commands_total} commands, " if commands_total
                    else "starting, initial catalog ")
            print(f"\r  {run.contender}: {what}{events}/{catalog_total} catalog events, "
                  f"{now - began:5.1f} s", end="" if TTY else "\n", flush=True)
        await asyncio.sleep(POLL_S)


def stop_profile(run: Run) -> None:
    """End the run's profile (SIGINT: py-spy writes its file) and read it."""
    prof = run.profiler
    if prof is None:
        return
    if prof.alive():
        os.kill(prof.pid, signal.SIGINT)
    if not wait_until(lambda: not prof.alive(), 30.0):
        prof.stop()
    out = RESULTS / f"allocation-{run.app_id}.py-spy"
    if out.exists():
        run.profile = profile_shares(out, PROFILE_CATEGORIES)


def _tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# --- the contenders -------------------------------------------------------------------------

async def _rows(engine: AsyncEngine, sql: str, **params: Any) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(text(sql), params)).all())


class Contender(Protocol):
    name: str

    async def prepare(self, app_id: str, starts: dict[tuple[str, int], int]) -> None:
        """Before it starts: a clean state, applied nothing before ``starts``."""

    def argv_env(self, app_id: str) -> tuple[list[str], dict[str, str]]: ...

    async def progress(self) -> tuple[int, int]:
        """(commands, catalog events) applied of the current copy."""

    async def finished(self) -> None:
        """Once all is applied, before it is stopped."""

    async def collect(self, workload: Workload, positions: list[Position],
                      ) -> tuple[list[int], Decisions]:
        """After it stopped: the order it applied the events in (indices into the
        workload; -1: a record not of this copy), and its decisions per order."""


class Agent:
    """Contender A: ``dropship worker --agents allocation``, state of record in Postgres."""

    name = AGENT

    def __init__(self, emb: Embedded, engine: AsyncEngine) -> None:
        self.emb, self.engine = emb, engine
        self.starts: dict[tuple[str, int], int] = {}

    async def prepare(self, app_id: str, starts: dict[tuple[str, int], int]) -> None:
        self.starts = starts
        async with self.engine.begin() as conn:  # nothing applied, nothing owed
            await conn.execute(text("TRUNCATE allocation_state, allocation_lines, "
                                    "processed_events, outbox, checkpoints"))
            for (topic, partition), start in starts.items():
                if start > 0:  # as if it had applied every record before this copy
                    await conn.execute(text(
                        'INSERT INTO checkpoints (consumer, topic, partition, "offset") '
                        "VALUES (:c, :t, :p, :o)"), {"c": CONSUMER, "t": topic, "p": partition,
                                                     "o": start - 1})

    def argv_env(self, app_id: str) -> tuple[list[str], dict[str, str]]:
        return ([sys.executable, "-m", "pipeline.entry.cli", "worker", "--agents", "allocation"],
                contender_env(self.emb, app_id))

    async def progress(self) -> tuple[int, int]:
        rows = await _rows(self.engine, 'SELECT topic, partition, "offset" FROM checkpoints '
                                        "WHERE consumer = :c", c=CONSUMER)
        done = {topic: 0 for topic in INPUTS}
        for topic, partition, offset in rows:
            done[topic] += offset + 1 - self.starts.get((topic, partition), 0)
        return done[ALLOCATION], done[SUPPLIER_CATALOG]

    async def finished(self) -> None:
        deadline = time.monotonic() + 60
        while (await _rows(self.engine, "SELECT count(*) FROM outbox WHERE producer = :c "
                                        "AND published_at IS NULL", c=CONSUMER))[0][0]:
            if time.monotonic() > deadline:
                raise BenchError("the agent's outbox was not published within 60 s")
            await asyncio.sleep(POLL_S)

    async def collect(self, workload: Workload, positions: list[Position],
                      ) -> tuple[list[int], Decisions]:
        index = {(e.source, e.id): i for i, e in enumerate(workload.events)}
        order = [index.get((source, event_id), -1) for source, event_id in await _rows(
            self.engine, "SELECT source, event_id FROM processed_events WHERE consumer = :c "
                         "ORDER BY seq", c=CONSUMER)]
        got: Decisions = {}
        for key, value in await _rows(self.engine, "SELECT key, value FROM outbox WHERE "
                                                   "producer = :c AND topic = :t ORDER BY id",
                                      c=CONSUMER, t=DECISIONS):
            got.setdefault(bytes(key), []).append(bytes(value))
        return order, got


class AppliedLog:
    """Follows the Faust contender's log of applied records."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.read_to = 0
        self.partial = ""
        self.applied: list[tuple[str, int, int]] = []
        self.commands = 0

    def poll(self) -> tuple[int, int]:
        if self.path.exists():
            with self.path.open() as f:
                f.seek(self.read_to)
                chunk = f.read()
                self.read_to = f.tell()
            lines = (self.partial + chunk).split("\n")
            self.partial = lines.pop()
            for line in lines:
                self.applied.append(parse_applied(line))
                self.commands += self.applied[-1][0] == ALLOCATION
        return self.commands, len(self.applied) - self.commands


class FaustTable:
    """Contender B: ``bench/faust_table_agent.py``, state in a Faust Table."""

    name = FAUST

    def __init__(self, emb: Embedded) -> None:
        self.emb = emb
        self.output = ""
        self.log = AppliedLog(emb.temp / "none")

    async def prepare(self, app_id: str, starts: dict[tuple[str, int], int]) -> None:
        self.output = f"bench.{app_id}"
        self.log = AppliedLog(self.emb.temp / f"{app_id}.applied")
        await ensure_topics(self.emb.settings, (f"{self.output}.decisions",
                                                f"{self.output}.stock"))

    def argv_env(self, app_id: str) -> tuple[list[str], dict[str, str]]:
        return ([sys.executable, str(FAUST_AGENT)],
                {**contender_env(self.emb, app_id), ENV_APP_ID: app_id,
                 ENV_OUTPUT: self.output, ENV_LOG: str(self.log.path)})

    async def progress(self) -> tuple[int, int]:
        return self.log.poll()

    async def finished(self) -> None:
        await asyncio.sleep(1.0)  # its producer sends what it still buffers

    async def collect(self, workload: Workload, positions: list[Position],
                      ) -> tuple[list[int], Decisions]:
        where = {pos: i for i, pos in enumerate(positions)}
        order = [where.get(pos, -1) for pos in self.log.applied]
        reader = KafkaRangeReader(self.emb.settings)
        got: Decisions = {}
        for partition in range(self.emb.settings.kafka_topic_partitions):
            for rec in await reader.read(f"{self.output}.decisions", partition, 0, 1 << 62):
                got.setdefault(rec.key or b"", []).append(rec.value)
        return order, got


def contender_env(emb: Embedded, app_id: str) -> dict[str, str]:
    return {**emb.stack.env(), "DROPSHIP_APP_ID": app_id, "DROPSHIP_LOG_LEVEL": "warning",
            "DROPSHIP_WEB_PORT": str(free_port())}


async def run_contender(contender: Contender, emb: Embedded, topics: Topics,
                        workload: Workload, wire: Sequence[Wire], round_no: int,
                        args: argparse.Namespace) -> Run:
    """One run: a fresh copy of the workload for a fresh contender. Steps: 1. its
    consumer group starts at the input topics' ends; 2. publish the initial catalog;
    3. start the contender and wait until it has applied the catalog; 4. publish the
    stream (commands and stock reports) while measuring, until all is applied;
    5. stop it, collect and check."""
    name = contender.name.replace(" ", "-")
    run = Run(contender.name, round_no, f"bench-{name}-{round_no}-{secrets.token_hex(3)}",
              workload.commands)
    starts = await topics.start_group_at_end(run.app_id)
    await contender.prepare(run.app_id, starts)
    positions = await topics.publish(wire[:workload.initial])
    argv, env = contender.argv_env(run.app_id)
    log_path = emb.temp / f"{run.app_id}.log"
    proc = spawn(argv, env, log_path)
    try:
        await watch(run, proc, emb, 0, workload.initial, contender.progress, args, log_path,
                    [])
        stream = asyncio.create_task(topics.publish(wire[workload.initial:]))
        try:
            await watch(run, proc, emb, run.commands, len(wire) - run.commands,
                        contender.progress, args, log_path, run.samples)
        finally:
            positions += await stream
        stop_profile(run)
        print(f"\r  {run.contender}: {run.commands}/{run.commands} commands in "
              f"{run.samples[-1].t:5.1f} s", flush=True)
        run.rss_mib = rss_mib(proc.pid, "VmHWM")
        run.broker_rss_mib = rss_mib(emb.stack.broker.pid)
        await contender.finished()
    finally:
        proc.stop(timeout_s=30)
        if run.profiler is not None:
            run.profiler.stop()
    order, got = await contender.collect(workload, positions)
    finish(run, workload, positions, order, got, emb.settings)
    return run


def finish(run: Run, workload: Workload, positions: list[Position], order: list[int],
           got: Decisions, settings: Settings) -> None:
    """Measure the run's tenths and check its decisions against the reference."""
    run.tenths = tenths([(s.t, s.commands) for s in run.samples], run.commands)
    unknown = order.count(-1)
    known = [i for i in order if i >= 0]
    run.verdict = verdict(workload.events, positions, known, got, rules_of(settings))
    if unknown:
        run.verdict = Verdict(False, [f"{unknown} applied records are not of this run's copy",
                                      *run.verdict.problems], run.verdict.decisions)
    print(f"  {run.contender}: {run.per_s:,.0f} decisions/s; agrees with reference: "
          f"{run.verdict.line()}")


# --- report ---------------------------------------------------------------------------------

def table(runs: list[Run]) -> str:
    head = (f"{'contender':<12} {'round':>5} {'commands':>8} {'seconds':>8} {'decisions/s':>11} "
            f"{'ratio':>6} {'last/first':>10} {'cpu s':>6} {'pg cpu s':>8} {'broker s':>8} "
            f"{'agrees':>6}")
    lines = [head, "-" * len(head)]
    for r in runs:
        s = r.summary()
        ratio = f"{s['ratio']:.2f}" if s["ratio"] is not None else ""
        lines.append(
            f"{r.contender:<12} {r.round:>5} {r.commands:>8} {s['seconds']:>8.1f} "
            f"{s['decisions_per_s']:>11,.0f} {ratio:>6} {s['last_over_first_tenth']:>10.2f} "
            f"{s['cpu_s']:>6.1f} {s['postgres_cpu_s']:>8.1f} {s['broker_cpu_s']:>8.1f} "
            f"{'yes' if s['agrees'] else 'NO':>6}")
    lines += ["", "ms per command, by tenth of the commands:",
              f"{'contender':<12} {'round':>5} " + " ".join(f"{k * 10:>3}%  " for k in
                                                           range(1, 11))]
    for r in runs:
        assert r.tenths is not None
        lines.append(f"{r.contender:<12} {r.round:>5} "
                     + " ".join(f"{ms:>6.2f}" for ms in r.tenths.ms_per_command))
    return "\n".join(lines)


def medians(runs: list[Run]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in (AGENT, FAUST):
        mine = [r for r in runs if r.contender == name]
        if mine:
            out[name] = {"decisions_per_s": round(statistics.median(r.per_s for r in mine), 1),
                         "last_over_first_tenth": round(statistics.median(
                             r.tenths.growth for r in mine if r.tenths), 2)}
    ratios = [r.ratio for r in runs if r.ratio is not None]
    if ratios:
        out["ratio"] = round(statistics.median(ratios), 3)
    return out


# --- main -----------------------------------------------------------------------------------

async def bench(emb: Embedded, args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    workload = generate(args.seed, args.skus, args.suppliers, args.commands,
                        rules_of(emb.settings))
    wire = [(e.data.TOPIC, key_of(e), encode(e)) for e in workload.events]
    stats = dict(sorted(workload.stats.items()))
    print(f"workload: {len(wire)} events ({workload.commands} commands, {workload.initial} "
          f"of initial catalog, {len(wire) - workload.commands - workload.initial} stock "
          f"reports among the commands) in {time.monotonic() - started:.1f} s; "
          f"the generator's own run of the core: {stats}")
    topics = Topics(emb.settings)
    engine = create_engine(emb.settings)
    runs: list[Run] = []
    try:
        for round_no in range(args.rounds):
            contenders: list[Contender] = [Agent(emb, engine), FaustTable(emb)]
            for contender in contenders[::1 if round_no % 2 == 0 else -1]:
                print(f"round {round_no + 1}/{args.rounds}: {contender.name}")
                runs.append(await run_contender(contender, emb, topics, workload, wire,
                                                round_no, args))
            pair = {r.contender: r for r in runs if r.round == round_no}
            pair[AGENT].ratio = round(pair[AGENT].per_s / pair[FAUST].per_s, 3)
    finally:
        await engine.dispose()
    return {"workload": {"events": len(wire), "commands": workload.commands,
                         "initial_catalog": workload.initial, "stats": stats},
            "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commands", type=int, default=50_000,
                        help="AllocateLine commands (other commands come on top)")
    parser.add_argument("--skus", type=int, default=200)
    parser.add_argument("--suppliers", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1,
                        help="runs of each contender, the order alternating")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="longest a contender's run may take (seconds)")
    parser.add_argument("--profile", action="store_true",
                        help="sample each contender with py-spy while it works; print where "
                             "its time goes (bench/results/allocation-<app id>.py-spy)")
    parser.add_argument("--stall", type=float, default=120.0,
                        help="longest a contender may go without progress (seconds)")
    args = parser.parse_args()
    if min(args.commands, args.skus, args.suppliers, args.rounds) < 1:
        parser.error("--commands, --skus, --suppliers and --rounds must be at least 1")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still stop what we started
    RESULTS.mkdir(exist_ok=True)
    with embedded_stack() as emb:
        result = asyncio.run(bench(emb, args))
    runs: list[Run] = result["runs"]
    print()
    print(f"allocation: {result['workload']['commands']} commands ({args.commands} "
          f"AllocateLine), {args.skus} skus x {args.suppliers} suppliers, seed {args.seed}")
    print(table(runs))
    summary = medians(runs)
    print(f"median decisions/s: agent {summary[AGENT]['decisions_per_s']:,.0f}, faust table "
          f"{summary[FAUST]['decisions_per_s']:,.0f}; ratio agent / faust table "
          f"{summary['ratio']:.2f}")
    for r in runs:
        if r.profile:
            print(f"{r.contender} (round {r.round + 1}) profile, % of samples: "
                  + ", ".join(f"{cat} {pct}" for cat, pct in r.profile.items()))
    for r in runs:
        assert r.verdict is not None
        print(f"{r.contender} (round {r.round + 1}) agrees with reference: {r.verdict.line()}")
    path = RESULTS / f"allocation-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps({
        "args": vars(args), "workload": result["workload"], "summary": summary,
        "runs": [r.summary() for r in runs],
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                    "when": datetime.now(UTC).isoformat(timespec="seconds")},
    }, indent=1))
    print(f"wrote {path}")
    if not all(r.verdict and r.verdict.agrees for r in runs):
        sys.exit(1)


if __name__ == "__main__":
    main()
