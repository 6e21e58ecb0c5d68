"""The allocation benchmark's pure parts (bench/allocation_workload.py): the workload is
deterministic and exercises every kind of command, the reference check catches a
wrong decision and an illegal merge, and the tenths are measured right."""

from __future__ import annotations

import zlib
from collections import Counter

import pytest

from bench.allocation_workload import (
    Decisions,
    Position,
    Workload,
    generate,
    merge_problems,
    reference,
    tenths,
    verdict,
)
from events.allocation import AllocateLine, ReleaseLine
from events.codec import encode
from tests.unit.allocation_factories import RULES

PARTITIONS = 3


def small(seed: int = 7) -> Workload:
    return generate(seed, skus=6, suppliers=3, commands=300, rules=RULES)


def positions_of(workload: Workload) -> list[Position]:
    """Where a producer would put each event: a partition by key, offsets in order."""
    ends: Counter[tuple[str, int]] = Counter()
    out: list[Position] = []
    for event in workload.events:
        tp = (event.data.TOPIC, zlib.crc32(event.subject.encode()) % PARTITIONS)
        out.append((*tp, ends[tp]))
        ends[tp] += 1
    return out


def test_the_workload_is_deterministic_given_the_seed() -> None:
    one, again, other = small(), small(), small(seed=8)
    assert [encode(e) for e in one.events] == [encode(e) for e in again.events]
    assert one.stats == again.stats
    assert [encode(e) for e in one.events] != [encode(e) for e in other.events]


def test_the_workload_has_every_kind_of_command_and_outcome() -> None:
    workload = small()
    data = [e.data for e in workload.events]
    assert sum(isinstance(d, AllocateLine) for d in data) == 300
    assert workload.initial == 6 * 3 * 2  # an offer and a stock report per pair
    releases = [d for d in data if isinstance(d, ReleaseLine)]
    assert any(d.out_of_stock_at for d in releases)  # out-of-stock rejections
    assert any(d.supplier_id and not d.out_of_stock_at for d in releases)  # other rejections
    assert any(d.backorder_only for d in releases)
    assert any(d.supplier_id is None and not d.backorder_only for d in releases)  # cancels
    assert any(isinstance(d, AllocateLine) and d.excluded_suppliers for d in data)  # failovers
    stats = workload.stats
    assert all(stats[kind] for kind in ("CommitLine", "split", "LineBackordered"))
    assert stats["StockLevelReported"] > 6 * 3  # reports among the commands
    assert all(e.source == "dropship/orders" and e.sequence for e in workload.events
               if isinstance(e.data, AllocateLine | ReleaseLine))


def test_the_reference_agrees_with_itself_in_any_legal_merge() -> None:
    workload = small()
    positions = positions_of(workload)
    in_order = list(range(len(workload.events)))
    want, types = reference(workload.events, in_order, RULES)
    assert types["LineAllocated"] > 0
    assert verdict(workload.events, positions, in_order, want, RULES).agrees
    catalog_last = sorted(in_order, key=lambda i: positions[i][0] == "supplier.catalog")
    assert merge_problems(catalog_last, positions) == []  # another legal merge
    other, _ = reference(workload.events, catalog_last, RULES)
    assert verdict(workload.events, positions, catalog_last, other, RULES).agrees


def test_a_wrong_or_missing_decision_disagrees() -> None:
    workload = small()
    positions = positions_of(workload)
    order = list(range(len(workload.events)))
    want, _ = reference(workload.events, order, RULES)
    key = next(iter(want))
    tampered: Decisions = {**want, key: [*want[key][:-1], want[key][-1].replace(b"1", b"2")]}
    result = verdict(workload.events, positions, order, tampered, RULES)
    assert not result.agrees
    assert "decisions differ for 1 of" in result.line()
    missing = {k: v for k, v in want.items() if k != key}
    assert not verdict(workload.events, positions, order, missing, RULES).agrees


def test_an_illegal_merge_is_named() -> None:
    workload = small()
    positions = positions_of(workload)
    order = list(range(len(workload.events)))
    first_command = next(i for i, e in enumerate(workload.events)
                         if isinstance(e.data, AllocateLine))
    same_tp = next(i for i in order[first_command + 1:]
                   if positions[i][:2] == positions[first_command][:2])
    swapped = order.copy()
    swapped[first_command], swapped[same_tp] = swapped[same_tp], swapped[first_command]
    assert merge_problems(swapped, positions) == [
        "1 events applied before an earlier record of their partition"]
    problems = merge_problems([*order[:-1], order[0]], positions)
    assert any("more than once" in p for p in problems)
    assert any("never applied" in p for p in problems)


def test_tenths_interpolate_between_polls() -> None:
    # idle until t=1, then 100 commands/s for 5 s, then 50/s
    samples = [(0.0, 0), (0.5, 0), (1.0, 0)]
    samples += [(1.0 + t / 10, 10 * t) for t in range(1, 51)]
    samples += [(6.0 + t / 10, 500 + 5 * t) for t in range(1, 101)]
    result = tenths(samples, 1000)
    assert result.start == 1.0
    assert result.seconds == pytest.approx(15.0)
    assert result.ms_per_command[:5] == pytest.approx([10.0] * 5)
    assert result.ms_per_command[5:] == pytest.approx([20.0] * 5)
    assert result.growth == pytest.approx(2.0)
    with pytest.raises(ValueError, match="never reach"):
        tenths(samples[:10], 1000)
