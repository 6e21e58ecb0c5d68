"""Least privilege: the worker runs as ``dropship_app`` (migration 0006), which can do the
worker's work and nothing more; ``dropship_ops`` only reads ``read.*``.

Each test runs on a fresh, migrated database of the session's Postgres, where
``dropship_app`` signs in with the password ``dropship dev up`` set (scram-sha-256).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from events.topics import SHOP_ORDERS
from pipeline.devstack import Stack
from pipeline.devstack.processes import free_port
from pipeline.runtime.db import create_engine
from pipeline.runtime.kafka import create_producer, ensure_topics
from pipeline.runtime.settings import Settings
from projections.rebuild import rebuild
from tests.helpers import order_event, start_worker, stop_worker

pytestmark = pytest.mark.integration

APP_ROLE = "dropship_app"
#: What the role may do, table by table: exactly the grants of migrations 0006 to 0009.
EXPECTED = {
    "public.checkpoints": {"SELECT", "INSERT", "UPDATE"},
    "public.outbox": {"SELECT", "INSERT", "UPDATE"},
    "public.event_log": {"SELECT", "INSERT"},
    "public.processed_events": {"SELECT", "INSERT"},
    "public.allocation_state": {"SELECT", "INSERT", "UPDATE"},
    "public.allocation_lines": {"SELECT", "INSERT", "UPDATE", "DELETE"},
    "public.order_state": {"SELECT", "INSERT", "UPDATE"},
    "read.order_status": {"SELECT", "INSERT", "UPDATE"},
    "read.order_lines": {"SELECT", "INSERT", "UPDATE"},
    "read.shipments": {"SELECT", "INSERT", "UPDATE"},
    "read.returns": {"SELECT", "INSERT", "UPDATE"},
    "read.supplier_orders": {"SELECT", "INSERT", "UPDATE"},
    "read.supplier_stock": {"SELECT", "INSERT", "UPDATE"},
    "read.order_timeline": {"SELECT", "INSERT"},
    "read.dead_letters": {"SELECT", "INSERT", "UPDATE"},
    "read.dead_letter_replays": {"SELECT", "INSERT"},
    "read.refunds": {"SELECT", "INSERT"},
    "read.pipeline_clock": {"SELECT", "INSERT", "UPDATE"},
    "read.stuck_orders": {"SELECT"},
    "read.backorders": {"SELECT"},
    "read.supplier_scorecard": {"SELECT"},
    "read.late_shipments": {"SELECT"},
}
REFUSED = (
    "CREATE TABLE public.mine (x int)",
    "CREATE TABLE read.mine (x int)",
    "CREATE TEMP TABLE mine (x int)",
    "CREATE SCHEMA mine",
    "CREATE ROLE intruder LOGIN",
    "DROP TABLE checkpoints",
    "DROP TABLE read.order_status CASCADE",
    "TRUNCATE outbox",
    "TRUNCATE read.order_timeline",
    "ALTER TABLE order_state ADD COLUMN x int",
    "ALTER TABLE read.order_status OWNER TO dropship_app",
    "CREATE INDEX mine ON event_log (subject)",
    "INSERT INTO alembic_version VALUES ('9999')",
    "UPDATE alembic_version SET version_num = '0001'",
    "DELETE FROM alembic_version",
    "SELECT * FROM alembic_version",
    "DELETE FROM checkpoints",
    "DELETE FROM read.order_status",
    "UPDATE event_log SET subject = 'x'",
    "UPDATE read.order_timeline SET summary = 'x'",
    "SELECT * FROM read_rebuild.order_status",
    "GRANT SELECT ON alembic_version TO dropship_ops",
)


def _app_url(stack: Stack, database: str) -> str:
    return make_url(stack.app_database_url).set(database=database).render_as_string(
        hide_password=False)


@pytest.fixture
def db(fresh_database: Callable[[str], Settings]) -> Settings:
    """A fresh database migrated by its owner (the superuser)."""
    return fresh_database("leastpriv")


async def _connect(stack: Stack, db: Settings, user: str = APP_ROLE,
                   password: str | None = None) -> asyncpg.Connection:
    url = make_url(db.database_url)
    if user == APP_ROLE and password is None:
        password = stack.app_password
    return await asyncpg.connect(host=url.host, port=url.port, user=user, password=password,
                                 database=url.database, timeout=10)


async def _grants(engine: AsyncEngine) -> dict[str, set[str]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT table_schema || '.' || table_name, privilege_type "
            "FROM information_schema.role_table_grants WHERE grantee = :r"),
            {"r": APP_ROLE})).all()
    grants: dict[str, set[str]] = {}
    for table, privilege in rows:
        grants.setdefault(table, set()).add(privilege)
    return grants


async def test_role_has_exactly_the_workers_grants_and_owns_nothing(db: Settings) -> None:
    engine = create_engine(db)
    try:
        assert await _grants(engine) == EXPECTED
        async with engine.connect() as conn:
            role = (await conn.execute(text(
                "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, "
                "rolbypassrls FROM pg_roles WHERE rolname = :r"), {"r": APP_ROLE})).one()
            assert tuple(role) == (True, False, False, False, False, False)
            owned = await conn.scalar(text(
                "SELECT (SELECT count(*) FROM pg_class WHERE relowner = r.oid) "
                "     + (SELECT count(*) FROM pg_namespace WHERE nspowner = r.oid) "
                "FROM pg_roles r WHERE r.rolname = :r"), {"r": APP_ROLE})
            assert owned == 0
            for schema in ("public", "read", "read_rebuild"):
                create = await conn.scalar(text(
                    "SELECT has_schema_privilege(:r, :s, 'CREATE')"), {"r": APP_ROLE, "s": schema})
                assert create is False, schema
            usage = await conn.scalar(text(
                "SELECT has_schema_privilege(:r, 'read_rebuild', 'USAGE')"), {"r": APP_ROLE})
            assert usage is False
    finally:
        await engine.dispose()


async def test_ddl_and_writes_outside_its_tables_are_refused(stack: Stack, db: Settings) -> None:
    conn = await _connect(stack, db)
    try:
        for statement in REFUSED:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
        # and what it is given works (inside a transaction we roll back)
        tr = conn.transaction()
        await tr.start()
        await conn.execute("INSERT INTO checkpoints (consumer, topic, partition, \"offset\") "
                           "VALUES ('lp', 't', 0, 1)")
        await conn.execute("UPDATE checkpoints SET \"offset\" = 2 WHERE consumer = 'lp'")
        await conn.execute("INSERT INTO outbox (event_id, producer, topic, key, value) "
                           "VALUES (gen_random_uuid(), 'lp', 't', 'k', 'v')")
        await conn.execute("SELECT * FROM read.stuck_orders")
        await tr.rollback()
    finally:
        await conn.close()


async def test_the_password_is_required(stack: Stack, db: Settings) -> None:
    for password in ("wrong-password", ""):
        with pytest.raises(asyncpg.InvalidPasswordError):
            await _connect(stack, db, password=password)


async def test_ops_role_only_selects_the_read_models(stack: Stack, db: Settings) -> None:
    conn = await _connect(stack, db, user="dropship_ops")
    try:
        await conn.fetch("SELECT * FROM read.order_status LIMIT 1")
        await conn.fetch("SELECT * FROM read.supplier_scorecard LIMIT 1")
        for statement in ("SELECT * FROM checkpoints", "SELECT * FROM event_log",
                          "INSERT INTO read.dead_letter_replays (dead_letter_id, event_id, "
                          "topic, replayed_at, replayed_by) VALUES ('a','b','c',now(),'d')",
                          "CREATE TABLE public.mine (x int)", "CREATE TEMP TABLE mine (x int)",
                          "TRUNCATE read.order_status"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
    finally:
        await conn.close()


async def test_rebuild_by_the_owner_gives_the_role_the_same_grants(db: Settings) -> None:
    owner = create_engine(db, admin=True)
    try:
        await rebuild(owner)
        assert await _grants(owner) == EXPECTED
    finally:
        await owner.dispose()


async def _wait_until(engine: AsyncEngine, query: str, params: dict[str, str],
                      timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        async with engine.connect() as conn:
            if await conn.scalar(text(query), params):
                return
        await asyncio.sleep(0.5)
    raise AssertionError(f"not within {timeout_s}s: {query} {params}")


async def test_worker_as_the_app_role_applies_an_order(
    stack: Stack, db: Settings, migrated: Settings,
    cli_env: Callable[..., dict[str, str]], tmp_path: Path,
) -> None:
    app_url = _app_url(stack, make_url(db.database_url).database or "")
    log_path = tmp_path / "worker.log"
    await ensure_topics(migrated)
    proc = start_worker(cli_env(DROPSHIP_DATABASE_URL=app_url,
                                DROPSHIP_WEB_PORT=str(free_port())), log_path)
    owner = create_engine(db)
    try:
        order_id = f"lp-{uuid.uuid4().hex[:8]}"
        event = order_event(order_id)
        producer = create_producer(migrated)
        await producer.start()
        try:
            await producer.send_and_wait(SHOP_ORDERS, json.dumps(event).encode(),
                                         key=event["subject"].encode())
        finally:
            await producer.stop()
        found = {"o": order_id}
        await _wait_until(owner, "SELECT 1 FROM order_state WHERE order_id = :o", found, 90)
        await _wait_until(owner, "SELECT 1 FROM read.order_status WHERE order_id = :o", found, 90)
        await _wait_until(owner, "SELECT 1 FROM event_log WHERE subject = :o", found, 90)
        await _wait_until(owner, "SELECT 1 FROM checkpoints WHERE consumer = :o",
                          {"o": "orders"}, 90)
        await _wait_until(owner, "SELECT 1 FROM outbox WHERE producer = :o",
                          {"o": "orders"}, 90)
        assert stop_worker(proc, log_path) == 0
    finally:
        await owner.dispose()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    log = log_path.read_text(errors="replace")
    assert "permission denied" not in log.lower(), log[-3000:]
    assert "InsufficientPrivilege" not in log, log[-3000:]


def test_the_stack_gives_the_worker_the_app_role(stack: Stack) -> None:
    env = stack.env()
    assert make_url(env["DROPSHIP_DATABASE_URL"]).username == APP_ROLE
    assert make_url(stack.dev_env()["DROPSHIP_DATABASE_ADMIN_URL"]).username == "postgres"
    assert stack.app_password
    assert stack.app_password in env["DROPSHIP_DATABASE_URL"]
    assert stack.app_password not in repr(stack)
