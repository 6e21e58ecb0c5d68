"""``dropship simulate``: the simulated market against a running pipeline (entry point).

Steps: 1. build the seeded world; 2. start the simulation (each shop and supplier
its own Kafka client); 3. place orders up to the count or duration, at the rate;
4. let shops and suppliers react for ``settle`` seconds; 5. stop, flush, and print
what was sent (by type and fault) and where the malformed messages went.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from rich.console import Console

from pipeline.runtime.settings import Settings
from simulator.run import Limits, SimClock, Simulation, Tally
from simulator.world import Shares, make_world


@dataclass(frozen=True)
class SimulateOptions:
    orders: int | None = 100
    duration_s: float | None = None
    rate: float = 10.0
    settle_s: float = 10.0
    speed: float = 1.0
    clock_file: Path | None = None
    seed: int = 7
    prefix: str | None = None
    shops: int = 3
    suppliers: int = 6
    skus: int = 40
    shares: dict[str, float] = field(default_factory=dict)
    record: Path | None = None


async def simulate(settings: Settings, options: SimulateOptions, console: Console) -> Tally:
    """Steps 1-5 of the module docstring."""
    prefix = options.prefix or f"s{options.seed}-{secrets.token_hex(2)}"
    world = make_world(options.seed, prefix, shops=options.shops, suppliers=options.suppliers,
                       skus=options.skus, shares=Shares().with_overrides(options.shares),
                       payment_window=timedelta(minutes=settings.payment_window_minutes))
    sim = Simulation(settings, world, SimClock(options.speed, file=options.clock_file),
                     record=options.record)
    console.print(f"run {prefix}: {len(world.shops)} shops, {len(world.suppliers)} suppliers, "
                  f"{len(world.skus)} skus (seed {options.seed})")
    await sim.start()
    try:
        t0 = time.monotonic()
        placed = await sim.place_orders(Limits(options.orders, options.duration_s, options.rate))
        took = time.monotonic() - t0
        console.print(f"placed {placed} orders in {took:.1f} s ({placed / max(took, 1e-3):.0f}/s)")
        await asyncio.sleep(options.settle_s)
    finally:
        tally = await sim.stop()
    console.print(f"sent {sum(tally.sent.values())} messages: " + ", ".join(
        f"{k.split('.')[1]}.{k.split('.')[2]} {v}" for k, v in sorted(tally.sent.items())))
    console.print(f"faults: {dict(tally.faults) or 'none'}; consumed {tally.received} records "
                  f"addressed to the shops and suppliers; {tally.unsent} planned for after "
                  "the end were not sent")
    for topic, partition, offset, kind in tally.malformed:
        console.print(f"  malformed ({kind}) at {topic}[{partition}]@{offset}", highlight=False)
    return tally


def run(settings: Settings, options: SimulateOptions, console: Console) -> Tally:
    return asyncio.run(simulate(settings, options, console))
