"""The one consumer registry: every consumer of ours, the topics it reads, and
how its handler is built from settings.

Who reads it: the worker's composition root (:mod:`pipeline.entry.worker`,
which agents a worker runs), :mod:`pipeline.entry.catchup` (``dropship ops lag``,
the demo and the benchmarks: has everything caught up?), and the tests'
checkers. A new agent is one entry here; nothing else lists consumers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from agents import allocation, orders
from pipeline.runtime.processor import Handler, RawHandler
from pipeline.runtime.settings import Settings
from projections import projector


@dataclass(frozen=True)
class Consumer:
    """One consumer: its name (checkpoints, dedup, outbox producer, CLI ``--agents``),
    the topics it reads, and the handler its processor runs."""

    name: str
    topics: tuple[str, ...]
    handler: Callable[[Settings], Handler | RawHandler]


CONSUMERS: dict[str, Consumer] = {c.name: c for c in (
    Consumer(projector.CONSUMER, projector.TOPICS, lambda s: projector.ProjectorHandler()),
    Consumer(allocation.CONSUMER, allocation.TOPICS,
             lambda s: allocation.AllocationHandler(rules=allocation.rules_of(s))),
    Consumer(orders.CONSUMER, orders.TOPICS,
             lambda s: orders.OrderHandler(orders.policy_of(s))),
)}
#: Every consumer's name, in the order a worker starts them.
NAMES: tuple[str, ...] = tuple(CONSUMERS)


def topics_of(names: Iterable[str] = NAMES) -> dict[str, tuple[str, ...]]:
    """consumer -> the topics it reads, for ``names`` (default: every consumer)."""
    return {name: CONSUMERS[name].topics for name in names}
