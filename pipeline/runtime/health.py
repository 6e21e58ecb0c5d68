"""``GET /health`` on the worker's web port: is this worker ready to serve?

Registered by the worker wiring; compose's healthcheck (``dropship health``) and
an orchestrator's readiness probe ask it. A worker is **ready** when

1. it has joined its consumer group: an assignment has arrived and no rebalance
   is under way (a worker given no partitions, because the group has more
   members than partitions, is ready with nothing to do);
2. for every partition it owns, of every agent it runs, the fetch high-water
   mark is known and the agent's Postgres checkpoint is at most
   ``settings.ready_max_lag`` records behind it ("caught up").

The answer is JSON: ``ready``, the partitions owned, the largest lag and, when
not ready, why; status 200 when ready, 503 when not or when Postgres cannot be
reached (one line, never a traceback).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.runtime.lag import stored_checkpoints
from pipeline.runtime.stream import highwater_of

log = logging.getLogger(__name__)

#: consumer name -> the topics it reads and the database of its checkpoints
Consumers = Mapping[str, tuple[Sequence[str], AsyncEngine]]


@dataclass
class Membership:
    """Whether the worker has had an assignment (set by the wiring's
    ``on_partitions_assigned`` handler)."""

    assigned: bool = False


@dataclass(frozen=True)
class Readiness:
    ready: bool
    partitions: int
    max_lag: int | None
    reason: str | None

    def body(self) -> str:
        return json.dumps({"ready": self.ready, "partitions": self.partitions,
                           "max_lag": self.max_lag, "reason": self.reason})


async def readiness(app: Any, consumers: Consumers, membership: Membership,
                    max_lag: int) -> Readiness:
    """This worker's readiness (raises if a database cannot be reached)."""
    if not membership.assigned or getattr(app, "rebalancing", False):
        return Readiness(False, 0, None, "joining its consumer group")
    consumer = getattr(app, "consumer", None)
    owned = [(tp.topic, tp.partition) for tp in (consumer.assignment() if consumer else ())]
    worst = 0
    for name, (topics, engine) in consumers.items():
        stored = await stored_checkpoints(engine, [name])
        for tp in (tp for tp in owned if tp[0] in topics):
            mark = highwater_of(consumer, tp)
            if mark is None:
                return Readiness(False, len(owned), None, f"no fetch yet from {tp[0]}[{tp[1]}]")
            worst = max(worst, mark - 1 - stored.get((name, *tp), -1))
    if worst > max_lag:
        return Readiness(False, len(owned), worst, f"catching up: {worst} records behind")
    return Readiness(True, len(owned), worst, None)


def register_health(app: Any, consumers: Consumers, membership: Membership,
                    max_lag: int) -> None:
    """Add ``GET /health`` to the worker's web server."""

    async def health(web: Any, request: Any) -> Any:
        try:
            state = await readiness(app, consumers, membership, max_lag)
        except Exception as exc:
            log.warning("/health: %s", exc)
            return web.text(json.dumps({"ready": False, "reason": type(exc).__name__}) + "\n",
                            status=503, content_type="application/json")
        return web.text(state.body() + "\n", status=200 if state.ready else 503,
                        content_type="application/json")

    app.page("/health")(health)
