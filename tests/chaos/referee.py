"""The independent referee of the chaos tier: the run judged from the world's side.

Who calls it: the chaos tests, once a run (``harness.run_chaos``) has caught up,
beside the replay checker (``checker.py``). The checker replays the agents' own
cores, so it proves crash consistency; this referee proves the decisions were
right by rules written again here. It knows only what an auditor outside the
pipeline knows:

- the simulator's books (``simulator/ledger.py``): what each supplier was asked
  with the units it had free, its stock reports and sales, every parcel's fate;
- the raw topics read back from the broker (``world_facts.py``), each record at
  its broker time in simulated time;
- the business rules of ``docs/order-lifecycle.md`` (``order_money.py``) and the
  run's terms (:class:`Terms`: windows, SLA grace, and the stated tolerance: how
  long after a deadline the pipeline may act under chaos).

It imports nothing of ``agents/`` (``tests/unit/test_referee.py`` checks). The
invariants (each yields its violations):

1. ``stock``: no supplier was asked for more units than it had free, unless the
   books explain it by a sale elsewhere the pipeline could not know yet (a stock
   report is surely applied within the tolerance of its publication);
2. ``outcomes``: every order ends delivered (something was delivered), cancelled
   for a cause the world gave, or waiting: the world still owes it something (an
   open payment window, a supplier's answer or dispatch before its deadline plus
   the tolerance, a parcel in transit, a return on its way) or its last snapshot
   states a wait (backordered units, held for ops or payment held, with a reason);
3. ``money``: per order, refunded <= paid in its currency; every payment in another
   currency refunded whole; paid - refunded <= the checkout total; and where the
   world fixes which units were taken off, paid - refunded = min(paid, due) by the
   documented rule (``order_money.candidates``);
4. ``paid_first``: no supplier order reaches the broker before payments in the
   order's currency that cover its total (less what the shop cancelled before it)
   have (a shop stamps the parts of a payment alike, so the broker's order is the
   one that tells: the pipeline cannot have applied a payment not yet on it);
5. ``sla``: every supplier order answered in time (accepted or shipped, stamped by
   its acknowledge deadline) or cancelled; every accepted one fully dispatched by
   its dispatch deadline + grace or cancelled; every rejected one cancelled (failed
   over). Every deadline the run's clock passed must be acted on by the end, never
   before it (a cancellation stamped earlier) nor against a timely answer already on
   the broker, and within the tolerance after the pipeline had caught up with the
   world (a worker fires deadlines only then; see :func:`sla`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from events.fulfillment import SupplierOrderCancelled
from pipeline.runtime.settings import Settings
from simulator.ledger import Books
from tests.chaos.order_money import candidates, cents, credit_of, taken_by_shop
from tests.chaos.world_facts import Facts, OrderFacts, SoFacts, Terms, collect, read_seen

INVARIANTS = ("stock", "outcomes", "money", "paid_first", "sla")
DELIVERED = ("delivered", "refunded", "partially_refunded")
STATED_WAITS = ("held_for_ops", "payment_held")


@dataclass
class Ruling:
    """Violations per invariant (empty: it held) and what was judged."""

    violations: dict[str, list[str]] = field(
        default_factory=lambda: {i: [] for i in INVARIANTS})
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(self.violations.values())

    def table(self) -> str:
        figures = ", ".join(f"{k} {v:,}" for k, v in self.counts.items())
        rows = [f"  {i:<12} {len(v):>6} violations  {'; '.join(v[:3])[:400]}"
                for i, v in self.violations.items()]
        return "\n".join([f"referee judged: {figures}", *rows])


async def judge(settings: Settings, books: Books, terms: Terms) -> Ruling:
    """Read the topics back from the broker and rule on them (the chaos tests' call)."""
    facts = collect(await read_seen(settings, terms.span))
    ruling = rule(facts, books, terms)
    after_deadline, after_caught_up = lateness(facts, terms)
    speed = terms.span.speed
    ruling.counts["worst SLA failover, real s after the deadline"] = round(
        after_deadline.total_seconds() / speed)
    ruling.counts["after catching up"] = round(after_caught_up.total_seconds() / speed)
    return ruling


def rule(facts: Facts, books: Books, terms: Terms) -> Ruling:
    """Judge a run on the five invariants of the module docstring."""
    ruling = Ruling()
    orders = {k: o for k, o in facts.orders.items() if o.placed is not None}
    expected = {k: candidates(o, facts, terms) for k, o in orders.items()}
    ruling.counts = {"orders": len(orders),
                     "money exact": sum(e is not None for e in expected.values()),
                     "supplier orders": len(facts.supplier_orders),
                     "requests": len(books.receipts)}
    found = {"stock": stock(books, terms), "outcomes": outcomes(orders, facts, books, terms),
             "money": money(orders, expected), "paid_first": paid_first(orders, facts),
             "sla": sla(facts, terms)}
    for name, violations in found.items():
        ruling.violations[name].extend(violations)
    return ruling


# --- 1. stock -------------------------------------------------------------------------

def stock(books: Books, terms: Terms) -> Iterator[str]:
    for over in replace(books, latency=terms.tolerance).over_asks():
        if over.explanation == "unexplained":
            r = over.receipt
            yield (f"{r.supplier_order_id} asked {r.supplier_id} for {over.shortfall} "
                   f"more than it had free")


# --- 2. outcomes ----------------------------------------------------------------------

def outcomes(orders: dict[str, OrderFacts], facts: Facts, books: Books,
             terms: Terms) -> Iterator[str]:
    in_transit = {p.order_id for p in books.parcels if p.shipment_id not in books.ended}
    for order_id, o in orders.items():
        if o.status is None:
            yield f"{order_id}: no status was ever published"
            continue
        status = o.status.status
        if status in DELIVERED:
            if not o.delivered:
                yield f"{order_id}: {status}, yet no parcel of it was delivered"
        elif status == "cancelled":
            if not cancel_cause(o, terms):
                yield f"{order_id}: cancelled without a cause the world gave"
        elif not (order_id in in_transit or owed(o, facts, terms) or stated(o)):
            yield (f"{order_id}: {status} with nothing owed by the world and no wait "
                   f"stated (reason: {o.status.reason!r})")


def cancel_cause(o: OrderFacts, terms: Terms) -> str | None:
    """Why the world allows the order to be cancelled as a whole (None: it does not)."""
    placed = o.placed
    assert placed is not None
    first = o.first_paid_at()
    if any(not c.lines for c in o.cancels):
        return "the shop cancelled it"
    if all(taken_by_shop(o).get(ln.line_id, 0) >= ln.quantity for ln in placed.lines):
        return "the shop cancelled every unit"
    if first is None or first > placed.placed_at + terms.payment_window - terms.jitter:
        return "not paid within the payment window"
    if o.paid(placed.currency) < placed.total().amount and \
            first + terms.held_payment_window <= terms.span.end:
        return "short payment past its window"
    if o.failed:
        return "parcels failed"
    if placed.placed_at + terms.backorder_window <= terms.span.end:
        return "backordered past the window"
    return None


def owed(o: OrderFacts, facts: Facts, terms: Terms) -> str | None:
    """What the world still owes the order at the end of the run (None: nothing)."""
    placed = o.placed
    assert placed is not None
    end, tol = terms.span.end, terms.tolerance
    first = o.first_paid_at()
    if first is None and placed.placed_at + terms.payment_window + tol >= end:
        return "its payment window is open"
    if first is not None and o.paid(placed.currency) < placed.total().amount and \
            first + terms.held_payment_window + tol >= end:
        return "the balance may still come"
    for so_id in o.supplier_orders:
        if (why := so_owes(facts.supplier_orders[so_id], terms)) is not None:
            return why
    received = {(r.rma_id, r.supplier_id) for r in o.received}
    if any((a.rma_id, a.supplier_id) not in received for a in o.authorized):
        return "a return is on its way"
    return None


def so_owes(so: SoFacts, terms: Terms) -> str | None:
    end, tol = terms.span.end, terms.tolerance
    if so.cancelled is not None:
        return "a failover is under way" if so.cancelled_seen and \
            so.cancelled_seen + tol >= end else None
    if so.rejected is not None:
        return "a rejection is being failed over" if so.rejected_seen and \
            so.rejected_seen + tol >= end else None
    if so.shipments:
        return None  # its parcels are judged from the books
    due = so.request.dispatch_by if so.accepted else so.request.acknowledge_by
    if due + terms.sla_grace + tol >= end:
        return f"{so.request.supplier_id} may still answer or dispatch"
    return None


def stated(o: OrderFacts) -> bool:
    """The last snapshot states a wait: units waiting for stock, or a hold with a reason."""
    st = o.status
    assert st is not None
    return any(ln.backordered > 0 for ln in st.lines) or (
        st.status in STATED_WAITS and bool(st.reason))


# --- 3. money -------------------------------------------------------------------------

def money(orders: dict[str, OrderFacts], expected: dict[str, set[int] | None]
          ) -> Iterator[str]:
    """Invariant 3; ``expected``: what each order may keep (``order_money.candidates``)."""
    for order_id, o in orders.items():
        assert o.placed is not None
        cur = o.placed.currency
        paid, refunded = cents(o.paid(cur)), cents(o.refunded(cur))
        if refunded > paid:
            yield f"{order_id}: refunded {refunded} > paid {paid} (cents {cur})"
        for other in {p.amount.currency for p in o.payments.values()} - {cur}:
            if o.paid(other) != o.refunded(other):
                yield (f"{order_id}: paid {o.paid(other)} {other}, refunded "
                       f"{o.refunded(other)} {other}: not refunded whole")
        if paid - refunded > cents(o.placed.total().amount):
            yield f"{order_id}: keeps {paid - refunded} cents, more than its total"
        rule_gives = expected[order_id]
        if rule_gives is not None and paid - refunded not in rule_gives:
            yield (f"{order_id}: keeps {paid - refunded} cents {cur} (paid {paid}, "
                   f"refunded {refunded}); the rule gives {sorted(rule_gives)}")


# --- 4. paid first --------------------------------------------------------------------

def paid_first(orders: dict[str, OrderFacts], facts: Facts) -> Iterator[str]:
    for so_id, so in facts.supplier_orders.items():
        o = orders.get(so.request.order_id)
        if o is None or o.placed is None:
            yield f"{so_id}: a supplier order for an order never placed"
            continue
        at = so.request.requested_at
        paid = cents(o.paid(o.placed.currency, seen_by=so.requested_seen))
        need = cents(o.placed.total().amount) - _credited_by(o, at)
        if paid < need:
            yield (f"{so_id}: on the broker at {so.requested_seen:%H:%M:%S} with {paid} of "
                   f"{need} cents paid")


def _credited_by(o: OrderFacts, at: datetime) -> int:
    """The most the shop's cancellations before ``at`` can have taken off the total."""
    return credit_of(o, taken_by_shop(o, by=at))


# --- 5. sla -----------------------------------------------------------------------------

def sla(facts: Facts, terms: Terms) -> Iterator[str]:
    """Invariant 5. A worker fires deadlines only once it has caught up with its inputs
    (docs/order-lifecycle.md, "Deadlines"), so under a backlog it cannot act before it
    has: a cancellation is in time when it reaches the broker within the tolerance
    after the first moment, from its deadline on, when the pipeline had reacted to
    every input on the broker (:meth:`~world_facts.Progress.caught_up`). Every
    deadline the run's clock passed must have been acted on by the end; none before
    it (a cancellation stamped earlier), nor once a timely answer or a full dispatch
    was on the broker."""
    for so_id, so in facts.supplier_orders.items():
        req = so.request
        if so.rejected is not None and so.rejected_seen is not None:
            yield from _cancelled_by(so_id, so, so.rejected_seen, "the rejection", facts,
                                     terms)
        elif not _answered(so):
            yield from _cancelled_by(so_id, so, req.acknowledge_by + terms.sla_grace,
                                     "answer by its deadline", facts, terms)
        elif not _shipped(so, req.dispatch_by + terms.sla_grace):
            yield from _cancelled_by(so_id, so, req.dispatch_by + terms.sla_grace,
                                     "dispatch by its deadline", facts, terms)
        yield from _premature(so_id, so, terms)


def _answered(so: SoFacts) -> bool:
    """Accepted (or shipped) stamped by its acknowledge deadline (docs: the grace is for
    an answer in transit, not for a later stamp)."""
    by = so.request.acknowledge_by
    return (so.accepted is not None and so.accepted.accepted_at <= by) or _shipped(so, by)


def _shipped(so: SoFacts, by: datetime) -> bool:
    """Every unit of it dispatched, stamped no later than ``by``."""
    shipped: Counter[str] = Counter()
    for shipment in so.shipments:
        if shipment.dispatched_at <= by:
            shipped.update({ln.line_id: ln.quantity for ln in shipment.lines})
    return all(shipped[ln.line_id] >= ln.quantity for ln in so.request.lines)


def _cancelled_by(so_id: str, so: SoFacts, due: datetime, what: str, facts: Facts,
                  terms: Terms) -> Iterator[str]:
    if so.cancelled_seen is None:
        if due + terms.jitter <= terms.span.end:
            yield f"{so_id}: no {what} ({due:%d %H:%M}), and never cancelled"
        return
    could = facts.progress.caught_up(due)
    if so.cancelled_seen > could + terms.tolerance:
        yield (f"{so_id}: no {what} ({due:%d %H:%M}; the pipeline had caught up by "
               f"{could:%d %H:%M}), cancelled only at {so.cancelled_seen:%d %H:%M} "
               f"(tolerance {terms.tolerance})")


def _premature(so_id: str, so: SoFacts, terms: Terms) -> Iterator[str]:
    """A failover for a missed SLA stamped before the SLA ran out, or that beat an
    answer (or a full dispatch) stamped in time and on the broker ``jitter`` before
    the deadline + grace (the earliest a worker may fire it)."""
    cancel = so.cancelled
    if cancel is None:
        return
    if _before_its_deadline(so, cancel, terms):
        yield f"{so_id}: cancelled for its {cancel.cause} at {cancel.cancelled_at:%d %H:%M}"
    req, grace, jitter = so.request, terms.sla_grace, terms.jitter
    if cancel.cause == "acknowledge_sla_missed" and so.accepted is not None and \
            so.accepted_seen is not None and so.accepted.accepted_at <= req.acknowledge_by \
            and so.accepted_seen < req.acknowledge_by + grace - jitter:
        yield f"{so_id}: cancelled for its acknowledge SLA, though accepted in time"
    if cancel.cause == "dispatch_sla_missed" and so.shipped_seen is not None and \
            so.shipped_seen < req.dispatch_by + grace - jitter and _shipped(so, req.dispatch_by):
        yield f"{so_id}: cancelled for its dispatch SLA, though dispatched in time"


def _before_its_deadline(so: SoFacts, cancel: SupplierOrderCancelled, terms: Terms) -> bool:
    """A failover for a missed SLA stamped before the SLA ran out: before the deadline
    + grace, except at once for an answer stamped after the deadline (docs: "one
    stamped later fails the supplier order over as soon as it arrives")."""
    req, at = so.request, cancel.cancelled_at
    if cancel.cause == "dispatch_sla_missed":
        return at < req.dispatch_by + terms.sla_grace
    if cancel.cause != "acknowledge_sla_missed" or at >= req.acknowledge_by + terms.sla_grace:
        return False
    late_answer = so.accepted is not None and so.accepted.accepted_at > req.acknowledge_by
    return not (late_answer and at >= req.acknowledge_by)


def lateness(facts: Facts, terms: Terms) -> tuple[timedelta, timedelta]:
    """At worst, how long after its acknowledge deadline a supplier order that missed it
    was cancelled: after the deadline, and after the pipeline had caught up with it."""
    worst = (timedelta(0), timedelta(0))
    for so in facts.supplier_orders.values():
        if so.cancelled is not None and so.cancelled.cause == "acknowledge_sla_missed" \
                and so.cancelled_seen is not None:
            due = so.request.acknowledge_by + terms.sla_grace
            late = (so.cancelled_seen - due, so.cancelled_seen - facts.progress.caught_up(due))
            worst = (max(worst[0], late[0]), max(worst[1], late[1]))
    return worst
