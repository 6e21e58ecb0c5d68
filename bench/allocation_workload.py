"""The allocation benchmark's pure parts: its workload, the reference check, the tenths.

No I/O here (``bench/allocation.py`` publishes and runs the contenders); tested in
``tests/unit/test_bench_allocation.py``.

**Workload** (:func:`generate`, deterministic given the seed): ``skus`` x ``suppliers``
offers and stock reports (the initial catalog), then a stream of commands as the
order agent sends them, with periodic stock reports mixed in. To send commands
that make sense (commit units a supplier really holds, reject a supplier that
really serves the line), the generator runs the pure core itself over the stream
in publish order, and models each supplier's free units (restocks add, accepted
units and an out-of-stock rejection take away) for the reports. Per step, after
the initial catalog: a supplier accepts a line's reserved units (``CommitLine``,
12 %), rejects them (``ReleaseLine`` of that supplier, a quarter of them for out of
stock, then ``AllocateLine`` of the same units excluding it: a failover, 3 %), a
shop cancels a line (2 %), a backorder expires (``backorder_only``, 2 %), or a new
line is ordered (``AllocateLine``, the rest). Periodically a tenth of the (sku,
supplier) pairs report restocked stock (about 0.12 reports per allocation in all).
Offers: priority 1-2, unit costs in EUR or USD, 15 % no-split, 3 % inactive; the
first supplier ships everywhere, the second everywhere at a shipping cost, the
third to FR and DE only.
Restocks add about 150 % of the demand, so lines split, fail over and backorder.

**Reference** (:func:`verdict`): the decisions (``fulfillment.decisions``: allocated,
backordered, released, backorder dropped) that the pure core gives when applied to
the events in the order a contender applied them, wrapped as the allocation agent
wraps them (same derived ids), compared byte for byte, per order, with what the
contender published. The order is the contender's own because the catalog and the
commands travel on two topics: a consumer merges them as its fetches come, so
which stock report a command sees depends on the run. What must hold, and is
checked first, is that the order is a legal merge: every published record applied
exactly once, each topic partition in offset order.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from agents.allocation import CONSUMER
from agents.core import allocation as core
from events.allocation import AllocateLine, CommitLine, LineAllocated, ReleaseLine
from events.base import Message
from events.catalog import Destination, StockLevelReported, SupplierOfferUpdated
from events.codec import encode, key_of
from events.envelope import CloudEvent, wrap
from events.topics import DECISIONS
from events.types import Money
from pipeline.runtime.records import derive

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
COUNTRIES = ("FR", "DE", "US", "GB", "ES")
QUANTITIES = (1, 1, 1, 2, 2, 3, 4, 6, 10)
MEAN_QUANTITY = sum(QUANTITIES) / len(QUANTITIES)
#: stock reports mixed in, per AllocateLine (in rounds, each a tenth of the pairs)
REPORT_SHARE = 0.12
SUPPLY_SHARE = 1.5
#: rejections that are for out of stock (the supplier then reports 0 until restocked)
OUT_OF_STOCK_SHARE = 0.25
LINE = "1"  # one line per order: decisions are grouped by order id (their Kafka key)
#: (topic, partition, offset) of a published record
Position = tuple[str, int, int]
#: order id (Kafka key) -> the decision records about it, in order
Decisions = dict[bytes, list[bytes]]


@dataclass(frozen=True)
class _Cause:
    """What the order agent derives a command from (an order's event)."""

    source: str
    id: str
    time: datetime


@dataclass
class Workload:
    """The events in publish order, and what the generator's own run of the core saw."""

    events: list[CloudEvent]
    stats: Counter[str] = field(default_factory=Counter)
    initial: int = 0  # the first ``initial`` events are the initial catalog

    @property
    def commands(self) -> int:
        return sum(1 for e in self.events if isinstance(e.data, AllocateLine | CommitLine
                                                       | ReleaseLine))


class _Generator:
    def __init__(self, seed: int, skus: int, suppliers: int, rules: core.Rules) -> None:
        self.rng = random.Random(seed)  # noqa: S311 (a workload, not a secret)
        self.rules = rules
        self.skus = [f"BS-{i:04d}" for i in range(skus)]
        self.suppliers = [f"s{i:02d}" for i in range(suppliers)]
        self.pairs = [(sku, sup) for sku in self.skus for sup in self.suppliers]
        self.states = {sku: core.SkuState(sku) for sku in self.skus}
        self.free: dict[tuple[str, str], int] = {}
        self.workload = Workload([])
        self.steps: Counter[str] = Counter()  # order -> steps of the order agent so far
        self.country: dict[str, str] = {}
        self.live: list[tuple[str, str]] = []  # (order, sku) of lines not cancelled
        self.now = T0
        self.orders = 0

    # --- emitting (and applying, to know the state) ------------------------------

    def _apply(self, event: CloudEvent) -> None:
        sku = event.subject
        state, payloads = core.apply(self.states[sku], event.data, event.time, self.rules)
        self.states[sku] = state
        self.workload.events.append(event)
        stats = self.workload.stats
        stats[type(event.data).__name__] += 1
        stats.update(type(p).__name__ for p in payloads)
        stats.update(f"backordered:{getattr(p, 'reason', '')}" for p in payloads
                     if type(p).__name__ == "LineBackordered")
        if isinstance(event.data, AllocateLine) and sum(isinstance(p, LineAllocated)
                                                        for p in payloads) > 1:
            stats["split"] += 1

    def catalog(self, payload: SupplierOfferUpdated | StockLevelReported) -> None:
        n = len(self.workload.events)
        self._apply(wrap(payload, id=f"cat-{n}", source=f"supplier/{payload.supplier_id}",
                         time=self.now))

    def command(self, order: str, source: str, kind: str, payloads: list[Message]) -> None:
        """Commands as the order agent derives them from an event of the order."""
        self.steps[order] += 1
        step = self.steps[order]
        cause = _Cause(source, f"{order}.{kind}.{step}", self.now)
        for event in derive(cause, payloads, "orders", time=self.now, step=step):
            self._apply(event)

    # --- the catalog ------------------------------------------------------------------

    def offer(self, sku: str, supplier: int) -> SupplierOfferUpdated:
        rng = self.rng
        destinations: tuple[Destination, ...] = ()
        if supplier % 3 == 1:
            destinations = (Destination(country="*", shipping_cost=Decimal("0.50"),
                                        transit_days=6),)
        elif supplier % 3 == 2:
            destinations = tuple(Destination(country=c, shipping_cost=Decimal("0.30"),
                                             transit_days=3) for c in ("DE", "FR"))
        return SupplierOfferUpdated(
            supplier_id=self.suppliers[supplier], sku=sku, priority=rng.randint(1, 2),
            unit_cost=Money(amount=Decimal(rng.randint(200, 900)).scaleb(-2),
                            currency=rng.choice(("EUR", "USD"))),
            lead_time_days=rng.randint(1, 5), acknowledge_sla_hours=24, dispatch_sla_hours=72,
            active=rng.random() > 0.03, allow_split=rng.random() > 0.15,
            destinations=destinations, updated_at=self.now)

    def report(self, sku: str, supplier: str, restock: int) -> None:
        free = self.free.get((sku, supplier), 0) + restock
        self.free[(sku, supplier)] = free
        self.catalog(StockLevelReported(supplier_id=supplier, sku=sku,
                                        available=min(free, 100_000_000), as_of=self.now))

    # --- the commands -----------------------------------------------------------------

    def _pick(self, want: str) -> tuple[str, str, core.Line] | None:
        """A random live line that has ``want``: "uncommitted" reserved units, a
        "backorder", or "any"; lines that are gone leave the list on the way."""
        for _ in range(8):
            if not self.live:
                return None
            i = self.rng.randrange(len(self.live))
            order, sku = self.live[i]
            line = self.states[sku].lines.get((order, LINE))
            if line is None:
                self.live[i] = self.live[-1]
                self.live.pop()
                continue
            if (want == "any" or (want == "backorder" and line.backordered)
                    or (want == "uncommitted"
                        and any(r.committed_at is None for r in line.reservations))):
                return order, sku, line
        return None

    def allocate_new(self) -> None:
        self.orders += 1
        order, sku = f"o{self.orders:07d}", self.rng.choice(self.skus)
        self.country[order] = self.rng.choice(COUNTRIES)
        self.live.append((order, sku))
        self.command(order, "shop/bench", "paid", [AllocateLine(
            order_id=order, line_id=LINE, sku=sku, quantity=self.rng.choice(QUANTITIES),
            ship_to_country=self.country[order], requested_at=self.now)])

    def commit(self) -> bool:
        """The supplier of a line's oldest uncommitted reservation accepts it."""
        found = self._pick("uncommitted")
        if found is None:
            return False
        order, sku, line = found
        res = next(r for r in line.reservations if r.committed_at is None)
        pair = (sku, res.supplier_id)
        self.free[pair] = max(0, self.free.get(pair, 0) - res.quantity)
        self.command(order, f"supplier/{res.supplier_id}", "accepted", [CommitLine(
            order_id=order, line_id=LINE, sku=sku, supplier_id=res.supplier_id,
            quantity=res.quantity, accepted_at=self.now, requested_at=self.now)])
        return True

    def reject(self) -> bool:
        """A supplier rejects a line's units (half the time for out of stock): release
        them there and allocate them again without it (the order agent's failover)."""
        found = self._pick("uncommitted")
        if found is None:
            return False
        order, sku, line = found
        supplier = next(r.supplier_id for r in line.reservations if r.committed_at is None)
        units = sum(r.quantity for r in line.reservations if r.supplier_id == supplier)
        out_of_stock = self.rng.random() < OUT_OF_STOCK_SHARE
        if out_of_stock:
            self.free[(sku, supplier)] = 0
        self.command(order, f"supplier/{supplier}", "rejected", [
            ReleaseLine(order_id=order, line_id=LINE, sku=sku, supplier_id=supplier,
                        quantity=units, reason="out_of_stock" if out_of_stock else "rejected",
                        out_of_stock_at=self.now if out_of_stock else None,
                        requested_at=self.now),
            AllocateLine(order_id=order, line_id=LINE, sku=sku, quantity=units,
                         ship_to_country=self.country[order],
                         excluded_suppliers=tuple(sorted(line.excluded | {supplier})),
                         requested_at=self.now),
        ])
        return True

    def cancel(self) -> bool:
        found = self._pick("any")
        if found is None:
            return False
        order, sku, _ = found
        self.command(order, "shop/bench", "cancelled", [ReleaseLine(
            order_id=order, line_id=LINE, sku=sku, reason="cancelled by the shop",
            requested_at=self.now)])
        return True

    def drop(self) -> bool:
        found = self._pick("backorder")
        if found is None:
            return False
        order, sku, line = found
        self.command(order, "shop/bench", "expired", [ReleaseLine(
            order_id=order, line_id=LINE, sku=sku, quantity=line.backordered,
            backorder_only=True, reason="backorder expired", requested_at=self.now)])
        return True

    def run(self, commands: int) -> Workload:
        rng = self.rng
        for sku in self.skus:
            for i in range(len(self.suppliers)):
                self.catalog(self.offer(sku, i))
                self.report(sku, self.suppliers[i], rng.randint(0, 60))
        self.workload.initial = len(self.workload.events)
        per_round = max(1, len(self.pairs) // 10)
        rounds = max(1, round(commands * REPORT_SHARE / per_round))
        every = max(1, commands // rounds)
        restock = SUPPLY_SHARE * commands * MEAN_QUANTITY / (rounds * per_round)
        allocations = step = 0
        while allocations < commands:
            step += 1
            self.now = T0 + timedelta(seconds=step)
            roll = rng.random()
            if roll < 0.12 and self.commit():
                continue
            if 0.12 <= roll < 0.15 and self.reject():
                allocations += 1
                continue
            if (0.15 <= roll < 0.17 and self.cancel()) or (0.17 <= roll < 0.19 and self.drop()):
                continue
            self.allocate_new()
            allocations += 1
            if allocations % every == 0:
                for sku, supplier in rng.sample(self.pairs, per_round):
                    self.report(sku, supplier, rng.randint(0, round(2 * restock)))
        return self.workload


def generate(seed: int, skus: int, suppliers: int, commands: int,
             rules: core.Rules = core.DEFAULT_RULES) -> Workload:
    """The benchmark's events in publish order (see the module docstring); ``commands``
    is the number of ``AllocateLine`` (the other commands come on top)."""
    return _Generator(seed, skus, suppliers, rules).run(commands)


# --- the reference check -----------------------------------------------------------------

def merge_problems(order: Sequence[int], positions: Sequence[Position]) -> list[str]:
    """Why ``order`` (indices of published events, as applied) is not a legal merge
    of the topic partitions: an event applied twice or never, or a partition out of order."""
    problems: list[str] = []
    seen = Counter(order)
    doubled = [i for i, n in seen.items() if n > 1]
    missing = [i for i in range(len(positions)) if i not in seen]
    if doubled:
        problems.append(f"{len(doubled)} events applied more than once "
                        f"(first: {positions[doubled[0]]})")
    if missing:
        problems.append(f"{len(missing)} events never applied (first: {positions[missing[0]]})")
    last: dict[tuple[str, int], int] = {}
    behind = 0
    for i in order:
        topic, partition, offset = positions[i]
        if offset < last.get((topic, partition), -1):
            behind += 1
        last[(topic, partition)] = offset
    if behind:
        problems.append(f"{behind} events applied before an earlier record of their partition")
    return problems


def reference(events: Sequence[CloudEvent], order: Iterable[int],
              rules: core.Rules) -> tuple[Decisions, Counter[str]]:
    """The decisions the pure core takes applying ``events`` in ``order``, as the
    allocation agent publishes them (its derived ids and times; an event the core
    raises on changes nothing and is answered by a dead letter only), and their
    count by type."""
    states: dict[str, core.SkuState] = {}
    out: Decisions = {}
    types: Counter[str] = Counter()
    for i in order:
        event = events[i]
        sku = event.subject
        state = states.get(sku) or core.SkuState(sku)
        try:
            new, payloads = core.apply(state, event.data, event.time, rules)
        except Exception:  # noqa: S112 (the agent dead-letters it: no decision)
            continue
        states[sku] = new
        for derived in derive(event, payloads, CONSUMER, time=new.clock,
                              sequence=event.sequence):
            if derived.data.TOPIC == DECISIONS:
                out.setdefault(key_of(derived), []).append(encode(derived))
                types[type(derived.data).__name__] += 1
    return out, types


@dataclass(frozen=True)
class Verdict:
    agrees: bool
    problems: list[str]
    decisions: dict[str, int]  # the reference's, by type

    def line(self) -> str:
        return "yes" if self.agrees else "no: " + "; ".join(self.problems)


def verdict(events: Sequence[CloudEvent], positions: Sequence[Position], order: Sequence[int],
            got: Decisions, rules: core.Rules) -> Verdict:
    """Check a contender: ``order`` is a legal merge and ``got`` (its decisions per
    order, in order) equals the reference's for that order."""
    problems = merge_problems(order, positions)
    want, types = reference(events, order, rules)
    if got != want:
        differ = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
        first = differ[0]
        problems.append(
            f"decisions differ for {len(differ)} of {len(want)} orders (first: "
            f"{first.decode()}: want {len(want.get(first, []))}, got {len(got.get(first, []))}"
            f" decisions; {sum(map(len, want.values()))} wanted, "
            f"{sum(map(len, got.values()))} got in all)")
    return Verdict(not problems, problems, dict(sorted(types.items())))


# --- per-command cost by tenth --------------------------------------------------------------

@dataclass(frozen=True)
class Tenths:
    start: float  # seconds (the samples' clock) at which the first command was applied
    seconds: float  # from the first command applied to the last
    ms_per_command: list[float]  # for each tenth of the commands

    @property
    def growth(self) -> float:
        """Cost of the last tenth over that of the first."""
        first = self.ms_per_command[0]
        return self.ms_per_command[-1] / first if first > 0 else float("nan")


def tenths(samples: Sequence[tuple[float, int]], total: int) -> Tenths:
    """From progress samples ``(time s, commands applied)`` (polled, increasing): the
    time the run started (the last sample with none applied) and, interpolating
    linearly between samples, the ms per command of each tenth of ``total``."""
    if total <= 0 or not samples or samples[-1][1] < total:
        raise ValueError("the samples never reach the total")
    zero = [t for t, n in samples if n == 0]
    start = zero[-1] if zero else samples[0][0]
    marks = [start]
    for k in range(1, 11):
        target = total * k / 10
        prev = (start, 0)
        for t, n in samples:
            if t < start:
                continue
            if n >= target:
                t0, n0 = prev
                marks.append(t0 + (t - t0) * (target - n0) / (n - n0) if n > n0 else t)
                break
            prev = (t, n)
    per = total / 10
    return Tenths(start, marks[-1] - start,
                  [round((b - a) * 1000 / per, 3) for a, b in itertools.pairwise(marks)])
