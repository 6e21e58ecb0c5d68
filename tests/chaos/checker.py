"""The chaos checker: the pipeline's end state against a crash-free replay of the pure core.

Who calls it: the chaos tests, once the simulator has stopped and every consumer
has caught up. Ground truth is what the simulator recorded (each record it sent,
with its Kafka position); everything else is read back from Kafka and Postgres.

The reference is the pure core (``agents.core``) applied once to every event, in
the order each agent applied them: ``processed_events.seq`` (deadlines
included). Across topics that order is not fixed by the inputs (any interleaving
that keeps each partition's order is a crash-free run), so the checker takes the
one the run took and first checks it is such a run: each partition's records in
offset order, every valid input applied exactly once. Then the state the agents
stored, the events they published and the read models must be what that crash-free
run gives. Checks (each returns the violations it found):

1. ``ground_truth``: every recorded record is on Kafka, byte for byte, at its position;
2. ``nothing_lost``: every record that decodes on an agent's topics was applied by it;
3. ``partition_order``: each agent applied each partition's records in offset order;
4. ``state``: ``allocation_state`` and ``order_state`` equal the reference's;
5. ``published``: the events the agents published equal the reference's (ids, bytes):
   none lost, none extra, none doubled with other bytes;
6. ``order_status``: every order placed is in ``read.order_status`` with the
   reference's status;
7. ``no_oversell``: every (supplier, sku) budget keeps the stock contract
   (docs/allocation.md): ``used`` is the live reserved units its report does not
   count (``core.oversold``), and ``read.supplier_stock`` shows
   remaining = max(0, reported - reserved), reserved >= 0. (Reserved may exceed a
   report that came lower than what is held; that no supplier is asked beyond its
   free stock is checked against a model of the supplier by the property tests.)
8. ``timeline_once``: ``read.order_timeline`` holds no event id twice;
9. ``malformed_dead_lettered``: every malformed record's position is in ``read.dead_letters``;
10. ``outbox_drained``: no outbox row left unpublished.
"""

from __future__ import annotations

import base64
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from agents import allocation, orders
from agents.core import allocation as alloc_core
from agents.core import order_rules
from agents.core.order_status import status_of
from agents.core.orders import Order, Policy
from events.codec import DecodeError, decode, encode
from events.envelope import CloudEvent
from events.orders import OrderPlaced
from events.topics import ALL_TOPICS
from pipeline.entry.catchup import unsent
from pipeline.entry.registry import topics_of
from pipeline.runtime.gaps import KafkaRangeReader
from pipeline.runtime.records import Incoming, Record, dead_letter, failed
from pipeline.runtime.settings import Settings

#: read.supplier_stock rows that break the budget arithmetic of the stock contract
BROKEN_BUDGETS = text("""
SELECT supplier_id, sku, reported_available, reserved, remaining FROM read.supplier_stock
 WHERE reserved < 0 OR remaining <> GREATEST(0, reported_available - reserved)
""")
Position = tuple[str, int, int]
Key = tuple[str, str]  # CloudEvents (source, id)
AGENTS = topics_of((allocation.CONSUMER, orders.CONSUMER))
CHECKS = ("ground_truth", "nothing_lost", "partition_order", "state", "published",
          "order_status", "no_oversell", "timeline_once", "malformed_dead_lettered",
          "outbox_drained")


@dataclass
class Verdict:
    """Violations per check (empty lists: it held) and what was checked."""

    violations: dict[str, list[str]] = field(default_factory=lambda: {c: [] for c in CHECKS})
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(self.violations.values())

    def add(self, check: str, found: Iterable[str]) -> None:
        self.violations[check].extend(found)

    def table(self) -> str:
        rows = [f"  {c:<24} {len(v):>6} violations  {'; '.join(v[:3])[:300]}"
                for c, v in self.violations.items()]
        figures = ", ".join(f"{k} {v:,}" for k, v in self.counts.items())
        return "\n".join([f"checked: {figures}", *rows])


@dataclass
class Topics:
    """Every record on the broker, by position, with the (source, id) it decodes to.

    Decoded events are not kept (a long soak has millions): :meth:`event` decodes again.
    """

    records: dict[Position, Record] = field(default_factory=dict)
    keys: dict[Position, Key] = field(default_factory=dict)
    refused: dict[Position, DecodeError] = field(default_factory=dict)
    placed: set[str] = field(default_factory=set)  # order ids of every OrderPlaced

    def by_key(self) -> dict[Key, Position]:
        """Where each (source, id) first occurs."""
        return {k: pos for pos, k in sorted(self.keys.items(), reverse=True)}

    def event(self, pos: Position) -> CloudEvent:
        rec = self.records[pos]
        return decode(rec.value, key=rec.key, topic=pos[0])


async def read_topics(settings: Settings) -> Topics:
    """Read every partition of every topic from offset 0 to its high-water mark."""
    reader = KafkaRangeReader(settings, timeout_s=120.0)
    found = Topics()
    for topic in ALL_TOPICS:
        for partition in range(settings.kafka_topic_partitions):
            for rec in await reader.read(topic, partition, 0, 10**12):
                pos = (topic, partition, rec.offset)
                found.records[pos] = rec
                try:
                    event = decode(rec.value, key=rec.key, topic=topic)
                except DecodeError as err:
                    found.refused[pos] = err
                    continue
                found.keys[pos] = (event.source, event.id)
                if isinstance(event.data, OrderPlaced):
                    found.placed.add(event.data.order_id)
    return found


def load_record_file(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_ground_truth(recorded: list[dict[str, Any]], topics: Topics) -> list[str]:
    bad = []
    for r in recorded:
        rec = topics.records.get((r["topic"], r["partition"], r["offset"]))
        if rec is None or rec.value != base64.b64decode(r["value"]):
            bad.append(f"{r['topic']}[{r['partition']}]@{r['offset']} not on Kafka as sent")
    return bad


@dataclass
class Replay:
    """The reference: each agent's pure core over its applied events, in their order."""

    skus: dict[str, alloc_core.SkuState] = field(default_factory=dict)
    orders: dict[str, Order] = field(default_factory=dict)
    published: dict[str, bytes] = field(default_factory=dict)  # derived id -> bytes
    problems: list[str] = field(default_factory=list)
    rules: alloc_core.Rules = alloc_core.DEFAULT_RULES  # the worker's (allocation.rules_of)

    def allocation(self, inc: Incoming) -> None:
        sku = inc.event.subject
        before = self.skus.get(sku, alloc_core.SkuState(sku))
        state, events = allocation.apply_one(before, inc, allocation.CONSUMER, self.rules)
        if state is not before:  # the agent saves a sku's row only when it changed
            self.skus[sku] = state
        self._derived(events)

    def order_event(self, inc: Incoming, policy: Policy) -> None:
        event = inc.event
        oid = str(getattr(event.data, "order_id"))  # noqa: B009
        try:
            self.orders[oid], outputs = order_rules.decide(
                self.orders.get(oid, Order(oid)), event.data, event.time, policy, event.source)
        except Exception as exc:
            self._derived([failed(inc.record, exc, orders.CONSUMER)])
            return
        self._derived(orders.events_of(inc, self.orders[oid], outputs, orders.CONSUMER))

    def deadline(self, event_id: str, policy: Policy) -> None:
        oid, instant, n = orders.parse_clock_event_id(event_id)
        self.orders[oid], outputs, fired = order_rules.fire(self.orders.get(oid, Order(oid)),
                                                            instant, policy)
        if fired != n:
            self.problems.append(f"deadline {event_id} was firing {n}, reference {fired}")
        self._derived(orders.fired_events(self.orders[oid], instant, n, outputs,
                                          orders.CONSUMER))

    def refused(self, letter: CloudEvent) -> None:
        self._derived([letter])

    def _derived(self, events: list[CloudEvent]) -> None:
        for e in events:
            value = encode(e)
            if self.published.get(e.id, value) != value:
                self.problems.append(f"reference derived {e.id} twice with other bytes")
            self.published[e.id] = value


async def applied_rows(engine: AsyncEngine) -> dict[str, list[tuple[str, str]]]:
    """Per consumer, its processed (source, event id) in the order applied."""
    out: dict[str, list[tuple[str, str]]] = defaultdict(list)
    async with engine.connect() as conn:
        rows = await conn.execute(text(
            "SELECT consumer, source, event_id FROM processed_events ORDER BY seq"))
        for consumer, source, event_id in rows:
            out[consumer].append((source, event_id))
    return out


def replay(applied: dict[str, list[Key]], topics: Topics, policy: Policy,
           verdict: Verdict, rules: alloc_core.Rules = alloc_core.DEFAULT_RULES) -> Replay:
    """Steps 2-3 of the module docstring, and the reference of steps 4-6."""
    ref = Replay(rules=rules)
    events = topics.by_key()
    for consumer, agent_topics in AGENTS.items():
        rows = applied.get(consumer, [])
        done = set(rows)
        wanted: dict[Key, Position] = {}
        for pos, k in sorted(topics.keys.items()):
            if pos[0] in agent_topics:
                wanted.setdefault(k, pos)  # the first occurrence is applied
        verdict.add("nothing_lost", [f"{consumer} never applied {k} at {pos}"
                                     for k, pos in sorted(wanted.items(), key=lambda x: x[1])
                                     if k not in done])
        last: dict[tuple[str, int], int] = {}
        for key in rows:
            if key[0] == orders.CLOCK_SOURCE:
                ref.deadline(key[1], policy)
                continue
            if key not in wanted:
                where = "not on Kafka" if key not in events else f"only at {events[key]}"
                verdict.add("nothing_lost", [f"{consumer} applied {key}, {where}"])
                continue
            topic, partition, offset = wanted[key]
            event = topics.event((topic, partition, offset))
            if last.get((topic, partition), -1) >= offset:
                verdict.add("partition_order", [f"{consumer} applied {topic}[{partition}]"
                                                f"@{offset} after @{last[(topic, partition)]}"])
            last[(topic, partition)] = offset
            inc = Incoming(topics.records[(topic, partition, offset)], event)
            if consumer == allocation.CONSUMER:
                ref.allocation(inc)
            else:
                ref.order_event(inc, policy)
        for pos, err in sorted(topics.refused.items()):  # what no agent could decode
            if pos[0] in agent_topics:
                ref.refused(dead_letter(topics.records[pos], err, consumer))
    verdict.add("published", ref.problems)
    return ref


def _json(value: Any) -> Any:
    """A stored document (text or parsed) or a built one, as plain JSON values."""
    return json.loads(value) if isinstance(value, str) else json.loads(json.dumps(value))


def _difference(got: Any, want: Any) -> str:
    """The first place two JSON documents differ, as ``path: got != want``."""
    if isinstance(got, dict) and isinstance(want, dict):
        for key in sorted(got.keys() | want.keys()):
            if got.get(key) != want.get(key):
                return f"{key}.{_difference(got.get(key), want.get(key))}"
    if isinstance(got, list) and isinstance(want, list) and len(got) == len(want):
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            if g != w:
                return f"{i}.{_difference(g, w)}"
    return f" {str(got)[:120]} != {str(want)[:120]}"


async def check_state(engine: AsyncEngine, ref: Replay, verdict: Verdict) -> None:
    """Step 4, and no oversell in the stored budgets themselves."""
    async with engine.connect() as conn:
        stored = await allocation.read_states(conn)
        docs = {k: _json(v) for k, v in await conn.execute(
            text("SELECT order_id, state FROM order_state"))}
    skus = {sku: _json(allocation.dump_state(s)) for sku, s in stored.items()}
    verdict.add("state", [f"allocation_state {sku} differs from the reference"
                          for sku in sorted(skus.keys() | ref.skus.keys())
                          if skus.get(sku) != (_json(allocation.dump_state(ref.skus[sku]))
                                               if sku in ref.skus else None)])
    for oid in sorted(docs.keys() | ref.orders.keys()):
        want = _json(orders.dump_order(ref.orders[oid])) if oid in ref.orders else None
        if docs.get(oid) != want:
            verdict.add("state", [f"order_state {oid} differs from the reference: "
                                  f"{_difference(docs.get(oid), want)}"])
    verdict.add("no_oversell", [f"allocation_state {sku}: {supplier}"
                                for sku, state in sorted(stored.items())
                                for supplier in alloc_core.oversold(state)])


def check_published(topics: Topics, ref: Replay) -> list[str]:
    """Events of the agents on Kafka (dead letters included) equal the reference's."""
    ours = {f"dropship/{c}" for c in AGENTS}
    got: dict[str, bytes] = {}
    bad = []
    for pos, (source, event_id) in sorted(topics.keys.items()):
        if source not in ours:
            continue
        value = topics.records[pos].value
        if got.get(event_id, value) != value:
            bad.append(f"{event_id} published twice with other bytes")
        got[event_id] = value
    want = ref.published
    bad += [f"{i} published, not derived by the reference" for i in got.keys() - want.keys()]
    bad += [f"{i} derived by the reference, never published" for i in want.keys() - got.keys()]
    bad += [f"{i} differs from the reference" for i in ref.published.keys() & got.keys()
            if got[i] != ref.published[i]]
    return bad


async def check_read_models(engine: AsyncEngine, topics: Topics, ref: Replay,
                            malformed: list[Position], verdict: Verdict) -> None:
    placed = topics.placed
    async with engine.connect() as conn:
        status: dict[str, str] = dict((await conn.execute(text(
            "SELECT order_id, status FROM read.order_status"))).all())
        twice = (await conn.execute(text(
            "SELECT event_id, count(*) FROM read.order_timeline GROUP BY event_id "
            "HAVING count(*) > 1 LIMIT 20"))).all()
        broken = (await conn.execute(BROKEN_BUDGETS)).all()
        letters = set((await conn.execute(text(
            "SELECT source_topic, source_partition, source_offset FROM read.dead_letters"))).all())
    verdict.add("order_status", [f"order {o} placed but not in read.order_status"
                                 for o in sorted(placed - status.keys())])
    verdict.add("order_status", [f"order {o}: {status[o]}, reference {status_of(ref.orders[o])}"
                                 for o in sorted(status.keys() & ref.orders.keys())
                                 if status[o] != status_of(ref.orders[o])])
    verdict.add("timeline_once", [f"event {e} {n} times in the timeline" for e, n in twice])
    verdict.add("no_oversell", [f"read.supplier_stock {r[0]}/{r[1]}: reported {r[2]}, "
                                f"reserved {r[3]}, remaining {r[4]}" for r in broken])
    verdict.add("no_oversell", [f"{sku}: {o}" for sku, s in sorted(ref.skus.items())
                                for o in alloc_core.oversold(s)])
    verdict.add("malformed_dead_lettered", [f"{p} not in read.dead_letters"
                                            for p in malformed if p not in letters])
    verdict.counts.update(orders=len(placed), dead_letters=len(letters))


async def check(settings: Settings, engine: AsyncEngine, record_file: Path,
                policy: Policy) -> Verdict:
    """Run checks 1-10 of the module docstring; never raises for a violation."""
    verdict = Verdict()
    recorded = load_record_file(record_file)
    topics = await read_topics(settings)
    verdict.add("ground_truth", check_ground_truth(recorded, topics))
    applied = await applied_rows(engine)
    ref = replay(applied, topics, policy, verdict, allocation.rules_of(settings))
    await check_state(engine, ref, verdict)
    verdict.add("published", check_published(topics, ref))
    malformed = [(r["topic"], r["partition"], r["offset"]) for r in recorded
                 if r["fault"] not in (None, "duplicate", "reorder")]
    await check_read_models(engine, topics, ref, malformed, verdict)
    left = await unsent(engine)
    verdict.add("outbox_drained", [f"{left} outbox rows unpublished"] if left else [])
    verdict.counts.update(records=len(recorded), applied=sum(len(v) for v in applied.values()),
                          malformed=len(malformed), skus=len(ref.skus))
    return verdict
