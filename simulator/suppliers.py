"""A simulated supplier: publishes its offers and stock, answers its supplier orders.

It keeps a real inventory ledger (:class:`simulator.ledger.Inventory`: on hand,
promised to accepted supplier orders, free = on hand - promised). When it
**receives** a ``SupplierOrderRequested`` it decides at once, by the draws of
``rng_for(seed, supplier_order_id)``, and writes the receipt in the books with
the units it had free at that moment:
1. ``cannot_ship_to_country`` if it does not serve the address's country;
2. silent (the acknowledge SLA runs out), or a rejection for another reason;
3. otherwise it accepts if every line's units are free, taking them from free at
   that moment, else rejects ``out_of_stock``.
The answer is published 5-30 simulated minutes later (well before the acknowledge
deadline); an acceptance is stamped ``accepted_at`` = the decision time. It never
sends a stock report because it rejected. An accepted order is dispatched 0.5-6 h
later (a share after its dispatch deadline), with a carrier and tracking number,
unless cancelled meanwhile: a cancellation gives the units back, except that a
share of those cancelled for their dispatch SLA ship anyway. The carrier then
delivers, late or not, or fails (:mod:`simulator.carriers`). Every
:data:`REPORT_EVERY` it sells a few units elsewhere, restocks some skus (at most
:data:`MAX_RESTOCKS` times each), and snapshots its free stock, published after a
random lag with ``as_of`` = the snapshot's time. Returns it is authorised to take
back arrive later and go back on the shelf if resellable.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta

from events.catalog import StockLevelReported, SupplierOfferUpdated
from events.fulfillment import ReturnAuthorized, SupplierOrderCancelled, SupplierOrderRequested
from events.orders import LineQuantity
from events.suppliers import (
    DeliveryException,
    RejectReason,
    ReturnReceived,
    ShipmentDelivered,
    ShipmentDispatched,
    ShipmentFailed,
    SupplierOrderAccepted,
    SupplierOrderRejected,
)
from events.types import Money
from simulator.carriers import DETAILS, EXCEPTIONS, parcel
from simulator.ledger import Books, Decision, Inventory, Parcel, Receipt
from simulator.messages import Later, Send, envelope
from simulator.world import CARRIERS, SupplierProfile, World, rng_for

REPORT_EVERY = timedelta(hours=6)
#: Restocks per sku, at most (each of 5-40 units).
MAX_RESTOCKS = 5
RESTOCK_SHARE = 0.3

Plan = tuple[list[Send], list[Later]]
_EXCEPTION: dict[str, DeliveryException] = {e: e for e in EXCEPTIONS}
_REJECT: dict[str, RejectReason] = {"cannot_ship_to_country": "cannot_ship_to_country",
                                    "other": "other", "out_of_stock": "out_of_stock"}
_REASONS = {"cannot_ship_to_country": "we do not ship to {country}",
            "other": "warehouse closed for inventory",
            "out_of_stock": "not enough free stock"}


class Supplier:
    """One supplier of the world, reacting to what ``fulfillment.supplier-orders`` says."""

    def __init__(self, world: World, profile: SupplierProfile, books: Books | None = None) -> None:
        self.world, self.profile = world, profile
        self.books = books if books is not None else Books()
        self.id, self.source = profile.supplier_id, f"supplier/{profile.supplier_id}"
        self.inventory = Inventory({o.sku: o.initial_stock for o in profile.offers})
        self.cancelled: set[str] = set()
        self.anyway: set[str] = set()  # cancelled for their dispatch SLA, shipping anyway
        self.received: set[str] = set()
        self.line_skus: dict[tuple[str, str], str] = {}  # (order id, line id) -> sku
        self.restocked: Counter[str] = Counter()
        self.reports = self.restocks = 0
        self.outcomes: Counter[str] = Counter()

    # --- what it publishes on its own ------------------------------------------------

    def opening(self, now: datetime) -> list[Send]:
        """Its offers and a first stock report per sku (published at once)."""
        sends = [envelope(SupplierOfferUpdated(
            supplier_id=self.id, sku=o.sku, priority=o.priority,
            unit_cost=Money(amount=o.unit_cost, currency=o.currency),
            lead_time_days=o.lead_time_days, acknowledge_sla_hours=o.acknowledge_sla_hours,
            dispatch_sla_hours=o.dispatch_sla_hours, active=True,
            destinations=o.destinations, updated_at=now),
            f"{self.id}.offer.{o.sku}", self.source, now) for o in self.profile.offers]
        return sends + self._publish(self._snapshot(), now, now)

    def restock(self, now: datetime) -> Plan:
        """Every :data:`REPORT_EVERY`: sell a few units elsewhere, restock some skus,
        snapshot free stock (published after a lag), and plan the next round."""
        self.restocks += 1
        rng = rng_for(self.world.seed, self.id, "restock", self.restocks)
        for sku in sorted(self.inventory.on_hand):
            if rng.random() < self.world.shares.sold_elsewhere:
                sold = self.inventory.sell_elsewhere(sku, rng.randint(1, 5))
                self.books.sold(self.id, sku, now, sold)
            if self.restocked[sku] < MAX_RESTOCKS and rng.random() < RESTOCK_SHARE:
                self.restocked[sku] += 1
                self.inventory.add(sku, rng.randint(5, 40))
        snapshot = self._snapshot()
        lag = self.world.report_lag * rng.random()
        return [], [Later(now + lag, lambda t: (self._publish(snapshot, now, t), [])),
                    Later(now + REPORT_EVERY, self.restock)]

    def _snapshot(self) -> dict[str, int]:
        return {sku: max(0, self.inventory.free(sku)) for sku in sorted(self.inventory.on_hand)}

    def _publish(self, snapshot: dict[str, int], as_of: datetime, now: datetime) -> list[Send]:
        """The free units of ``snapshot`` (taken ``as_of``), published ``now``."""
        self.reports += 1
        for sku, free in snapshot.items():
            self.books.report(self.id, sku, now, as_of, free)
        return [envelope(StockLevelReported(supplier_id=self.id, sku=sku, available=free,
                                            as_of=as_of),
                         f"{self.id}.stock.{self.reports}.{sku}", self.source, now)
                for sku, free in snapshot.items()]

    # --- reactions ---------------------------------------------------------------------

    def on_request(self, req: SupplierOrderRequested, received_at: datetime) -> list[Later]:
        """Decide at once (module docstring, steps 1-3), answer later. The same seed
        gives the same draws and delays, whenever the request arrives. A request it
        already received is ignored."""
        if req.supplier_order_id in self.received:
            return []
        self.received.add(req.supplier_order_id)
        for line in req.lines:
            self.line_skus[(req.order_id, line.line_id)] = line.sku
        rng = rng_for(self.world.seed, req.supplier_order_id)
        decided_at = max(received_at, req.requested_at)
        answer_at = decided_at + max(timedelta(0), min(
            timedelta(minutes=rng.uniform(5, 30)), (req.acknowledge_by - decided_at) * 0.4))
        need = Counter[str]()
        for line in req.lines:
            need[line.sku] += line.quantity
        free = {sku: self.inventory.free(sku) for sku in need}
        decision = self._decide(req, rng.random(), need)
        if decision == "accepted":
            self.inventory.take(req.supplier_order_id, need)
        self.books.receipts.append(Receipt(
            supplier_id=self.id, supplier_order_id=req.supplier_order_id, order_id=req.order_id,
            country=req.ship_to.country, requested_at=req.requested_at, received_at=decided_at,
            lines=tuple((ln.sku, ln.quantity, free[ln.sku]) for ln in req.lines),
            decision=decision))
        self.outcomes[decision if decision in ("accepted", "silent")
                      else f"rejected_{decision}"] += 1
        if decision == "silent":
            return []
        if decision == "accepted":
            return [Later(answer_at, lambda t: self._accepted(req, decided_at, t, rng))]
        return [Later(answer_at, lambda t: self._rejected(req, _REJECT[decision], t))]

    def _decide(self, req: SupplierOrderRequested, draw: float, need: Counter[str]) -> Decision:
        shares, rel = self.world.shares, self.profile.reliability
        if req.ship_to.country not in self.profile.countries:
            return "cannot_ship_to_country"
        if draw < shares.silent * rel:
            return "silent"
        if draw < (shares.silent + shares.reject) * rel:
            return "other"
        return "accepted" if self.inventory.fits(need) else "out_of_stock"

    def _unanswered(self, req: SupplierOrderRequested) -> bool:
        """Cancelled between the decision and the answer: nothing is sent."""
        if req.supplier_order_id in self.cancelled:
            self.books.cancelled_unanswered += 1
            return True
        return False

    def _rejected(self, req: SupplierOrderRequested, reason: RejectReason,
                  now: datetime) -> Plan:
        if self._unanswered(req):
            return [], []
        return [envelope(SupplierOrderRejected(
            order_id=req.order_id, supplier_order_id=req.supplier_order_id, supplier_id=self.id,
            reason=reason, detail=_REASONS[reason].format(country=req.ship_to.country),
            rejected_at=now), f"{req.supplier_order_id}.rejected", self.source, now)], []

    def _accepted(self, req: SupplierOrderRequested, decided_at: datetime, now: datetime,
                  rng: random.Random) -> Plan:
        if self._unanswered(req):
            return [], []
        window = req.dispatch_by - decided_at
        late = rng.random() < self.world.shares.late_dispatch * self.profile.reliability
        delay = (window + timedelta(hours=rng.uniform(1, 6)) if late
                 else min(timedelta(hours=rng.uniform(0.5, 6)), window * 0.6))
        accepted = envelope(SupplierOrderAccepted(
            order_id=req.order_id, supplier_order_id=req.supplier_order_id, supplier_id=self.id,
            accepted_at=decided_at), f"{req.supplier_order_id}.accepted", self.source, now)
        return [accepted], [Later(max(now, decided_at + delay),
                                  lambda t: self._dispatch(req, t, rng))]

    def _dispatch(self, req: SupplierOrderRequested, now: datetime, rng: random.Random) -> Plan:
        so_id = req.supplier_order_id
        if so_id in self.cancelled and so_id not in self.anyway:
            return [], []
        units = self.inventory.ship(so_id)
        if units is None:
            return [], []
        self.outcomes["dispatched"] += 1
        shipment_id = f"{so_id}.parcel"
        carrier = rng.choice(CARRIERS)
        sends = [envelope(ShipmentDispatched(
            order_id=req.order_id, supplier_order_id=so_id, supplier_id=self.id,
            shipment_id=shipment_id,
            lines=tuple(LineQuantity(line_id=ln.line_id, quantity=ln.quantity)
                        for ln in req.lines),
            carrier=carrier, tracking_number=f"{carrier[:3].upper()}{rng.randint(10**9, 10**10)}",
            dispatched_at=now), f"{shipment_id}.dispatched", self.source, now)]
        fate = parcel(self.world, self.profile, supplier_order_id=so_id, order_id=req.order_id,
                      shipment_id=shipment_id, country=req.ship_to.country, dispatched_at=now,
                      after_cancel=so_id in self.anyway)
        self.books.parcels.append(fate)
        return sends, [Later(fate.ends_at, lambda t: self._carrier(fate, units, t))]

    def _carrier(self, fate: Parcel, units: Counter[str], now: datetime) -> Plan:
        """The parcel's end: delivered (on time or late), or a delivery exception (a
        parcel returned to sender goes back on the shelf)."""
        self.books.ended.add(fate.shipment_id)
        ids = {"order_id": fate.order_id, "supplier_id": self.id,
               "shipment_id": fate.shipment_id}
        if fate.fate in ("on_time", "late"):
            self.outcomes[f"delivered_{fate.fate}"] += 1
            return [envelope(ShipmentDelivered(**ids, delivered_at=now),
                             f"{fate.shipment_id}.delivered", self.source, now)], []
        self.outcomes[fate.fate] += 1
        if fate.fate == "returned_to_sender":
            for sku, n in units.items():
                self.inventory.add(sku, n)
        return [envelope(ShipmentFailed(**ids, exception=_EXCEPTION[fate.fate],
                                        detail=DETAILS[fate.fate], reported_at=now),
                         f"{fate.shipment_id}.failed", self.source, now)], []

    def on_cancelled(self, msg: SupplierOrderCancelled) -> None:
        """Stop work on it: what was promised and not shipped is free again; except that
        a share of those cancelled for their dispatch SLA ship anyway (as planned)."""
        so_id = msg.supplier_order_id
        self.cancelled.add(so_id)
        if (msg.cause == "dispatch_sla_missed" and so_id in self.inventory.promised
                and rng_for(self.world.seed, so_id, "anyway").random()
                < self.world.shares.ship_anyway):
            self.anyway.add(so_id)
            self.outcomes["shipping_anyway"] += 1
            return
        if self.inventory.give_back(so_id) is not None:
            self.outcomes["cancelled_before_dispatch"] += 1

    def on_return(self, msg: ReturnAuthorized) -> list[Later]:
        rng = rng_for(self.world.seed, msg.rma_id, self.id)
        resellable = rng.random() < self.world.shares.resellable

        def receive(t: datetime) -> Plan:
            if resellable:
                for line in msg.lines:
                    sku = self.line_skus.get((msg.order_id, line.line_id))
                    if sku is not None:
                        self.inventory.add(sku, line.quantity)
            self.outcomes["returns_received"] += 1
            return [envelope(ReturnReceived(
                order_id=msg.order_id, rma_id=msg.rma_id, supplier_id=self.id, lines=msg.lines,
                condition="resellable" if resellable else "not_resellable", received_at=t),
                f"{msg.rma_id}.{self.id}.received", self.source, t)], []

        return [Later(msg.authorized_at + timedelta(hours=rng.uniform(2, 24)), receive)]
