"""The chaos harness: workers we start and hurt, a seeded fault schedule, a run to the end.

Who calls it: the chaos tests (``tests/chaos``). :func:`run_chaos` guarantees:
1. the simulator (shops and suppliers as Kafka clients, every record recorded
   with its position) places ``orders`` orders at ``rate`` per second while
   ``workers`` ``dropship worker`` processes (one consumer group) work;
2. meanwhile (once every worker has joined its group) a controller injects the
   faults of the schedule, one at a time, at seeded moments: SIGKILL a worker and
   start it again; restart Postgres with ``pg_ctl restart -m immediate``; SIGSTOP
   a worker for longer than the session timeout, then SIGCONT it (it comes back
   as a zombie whose partitions were given away); send records of
   ``fulfillment.allocation`` again, byte for byte (what a producer retry after a
   lost acknowledgement does; the embedded broker has no idempotent producer);
3. the simulator lives on for ``settle_s``, then stops; the run waits until
   every consumer has caught up and the outbox is empty (or ``catch_up_s`` passes);
4. the workers are stopped (SIGTERM) whatever happened; the processes it
   started are ended by their PID only.
It returns what happened (:class:`ChaosRun`); the checker judges it.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from agents.core.orders import Policy
from agents.orders import policy_of
from events.topics import ALLOCATION
from pipeline.devstack import Stack
from pipeline.devstack.processes import free_port
from pipeline.devstack.stack import restart_postgres
from pipeline.entry.catchup import lag_rows, unsent
from pipeline.runtime.gaps import KafkaRangeReader
from pipeline.runtime.kafka import create_producer
from pipeline.runtime.settings import Settings
from simulator.ledger import Books
from simulator.run import Limits, SimClock, Simulation, Tally
from simulator.world import make_world
from tests.chaos.world_facts import Span, Terms
from tests.helpers import clean_env, start_worker

KINDS = ("kill", "pg_restart", "pause", "duplicate")
#: Records a "duplicate" fault sends again, per partition of the allocation topic.
DUPLICATES_PER_PARTITION = 5
SESSION_TIMEOUT_S = 6.0
#: Business settings of the chaos workers (as the demo's: at 1200x a real second
#: is 20 minutes, so windows leave room for the pipeline's own latency).
PAYMENT_WINDOW = timedelta(hours=6)
HOLD_TIMEOUT = timedelta(hours=12)
SPEED = 1200.0
#: An outbox that has not moved for this long while nothing lags is stuck (a bug).
STALLED_S = 20.0
#: The referee's tolerance: how long (real seconds) after a deadline, or after a stock
#: report's publication, the pipeline may act while faults hit it (a pause is 9 s, a
#: restarted worker rejoins in under 10 s); and how long before a payment window closes
#: a payment may lose the race with the window's firing.
TOLERANCE_S = 20.0
JITTER_S = 2.0


def policy() -> Policy:
    """The business policy of the chaos workers (what the checker's reference uses)."""
    return policy_of(Settings(_env_file=None,
                              payment_window_minutes=PAYMENT_WINDOW.total_seconds() / 60,
                              held_event_timeout_minutes=HOLD_TIMEOUT.total_seconds() / 60))


@dataclass(frozen=True)
class Fault:
    at_s: float      # seconds after the first order
    kind: str        # one of KINDS
    worker: int = 0  # which worker a kill or pause hits
    down_s: float = 0.5  # how long a killed worker stays down before it is started again


def schedule(seed: int, per_kind: int, span_s: float, workers: int = 1) -> list[Fault]:
    """``per_kind`` faults of each kind at seeded moments within ``span_s`` seconds."""
    rng = random.Random(seed)
    faults = [Fault(rng.uniform(0.05, 0.9) * span_s, kind, rng.randrange(workers))
              for kind in KINDS for _ in range(per_kind)]
    return sorted(faults, key=lambda f: f.at_s)


class Worker:
    """A ``dropship worker`` process we start, kill, pause and stop (by its PID)."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name, self.env, self.log_dir = name, env, log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        self.proc = start_worker({**self.env, "DROPSHIP_WEB_PORT": str(free_port())},
                                 self.log_dir / f"{self.name}-{self.starts}.log")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    async def pause(self, seconds: float) -> None:
        """SIGSTOP, wait, SIGCONT: it comes back a zombie that must rejoin its group."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)
        finally:
            self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGCONT)  # a paused process cannot handle SIGTERM
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return "".join(p.read_text(errors="replace")
                       for p in sorted(self.log_dir.glob(f"{self.name}-*.log")))


@dataclass
class ChaosRun:
    """What a run did: faults injected, what the simulator sent, where it all is."""

    settings: Settings
    record_file: Path
    tally: Tally = field(default_factory=Tally)
    injected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    duplicated: int = 0  # records sent again by "duplicate" faults
    caught_up: bool = False
    seconds: float = 0.0
    workers: list[Worker] = field(default_factory=list)
    books: Books = field(default_factory=Books)  # the simulator's (simulator/ledger.py)
    span: Span | None = None  # the simulated clock, from the first order to the end

    def terms(self) -> Terms:
        """The business terms the workers ran with, and the referee's tolerances."""
        assert self.span is not None, "the run never started its simulation"
        s, speed = self.settings, self.span.speed
        return Terms(span=self.span, tolerance=timedelta(seconds=TOLERANCE_S * speed),
                     jitter=timedelta(seconds=JITTER_S * speed),
                     payment_window=PAYMENT_WINDOW,
                     held_payment_window=timedelta(minutes=s.held_payment_window_minutes),
                     sla_grace=timedelta(minutes=s.sla_grace_minutes),
                     backorder_window=timedelta(days=s.backorder_window_days))


def worker_env(stack: Stack, app_id: str, clock_file: Path) -> dict[str, str]:
    """The stack's settings with the soak's own (its pauses are timed against a 6 s
    session, not the embedded stack's 2 s)."""
    return clean_env(**{
        **stack.env(), "DROPSHIP_APP_ID": app_id, "DROPSHIP_CLOCK_FILE": str(clock_file),
        "DROPSHIP_PAYMENT_WINDOW_MINUTES": f"{PAYMENT_WINDOW.total_seconds() / 60:g}",
        "DROPSHIP_HELD_EVENT_TIMEOUT_MINUTES": f"{HOLD_TIMEOUT.total_seconds() / 60:g}",
        "DROPSHIP_DEADLINE_CHECK_S": "0.25",
        "DROPSHIP_KAFKA_SESSION_TIMEOUT_S": f"{SESSION_TIMEOUT_S:g}",
        "DROPSHIP_KAFKA_HEARTBEAT_INTERVAL_S": "1"})


class Controller:
    """Step 2: injects each fault at its moment (or when the previous one is over)."""

    def __init__(self, stack: Stack, workers: list[Worker], run: ChaosRun) -> None:
        self.stack, self.workers, self.run = stack, workers, run

    async def inject(self, faults: list[Fault], t0: float) -> None:
        for fault in faults:
            await asyncio.sleep(max(0.0, t0 + fault.at_s - time.monotonic()))
            worker = self.workers[fault.worker]
            if fault.kind == "kill":
                worker.kill()
                await asyncio.sleep(fault.down_s)
                worker.start()
            elif fault.kind == "pg_restart":
                self.stack = await asyncio.to_thread(restart_postgres, self.stack, "immediate")
            elif fault.kind == "duplicate":
                await self.duplicate(random.Random(fault.at_s))
            else:
                await worker.pause(SESSION_TIMEOUT_S + 3.0)
            self.run.injected[fault.kind] += 1

    async def duplicate(self, rng: random.Random) -> None:
        """Send some allocation commands already on Kafka once more, unchanged."""
        settings = self.run.settings
        reader = KafkaRangeReader(settings, timeout_s=60.0)
        producer = create_producer(settings)
        await producer.start()
        try:
            for partition in range(settings.kafka_topic_partitions):
                records = await reader.read(ALLOCATION, partition, 0, 10**12)
                for rec in rng.sample(records, min(DUPLICATES_PER_PARTITION, len(records))):
                    await producer.send_and_wait(ALLOCATION, rec.value, key=rec.key,
                                                 partition=partition)
                    self.run.duplicated += 1
        finally:
            await producer.stop()


async def wait_joined(workers: list[Worker], timeout_s: float = 120.0) -> None:
    """Wait until every worker has been assigned partitions (its log says so)."""
    deadline = time.monotonic() + timeout_s
    while not all("partitions assigned" in w.log() for w in workers):
        assert all(w.alive for w in workers), "a worker exited while starting"
        assert time.monotonic() < deadline, "workers never joined their group"
        await asyncio.sleep(0.5)


async def wait_caught_up(settings: Settings, engine: AsyncEngine, timeout_s: float) -> bool:
    """True once every consumer has applied everything written (lag 0) and the outbox
    is empty or has stopped moving (``STALLED_S``; the checker then reports what is
    left), twice in a row; False if ``timeout_s`` passes first."""
    deadline, quiet, since, last = time.monotonic() + timeout_s, 0, time.monotonic(), -1
    while time.monotonic() < deadline:
        try:
            rows = await lag_rows(settings, engine)
            lag = None if any(r.lag is None for r in rows) else sum(r.lag or 0 for r in rows)
            left = await unsent(engine)
        except Exception:  # Postgres may be restarting
            lag, left = None, -1
        if left != last:
            since, last = time.monotonic(), left
        settled = left == 0 or time.monotonic() - since > STALLED_S
        quiet = quiet + 1 if lag == 0 and settled else 0
        if quiet >= 2:
            return True
        await asyncio.sleep(1.5)
    return False


async def run_chaos(stack: Stack, settings: Settings, engine: AsyncEngine, tmp: Path, *,
                    orders: int, rate: float, faults: list[Fault], workers: int = 1,
                    settle_s: float = 10.0, catch_up_s: float = 300.0,
                    seed: int = 1, skus: int = 40, speed: float = SPEED,
                    extra_env: dict[str, str] | None = None) -> ChaosRun:
    """Steps 1-4 of the module docstring (``extra_env``: more for the workers' environment)."""
    clock_file = tmp / "clock"
    run = ChaosRun(settings, tmp / "records.jsonl")
    env = {**worker_env(stack, f"chaos-{uuid.uuid4().hex[:8]}", clock_file), **(extra_env or {})}
    clock = SimClock(speed, file=clock_file)
    run.workers = [Worker(f"worker{i}", env, tmp) for i in range(workers)]
    t_start = time.monotonic()
    chaos: asyncio.Task[None] | None = None
    try:
        for worker in run.workers:
            worker.start()
        await wait_joined(run.workers)  # faults hit workers at work, not still starting
        world = make_world(seed, f"c{seed}", skus=skus, payment_window=PAYMENT_WINDOW)
        sim = Simulation(settings, world, clock, record=run.record_file)
        await sim.start()
        t0 = time.monotonic()
        controller = Controller(stack, run.workers, run)
        chaos = asyncio.create_task(controller.inject(faults, t0))
        await sim.place_orders(Limits(orders=orders, duration_s=None, rate=rate))
        await chaos  # every fault injected, even if placing finished first
        await asyncio.sleep(settle_s)
        run.span = Span(clock.start, speed, clock.now())  # the workers' clock stops here
        run.tally = await sim.stop()
        run.books = sim.books
        dead = [w.name for w in run.workers if not w.alive]
        assert not dead, f"workers exited on their own: {dead}"
        run.caught_up = await wait_caught_up(settings, engine, catch_up_s)
    finally:
        if chaos is not None and not chaos.done():
            chaos.cancel()
        for worker in run.workers:
            worker.stop()
        run.seconds = time.monotonic() - t_start
    return run
