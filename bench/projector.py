"""Projector benchmark: events/s applied to Postgres with checkpointing, against a raw
COPY of the same rows, in the same run, on the same database.

    .venv/bin/python bench/projector.py [--orders 2000] [--batch 500]

Uses the embedded stack of ``.dropship/`` (``dropship dev up``) if one runs, else
starts one in a temporary folder and stops it at the end. Works in a database of
its own, created and dropped here.

- **projector**: the records of ``--orders`` orders' lives (order core-generated,
  ~34 records per order across the projector's topics) through
  ``Processor(ProjectorHandler)`` in batches of ``--batch``: event_log insert,
  decode, guarded upserts of every read model, checkpoint compare-and-set, one
  transaction per batch.
- **raw COPY**: the very rows the projector derives from those records (event_log
  rows and read-model rows, already built), written with asyncpg's binary COPY
  into tables of the same columns without keys or indexes; no decoding, no merge,
  one transaction. The upper bound of what Postgres takes.

Prints both rates (records/s) and the projector's share of the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from events.codec import DecodeError, decode
from pipeline.devstack import down, load, up
from pipeline.runtime.db import create_engine
from pipeline.runtime.migrate import upgrade_sync
from pipeline.runtime.records import Record
from pipeline.runtime.settings import Settings, load_settings
from projections.archive import logged
from projections.projector import contributions
from projections.tables import read_tables
from tests.projection_story import project_all, world


def rows_of(records: list[Record]) -> dict[str, list[dict[str, Any]]]:
    """table -> rows, exactly what the projector derives (built before timing COPY)."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rec in records:
        row = logged(rec)
        out["event_log"].append({
            "topic": row.topic, "partition": row.partition, "offset": row.offset,
            "event_id": row.event_id, "event_type": row.event_type, "subject": row.subject,
            "key": row.key, "value": row.value, "kafka_timestamp": row.timestamp})
        try:
            event = decode(rec.value, key=rec.key, topic=rec.topic)
        except DecodeError:
            continue  # kept in event_log only, like the projector does
        for name, values in contributions(rec, event):
            out[name].append({k: json.dumps(v) if isinstance(v, dict) else v
                              for k, v in values.items()})
    return out


async def copy_baseline(dsn: dict[str, Any], rows: dict[str, list[dict[str, Any]]]) -> float:
    conn = await asyncpg.connect(**dsn)
    try:
        for name in rows:
            source = "public.event_log" if name == "event_log" else f"read.{name}"
            await conn.execute(f"CREATE TABLE bench_{name} (LIKE {source} INCLUDING DEFAULTS)")
        started = time.perf_counter()
        async with conn.transaction():
            for name, table_rows in rows.items():
                cols = list(table_rows[0])
                await conn.copy_records_to_table(
                    f"bench_{name}", columns=cols,
                    records=[tuple(r[c] for c in cols) for r in table_rows])
        return time.perf_counter() - started
    finally:
        await conn.close()


async def projector_run(settings: Settings, records: list[Record], batch: int) -> float:
    engine = create_engine(settings)
    try:
        started = time.perf_counter()
        await project_all(engine, records, batch=batch)
        return time.perf_counter() - started
    finally:
        await engine.dispose()


def _database(base: Settings) -> tuple[Settings, dict[str, Any], str]:
    url = make_url(base.admin_database_url)  # the owner: creates the database
    name = f"bench_{uuid.uuid4().hex[:8]}"
    admin = {"host": url.host, "port": url.port, "user": url.username,
             "database": url.database}

    async def create() -> None:
        conn = await asyncpg.connect(**admin)
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()

    asyncio.run(create())
    settings = base.model_copy(update={
        "database_url": url.set(database=name).render_as_string(hide_password=False),
        "database_admin_url": None})
    upgrade_sync(settings)
    return settings, {**admin, "database": name}, name


def _drop(admin: dict[str, Any], name: str) -> None:
    async def drop() -> None:
        conn = await asyncpg.connect(**{**admin, "database": "postgres"})
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.close()

    asyncio.run(drop())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    base = load_settings()
    temp = None
    if load(base.state_dir.resolve()) is None:
        temp = Path(tempfile.mkdtemp(prefix="dropship-bench-"))
        temp.chmod(0o755)
        stack, _ = up(temp, 0, 0)
        base = base.model_copy(update={"database_url": stack.database_url,
                                       "database_admin_url": None})
    try:
        settings, dsn, name = _database(base)
        try:
            records = world("bench", orders=args.orders).records
            rows = rows_of(records)
            copy_s = asyncio.run(copy_baseline(dsn, rows))
            proj_s = asyncio.run(projector_run(settings, records, args.batch))
        finally:
            _drop(dsn, name)
    finally:
        if temp is not None:
            down(temp)
            shutil.rmtree(temp, ignore_errors=True)
    n, written = len(records), sum(len(r) for r in rows.values())
    print(f"records: {n} ({args.orders} orders), rows written per run: {written} "
          f"in {len(rows)} tables; batch {args.batch}")
    print(f"{'raw COPY (baseline)':<28}{n / copy_s:>12,.0f} records/s  {copy_s:8.2f} s")
    print(f"{'projector (checkpointed)':<28}{n / proj_s:>12,.0f} records/s  {proj_s:8.2f} s")
    print(f"{'projector / COPY':<28}{copy_s / proj_s:>12.3f}")
    assert set(read_tables().by_name()) <= set(rows), "every read model was exercised"


if __name__ == "__main__":
    main()
