"""What a supplier's carrier does with a parcel once dispatched (pure, seeded).

:func:`parcel` decides, from ``rng_for(seed, supplier_order_id, "carrier")``, one
fate per shipment, relative to the deadline the pipeline computes for it
(``expected_by`` = dispatch + the transit days the offer states for the country,
or the pipeline's default transit when it states none; ``deliver_by`` =
``expected_by`` + the late-delivery grace):

- ``on_time`` (most): delivered after the lane's real transit days, at most
  ``deliver_by`` (some a little after ``expected_by``, within the grace);
- ``late`` (share ``late_delivery``): delivered 1 h to one grace after ``deliver_by``;
- ``lost`` / ``damaged`` / ``returned_to_sender`` (share ``delivery_failed``):
  reported as a ``ShipmentFailed`` at 30-130 % of the time to ``deliver_by`` (some
  after the parcel was already late).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import get_args

from events.suppliers import DeliveryException
from simulator.ledger import Fate, Parcel
from simulator.world import SupplierProfile, World, rng_for

EXCEPTIONS: tuple[DeliveryException, ...] = get_args(DeliveryException)
DETAILS = {"lost": "the carrier lost the parcel", "damaged": "damaged in transit",
           "returned_to_sender": "address not found, parcel back at the warehouse"}


def parcel(world: World, profile: SupplierProfile, *, supplier_order_id: str, order_id: str,
           shipment_id: str, country: str, dispatched_at: datetime,
           after_cancel: bool = False) -> Parcel:
    """The shipment's deadlines and fate (see the module docstring)."""
    rng = rng_for(world.seed, supplier_order_id, "carrier")
    stated = profile.stated_transit(country)
    expected = dispatched_at + (world.default_transit if stated is None
                                else timedelta(days=stated))
    grace = world.delivery_grace
    deliver_by = expected + grace
    shares, draw = world.shares, rng.random()
    fate: Fate
    if draw < shares.delivery_failed:
        fate = rng.choice(EXCEPTIONS)
        ends = dispatched_at + (deliver_by - dispatched_at) * rng.uniform(0.3, 1.3)
    elif draw < shares.delivery_failed + shares.late_delivery:
        fate = "late"
        ends = deliver_by + max(grace * rng.uniform(0.25, 1.0), timedelta(hours=1))
    else:
        fate = "on_time"
        travel = timedelta(days=profile.lanes[country].transit_days) * rng.uniform(0.5, 1.0)
        ends = min(dispatched_at + travel + grace * rng.uniform(0.1, 0.8),
                   deliver_by - timedelta(minutes=1))
    return Parcel(supplier_id=profile.supplier_id, supplier_order_id=supplier_order_id,
                  order_id=order_id, shipment_id=shipment_id, dispatched_at=dispatched_at,
                  expected_by=expected, deliver_by=deliver_by, fate=fate,
                  ends_at=max(ends, dispatched_at), after_cancel=after_cancel)
