"""``dropship ops release-payment | cancel | reroute | close-return``: ops move an order
through Kafka, never by writing tables (entry point: only ``pipeline.entry.ops_cli`` imports it).

Each command:
1. checks the order is known to the read models (else one line, exit 1);
2. builds the command (``events.ops``) as a CloudEvent from ``ops/<operator>`` (the
   operator defaults to the login name), stamped with the pipeline's clock, with a
   fresh id: the order agent applies it once, under its exactly-once machinery;
3. validates it with the one codec and publishes it on ``ops.commands`` keyed by order
   id (as ``dropship publish`` does), acknowledged before it prints where it went.
Whether the order agent accepted it shows in ``dropship order show`` (the timeline names
the operator) or, if refused, in ``dropship ops dead-letters``.
"""

from __future__ import annotations

import asyncio
import getpass
import re
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console

from events.base import Message
from events.codec import encode
from events.envelope import wrap
from events.ops import CancelOrder, CloseReturn, ReleasePayment, RerouteLine
from events.orders import LineQuantity
from events.topics import OPS_COMMANDS
from pipeline.entry.cli_support import fail, with_engine
from pipeline.entry.publisher import check_lines, send_valid
from pipeline.runtime import clock
from pipeline.runtime.settings import load_settings
from projections import queries

out = Console(soft_wrap=True)
Reason = Annotated[str, typer.Option("--reason", help="Why (shown in the order's timeline)")]
Operator = Annotated[str | None, typer.Option(
    help="Who acts (default: your login name); the command's source is ops/<operator>")]


def operator_of(name: str | None) -> str:
    """A CloudEvents-safe operator name (``ops/<name>``)."""
    raw = name or getpass.getuser() or "ops"
    safe = re.sub(r"[^A-Za-z0-9._:-]", "-", raw).strip("-._:")[:64]
    return safe or "ops"


def publish(command: Callable[[datetime], Message], order_id: str,
            operator: str | None) -> None:
    """Steps 1-3 of the module docstring; ``command`` builds the command at a time."""
    settings = load_settings()
    if with_engine(lambda e: queries.order_view(e, order_id), settings) is None:
        fail(f"order {order_id!r} is unknown to the read models")
    now = clock.now(settings)
    event = wrap(command(now), id=f"ops-{uuid.uuid4()}",
                 source=f"ops/{operator_of(operator)}", time=now)
    outcomes = check_lines([encode(event)], OPS_COMMANDS)
    if outcomes[0].error is not None:
        fail(f"the command is invalid: {outcomes[0].error}")
    sent = asyncio.run(send_valid(settings, OPS_COMMANDS, outcomes))[0]
    out.print(f"{event.type} for order {order_id} from {event.source} sent to "
              f"{OPS_COMMANDS}[{sent.partition}] @ {sent.offset} (event {event.id})")


def _units(lines: list[str]) -> tuple[LineQuantity, ...]:
    parsed = []
    for item in lines:
        line_id, sep, units = item.partition("=")
        if not sep or not units.isdigit() or int(units) < 1:
            fail(f"--line {item!r}: expected LINE=UNITS, e.g. --line L2=1")
        parsed.append(LineQuantity(line_id=line_id, quantity=int(units)))
    return tuple(parsed)


def register(app: typer.Typer) -> None:
    """Add the lever commands to ``dropship ops``."""

    @app.command("release-payment")
    def release_payment(order_id: str, reason: Reason, operator: Operator = None) -> None:
        """Accept a held (short) payment as payment in full; the rest is written off."""
        publish(lambda now: ReleasePayment(order_id=order_id, reason=reason, requested_at=now),
                order_id, operator)

    @app.command("cancel")
    def cancel(order_id: str, reason: Reason, operator: Operator = None,
               line: Annotated[list[str] | None, typer.Option(
                   help="LINE=UNITS to cancel (repeat); none: the whole order")] = None,
               ) -> None:
        """Cancel an order, or some units of some lines (giving up a held line), with a
        refund of what was paid for them."""
        units = _units(line or [])
        publish(lambda now: CancelOrder(order_id=order_id, lines=units, reason=reason,
                                        requested_at=now), order_id, operator)

    @app.command("reroute")
    def reroute(order_id: str, line_id: str, supplier_id: str, reason: Reason,
                operator: Operator = None) -> None:
        """Send every unshipped unit of a line to a named supplier."""
        publish(lambda now: RerouteLine(order_id=order_id, line_id=line_id,
                                        supplier_id=supplier_id, reason=reason,
                                        requested_at=now), order_id, operator)

    @app.command("close-return")
    def close_return(order_id: str, rma_id: str, reason: Reason,
                     refund: Annotated[bool, typer.Option(
                         "--refund/--no-refund",
                         help="Refund the units not received, or let the customer keep them")],
                     operator: Operator = None) -> None:
        """End a return whose goods did not (all) come back."""
        publish(lambda now: CloseReturn(order_id=order_id, rma_id=rma_id, refund=refund,
                                        reason=reason, requested_at=now), order_id, operator)
