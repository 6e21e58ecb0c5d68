"""The simulated market without Kafka: seeded, faithful to its shares, honest suppliers."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from events.catalog import SupplierOfferUpdated
from events.codec import DecodeError, decode
from events.fulfillment import SupplierOrderCancelled, SupplierOrderLine, SupplierOrderRequested
from events.orders import OrderPlaced, PaymentConfirmed
from events.types import Address, Money
from simulator.carriers import parcel
from simulator.ledger import Books, Inventory, Parcel, Receipt
from simulator.messages import MALFORMED_KINDS, Later, Send, garble
from simulator.shops import Shop
from simulator.suppliers import MAX_RESTOCKS, REPORT_EVERY, Supplier
from simulator.world import COUNTRIES, Shares, make_world

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


def _supplier(seed: int = 9, **shares: float) -> Supplier:
    base = {"silent": 0.0, "reject": 0.0, "late_dispatch": 0.0, "late_delivery": 0.0,
            "delivery_failed": 0.0, **shares}
    world = make_world(seed, "p", shares=Shares(**base))
    return Supplier(world, next(s for s in world.suppliers if s.offers))


def _country(supplier: Supplier) -> str:
    return sorted(supplier.profile.countries)[0]


def _kinds(sends: list[Send]) -> Counter[str]:
    return Counter(s.type.split(".")[-2] for s in sends)


def test_a_supplier_never_ships_more_than_it_has() -> None:
    supplier = _supplier()
    sku = supplier.profile.offers[0].sku
    stock = supplier.inventory.on_hand[sku]
    sends = [s for n in range(stock + 5)
             for s in _sends(supplier.on_request(_request(n, supplier.id, sku, 1,
                                                          _country(supplier)), T0))]
    kinds = _kinds(sends)
    assert kinds["dispatched"] == kinds["delivered"] == stock  # one unit each, until empty
    assert kinds["rejected"] == 5
    assert kinds["reported"] == 0  # never a convenience report after rejecting
    assert supplier.inventory.on_hand[sku] == 0
    rejected = [decode(s.value).data for s in sends if s.type.endswith("rejected.v1")]
    assert {r.reason for r in rejected} == {"out_of_stock"}  # type: ignore[attr-defined]


def test_a_supplier_decides_on_receipt_and_stamps_the_acceptance_with_that_time() -> None:
    supplier = _supplier()
    sku = supplier.profile.offers[0].sku
    stock = supplier.inventory.on_hand[sku]
    received = T0 + timedelta(minutes=3)
    first = supplier.on_request(_request(1, supplier.id, sku, stock, _country(supplier)),
                                received)
    # the second arrives before the first's acceptance is published: the units are gone
    second = supplier.on_request(_request(2, supplier.id, sku, 1, _country(supplier)),
                                 received)
    assert supplier.inventory.free(sku) == 0
    accepted = decode(_sends(first)[0].value)
    assert accepted.type == "dropship.supplier_order.accepted.v1"
    assert accepted.data.accepted_at == received  # type: ignore[attr-defined]
    assert accepted.time > received  # published after a delay
    assert [decode(s.value).data.reason for s in _sends(second)] == [  # type: ignore[attr-defined]
        "out_of_stock"]
    books = supplier.books
    assert [(r.decision, r.lines) for r in books.receipts] == [
        ("accepted", ((sku, stock, stock),)), ("out_of_stock", ((sku, 1, 0),))]
    assert [o.shortfall for o in books.over_asks()] == [{sku: 1}]


def test_a_cancellation_gives_back_the_units_not_shipped() -> None:
    supplier = _supplier()
    sku = supplier.profile.offers[0].sku
    stock = supplier.inventory.on_hand[sku]
    first = _request(1, supplier.id, sku, stock, _country(supplier))
    supplier.on_request(first, T0)
    assert supplier.inventory.free(sku) == 0
    supplier.on_cancelled(SupplierOrderCancelled(
        supplier_order_id="so-1", supplier_id=supplier.id, order_id="o-1", reason="shop",
        cancelled_at=T0))
    assert supplier.inventory.free(sku) == stock == supplier.inventory.on_hand[sku]
    second = _sends(supplier.on_request(_request(2, supplier.id, sku, stock,
                                                 _country(supplier)), T0))
    assert _kinds(second)["accepted"] == 1


@pytest.mark.parametrize(("share", "shipped"), [(1.0, True), (0.0, False)])
def test_a_supplier_cancelled_for_its_dispatch_sla_may_ship_anyway(share: float,
                                                                   shipped: bool) -> None:
    supplier = _supplier(late_dispatch=1.0, ship_anyway=share)
    sku = supplier.profile.offers[0].sku
    plan = supplier.on_request(_request(1, supplier.id, sku, 1, _country(supplier)), T0)
    answer = plan[0].act(plan[0].at)
    assert _kinds(answer[0])["accepted"] == 1
    dispatch = answer[1][0]
    assert dispatch.at > T0 + timedelta(hours=48)  # after its dispatch deadline
    supplier.on_cancelled(SupplierOrderCancelled(
        supplier_order_id="so-1", supplier_id=supplier.id, order_id="o-1", reason="sla",
        cause="dispatch_sla_missed", cancelled_at=T0 + timedelta(hours=49)))
    sends = _sends([dispatch])
    assert (_kinds(sends)["dispatched"] == 1) is shipped
    assert [p.after_cancel for p in supplier.books.parcels] == ([True] if shipped else [])
    assert supplier.inventory.free(sku) == supplier.inventory.on_hand[sku]


def test_stock_reports_are_snapshots_of_free_units_published_after_a_lag() -> None:
    supplier = _supplier(sold_elsewhere=0.0)
    sku = supplier.profile.offers[0].sku
    supplier.on_request(_request(1, supplier.id, sku, 2, _country(supplier)), T0)
    free = {k: supplier.inventory.free(k) for k in supplier.inventory.on_hand}
    sends, plan = supplier.restock(T0)
    assert sends == []
    report_at = min(later.at for later in plan)
    assert T0 <= report_at <= T0 + supplier.world.report_lag
    restocked = {k: supplier.inventory.free(k) for k in supplier.inventory.on_hand}
    supplier.on_request(_request(2, supplier.id, sku, 1, _country(supplier)), T0)  # after it
    report = next(later for later in plan if later.at == report_at).act(report_at)[0]
    events = [decode(s.value) for s in report]
    assert {e.data.sku: e.data.available for e in events} == restocked  # type: ignore[attr-defined]
    assert all(e.data.as_of == T0 and e.time == report_at for e in events)  # type: ignore[attr-defined]
    assert restocked[sku] >= free[sku]  # restocks only add
    assert supplier.inventory.free(sku) == restocked[sku] - 1


def test_restocks_and_sales_elsewhere_are_bounded_and_free_never_negative() -> None:
    supplier = _supplier(sold_elsewhere=0.5)
    start = dict(supplier.inventory.on_hand)
    now = T0
    for _ in range(40):
        supplier.restock(now)
        now += REPORT_EVERY
    for sku, units in supplier.inventory.on_hand.items():
        assert 0 <= units <= start[sku] + MAX_RESTOCKS * 40
    sold = {k[1]: sum(n for _, n in v) for k, v in supplier.books.sales.items()}
    assert sum(sold.values()) > 0
    assert all(supplier.restocked[sku] <= MAX_RESTOCKS for sku in start)


def test_an_inventory_matches_an_independent_model_over_random_operations() -> None:
    rng = random.Random(4)
    inv = Inventory({"A": 10, "B": 3})
    shelf = {"A": 10, "B": 3}  # the model: plain dicts
    promised: dict[str, dict[str, int]] = {}
    for n in range(3000):
        op, so = rng.choice(("take", "cancel", "ship", "add", "sell")), f"so-{rng.randint(0, 30)}"
        sku = rng.choice("AB")
        if op == "take":
            need = Counter({sku: rng.randint(1, 4)})
            fits = so not in promised and shelf[sku] - sum(
                p.get(sku, 0) for p in promised.values()) >= need[sku]
            if fits:
                inv.take(so, need)
                promised[so] = dict(need)
            else:
                with pytest.raises(ValueError, match="cannot promise"):
                    inv.take(so, need)
        elif op == "cancel":
            assert inv.give_back(so) == (Counter(promised.pop(so)) if so in promised else None)
        elif op == "ship":
            for k, units in promised.pop(so, {}).items():
                shelf[k] -= units
            inv.ship(so)
        elif op == "add":
            inv.add(sku, n % 3)
            shelf[sku] += n % 3
        else:
            free = shelf[sku] - sum(p.get(sku, 0) for p in promised.values())
            assert inv.sell_elsewhere(sku, 2) == min(2, free)
            shelf[sku] -= min(2, free)
        for k in "AB":
            free = shelf[k] - sum(p.get(k, 0) for p in promised.values())
            assert inv.free(k) == free >= 0
            assert inv.on_hand[k] == shelf[k]


def _receipt(sku: str, asked: int, free: int, at: datetime) -> Receipt:
    return Receipt(supplier_id="s", supplier_order_id=f"so-{at:%H%M}", order_id="o",
                   country="FR", requested_at=at, received_at=at,
                   lines=((sku, asked, free),), decision="out_of_stock")


def test_the_books_explain_an_over_ask_by_report_lag_a_race_or_not_at_all() -> None:
    hour = timedelta(hours=1)
    books = Books(latency=timedelta(minutes=10))
    books.placed["o"] = T0 + 3 * hour
    books.report("s", "K", T0, T0, 5)              # as of T0, known by T0 + 10 min
    books.sold("s", "K", T0 + 2 * hour, 2)         # sold elsewhere after it
    books.report("s", "K", T0 + 5 * hour, T0 + 4 * hour, 3)  # counts the sale, from T0+5h
    lag = _receipt("K", 4, 2, T0 + 4 * hour)       # short 2, sent before the report
    race = _receipt("K", 4, 2, T0 + 6 * hour)      # the report came, after placement
    books.placed["o2"] = T0 + 6 * hour
    unexplained = _receipt("K", 4, 1, T0 + 6 * hour)  # short 3: more than sold
    books.receipts += [lag, race, unexplained]
    assert [(o.explanation, o.shortfall) for o in books.over_asks()] == [
        ("report_lag", {"K": 2}), ("race", {"K": 2}), ("unexplained", {"K": 3})]
    late = Receipt(**{**race.__dict__, "order_id": "o2"})  # placed after the report: no race
    assert Books(latency=books.latency, receipts=[late], reports=books.reports,
                 sales=books.sales, placed=books.placed).over_asks()[0].explanation \
        == "unexplained"


def test_offers_state_the_lanes_suppliers_really_use_in_several_currencies() -> None:
    for seed in range(6):
        world = make_world(seed, "p", suppliers=6, skus=80)
        for profile in world.suppliers:
            for offer in profile.offers:
                model = SupplierOfferUpdated(
                    supplier_id=offer.supplier_id, sku=offer.sku, priority=1,
                    unit_cost=Money(amount=offer.unit_cost, currency=offer.currency),
                    lead_time_days=1, acknowledge_sla_hours=2, dispatch_sla_hours=24,
                    active=True, destinations=offer.destinations, updated_at=T0)
                assert offer.currency == profile.currency
                for country in COUNTRIES:
                    route = model.route(country)
                    assert (route is None) is (country not in profile.countries)
                    if route is not None and profile.style != "none":
                        lane = profile.lanes[country]
                        assert route == (lane.shipping_cost, lane.transit_days)
        assert len({p.currency for p in world.suppliers}) == 3
        assert any(len(p.countries) < len(COUNTRIES) for p in world.suppliers)
    styles = {p.style for seed in range(20) for p in make_world(seed, "p").suppliers}
    assert styles == {"named", "star", "none"}


def _parcels(n: int, **shares: float) -> list[Parcel]:
    world = make_world(3, "p", shares=Shares(**shares))
    profile = world.suppliers[0]
    country = sorted(profile.countries)[0]
    return [parcel(world, profile, supplier_order_id=f"so-{i}", order_id="o",
                   shipment_id=f"so-{i}.parcel", country=country, dispatched_at=T0)
            for i in range(n)]


def test_carriers_deliver_by_the_deadline_mostly_and_a_small_share_late_or_failed() -> None:
    parcels = _parcels(4000, late_delivery=0.05, delivery_failed=0.03)
    fates = Counter(p.fate for p in parcels)
    assert 0.04 < fates["late"] / 4000 < 0.06
    assert 0.02 < sum(fates[e] for e in ("lost", "damaged", "returned_to_sender")) / 4000 < 0.04
    assert {f for f in fates if fates[f]} == {"on_time", "late", "lost", "damaged",
                                              "returned_to_sender"}
    for p in parcels:
        assert p.deliver_by - p.expected_by == timedelta(days=2)  # the default grace
        if p.fate == "on_time":
            assert p.dispatched_at <= p.ends_at <= p.deliver_by
        elif p.fate == "late":
            assert p.ends_at >= p.deliver_by + timedelta(hours=1)
    assert parcels == _parcels(4000, late_delivery=0.05, delivery_failed=0.03)  # seeded


def test_a_parcel_that_fails_is_reported_and_one_returned_to_sender_goes_back_on_the_shelf(
        ) -> None:
    supplier = _supplier(delivery_failed=1.0)
    sku = supplier.profile.offers[0].sku
    stock = supplier.inventory.on_hand[sku]
    sends = []
    for n in range(12):
        sends += _sends(supplier.on_request(_request(n, supplier.id, sku, 1,
                                                     _country(supplier)), T0))
    failed = [decode(s.value).data for s in sends if s.type.endswith("failed.v1")]
    assert len(failed) == 12 == len(supplier.books.ended)
    back = sum(f.exception == "returned_to_sender" for f in failed)  # type: ignore[attr-defined]
    assert supplier.inventory.on_hand[sku] == stock - 12 + back


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


def test_a_world_for_benchmarks_lets_every_supplier_serve_every_country() -> None:
    some = make_world(3, "w", suppliers=12)
    assert any(p.countries != frozenset(COUNTRIES) for p in some.suppliers)
    every = make_world(3, "w", suppliers=12, everywhere=True)
    assert all(p.countries == frozenset(COUNTRIES) for p in every.suppliers)
