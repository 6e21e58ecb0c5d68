"""A simulated supplier: publishes its offers and stock, answers its supplier orders.

It keeps physical stock per sku and the units it has promised (accepted, not yet
dispatched). For each ``SupplierOrderRequested`` it, by the draws of
``rng_for(seed, supplier_order_id)``:
1. rejects it (``cannot_ship_to_country``) if it does not ship to the address;
2. stays silent (the acknowledge SLA runs out), or rejects it for another reason;
3. otherwise, 5-30 simulated minutes after it **receives** the request (well before
   its acknowledge deadline), accepts it if the stock not promised covers every
   line, else rejects it ``out_of_stock`` and reports stock;
4. dispatches it 0.5-6 hours later (a share after its dispatch deadline) with a
   carrier and tracking number, unless cancelled meanwhile; the carrier delivers
   it 2-12 hours later.
Returns it is authorised to take back arrive later and go back to stock if
resellable. Every few simulated hours it restocks some skus and reports stock.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta

from events.catalog import StockLevelReported, SupplierOfferUpdated
from events.fulfillment import ReturnAuthorized, SupplierOrderCancelled, SupplierOrderRequested
from events.orders import LineQuantity
from events.suppliers import (
    RejectReason,
    ReturnReceived,
    ShipmentDelivered,
    ShipmentDispatched,
    SupplierOrderAccepted,
    SupplierOrderRejected,
)
from events.types import Money
from simulator.messages import Later, Send, envelope
from simulator.world import CARRIERS, SupplierProfile, World, rng_for

REPORT_EVERY = timedelta(hours=6)

Plan = tuple[list[Send], list[Later]]


class Supplier:
    """One supplier of the world, reacting to what ``fulfillment.supplier-orders`` says."""

    def __init__(self, world: World, profile: SupplierProfile) -> None:
        self.world, self.profile = world, profile
        self.id, self.source = profile.supplier_id, f"supplier/{profile.supplier_id}"
        self.stock = {o.sku: o.initial_stock for o in profile.offers}
        self.promised: dict[str, Counter[str]] = {}  # supplier order id -> sku -> units
        self.cancelled: set[str] = set()
        self.line_skus: dict[tuple[str, str], str] = {}  # (order id, line id) -> sku
        self.reports = self.restocks = 0
        self.outcomes: Counter[str] = Counter()

    # --- what it publishes on its own ------------------------------------------------

    def opening(self, now: datetime) -> list[Send]:
        """Its offers and a first stock report per sku."""
        sends = [envelope(SupplierOfferUpdated(
            supplier_id=self.id, sku=o.sku, priority=o.priority,
            unit_cost=Money(amount=o.unit_cost, currency=o.currency),
            lead_time_days=o.lead_time_days, acknowledge_sla_hours=o.acknowledge_sla_hours,
            dispatch_sla_hours=o.dispatch_sla_hours, active=True, updated_at=now),
            f"{self.id}.offer.{o.sku}", self.source, now) for o in self.profile.offers]
        return sends + self._report(now, self.stock)

    def restock(self, now: datetime) -> Plan:
        """Every :data:`REPORT_EVERY`: restock some skus, report all, and plan the next."""
        self.restocks += 1
        rng = rng_for(self.world.seed, self.id, "restock", self.restocks)
        for sku in self.stock:
            if rng.random() < 0.3:
                self.stock[sku] += rng.randint(5, 40)
        return self._report(now, self.stock), [Later(now + REPORT_EVERY, self.restock)]

    def _report(self, now: datetime, skus: dict[str, int]) -> list[Send]:
        self.reports += 1
        return [envelope(StockLevelReported(supplier_id=self.id, sku=sku,
                                            available=max(0, self._free(sku)), as_of=now),
                         f"{self.id}.stock.{self.reports}.{sku}", self.source, now)
                for sku in skus]

    def _free(self, sku: str) -> int:
        return self.stock.get(sku, 0) - sum(p[sku] for p in self.promised.values())

    # --- reactions ---------------------------------------------------------------------

    def on_request(self, req: SupplierOrderRequested, received_at: datetime) -> list[Later]:
        """Steps 1-3 of the module docstring: when and how it will answer. The answer
        comes some time after ``received_at`` (the same seed, the same answers and
        delays, whenever the request arrives)."""
        for line in req.lines:
            self.line_skus[(req.order_id, line.line_id)] = line.sku
        rng = rng_for(self.world.seed, req.supplier_order_id)
        start = max(received_at, req.requested_at)
        answer_at = start + max(timedelta(0), min(timedelta(minutes=rng.uniform(5, 30)),
                                                  (req.acknowledge_by - start) * 0.4))
        draw, rel = rng.random(), self.profile.reliability
        shares = self.world.shares
        if req.ship_to.country not in self.profile.countries:
            return [Later(answer_at, lambda t: self._reject(
                req, t, "cannot_ship_to_country", f"we do not ship to {req.ship_to.country}"))]
        if draw < shares.silent * rel:
            self.outcomes["silent"] += 1
            return []
        if draw < (shares.silent + shares.reject) * rel:
            return [Later(answer_at, lambda t: self._reject(req, t, "other",
                                                             "warehouse closed for inventory"))]
        return [Later(answer_at, lambda t: self._accept(req, t, rng))]

    def _reject(self, req: SupplierOrderRequested, now: datetime, reason: RejectReason,
                detail: str) -> Plan:
        if req.supplier_order_id in self.cancelled:
            return [], []
        self.outcomes[f"rejected_{reason}"] += 1
        sends = [envelope(SupplierOrderRejected(
            order_id=req.order_id, supplier_order_id=req.supplier_order_id, supplier_id=self.id,
            reason=reason, detail=detail, rejected_at=now),
            f"{req.supplier_order_id}.rejected", self.source, now)]
        if reason == "out_of_stock":
            sends += self._report(now, {ln.sku: 0 for ln in req.lines})
        return sends, []

    def _accept(self, req: SupplierOrderRequested, now: datetime, rng: random.Random) -> Plan:
        if req.supplier_order_id in self.cancelled:
            return [], []
        need = Counter[str]()
        for line in req.lines:
            need[line.sku] += line.quantity
        if any(self._free(sku) < units for sku, units in need.items()):
            return self._reject(req, now, "out_of_stock", "sold elsewhere meanwhile")
        self.promised[req.supplier_order_id] = need
        self.outcomes["accepted"] += 1
        window = req.dispatch_by - now
        late = rng.random() < self.world.shares.late_dispatch * self.profile.reliability
        delay = (window + timedelta(hours=rng.uniform(1, 6)) if late
                 else min(timedelta(hours=rng.uniform(0.5, 6)), window * 0.6))
        accepted = envelope(SupplierOrderAccepted(
            order_id=req.order_id, supplier_order_id=req.supplier_order_id, supplier_id=self.id,
            accepted_at=now), f"{req.supplier_order_id}.accepted", self.source, now)
        return [accepted], [Later(now + delay,
                                  lambda t: self._dispatch(req, t, rng))]

    def _dispatch(self, req: SupplierOrderRequested, now: datetime, rng: random.Random) -> Plan:
        promised = self.promised.pop(req.supplier_order_id, None)
        if promised is None or req.supplier_order_id in self.cancelled:
            return [], []
        for sku, units in promised.items():
            self.stock[sku] -= units
        self.outcomes["dispatched"] += 1
        shipment_id = f"{req.supplier_order_id}.parcel"
        carrier = rng.choice(CARRIERS)
        sends = [envelope(ShipmentDispatched(
            order_id=req.order_id, supplier_order_id=req.supplier_order_id, supplier_id=self.id,
            shipment_id=shipment_id,
            lines=tuple(LineQuantity(line_id=ln.line_id, quantity=ln.quantity)
                        for ln in req.lines),
            carrier=carrier, tracking_number=f"{carrier[:3].upper()}{rng.randint(10**9, 10**10)}",
            dispatched_at=now), f"{shipment_id}.dispatched", self.source, now)]
        arrive = now + timedelta(hours=rng.uniform(2, 12))
        return sends, [Later(arrive, lambda t: ([envelope(ShipmentDelivered(
            order_id=req.order_id, supplier_id=self.id, shipment_id=shipment_id,
            delivered_at=t), f"{shipment_id}.delivered", self.source, t)], []))]

    def on_cancelled(self, msg: SupplierOrderCancelled) -> None:
        """Stop work on it: what was promised and not shipped is free again."""
        self.cancelled.add(msg.supplier_order_id)
        if self.promised.pop(msg.supplier_order_id, None) is not None:
            self.outcomes["cancelled_before_dispatch"] += 1

    def on_return(self, msg: ReturnAuthorized) -> list[Later]:
        rng = rng_for(self.world.seed, msg.rma_id, self.id)
        resellable = rng.random() < self.world.shares.resellable

        def receive(t: datetime) -> Plan:
            if resellable:
                for line in msg.lines:
                    sku = self.line_skus.get((msg.order_id, line.line_id))
                    if sku in self.stock:
                        self.stock[sku] += line.quantity
            self.outcomes["returns_received"] += 1
            return [envelope(ReturnReceived(
                order_id=msg.order_id, rma_id=msg.rma_id, supplier_id=self.id, lines=msg.lines,
                condition="resellable" if resellable else "not_resellable", received_at=t),
                f"{msg.rma_id}.{self.id}.received", self.source, t)], []

        return [Later(msg.authorized_at + timedelta(hours=rng.uniform(2, 24)), receive)]

