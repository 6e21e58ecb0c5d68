"""``dropship order``, ``dropship ops`` and ``dropship projections`` (entry point:
only ``pipeline.cli`` imports this module).

Every command reads the read models (``projections.queries``) and prints rich
tables, or JSON with ``--json`` for scripts. An unknown order or dead letter is
one line on stderr and exit 1; an unreachable database is one line (through
``pipeline.cli.main``), never a traceback.
"""

from __future__ import annotations

import asyncio
import base64
import getpass
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

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
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from agents import allocation, orders
from pipeline.db import create_engine
from pipeline.lag import Lag, broker_ends, lag_report, logged_ends
from pipeline.publisher import check_lines, send_valid
from pipeline.settings import Settings, load_settings
from projections import projector, queries
from projections.rebuild import NAMES, count_events, rebuild

ops_app = typer.Typer(help="What ops ask: stuck orders, backorders, suppliers, dead letters, "
                           "lag.", no_args_is_help=True)
order_app = typer.Typer(help="One order, as the read models show it.", no_args_is_help=True)
projections_app = typer.Typer(help="The read models in Postgres.", no_args_is_help=True)

out = Console()
err = Console(stderr=True, highlight=False, soft_wrap=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")]
LimitOpt = Annotated[int, typer.Option(help="At most this many rows", min=1)]
T = TypeVar("T")
CONSUMERS = {projector.CONSUMER: projector.TOPICS, allocation.CONSUMER: allocation.TOPICS,
             orders.CONSUMER: orders.TOPICS}


def fail(message: str) -> NoReturn:
    err.print(f"error: {message}", markup=False)
    raise typer.Exit(1)


def _with_engine(work: Callable[[AsyncEngine], Awaitable[T]],
                 settings: Settings | None = None) -> T:
    async def run() -> T:
        engine = create_engine(settings or load_settings())
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _plain(value: Any) -> Any:
    """A JSON-ready value."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return round(value.total_seconds(), 3)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, timedelta):
        hours = value.total_seconds() / 3600
        return f"{hours:.1f} h" if abs(hours) < 48 else f"{hours / 24:.1f} d"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items()) or "-"
    return str(value)


def _table(title: str, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Table:
    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    return table


def _emit(as_json: bool, data: Any, render: Callable[[], None]) -> None:
    if as_json:
        sys.stdout.write(json.dumps(_plain(data), indent=2) + "\n")
    else:
        render()


# --- order show ------------------------------------------------------------------

@order_app.command("show")
def order_show(order_id: str, as_json: JsonOpt = False) -> None:
    """Status, lines, suppliers, tracking and the timeline of one order."""
    view = _with_engine(lambda e: queries.order_view(e, order_id))
    if view is None:
        fail(f"order {order_id!r} is unknown to the read models")

    def render() -> None:
        o = view["order"] or {}
        out.print(f"[bold]{order_id}[/] shop {_cell(o.get('shop_id'))}: "
                  f"[bold]{_cell(o.get('status'))}[/] since {_cell(o.get('status_since'))}"
                  f"  total {_cell(o.get('total'))} {_cell(o.get('currency'))}")
        out.print(f"suppliers: {_cell(o.get('suppliers'))}   tracking: "
                  f"{_cell(o.get('tracking_numbers'))}   last reason: "
                  f"{_cell(o.get('last_reason'))}")
        out.print(_table("lines", view["lines"], (
            "line_id", "sku", "quantity", "allocations", "backordered", "shipped", "delivered",
            "returned", "reroutes")))
        out.print(_table("supplier orders", view["supplier_orders"], (
            "supplier_order_id", "supplier_id", "units", "requested_at", "accepted_at",
            "rejected_at", "cancel_cause", "dispatched_at")))
        if view["shipments"]:
            out.print(_table("shipments", view["shipments"], (
                "shipment_id", "supplier_id", "carrier", "tracking_number", "units",
                "dispatched_at", "delivered_at")))
        if view["returns"]:
            out.print(_table("returns", view["returns"], (
                "rma_id", "state", "authorized_by", "refund_amount", "refund_currency")))
        out.print(_table("timeline", view["timeline"], ("time", "source", "summary",
                                                        "refused")))

    _emit(as_json, view, render)


# --- ops -----------------------------------------------------------------------------

@ops_app.command("stuck")
def ops_stuck(as_json: JsonOpt = False, limit: LimitOpt = 100) -> None:
    """Orders past a deadline, held for ops or with payment held: why, and for how long."""
    rows = _with_engine(lambda e: queries.stuck(e, limit))
    _emit(as_json, rows, lambda: out.print(_table(f"stuck orders ({len(rows)})", rows, (
        "order_id", "shop_id", "status", "problem", "reason", "since", "waiting"))))


@ops_app.command("backorders")
def ops_backorders(as_json: JsonOpt = False, limit: LimitOpt = 100) -> None:
    """Order lines waiting for stock, oldest first."""
    rows = _with_engine(lambda e: queries.backorders(e, limit))
    _emit(as_json, rows, lambda: out.print(_table(f"backorders ({len(rows)})", rows, (
        "order_id", "line_id", "sku", "quantity", "allocated", "backordered", "since",
        "waiting"))))


@ops_app.command("suppliers")
def ops_suppliers(as_json: JsonOpt = False) -> None:
    """The supplier scorecard."""
    rows = _with_engine(queries.scorecard)
    _emit(as_json, rows, lambda: out.print(_table("supplier scorecard", rows, (
        "supplier_id", "requested", "accepted", "rejected", "acknowledge_sla_misses",
        "dispatch_sla_misses", "on_time_dispatch_rate", "mean_hours_to_dispatch",
        "failovers_away", "returns_rate"))))


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
    rows = _with_engine(lambda e: queries.dead_letters(e, limit))
    _emit(as_json, rows, lambda: out.print(_table(f"dead letters ({len(rows)})", rows, (
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
        if await queries.already_applied(engine, letter["consumer"], event.source, event.id):
            fail(f"{letter['consumer']} has already seen event {event.source}/{event.id}; "
                 "give the fixed message a new id")
        await send_valid(settings, topic, outcomes)
        await queries.record_replay(engine, letter_id, event.id, topic, getpass.getuser())
        return event.id, topic

    event_id, topic = _with_engine(work, settings)
    out.print(f"replayed {letter_id} as event {event_id} to {topic}")


@ops_app.command("lag")
def ops_lag(as_json: JsonOpt = False) -> None:
    """Per consumer and partition: checkpoint, last offset written, lag."""
    settings = load_settings()

    async def work(engine: AsyncEngine) -> list[Lag]:
        every = {t for ts in CONSUMERS.values() for t in ts}
        ends = await broker_ends(settings, every)
        return await lag_report(engine, CONSUMERS, ends, await logged_ends(engine, every))

    rows = _with_engine(work, settings)
    data = [{"consumer": r.consumer, "topic": r.topic, "partition": r.partition,
             "checkpoint": r.checkpoint, "last_offset": r.last_offset, "lag": r.lag,
             "source": r.source} for r in rows]
    _emit(as_json, data, lambda: out.print(_table("consumer lag", data, (
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

    result = _with_engine(work)
    out.print(f"rebuilt {', '.join(result.names)} from {result.events} events: " + ", ".join(
        f"{n} {rows} rows" for n, rows in result.rows.items()))
