"""Writes read-model rows: one guarded upsert statement per read model.

Called by the projector (inside its batch transaction) and by the rebuild (on
the staging tables). Rows of one read model are written in the order given, as
one pipelined ``executemany``, so two rows of the same key in one batch apply
in turn. The merge rules (module docstring of :mod:`projections.tables`) make
every statement idempotent: writing the same rows again changes nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from functools import cache
from typing import Any

from sqlalchemy import ColumnElement, Table, case, func, literal_column, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.dialects.postgresql.dml import Insert
from sqlalchemy.ext.asyncio import AsyncConnection

from projections.rows import Contribution, Row
from projections.tables import ReadTables

#: Columns merged as "earliest wins" / "first report wins" / set union, per table.
EARLIEST = {
    "returns": ("requested_at", "authorized_at", "received_at", "refunded_at"),
    "supplier_orders": ("requested_at", "accepted_at", "rejected_at", "cancelled_at",
                        "dispatched_at"),
}
UNION = {"returns": ("authorized_by", "received_by")}
SNAPSHOTS = ("order_status", "order_lines", "supplier_stock")
#: Tables whose row is the newest update: (when, tie-breakers), compared as a tuple.
LATEST = ("shipments",)
#: Shipment states in the order a same-instant update supersedes another.
SHIPMENT_STATES = ("in_transit", "late", "delivered", "lost", "damaged", "returned_to_sender")
INSERT_ONLY = ("order_timeline", "refunds", "dead_letters")
MILESTONES = ("allocated_at", "dispatched_at", "delivered_at", "cancelled_at")


def _pk(table: Table) -> list[str]:
    return [c.name for c in table.primary_key.columns]


def _union(table: Table, col: str) -> ColumnElement[Any]:
    return literal_column(
        f"ARRAY(SELECT DISTINCT x FROM unnest({table.name}.{col} || excluded.{col}) AS x "
        "ORDER BY x)")


def _merged(table: Table, stmt: Insert) -> Insert:
    """Insert, or merge into the stored row column by column (commutative rules)."""
    earliest, union = EARLIEST.get(table.name, ()), UNION.get(table.name, ())
    keys = set(_pk(table))
    set_: dict[str, Any] = {}
    for col in table.columns:
        if col.name in keys or col.computed is not None:
            continue
        new = stmt.excluded[col.name]
        if col.name in earliest:
            set_[col.name] = func.least(col, new)
        elif col.name in union:
            set_[col.name] = _union(table, col.name)
        else:
            set_[col.name] = func.coalesce(col, new)
    return stmt.on_conflict_do_update(index_elements=_pk(table), set_=set_)


def _snapshot(table: Table, stmt: Insert) -> Insert:
    """Insert, or replace the stored row if this snapshot's version is higher."""
    ex = stmt.excluded
    set_: dict[str, Any] = {c.name: ex[c.name] for c in table.columns
                            if c.name not in _pk(table)}
    if table.name == "order_status":
        set_["status_since"] = case((table.c.status == ex.status, table.c.status_since),
                                    else_=ex.status_since)
        for col in MILESTONES:
            set_[col] = func.coalesce(table.c[col], ex[col])
    elif table.name == "order_lines":
        set_["backordered_since"] = case(
            (ex.backordered == 0, None),
            else_=func.coalesce(table.c.backordered_since, ex.backordered_since))
    return stmt.on_conflict_do_update(index_elements=_pk(table), set_=set_,
                                      where=table.c.version < ex.version)


def _rank(table: Any) -> ColumnElement[Any]:
    """(updated_at, state's rank, flagged) of a stored (``table``) or new (``excluded``)
    shipment: a total order, so the newest update wins whatever the arrival order."""
    states = ", ".join(f"'{s}'" for s in SHIPMENT_STATES)
    return tuple_(func.coalesce(table.updated_at, literal_column("'-infinity'::timestamptz")),
                  func.coalesce(func.array_position(literal_column(f"ARRAY[{states}]"),
                                                    table.state), 0),
                  table.flagged)


def _latest(table: Table, stmt: Insert) -> Insert:
    """Insert, or replace the stored row by a newer update (:func:`_rank`)."""
    ex = stmt.excluded
    set_: dict[str, Any] = {c.name: ex[c.name] for c in table.columns
                            if c.name not in _pk(table)}
    return stmt.on_conflict_do_update(index_elements=_pk(table), set_=set_,
                                      where=_rank(table.c) < _rank(ex))


@cache
def statement(table: Table) -> Insert:
    """The guarded upsert of ``table`` (built once per table object)."""
    stmt = insert(table)
    if table.name in SNAPSHOTS:
        return _snapshot(table, stmt)
    if table.name in LATEST:
        return _latest(table, stmt)
    if table.name in INSERT_ONLY:
        return stmt.on_conflict_do_nothing()
    return _merged(table, stmt)


async def write(conn: AsyncConnection, tables: ReadTables,
                contributions: Sequence[Contribution],
                only: Collection[str] | None = None) -> dict[str, int]:
    """Write rows (to the read models ``only`` if given), grouped per read model in a
    fixed table order; return the counts."""
    grouped: dict[str, list[Row]] = defaultdict(list)
    for name, row in contributions:
        if only is None or name in only:
            grouped[name].append(row)
    for name, table in tables.by_name().items():
        rows = grouped.get(name)
        if rows:
            await conn.execute(statement(table), rows)
    return {name: len(rows) for name, rows in grouped.items()}
