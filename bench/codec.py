"""Codec benchmark: our validating decode/encode against plain JSON parsing, same inputs.

    .venv/bin/python bench/codec.py [--events 20000] [--lines 3]

Baselines (no validation at all): stdlib ``json.loads`` / ``json.dumps`` of the
same bytes and dicts. Ours: ``events.codec.decode`` (parse + every contract
rule, typed result) and ``encode``. Prints events/s for each and our share of
the baseline's rate. Pure CPU, single core; no broker or database involved.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

from events.codec import decode, encode
from events.envelope import CloudEvent, wrap
from events.orders import OrderLine, OrderPlaced
from events.types import Address, Money


def make_events(n: int, lines: int) -> list[CloudEvent]:
    now = datetime(2026, 11, 22, tzinfo=UTC)
    addr = Address(name="Ada Lovelace", line1="1 Loop Road", city="Lyon", country="FR")
    return [
        wrap(OrderPlaced(
            order_id=f"o-{i}", shop_id="acme", customer_ref=f"c-{i % 977}", ship_to=addr,
            currency="EUR", placed_at=now,
            lines=tuple(OrderLine(line_id=f"L{j}", sku=f"SKU-{(i + j) % 500}", quantity=1 + j,
                                  unit_price=Money(amount=Decimal("12.50"), currency="EUR"))
                        for j in range(lines)),
        ), id=f"e-{i}", source="shop/acme", time=now)
        for i in range(n)
    ]


def rate(label: str, fn: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    fn()
    per_s = n / (time.perf_counter() - start)
    print(f"  {label:<42} {per_s:>12,.0f} events/s")
    return per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--lines", type=int, default=3, help="order lines per event")
    args = parser.parse_args()
    n = max(1, min(args.events, 1_000_000))
    events = make_events(n, args.lines)
    raws = [encode(e) for e in events]
    dicts = [json.loads(r) for r in raws]
    size = sum(map(len, raws)) / n
    gc.collect()
    gc.freeze()  # the inputs are long-lived: keep the collector from rescanning them
    print(f"{n} OrderPlaced events, {args.lines} lines each, {size:.0f} bytes on average")

    print("decode")
    base = rate("baseline: json.loads (no validation)", lambda: [json.loads(r) for r in raws], n)
    ours = rate("events.codec.decode (validated, typed)", lambda: [decode(r) for r in raws], n)
    print(f"  ratio ours/baseline: {ours / base:.2f}")

    print("encode")
    base = rate("baseline: json.dumps of dicts", lambda: [json.dumps(d).encode() for d in dicts], n)
    ours = rate("events.codec.encode (deterministic)", lambda: [encode(e) for e in events], n)
    print(f"  ratio ours/baseline: {ours / base:.2f}")


if __name__ == "__main__":
    main()
