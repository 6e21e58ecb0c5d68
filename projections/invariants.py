"""The pipeline's invariants, checked over the read models (the demo's exit code).

Who calls it: ``dropship demo`` once the pipeline has caught up, and tests.
:func:`check` guarantees to report, for the orders and skus whose ids start
with ``prefix``:
1. **budget**: every (supplier, sku) whose remaining budget is not what the stock
   contract makes it: max(0, reported - reserved), reserved being the units the
   report does not count (docs/allocation.md). Reserved may exceed a lower report;
   whether suppliers were asked beyond their free stock is judged against the
   simulator's own books (``pipeline.entry.demo``), not here;
2. **unexplained orders**: every order neither finished (delivered, cancelled,
   returned, partially or fully refunded) nor in an explained waiting state:
   awaiting payment inside its window, waiting for stock, held with a reason,
   waiting for a supplier before its deadline, in transit, a return in progress,
   or changed within ``grace``. Deadlines are compared with ``now``, the
   pipeline's clock (the demo's is simulated), allowing ``grace`` for the
   pipeline to act;
3. **money**: every order that refunded more than it was paid, every cancelled
   order whose payments were not all refunded, and every finished order whose
   paid - refunded is not what its ledger says is due;
4. **time**: every supplier order sent before its order was paid, and every
   acknowledge-SLA failover of a supplier that had accepted before its deadline.
It only reads; a database error propagates.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, Interval, bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine

from projections.queries import like

TERMINAL = ("delivered", "cancelled", "returned", "partially_refunded", "refunded")

WAITING = text("""
SELECT o.order_id, o.status, o.last_reason,
  CASE
    WHEN o.status IN ('delivered', 'cancelled', 'returned', 'partially_refunded', 'refunded')
      THEN 'finished'
    WHEN o.status IN ('payment_held', 'held_for_ops') AND o.last_reason IS NOT NULL
      THEN 'held for ops'
    WHEN o.paid_at IS NULL AND o.placed_at + :window > :now - :grace THEN 'awaiting payment'
    WHEN EXISTS (SELECT 1 FROM read.order_lines l
                  WHERE l.order_id = o.order_id AND l.backordered > 0) THEN 'waiting for stock'
    WHEN o.status = 'return_requested' THEN 'return in progress'
    WHEN EXISTS (SELECT 1 FROM read.supplier_orders s
                  WHERE s.order_id = o.order_id AND s.cancelled_at IS NULL
                    AND s.rejected_at IS NULL AND s.dispatched_at IS NULL
                    AND CASE WHEN s.accepted_at IS NULL THEN s.acknowledge_by
                             ELSE s.dispatch_by END > :now - :grace)
      THEN 'waiting for supplier'
    WHEN EXISTS (SELECT 1 FROM read.shipments h
                  WHERE h.order_id = o.order_id AND h.delivered_at IS NULL
                    AND h.state IN ('in_transit', 'late')) THEN 'in transit'
    WHEN o.status_since > :now - :grace THEN 'in progress'
  END AS waiting
  FROM read.order_status o
 WHERE o.order_id LIKE :prefix
""").bindparams(bindparam("now", type_=DateTime(timezone=True)),
                bindparam("window", type_=Interval), bindparam("grace", type_=Interval))

MONEY = text("""
SELECT order_id, status, paid, refunded, due,
       CASE WHEN refunded > paid THEN 'refunded more than paid'
            WHEN status = 'cancelled' AND refunded <> paid THEN 'cancelled, not all refunded'
            ELSE 'paid - refunded is not what is due' END AS problem
  FROM read.order_status
 WHERE order_id LIKE :prefix AND paid IS NOT NULL AND (
       refunded > paid OR (status = 'cancelled' AND refunded <> paid)
    OR (status IN ('delivered', 'partially_refunded', 'refunded') AND written_off = 0
        AND paid - refunded <> due))
""")

TIMING = text("""
SELECT s.order_id, s.supplier_id, s.supplier_order_id,
       CASE WHEN s.requested_at < o.paid_at THEN 'sent before the order was paid'
            ELSE 'failed over for not accepting, though it accepted in time' END AS problem
  FROM read.supplier_orders s JOIN read.order_status o ON o.order_id = s.order_id
 WHERE s.order_id LIKE :prefix AND (
       s.requested_at < o.paid_at
    OR (s.cancel_cause = 'acknowledge_sla_missed' AND s.accepted_at <= s.acknowledge_by))
""")

OVERSOLD = text("""
SELECT supplier_id, sku, reported_available, reserved, remaining
  FROM read.supplier_stock
 WHERE sku LIKE :prefix
   AND (reserved < 0 OR remaining <> GREATEST(0, reported_available - reserved))
""")


@dataclass(frozen=True)
class Verdict:
    """What :func:`check` found; ``ok`` when no invariant is broken."""

    orders: int
    waiting: Counter[str] = field(default_factory=Counter)  # explanation -> orders
    unexplained: list[dict[str, Any]] = field(default_factory=list)
    oversold: list[dict[str, Any]] = field(default_factory=list)
    money: list[dict[str, Any]] = field(default_factory=list)
    timing: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.unexplained or self.oversold or self.money or self.timing)


async def check(engine: AsyncEngine, prefix: str, now: datetime, *,
                payment_window: timedelta, grace: timedelta) -> Verdict:
    """Steps 1-4 of the module docstring."""
    pattern = like(prefix)
    async with engine.connect() as conn:
        rows = [dict(r._mapping) for r in await conn.execute(WAITING, {
            "prefix": pattern, "now": now, "window": payment_window, "grace": grace})]

        async def found(query: Any) -> list[dict[str, Any]]:
            return [dict(r._mapping) for r in await conn.execute(query, {"prefix": pattern})]

        oversold, money, timing = await found(OVERSOLD), await found(MONEY), await found(TIMING)
    return Verdict(orders=len(rows),
                   waiting=Counter(r["waiting"] for r in rows if r["waiting"]),
                   unexplained=[r for r in rows if r["waiting"] is None],
                   oversold=oversold, money=money, timing=timing)
