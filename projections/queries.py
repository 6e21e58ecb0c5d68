"""What ops ask of the read models (read-only; used by the ``dropship order`` and
``dropship ops`` commands). Every function returns plain rows (dicts) so the CLI
can print them as a table or as JSON; none writes, except :func:`record_replay`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from events.fulfillment import FAILOVER_CAUSES
from events.topics import INPUT_TOPICS
from projections.tables import dead_letter_replays, read_tables

Row = dict[str, Any]


def like(prefix: str) -> str:
    """A LIKE pattern matching the ids that start with ``prefix``."""
    return prefix.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + "%"


T = read_tables()


def _rows(result: Any) -> list[Row]:
    return [dict(r._mapping) for r in result]


async def order_view(engine: AsyncEngine, order_id: str) -> Row | None:
    """Everything ops know of one order, or None if no valid placement of it was seen
    (events about an order that never validly existed do not make it known)."""
    async with engine.connect() as conn:
        order = (await conn.execute(select(T.order_status)
                                    .where(T.order_status.c.order_id == order_id))).first()
        if order is None:
            return None

        async def of(table: Any, *order_by: Any) -> list[Row]:
            return _rows(await conn.execute(
                select(table).where(table.c.order_id == order_id).order_by(*order_by)))

        return {
            "order": dict(order._mapping),
            "lines": await of(T.order_lines, T.order_lines.c.line_id),
            "supplier_orders": await of(T.supplier_orders, T.supplier_orders.c.requested_at),
            "shipments": _rows(await conn.execute(SHIPMENTS, {"o": order_id})),
            "returns": await of(T.returns, T.returns.c.requested_at),
            "refunds": await of(T.refunds, T.refunds.c.issued_at, T.refunds.c.refund_id),
            "timeline": _rows(await conn.execute(TIMELINE, {"o": order_id})),
        }


#: An order's shipments, first dispatched first, with ``late``: in state late, or in
#: transit past its delivery deadline by the pipeline's clock.
SHIPMENTS = text("""
SELECT s.*, (s.state = 'late' OR (s.state = 'in_transit' AND s.delivered_at IS NULL
                                   AND s.deliver_by < read.pipeline_now())) AS late
  FROM read.shipments s WHERE s.order_id = :o
 ORDER BY s.dispatched_at, s.supplier_id, s.shipment_id""")


async def mentions(engine: AsyncEngine, order_id: str) -> int:
    """How many events in the timeline name ``order_id`` (known or not)."""
    async with engine.connect() as conn:
        n = await conn.scalar(select(func.count()).select_from(T.order_timeline)
                              .where(T.order_timeline.c.order_id == order_id))
    return int(n or 0)


#: In causal order. The order agent numbers its steps (each event it applies, each deadline
#: firing) and stamps what a step derives with ``<step>.<n>`` and its cause. An event the
#: order applied takes the step, and the time, in which it caused something; an allocation
#: decision that caused nothing keeps the place of the command it answered (right after
#: the step that asked); other events go by their own time, before what the pipeline
#: derived at the same time. An entry an agent refused carries the dead letter's reason.
#: ``time`` is when it happened to the order (its clock), ``sent_at`` its sender's time.
TIMELINE = text(f"""
WITH t AS (SELECT * FROM read.order_timeline WHERE order_id = :o),
     caused AS (SELECT cause, min(seq) AS seq, min(time) AS time
                  FROM t WHERE cause IS NOT NULL GROUP BY cause),
     placed AS (
       SELECT t.*, COALESCE(c.time, t.time) AS at, COALESCE(c.seq, t.seq) AS step,
              CASE WHEN c.seq IS NOT NULL THEN 0 ELSE t.sub END AS part
         FROM t LEFT JOIN caused c ON c.cause = t.source || '/' || t.event_id)
SELECT p.at AS time, p.time AS sent_at, p.event_type AS type, p.source, p.summary,
       p.event_id, p.topic, p.partition, p."offset", p.step, d.error AS refused
  FROM placed p
  LEFT JOIN read.dead_letters d ON d.source_topic = p.topic
       AND d.source_partition = p.partition AND d.source_offset = p."offset"
 ORDER BY p.at, p.step NULLS FIRST, p.part NULLS FIRST,
          p.topic NOT IN ({", ".join(f"'{t}'" for t in INPUT_TOPICS)}),
          p.topic, p.partition, p."offset"
""")


async def stuck(engine: AsyncEngine, limit: int = 100) -> list[Row]:
    async with engine.connect() as conn:
        return _rows(await conn.execute(text(
            "SELECT * FROM read.stuck_orders ORDER BY since LIMIT :n"), {"n": limit}))


async def backorders(engine: AsyncEngine, limit: int = 100) -> list[Row]:
    """Backordered lines in the order they will be served: per sku (sku by sku), by
    their place in its queue (``queued_at``, then order id, line id)."""
    async with engine.connect() as conn:
        return _rows(await conn.execute(text(
            "SELECT * FROM read.backorders ORDER BY sku, place LIMIT :n"), {"n": limit}))


async def late(engine: AsyncEngine, limit: int = 100) -> list[Row]:
    """Shipments late by the pipeline's clock (``read.late_shipments``), oldest
    delivery deadline first."""
    async with engine.connect() as conn:
        return _rows(await conn.execute(text(
            "SELECT * FROM read.late_shipments "
            "ORDER BY deliver_by, order_id, supplier_id, shipment_id LIMIT :n"), {"n": limit}))


async def scorecard(engine: AsyncEngine) -> list[Row]:
    async with engine.connect() as conn:
        return _rows(await conn.execute(text(
            "SELECT * FROM read.supplier_scorecard ORDER BY supplier_id")))


async def dead_letters(engine: AsyncEngine, limit: int = 50) -> list[Row]:
    """The newest dead letters, without their payload."""
    dl = T.dead_letters
    cols = [c for c in dl.columns if c.name != "payload"]
    async with engine.connect() as conn:
        return _rows(await conn.execute(
            select(*cols).order_by(dl.c.dead_lettered_at.desc(), dl.c.id).limit(limit)))


async def dead_letter(engine: AsyncEngine, letter_id: str) -> Row | None:
    async with engine.connect() as conn:
        row = (await conn.execute(select(T.dead_letters)
                                  .where(T.dead_letters.c.id == letter_id))).first()
    return dict(row._mapping) if row is not None else None


async def already_applied(engine: AsyncEngine, consumer: str, source: str,
                          event_id: str) -> bool:
    """Whether ``consumer`` has applied an event of this (source, id): a replay with the
    same id would be dropped as a duplicate."""
    async with engine.connect() as conn:
        n = await conn.scalar(text(
            "SELECT count(*) FROM processed_events WHERE consumer = :c AND source = :s "
            "AND event_id = :i"), {"c": consumer, "s": source, "i": event_id})
    return bool(n)


async def record_replay(engine: AsyncEngine, letter_id: str, event_id: str, topic: str,
                        by: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(dead_letter_replays.insert().values(
            dead_letter_id=letter_id, event_id=event_id, topic=topic,
            replayed_at=datetime.now(UTC), replayed_by=by))


async def run_summary(engine: AsyncEngine, prefix: str) -> Row:
    """The figures of ``dropship ops ...`` for the orders, skus and suppliers whose ids
    start with ``prefix`` (one simulator run): orders by status, failovers,
    backorders, dead letters by rule, and each supplier's scorecard row."""
    params = {"p": like(prefix)}
    causes = ", ".join(f"'{c}'" for c in FAILOVER_CAUSES)
    async with engine.connect() as conn:
        async def scalar(sql: str) -> int:
            return int(await conn.scalar(text(sql), params) or 0)

        statuses = {r.status: r.n for r in await conn.execute(text(
            "SELECT status, count(*) AS n FROM read.order_status WHERE order_id LIKE :p "
            "GROUP BY status ORDER BY status"), params)}
        rules = {r.rule: r.n for r in await conn.execute(text(
            "SELECT rule, count(*) AS n FROM read.dead_letters WHERE original_key LIKE :p "
            "GROUP BY rule ORDER BY rule"), params)}
        return {
            "orders": sum(statuses.values()),
            "statuses": statuses,
            "failovers": await scalar(
                "SELECT count(*) FROM read.supplier_orders WHERE order_id LIKE :p "
                f"AND cancel_cause IN ({causes})"),
            "orders_failed_over": await scalar(
                "SELECT count(DISTINCT order_id) FROM read.supplier_orders "
                f"WHERE order_id LIKE :p AND cancel_cause IN ({causes})"),
            "backorders": await scalar(
                "SELECT count(*) FROM read.backorders WHERE order_id LIKE :p"),
            "stuck": await scalar("SELECT count(*) FROM read.stuck_orders WHERE order_id LIKE :p"),
            "dead_letters": sum(rules.values()),
            "dead_letters_by_rule": rules,
            "shipments": await scalar(
                "SELECT count(*) FROM read.shipments WHERE order_id LIKE :p"),
            "late_shipments": await scalar(
                "SELECT count(*) FROM read.late_shipments WHERE order_id LIKE :p"),
            "returns": await scalar("SELECT count(*) FROM read.returns WHERE order_id LIKE :p"),
            "suppliers": _rows(await conn.execute(text(
                "SELECT * FROM read.supplier_scorecard WHERE supplier_id LIKE :p "
                "ORDER BY supplier_id"), params)),
        }


async def failed_over_order(engine: AsyncEngine, prefix: str) -> str | None:
    """An order of the run that failed over to another supplier, the furthest along first."""
    causes = ", ".join(f"'{c}'" for c in FAILOVER_CAUSES)
    async with engine.connect() as conn:
        found = await conn.scalar(text(f"""
            SELECT o.order_id FROM read.order_status o
             WHERE o.order_id LIKE :p AND EXISTS (
                   SELECT 1 FROM read.supplier_orders s WHERE s.order_id = o.order_id
                      AND s.cancel_cause IN ({causes}))
             ORDER BY o.status = 'delivered' DESC, o.dispatched_at IS NOT NULL DESC, o.order_id
             LIMIT 1"""), {"p": like(prefix)})
    return None if found is None else str(found)
