"""``dropship order``, ``dropship ops`` and ``dropship projections`` (entry point:
only ``pipeline.entry.cli`` imports this module).

Every command reads the read models (``projections.queries``) and prints rich
tables, or JSON with ``--json`` for scripts. An unknown order or dead letter is
one line on stderr and exit 1; an unreachable database is one line (through
``pipeline.entry.cli.main``), never a traceback.
"""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.entry.catchup import lag_rows
from pipeline.entry.cli_support import fail, with_engine
from pipeline.entry.publisher import check_lines, send_valid
from pipeline.entry.render import order_parts, plain, table
from pipeline.runtime.db import agent_engine
from pipeline.runtime.settings import load_settings
from projections import queries
from projections.rebuild import NAMES, count_events, rebuild

ops_app = typer.Typer(help="What ops ask (stuck orders, backorders, late shipments, "
                           "suppliers, dead letters, lag) and what they do (release a "
                           "payment, cancel, re-route, close a return: commands through "
                           "Kafka).", no_args_is_help=True)
order_app = typer.Typer(help="One order, as the read models show it.", no_args_is_help=True)
projections_app = typer.Typer(help="The read models in Postgres.", no_args_is_help=True)

out = Console()
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")]
LimitOpt = Annotated[int, typer.Option(help="At most this many rows", min=1)]


def _emit(as_json: bool, data: Any, render: Callable[[], None]) -> None:
    if as_json:
        sys.stdout.write(json.dumps(plain(data), indent=2) + "\n")
    else:
        render()


# --- order show ------------------------------------------------------------------

@order_app.command("show")
def order_show(order_id: str, as_json: JsonOpt = False) -> None:
    """Status, lines, suppliers, tracking and the timeline of one order."""
    view = with_engine(lambda e: queries.order_view(e, order_id))
    if view is None:
        waiting = with_engine(lambda e: queries.mentions(e, order_id))
        fail(f"order {order_id!r} is unknown to the read models"
             + (f" ({waiting} event(s) name it; none placed it validly)" if waiting else ""))

    def render() -> None:
        for part in order_parts(order_id, view):
            out.print(part)

    _emit(as_json, view, render)


# --- ops -----------------------------------------------------------------------------

@ops_app.command("stuck")
def ops_stuck(as_json: JsonOpt = False, limit: LimitOpt = 100) -> None:
    """Orders past a deadline, held for ops or with payment held: why, and for how long."""
    rows = with_engine(lambda e: queries.stuck(e, limit))
    _emit(as_json, rows, lambda: out.print(table(f"stuck orders ({len(rows)})", rows, (
        "order_id", "shop_id", "status", "problem", "reason", "since", "waiting"))))


@ops_app.command("backorders")
def ops_backorders(as_json: JsonOpt = False, limit: LimitOpt = 100) -> None:
    """Order lines waiting for stock, in the order they will be served: per sku, by
    their place in its queue (queued_at, then order id, line id)."""
    rows = with_engine(lambda e: queries.backorders(e, limit))
    _emit(as_json, rows, lambda: out.print(table(
        f"backorders ({len(rows)}), in the order they will be served: per sku by queued_at",
        rows, ("sku", "place", "order_id", "line_id", "quantity", "allocated", "backordered",
               "queued_at", "since", "waiting"))))


@ops_app.command("late")
def ops_late(as_json: JsonOpt = False, limit: LimitOpt = 100) -> None:
    """Shipments past their delivery deadline (by the pipeline's clock) and neither
    delivered nor failed, oldest deadline first."""
    rows = with_engine(lambda e: queries.late(e, limit))
    _emit(as_json, rows, lambda: out.print(table(f"late shipments ({len(rows)})", rows, (
        "order_id", "supplier_id", "carrier", "tracking_number", "lines", "state",
        "deliver_by", "days_late", "flagged"))))


@ops_app.command("suppliers")
def ops_suppliers(as_json: JsonOpt = False) -> None:
    """The supplier scorecard: answers and dispatch SLAs, then deliveries."""
    rows = with_engine(queries.scorecard)

    def render() -> None:
        out.print(table("supplier scorecard", rows, (
            "supplier_id", "requested", "accepted", "rejected", "acknowledge_sla_misses",
            "dispatch_sla_misses", "on_time_dispatch_rate", "mean_hours_to_dispatch",
            "failovers_away", "returns_rate")))
        out.print(table("supplier deliveries", rows, (
            "supplier_id", "shipments", "delivered", "on_time_delivery_rate",
            "mean_transit_days", "delivery_exceptions", "flagged_shipments")))

    _emit(as_json, rows, render)


@ops_app.command("dead-letters")
def ops_dead_letters(
    as_json: JsonOpt = False, limit: LimitOpt = 50,
    replay: Annotated[str | None, typer.Option(
        help="Re-publish this dead letter's message to its topic")] = None,
    file: Annotated[Path | None, typer.Option(
        help="With --replay: publish this fixed message (one CloudEvent JSON) instead")] = None,
) -> None:
    """Dead-lettered messages, newest first; or replay one (fixed) with --replay ID."""
    if replay is not None:
        _replay(replay, file)
        return
    rows = with_engine(lambda e: queries.dead_letters(e, limit))
    _emit(as_json, rows, lambda: out.print(table(f"dead letters ({len(rows)})", rows, (
        "id", "dead_lettered_at", "consumer", "source_topic", "source_offset", "original_key",
        "rule", "error"))))


def _replay(letter_id: str, file: Path | None) -> None:
    """Validate as ``dropship publish`` does, refuse what would be dropped or refused
    again, publish (original bytes, keyed by subject), record; one engine throughout."""
    settings = load_settings()
    fixed = None if file is None else (
        sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes())

    async def work(engine: AsyncEngine) -> tuple[str, str]:
        letter = await queries.dead_letter(engine, letter_id)
        if letter is None:
            fail(f"dead letter {letter_id!r} not found")
        if fixed is None and letter["truncated"]:
            fail("only the first 32 KiB of this message were kept; pass --file with the message")
        topic = letter["source_topic"]
        outcomes = check_lines([(fixed if fixed is not None else letter["payload"]).strip()],
                               topic)
        if not outcomes or outcomes[0].event is None:
            problem = outcomes[0].error if outcomes else "the message is empty"
            fail(f"the message is still invalid: {problem}; fix it and pass it with --file")
        event = outcomes[0].event
        async with agent_engine(settings, letter["consumer"], engine) as theirs:
            seen = await queries.already_applied(theirs, letter["consumer"], event.source,
                                                 event.id)
        if seen:
            fail(f"{letter['consumer']} has already seen event {event.source}/{event.id}; "
                 "give the fixed message a new id")
        await send_valid(settings, topic, outcomes)
        await queries.record_replay(engine, letter_id, event.id, topic, getpass.getuser())
        return event.id, topic

    event_id, topic = with_engine(work, settings)
    out.print(f"replayed {letter_id} as event {event_id} to {topic}")


@ops_app.command("lag")
def ops_lag(as_json: JsonOpt = False) -> None:
    """Per consumer and partition: checkpoint, last offset written, lag."""
    settings = load_settings()
    rows = with_engine(lambda engine: lag_rows(settings, engine), settings)
    data = [{"consumer": r.consumer, "topic": r.topic, "partition": r.partition,
             "checkpoint": r.checkpoint, "last_offset": r.last_offset, "lag": r.lag,
             "source": r.source} for r in rows]
    _emit(as_json, data, lambda: out.print(table("consumer lag", data, (
        "consumer", "topic", "partition", "checkpoint", "last_offset", "lag", "source"))))


# --- projections ---------------------------------------------------------------------

@projections_app.command("rebuild")
def projections_rebuild(
    names: Annotated[list[str] | None, typer.Argument(
        help=f"Read models to rebuild (default all): {', '.join(NAMES)}")] = None,
) -> None:
    """Rebuild read models from event_log into fresh tables and swap them in."""
    chosen = tuple(names or NAMES)
    unknown = sorted(set(chosen) - set(NAMES))
    if unknown:
        fail(f"unknown read model(s) {', '.join(unknown)}; choose from {', '.join(NAMES)}")

    async def work(engine: AsyncEngine) -> Any:
        total = await count_events(engine)
        with Progress(TextColumn("rebuilding"), BarColumn(), MofNCompleteColumn(),
                      TaskProgressColumn(), TextColumn("{task.fields[rate]} events/s"),
                      TimeRemainingColumn(), console=out) as bar:
            task = bar.add_task("rebuild", total=total, rate="-")

            def advance(n: int) -> None:
                bar.advance(task, n)
                speed = bar.tasks[task].speed
                bar.update(task, rate=f"{speed:,.0f}" if speed else "-")

            return await rebuild(engine, chosen, advance)

    result = with_engine(work, admin=True)  # creates, drops and moves tables
    out.print(f"rebuilt {', '.join(result.names)} from {result.events} events: " + ", ".join(
        f"{n} {rows} rows" for n, rows in result.rows.items()))
