"""The simulated market without Kafka: seeded, faithful to its shares, honest suppliers."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from events.codec import DecodeError, decode
from events.fulfillment import SupplierOrderLine, SupplierOrderRequested
from events.orders import OrderPlaced, PaymentConfirmed
from events.types import Address
from simulator.messages import MALFORMED_KINDS, Later, Send, garble
from simulator.shops import Shop
from simulator.suppliers import Supplier
from simulator.world import Shares, make_world

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def _sends(plan: list[Later]) -> list[Send]:
    """Everything a plan sends, running each step at its time (and what it plans next)."""
    out: list[Send] = []
    todo = sorted(plan, key=lambda later: later.at)
    while todo:
        later = todo.pop(0)
        sends, more = later.act(later.at)
        out += sends
        todo = sorted([*todo, *more], key=lambda x: x.at)
    return out


def test_the_same_seed_gives_the_same_world_and_orders() -> None:
    def orders(seed: int) -> list[bytes]:
        world = make_world(seed, "p")
        shop = Shop(world, world.shops[0])
        return [s.value for n in range(50) for s in _sends(shop.place(n, T0))]

    assert orders(3) == orders(3)
    assert orders(3) != orders(4)


def test_each_sku_is_carried_by_one_to_four_suppliers_with_distinct_priorities() -> None:
    world = make_world(1, "p", suppliers=6, skus=200)
    offers: dict[str, list[int]] = {}
    for supplier in world.suppliers:
        for offer in supplier.offers:
            offers.setdefault(offer.sku, []).append(offer.priority)
    assert set(offers) == set(world.skus)
    assert {len(p) for p in offers.values()} == {1, 2, 3, 4}
    assert all(len(set(p)) == len(p) for p in offers.values())
    assert len({o.unit_cost for s in world.suppliers for o in s.offers}) > 50


def test_shops_behave_in_the_shares_asked_and_every_valid_message_decodes() -> None:
    shares = Shares(pay=0.8, cancel=0.1, malformed=0.05, duplicate=0.05, reorder=0.1,
                    pay_in_two=0, overpay=0, wrong_currency=0, cancel_units=0)
    world = make_world(5, "p", shares=shares)
    shop = Shop(world, world.shops[1])
    sends = [s for n in range(2000) for s in _sends(shop.place(n, T0))]
    types = Counter(s.type.split(".")[1] + "." + s.type.split(".")[2] for s in sends
                    if s.fault not in MALFORMED_KINDS)
    faults = Counter(s.fault for s in sends)
    assert types["order.placed"] == 2000 + faults["duplicate"]
    assert 0.76 < types["payment.confirmed"] / 2000 < 0.84
    assert 0.08 < types["order.cancelled"] / 2000 < 0.12
    assert 0.035 < sum(faults[k] for k in MALFORMED_KINDS) / 2000 < 0.065
    assert 0.035 < faults["duplicate"] / 2000 < 0.065
    for send in sends:
        if send.fault in MALFORMED_KINDS:
            with pytest.raises(DecodeError):
                decode(send.value, key=send.key, topic=send.topic)
        else:
            event = decode(send.value, key=send.key, topic=send.topic)
            assert event.id == send.event_id


def _paid(kind: str, n: int = 300) -> list[tuple[OrderPlaced, list[PaymentConfirmed]]]:
    """Orders of a shop paying only in one way (``kind``), with what it paid."""
    ways = {"pay_in_two": 0.0, "overpay": 0.0, "wrong_currency": 0.0, "coupon": 0.0}
    shares = Shares(pay=1.0, pay_late=0.0, reorder=0.0, duplicate=0.0, malformed=0.0,
                    cancel=0.0, **{**ways, kind: 1.0})
    world = make_world(4, "p", shares=shares)
    out = []
    for shop in (Shop(world, p) for p in world.shops):
        for i in range(n // len(world.shops)):
            events = [decode(s.value).data for s in _sends(shop.place(i, T0))]
            placed = next(e for e in events if isinstance(e, OrderPlaced))
            out.append((placed, [e for e in events if isinstance(e, PaymentConfirmed)]))
    return out


def test_checkouts_have_shipping_tax_and_coupons_and_payments_add_up() -> None:
    orders = _paid("coupon")
    assert all(o.discount is not None for o, _ in orders)  # every order used a coupon
    assert any(o.shipping for o, _ in orders)
    assert any(not o.shipping for o, _ in orders)
    assert {o.currency for o, _ in orders if o.tax} == {"USD"}  # the one shop adding tax
    for placed, pays in _paid("pay_in_two"):
        assert len(pays) == 2
        assert sum(p.amount.amount for p in pays) == placed.total().amount
    for placed, pays in _paid("overpay"):
        assert [p.amount.amount - placed.total().amount for p in pays] == [Decimal("1.00")]
    for placed, pays in _paid("wrong_currency"):
        assert [p.amount.currency == placed.currency for p in pays] == [False, True]


def test_a_supplier_answers_after_it_receives_the_request() -> None:
    world = make_world(9, "p", shares=Shares(silent=0.0, reject=0.0, late_dispatch=0.0))
    profile = next(s for s in world.suppliers if s.offers)
    supplier = Supplier(world, profile)
    late = T0 + timedelta(hours=1)  # requested at T0, received an hour later
    request = _request(1, profile.supplier_id, profile.offers[0].sku, 1,
                       sorted(profile.countries)[0])
    answer = _sends(supplier.on_request(request, late))[0]
    assert decode(answer.value).time >= late


def test_a_reordered_payment_is_sent_before_its_order() -> None:
    world = make_world(2, "p", shares=Shares(pay=1.0, pay_late=0.0, reorder=1.0))
    shop = Shop(world, world.shops[0])
    first, second = _sends(shop.place(0, T0))[:2]
    assert isinstance(decode(first.value).data, PaymentConfirmed)
    assert isinstance(decode(second.value).data, OrderPlaced)
    assert first.fault == "reorder"


@pytest.mark.parametrize("kind", MALFORMED_KINDS)
def test_each_kind_of_garbage_breaks_the_contract(kind: str) -> None:
    world = make_world(2, "p", shares=Shares(pay=0.0))
    placed = _sends(Shop(world, world.shops[0]).place(0, T0))[0]
    rng = random.Random(0)
    for _ in range(200):
        bad = garble(placed, rng)
        if bad.fault == kind:
            break
    assert bad.fault == kind
    assert bad.key == placed.key
    with pytest.raises(DecodeError):
        decode(bad.value, key=bad.key, topic=bad.topic)


def _request(n: int, supplier: str, sku: str, quantity: int, country: str = "FR"
             ) -> SupplierOrderRequested:
    return SupplierOrderRequested(
        supplier_order_id=f"so-{n}", supplier_id=supplier, order_id=f"o-{n}",
        ship_to=Address(name="A", line1="1 Road", city="Lyon", postal_code="69001",
                        country=country),
        lines=(SupplierOrderLine(line_id="L1", sku=sku, quantity=quantity),),
        acknowledge_by=T0 + timedelta(hours=4), dispatch_by=T0 + timedelta(hours=48),
        requested_at=T0)


def test_a_supplier_never_ships_more_than_it_has() -> None:
    world = make_world(9, "p", shares=Shares(silent=0.0, reject=0.0, late_dispatch=0.0))
    profile = next(s for s in world.suppliers if s.offers)
    supplier = Supplier(world, profile)
    sku = profile.offers[0].sku
    stock = supplier.stock[sku]
    country = sorted(profile.countries)[0]
    sends = [s for n in range(stock + 5)
             for s in _sends(supplier.on_request(_request(n, profile.supplier_id, sku, 1,
                                                          country), T0))]
    kinds = Counter(s.type.split(".")[-2] for s in sends)
    assert kinds["dispatched"] == stock  # one unit each, until the shelf is empty
    assert kinds["rejected"] == 5
    assert supplier.stock[sku] == 0
    rejected = [decode(s.value).data for s in sends if s.type.endswith("rejected.v1")]
    assert {r.reason for r in rejected} == {"out_of_stock"}  # type: ignore[attr-defined]


def test_a_supplier_refuses_addresses_it_does_not_ship_to() -> None:
    world = make_world(9, "p", shares=Shares(silent=0.0, reject=0.0))
    profile = next(s for s in world.suppliers if len(s.countries) < 8)
    abroad = next(c for c in ("FR", "DE", "ES", "IT", "NL", "BE", "GB", "US")
                  if c not in profile.countries)
    supplier = Supplier(world, profile)
    sends = _sends(supplier.on_request(_request(1, profile.supplier_id,
                                                profile.offers[0].sku, 1, abroad), T0))
    assert [decode(s.value).data.reason for s in sends  # type: ignore[attr-defined]
            if s.type.endswith("rejected.v1")] == ["cannot_ship_to_country"]


def test_shares_are_checked() -> None:
    assert Shares().with_overrides({"return": 0.5}).return_ == 0.5
    with pytest.raises(ValueError, match="unknown share 'pai'"):
        Shares().with_overrides({"pai": 0.5})
    with pytest.raises(ValueError, match="between 0 and 1"):
        Shares().with_overrides({"pay": 1.5})
