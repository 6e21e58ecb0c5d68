"""Read-model rows as rich tables or JSON: what ``dropship order/ops`` and the demo print.

Pure formatting over plain rows (dicts); it reads nothing itself.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from rich.console import RenderableType
from rich.table import Table

from events.fulfillment import Ledger


def plain(value: Any) -> Any:
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
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def cell(value: Any) -> str:
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


def table(title: str, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Table:
    grid = Table(title=title, title_justify="left")
    for col in columns:
        grid.add_column(col)
    for row in rows:
        grid.add_row(*(cell(row.get(c)) for c in columns))
    return grid


def order_parts(order_id: str, view: dict[str, Any], *,
                compact: bool = False) -> list[RenderableType]:
    """What ``dropship order show`` prints for one order's view (``queries.order_view``);
    ``compact`` keeps the timeline's time and summary only."""
    parts: list[RenderableType] = []
    o = view["order"] or {}
    cur = cell(o.get("currency"))
    parts.append(f"[bold]{order_id}[/] shop {cell(o.get('shop_id'))}: "
                 f"[bold]{cell(o.get('status'))}[/] since {cell(o.get('status_since'))}"
                 f"  total {cell(o.get('total'))} {cur}"
                 + ("  [bold red]LATE[/] (a shipment is past its delivery deadline)"
                    if o.get("late") else ""))
    parts.append(f"customer {cell(o.get('customer_ref'))}   ship to {address(o.get('ship_to'))}")
    parts.append(f"suppliers: {cell(o.get('suppliers'))}   tracking: "
                 f"{cell(o.get('tracking_numbers'))}   last reason: "
                 f"{cell(o.get('last_reason'))}")
    parts.append(table(f"money ({cur})", [o], LEDGER))
    parts.append(table("lines", view["lines"], (
        "line_id", "sku", "quantity", "cancelled", "allocations", "backordered", "shipped",
        "delivered", "returned", "reroutes", "value", "credited")))
    parts.append(table("supplier orders", view["supplier_orders"], (
        "supplier_order_id", "supplier_id", "units", "requested_at", "accepted_at",
        "rejected_at", "cancel_cause", "dispatched_at")))
    if view["shipments"]:
        parts.append(table("shipments", [{**s, "marks": marks(s)} for s in view["shipments"]], (
            "shipment_id", "supplier_id", "carrier", "tracking_number", "lines", "units",
            "state", "dispatched_at", "expected_by", "delivered_at", "marks")))
    if view["returns"]:
        parts.append(table("returns", view["returns"], (
            "rma_id", "state", "lines", "authorized_by", "received_by", "refunded_at")))
    if view.get("refunds"):
        parts.append(table("refunds", view["refunds"], (
            "issued_at", "cause", "amount", "currency", "rma_id", "payment_ref", "reason")))
    parts.append(table("timeline", view["timeline"], ("time", "summary") if compact
                       else ("time", "source", "summary", "refused")))
    return parts


#: The ledger columns ``order show`` prints, in the contract's reading order.
LEDGER = tuple(name for name in Ledger.model_fields if name != "currency")


def marks(shipment: dict[str, Any]) -> list[str]:
    """What ops must notice about a shipment: late, flagged (with its reason)."""
    out = ["late"] if shipment.get("late") else []
    if shipment.get("flagged"):
        out.append(f"flagged: {shipment['reason']}" if shipment.get("reason") else "flagged")
    return out


def address(value: dict[str, Any] | None) -> str:
    """A ship-to address on one line."""
    if not value:
        return "-"
    keys = ("name", "line1", "line2", "postal_code", "city", "region", "country")
    return ", ".join(str(value[k]) for k in keys if value.get(k))
