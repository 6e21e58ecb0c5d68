"""Random interleavings of everything that can happen to an order, against the pure core.

A hypothesis state machine plays shop, suppliers, ops and the clock around one order:
placement (with shipping, tax, discount), exact / short / excess / foreign / repeated
payments, whole and partial cancellations, supplier answers, shipments, deliveries,
returns and their receipt, ops levers, stock reports and deadline firings. The
allocation agent is its real pure core, and commands and decisions travel through
queues delivered in any order the machine picks (each queue in its own order, as a
Kafka partition), so decisions can lag behind cancellations, releases behind
re-routes.

After every step it checks, against its own books (never the order's ledger):

1. refunded <= paid, per currency;
2. no supplier order before the order is paid in full (net of refunds, for what is
   still due by the money rule, computed here independently), unless ops released it;
3. nothing the order derives is stamped earlier than anything it had applied;
and once all queues are drained:
4. a finished order's paid - refunded is the value of what the customer kept, by
   the documented rule (re-implemented here with plain fractions);
5. the allocation agent holds nothing for a cancelled order, and never more than a
   line still wants.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from math import floor

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from agents.core import allocation as alloc
from agents.core.order_rules import decide, fire, next_deadline
from agents.core.order_status import status_event, status_of
from agents.core.orders import Order, Output, Policy, Refused
from events.allocation import (
    AllocateLine,
    BackorderDropped,
    LineAllocated,
    LineBackordered,
    LineReleased,
    ReleaseLine,
)
from events.base import Message
from events.catalog import StockLevelReported, SupplierOfferUpdated
from events.fulfillment import (
    OrderStatusChanged,
    RefundIssued,
    ReturnAuthorized,
    SupplierOrderCancelled,
    SupplierOrderRequested,
)
from events.ops import CancelOrder, CloseReturn, ReleasePayment, RerouteLine
from events.orders import (
    DeliveryConfirmed,
    LineQuantity,
    OrderCancelled,
    OrderLine,
    OrderPlaced,
    PaymentConfirmed,
    ReturnReason,
    ReturnRequested,
)
from events.suppliers import (
    DeliveryException,
    ReturnReceived,
    ShipmentDelivered,
    ShipmentDispatched,
    ShipmentFailed,
    SupplierOrderAccepted,
    SupplierOrderRejected,
)
from events.types import Address, Money

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
OID = "o1"
SUPPLIERS = ("s1", "s2", "s3")
POLICY = Policy(payment_window=timedelta(hours=1), return_window=timedelta(days=30),
                max_reroutes=2, hold_timeout=timedelta(hours=2), max_held=20,
                held_payment_window=timedelta(hours=6), backorder_window=timedelta(days=2))
SELLERS_FAULT = {"defective", "damaged", "wrong_item"}


def eur(cents: int) -> Money:
    return Money(amount=Decimal(cents) / 100, currency="EUR")


# --- the money rule, written here again from docs/order-lifecycle.md ----------------------

def shares(amount: int, weights: list[int]) -> list[int]:
    """Each line's share: the floor of the exact running share, the last takes the rest."""
    total = sum(weights) or len(weights)
    weights = weights if sum(weights) else [1] * len(weights)
    out, before = [], 0
    for i in range(len(weights)):
        upto = amount if i == len(weights) - 1 else floor(
            Fraction(amount) * sum(weights[:i + 1]) / total)
        out.append(upto - before)
        before = upto
    return out


def worth(value: int, quantity: int, units: int) -> int:
    """The first ``units`` of ``quantity`` units worth ``value``."""
    return value if units >= quantity else floor(Fraction(value) * units / quantity)


@dataclass
class Book:
    """The placed order as the rule sees it, in cents."""

    quantities: list[int]
    goods: list[int]
    shipping: list[int]

    @classmethod
    def of(cls, placed: OrderPlaced) -> Book:
        subs = [int(ln.unit_price.amount * 100) * ln.quantity for ln in placed.lines]
        cents = {k: int(placed.amount(k) * 100) for k in ("shipping", "tax", "discount")}
        d, t, s = (shares(cents[k], subs) for k in ("discount", "tax", "shipping"))
        return cls([ln.quantity for ln in placed.lines],
                   [sub - di + ti for sub, di, ti in zip(subs, d, t, strict=True)], s)

    def kept(self, off_goods: list[int], off_shipping: list[int]) -> int:
        """The value of what is left once those units were taken off each line."""
        return sum(g - worth(g, q, og) + s - worth(s, q, os) for g, s, q, og, os in zip(
            self.goods, self.shipping, self.quantities, off_goods, off_shipping, strict=True))


# --- the machine ----------------------------------------------------------------------------

class OrderLife(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.order = Order(OID)
        self.now = T0
        self.applied = T0  # the latest time of anything the order applied
        self.skus: dict[str, alloc.SkuState] = {}
        self.to_alloc: list[Message] = []
        self.to_order: list[tuple[Message, datetime]] = []
        self.paid: defaultdict[str, Decimal] = defaultdict(Decimal)
        self.refunded: defaultdict[str, Decimal] = defaultdict(Decimal)
        self.refs: dict[str, Money] = {}
        self.released = False
        self.requests: dict[str, SupplierOrderRequested] = {}
        self.dead: set[str] = set()  # cancelled supplier orders
        self.shipments: list[tuple[str, str]] = []
        self.returns: dict[str, list[ReturnAuthorized]] = {}
        self.codes: dict[str, ReturnReason] = {}
        self.received: set[tuple[str, str]] = set()
        self.closed: dict[str, bool] = {}
        self.snapshot: OrderStatusChanged | None = None
        self.n = 0
        self.causes: set[str] = set()
        self.shipped: Counter[tuple[str, str]] = Counter()  # (supplier, line) -> units
        self.parcels: dict[str, tuple[LineQuantity, ...]] = {}  # shipment -> its lines
        self.so_shipped: Counter[tuple[str, str]] = Counter()  # (supplier order, line)
        self.lost: Counter[str] = Counter()  # line -> units of parcels that failed
        self.failed: set[str] = set()
        self.delivered: set[str] = set()

    # --- plumbing ------------------------------------------------------------------------

    def step(self, message: Message, time: datetime | None = None, sender: str | None = None,
             ) -> list[Output]:
        when = time or self.now
        before = self.order
        self.order, out = decide(self.order, message, when, POLICY,
                                 sender or ("ops/alice" if message.SOURCE_KIND == "ops"
                                            else "shop/acme"))
        applied = self.order is not before or not all(isinstance(o, Refused) for o in out)
        if applied:
            self.applied = max(self.applied, when)
        self.take(out)
        return out

    def take(self, out: list[Output]) -> None:
        for o in out:
            if isinstance(o, Refused):
                continue
            for name in ("requested_at", "changed_at", "issued_at", "cancelled_at",
                         "authorized_at"):
                stamp = getattr(o, name, None)
                if stamp is not None:
                    assert stamp >= self.applied, (o, self.applied)  # invariant 3
            if isinstance(o, AllocateLine | ReleaseLine):
                self.to_alloc.append(o)
            elif isinstance(o, OrderStatusChanged):
                self.snapshot = o
            elif isinstance(o, RefundIssued):
                self.refunded[o.amount.currency] += o.amount.amount
                self.causes.add(o.cause)
            elif isinstance(o, SupplierOrderCancelled):
                self.dead.add(o.supplier_order_id)
            elif isinstance(o, ReturnAuthorized):
                self.returns.setdefault(o.rma_id, []).append(o)
        for o in out:  # after the snapshot of the same step
            if isinstance(o, SupplierOrderRequested):
                self.requests[o.supplier_order_id] = o
                assert self.released or self.net() >= self.kept(), "sent before paid"  # 2

    def net(self) -> Decimal:
        return self.paid["EUR"] - self.refunded["EUR"]

    def live(self) -> list[SupplierOrderRequested]:
        return [r for k, r in sorted(self.requests.items()) if k not in self.dead]

    # --- set up ---------------------------------------------------------------------------

    @initialize(lines=st.lists(st.tuples(st.integers(1, 4), st.sampled_from([1, 99, 333, 1000])),
                               min_size=1, max_size=3),
                extras=st.tuples(st.sampled_from([0, 490, 7]), st.sampled_from([0, 700, 13]),
                                 st.sampled_from([0, 1, 300])),
                stock=st.lists(st.integers(0, 6), min_size=3, max_size=3),
                split=st.booleans())
    def place(self, lines: list[tuple[int, int]], extras: tuple[int, int, int],
              stock: list[int], split: bool) -> None:
        for i, (_, _) in enumerate(lines):
            sku = f"SKU-{i}"
            state = alloc.SkuState(sku)
            for rank, supplier in enumerate(SUPPLIERS):
                state, _ = alloc.apply(state, SupplierOfferUpdated(
                    supplier_id=supplier, sku=sku, priority=rank, unit_cost=eur(100),
                    lead_time_days=1, acknowledge_sla_hours=2, dispatch_sla_hours=4,
                    active=True, allow_split=split or rank > 0, updated_at=T0), T0)
                state, _ = alloc.apply(state, StockLevelReported(
                    supplier_id=supplier, sku=sku, available=stock[rank], as_of=T0), T0)
            self.skus[sku] = state
        subtotal = sum(q * p for q, p in lines)
        shipping, tax, discount = extras
        self.placed = OrderPlaced(
            order_id=OID, shop_id="acme", customer_ref="Ada Lovelace <ada@example.com>",
            ship_to=Address(name="Ada", line1="1 Rd", city="Lyon", country="FR"),
            currency="EUR", placed_at=T0,
            lines=tuple(OrderLine(line_id=f"L{i}", sku=f"SKU-{i}", quantity=q,
                                  unit_price=eur(p)) for i, (q, p) in enumerate(lines)),
            shipping=eur(shipping) if shipping else None, tax=eur(tax) if tax else None,
            discount=eur(min(discount, subtotal)) if discount else None)
        self.step(self.placed)

    # --- the allocation agent ----------------------------------------------------------------

    @precondition(lambda self: bool(self.to_alloc))
    @rule()
    def allocation_applies_a_command(self) -> None:
        message = self.to_alloc.pop(0)
        sku = str(getattr(message, "sku"))  # noqa: B009
        when = self.order.clock or self.now
        self.skus[sku], events = alloc.apply(self.skus[sku], message, when)
        clock = self.skus[sku].clock or when
        self.to_order += [(e, clock) for e in events
                          if isinstance(e, LineAllocated | LineBackordered | LineReleased
                                        | BackorderDropped)]

    @precondition(lambda self: bool(self.to_order))
    @rule()
    def order_applies_a_decision(self) -> None:
        message, when = self.to_order.pop(0)
        self.step(message, when, "dropship/allocation")

    @rule(supplier=st.sampled_from(SUPPLIERS), units=st.integers(0, 5))
    def supplier_reports_stock(self, supplier: str, units: int) -> None:
        for sku in sorted(self.skus):
            self.to_alloc.append(StockLevelReported(supplier_id=supplier, sku=sku,
                                                    available=units, as_of=self.now))

    # --- the shop ------------------------------------------------------------------------------

    @rule(kind=st.sampled_from(["exact", "short", "excess", "foreign", "again"]))
    def shop_pays(self, kind: str) -> None:
        owed = self.kept() - self.net()
        if kind == "again" and self.refs:
            ref, amount = next(iter(self.refs.items()))
        else:
            self.n += 1
            ref = f"pay-{self.n}"
            cents = max(1, int(owed * 100))
            cents = {"exact": cents, "short": max(1, cents // 2), "excess": cents + 500,
                     "foreign": cents}.get(kind, cents)
            amount = Money(amount=Decimal(cents) / 100,
                           currency="USD" if kind == "foreign" else "EUR")
        new = ref not in self.refs
        if new:  # counted before the step: it may cover the order and send supplier orders
            self.refs[ref] = amount
            self.paid[amount.currency] += amount.amount
        self.step(PaymentConfirmed(order_id=OID, amount=amount, payment_ref=ref,
                                   paid_at=self.now))

    @rule()
    def shop_cancels_the_order(self) -> None:
        self.step(OrderCancelled(order_id=OID, reason="changed mind", cancelled_at=self.now))

    @rule(line=st.integers(0, 2), units=st.integers(1, 3))
    def shop_cancels_units(self, line: int, units: int) -> None:
        if line < len(self.placed.lines):
            self.step(OrderCancelled(order_id=OID, reason="too many", cancelled_at=self.now,
                                     lines=(LineQuantity(line_id=f"L{line}", quantity=units),)))

    @rule()
    def shop_confirms_delivery(self) -> None:
        self.step(DeliveryConfirmed(order_id=OID, confirmed_at=self.now))

    @rule(line=st.integers(0, 2), units=st.integers(1, 2),
          code=st.sampled_from(["changed_mind", "defective"]))
    def shop_asks_for_a_return(self, line: int, units: int, code: ReturnReason) -> None:
        if line < len(self.placed.lines):
            self.n += 1
            rma = f"rma-{self.n}"
            self.codes[rma] = code
            self.step(ReturnRequested(order_id=OID, rma_id=rma, reason="no", reason_code=code,
                                      lines=(LineQuantity(line_id=f"L{line}", quantity=units),),
                                      requested_at=self.now))

    # --- suppliers ------------------------------------------------------------------------------

    @precondition(lambda self: bool(self.live()))
    @rule(pick=st.integers(0, 9), accept=st.booleans())
    def supplier_answers(self, pick: int, accept: bool) -> None:
        r = self.live()[pick % len(self.live())]
        args = {"order_id": OID, "supplier_order_id": r.supplier_order_id,
                "supplier_id": r.supplier_id}
        self.step(SupplierOrderAccepted(**args, accepted_at=self.now) if accept else
                  SupplierOrderRejected(**args, reason="out_of_stock", rejected_at=self.now),
                  sender=f"supplier/{r.supplier_id}")

    @precondition(lambda self: bool(self.live()))
    @rule(pick=st.integers(0, 9), part=st.booleans())
    def supplier_ships(self, pick: int, part: bool) -> None:
        r = self.live()[pick % len(self.live())]
        self.n += 1
        ship = f"p{self.n}"
        lines = tuple(LineQuantity(line_id=ln.line_id, quantity=max(1, ln.quantity // 2)
                                   if part else ln.quantity) for ln in r.lines)
        out = self.step(ShipmentDispatched(
            order_id=OID, supplier_order_id=r.supplier_order_id, supplier_id=r.supplier_id,
            shipment_id=ship, lines=lines, carrier="DHL", tracking_number=f"T{self.n}",
            dispatched_at=self.now), sender=f"supplier/{r.supplier_id}")
        if not any(isinstance(o, Refused) for o in out):
            self.shipped_parcel(r, ship, lines)

    def shipped_parcel(self, r: SupplierOrderRequested, ship: str,
                       lines: tuple[LineQuantity, ...]) -> None:
        self.shipments.append((r.supplier_id, ship))
        self.parcels[ship] = lines
        for ln in lines:
            self.shipped[(r.supplier_id, ln.line_id)] += ln.quantity
            self.so_shipped[(r.supplier_order_id, ln.line_id)] += ln.quantity

    @precondition(lambda self: bool(self.dead))
    @rule(pick=st.integers(0, 9))
    def failed_over_supplier_ships_anyway(self, pick: int) -> None:
        """A supplier whose supplier order was cancelled (failover, cancellation,
        superseded) ships what it still had of it: accepted, reconciled."""
        dead = [r for k, r in sorted(self.requests.items()) if k in self.dead]
        r = dead[pick % len(dead)]
        lines = tuple(LineQuantity(line_id=ln.line_id, quantity=left) for ln in r.lines
                      if (left := ln.quantity - self.so_shipped[(r.supplier_order_id,
                                                                  ln.line_id)]) > 0)
        if not lines:
            return
        self.n += 1
        ship = f"p{self.n}"
        out = self.step(ShipmentDispatched(
            order_id=OID, supplier_order_id=r.supplier_order_id, supplier_id=r.supplier_id,
            shipment_id=ship, lines=lines, carrier="DHL", tracking_number=f"T{self.n}",
            dispatched_at=self.now), sender=f"supplier/{r.supplier_id}")
        assert not any(isinstance(o, Refused) for o in out), out
        self.shipped_parcel(r, ship, lines)

    def moving(self) -> list[tuple[str, str]]:
        return [(s, p) for s, p in self.shipments if p not in self.failed | self.delivered]

    @precondition(lambda self: bool(self.moving()))
    @rule(pick=st.integers(0, 9),
          exception=st.sampled_from(["lost", "damaged", "returned_to_sender"]))
    def carrier_fails(self, pick: int, exception: DeliveryException) -> None:
        supplier, ship = self.moving()[pick % len(self.moving())]
        out = self.step(ShipmentFailed(order_id=OID, supplier_id=supplier, shipment_id=ship,
                                       exception=exception, reported_at=self.now),
                        sender=f"supplier/{supplier}")
        if ship not in self.failed and not any(isinstance(o, Refused) for o in out):
            self.failed.add(ship)
            for ln in self.parcels[ship]:
                self.lost[ln.line_id] += ln.quantity

    @precondition(lambda self: bool(self.shipments))
    @rule(pick=st.integers(0, 9))
    def carrier_delivers(self, pick: int) -> None:
        supplier, ship = self.shipments[pick % len(self.shipments)]
        out = self.step(ShipmentDelivered(order_id=OID, supplier_id=supplier, shipment_id=ship,
                                          delivered_at=self.now), sender=f"supplier/{supplier}")
        if not any(isinstance(o, Refused) for o in out):
            self.delivered.add(ship)

    @precondition(lambda self: bool(self.returns))
    @rule(pick=st.integers(0, 9))
    def supplier_receives_a_return(self, pick: int) -> None:
        parts = [a for auths in self.returns.values() for a in auths]
        a = parts[pick % len(parts)]
        self.step(ReturnReceived(order_id=OID, rma_id=a.rma_id, supplier_id=a.supplier_id,
                                 lines=a.lines, condition="resellable", received_at=self.now),
                  sender=f"supplier/{a.supplier_id}")
        self.received.add((a.rma_id, a.supplier_id))

    # --- ops and the clock ------------------------------------------------------------------------

    @rule()
    def ops_release_the_payment(self) -> None:
        was, self.released = self.released, True  # it may send supplier orders at once
        out = self.step(ReleasePayment(order_id=OID, reason="ok", requested_at=self.now))
        self.released = was or not any(isinstance(o, Refused) for o in out)

    @rule(line=st.integers(0, 2))
    def ops_give_up_a_line(self, line: int) -> None:
        if line < len(self.placed.lines):
            units = self.placed.lines[line].quantity
            self.step(CancelOrder(order_id=OID, reason="give up", requested_at=self.now,
                                  lines=(LineQuantity(line_id=f"L{line}", quantity=units),)))

    @rule(line=st.integers(0, 2), supplier=st.sampled_from(SUPPLIERS))
    def ops_reroute_a_line(self, line: int, supplier: str) -> None:
        if line < len(self.placed.lines):
            self.step(RerouteLine(order_id=OID, line_id=f"L{line}", supplier_id=supplier,
                                  reason="phoned", requested_at=self.now))

    @precondition(lambda self: bool(self.returns))
    @rule(pick=st.integers(0, 9), refund=st.booleans())
    def ops_close_a_return(self, pick: int, refund: bool) -> None:
        rma = sorted(self.returns)[pick % len(self.returns)]
        out = self.step(CloseReturn(order_id=OID, rma_id=rma, refund=refund, reason="lost",
                                    requested_at=self.now))
        if not any(isinstance(o, Refused) for o in out):
            self.closed[rma] = refund

    @rule(lose=st.booleans())
    def everyone_does_their_part(self, lose: bool) -> None:
        """The common path, so that runs reach deliveries and returns: queues drained,
        the balance paid, every live supplier order accepted, shipped and delivered
        (``lose``: the first parcel not delivered yet is lost instead)."""
        self.drain()
        if self.kept() > self.net():
            self.shop_pays("exact")
            self.drain()
        for r in self.live():
            self.step(SupplierOrderAccepted(order_id=OID, supplier_order_id=r.supplier_order_id,
                                            supplier_id=r.supplier_id, accepted_at=self.now),
                      sender=f"supplier/{r.supplier_id}")
            if r in self.live():  # an answer after its deadline fails it over instead
                self.supplier_ships(self.live().index(r), part=False)
        if lose and self.moving():
            self.carrier_fails(0, "lost")
        for i in range(len(self.shipments)):
            self.carrier_delivers(i)
        self.drain()

    def drain(self) -> None:
        for _ in range(200):
            if self.to_alloc:
                self.allocation_applies_a_command()
            elif self.to_order:
                self.order_applies_a_decision()
            else:
                return

    @rule(minutes=st.sampled_from([1, 5, 20, 45, 61, 125, 400, 3000]))
    def time_passes(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)
        deadline = next_deadline(self.order, POLICY)
        while deadline is not None and deadline <= self.now:
            self.order, out, n = fire(self.order, deadline, POLICY)
            if n < 0:
                break
            self.applied = max(self.applied, deadline)
            self.take(out)
            following = next_deadline(self.order, POLICY)
            if following == deadline:
                break
            deadline = following

    # --- invariants ------------------------------------------------------------------------------

    def teardown(self) -> None:
        event(f"ended {status_of(self.order)}")
        event(f"refunds: {sorted(set(r for r in self.causes))}")
        event(f"parcels failed: {bool(self.failed)}, flagged: {self.order.flag is not None}")

    @invariant()
    def refunded_at_most_paid(self) -> None:  # 1
        for currency, amount in self.refunded.items():
            assert amount <= self.paid[currency], (currency, amount, self.paid)

    @invariant()
    def clock_never_behind(self) -> None:  # 3
        assert self.order.clock is None or self.order.clock >= self.applied

    @invariant()
    def shops_see_the_order(self) -> None:  # a snapshot is published on every change
        if self.snapshot is None or not self.order.placed:
            return
        skip = {"version", "previous_status", "changed_at", "reason"}  # a note is per step
        now = status_event(self.order, self.snapshot.changed_at)
        assert now.model_dump(exclude=skip) == self.snapshot.model_dump(exclude=skip)

    @precondition(lambda self: not self.to_alloc and not self.to_order)
    @invariant()
    def settled(self) -> None:  # 4 and 5, once nothing is in flight
        order = self.order
        for line in self.placed.lines:
            state = self.skus[line.sku].lines.get((OID, line.line_id))
            wanted = order.lines[line.line_id].wanted
            if state is not None:
                # units of failed parcels stay reserved (they left the supplier's stock)
                lost = self.lost[line.line_id]
                assert state.allocated + state.backordered <= wanted + lost, (state, wanted)
                if order.cancelled:  # nothing but units that were shipped
                    shipped = sum(n for (_, k), n in self.shipped.items() if k == line.line_id)
                    assert state.backordered == 0, state
                    assert state.allocated <= shipped, state
                out = order.lines[line.line_id].excluded - {state.pinned}  # failed over
                for supplier in out:  # nothing stays reserved there, unsent
                    held = sum(r.quantity for r in state.reservations
                               if r.supplier_id == supplier)
                    sent = sum(ln.quantity for r in self.live() if r.supplier_id == supplier
                               for ln in r.lines if ln.line_id == line.line_id)
                    assert held <= sent + self.shipped[(supplier, line.line_id)], (
                        supplier, state)
        if self.finished() and not self.released:
            assert self.net() == self.kept(), (self.net(), self.kept())
            for currency in set(self.paid) - {"EUR"}:
                assert self.refunded[currency] == self.paid[currency]

    def finished(self) -> bool:
        status = status_of(self.order)
        open_returns = any(r.open for r in self.order.returns.values())
        return not open_returns and (status == "cancelled" or (
            status in ("delivered", "partially_refunded", "refunded")
            and self.net() >= 0 and self.paid["EUR"] > 0))

    def kept(self) -> Decimal:
        """Paid for what the customer keeps, by the rule (own books: returns received or
        closed with a refund, units the status says were cancelled)."""
        book = Book.of(self.placed)
        index = {ln.line_id: i for i, ln in enumerate(self.placed.lines)}
        cancelled = [self.order.lines[ln.line_id].cancelled for ln in self.placed.lines]
        goods, shipping = list(cancelled), list(cancelled)
        for rma, auths in self.returns.items():
            for a in auths:
                if (rma, a.supplier_id) in self.received or self.closed.get(rma):
                    for ln in a.lines:
                        goods[index[ln.line_id]] += ln.quantity
                        if self.codes[rma] in SELLERS_FAULT:
                            shipping[index[ln.line_id]] += ln.quantity
        return Decimal(book.kept(goods, shipping)) / 100


OrderLife.TestCase.settings = settings(
    max_examples=int(os.environ.get("ORDER_LIFE_EXAMPLES", "60")),
    stateful_step_count=int(os.environ.get("ORDER_LIFE_STEPS", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_order_life = OrderLife.TestCase
