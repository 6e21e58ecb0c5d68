"""The application role ``dropship_app``: what the worker (and the ops commands) may do.

The worker connects as this role (``DROPSHIP_DATABASE_URL``); migrations and
admin commands connect as the owner of the schema objects
(``DROPSHIP_DATABASE_ADMIN_URL``). The role gets, in this database:

- CONNECT, USAGE on the schemas ``public`` and ``read`` (never ``read_rebuild``);
- per table, only the statements the code runs (``GRANTS`` below): SELECT and
  INSERT everywhere it writes, UPDATE where it updates or locks rows
  (``FOR UPDATE``, ``ON CONFLICT DO UPDATE``), DELETE nowhere (no code deletes);
- SELECT on the ops views, USAGE on the sequences (ids of ``outbox`` and
  ``read.dead_letter_replays``);
- nothing on ``alembic_version``; no CREATE on any schema, no TEMPORARY, no
  TRUNCATE, no ownership; the role itself is NOSUPERUSER NOCREATEDB NOCREATEROLE.

Tables created later by the owner in ``public`` or ``read`` get SELECT, INSERT,
UPDATE by default (``ALTER DEFAULT PRIVILEGES``); a migration that needs less or
more says so. ``dropship projections rebuild`` re-grants the read-model
privileges after its swap (the new tables are created in ``read_rebuild``).

The role is created without a password if the cluster has none (roles are
cluster-wide): whoever deploys sets one (``dropship dev up`` does; in
docker-compose the Postgres init script does), so this migration never sees a secret.
It also revokes CREATE on ``public`` and TEMPORARY on the database from PUBLIC
(PostgreSQL < 15 grants them to everyone), which ``dropship_ops`` loses as well.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels = None
depends_on = None

APP_ROLE = "dropship_app"

#: table -> privileges, as of this revision (a later change is a new migration).
GRANTS = {
    "public.checkpoints": "SELECT, INSERT, UPDATE",
    "public.outbox": "SELECT, INSERT, UPDATE",
    "public.event_log": "SELECT, INSERT",
    "public.processed_events": "SELECT, INSERT",
    "public.allocation_state": "SELECT, INSERT, UPDATE",
    "public.order_state": "SELECT, INSERT, UPDATE",
    "read.order_status": "SELECT, INSERT, UPDATE",
    "read.order_lines": "SELECT, INSERT, UPDATE",
    "read.shipments": "SELECT, INSERT, UPDATE",
    "read.returns": "SELECT, INSERT, UPDATE",
    "read.supplier_orders": "SELECT, INSERT, UPDATE",
    "read.supplier_stock": "SELECT, INSERT, UPDATE",
    "read.order_timeline": "SELECT, INSERT",
    "read.dead_letters": "SELECT, INSERT, UPDATE",
    "read.dead_letter_replays": "SELECT, INSERT",
    "read.stuck_orders": "SELECT",
    "read.backorders": "SELECT",
    "read.supplier_scorecard": "SELECT",
}
SCHEMAS = ("public", "read")
DEFAULT_TABLE_PRIVILEGES = "SELECT, INSERT, UPDATE"


def upgrade() -> None:
    op.execute(f"""
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
        CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
            NOBYPASSRLS;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$""")
    op.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    op.execute("""
DO $$ BEGIN
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO dropship_app', current_database());
END $$""")
    for schema in SCHEMAS:
        op.execute(f"GRANT USAGE ON SCHEMA {schema} TO {APP_ROLE}")
        op.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO {APP_ROLE}")
        op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} "
                   f"GRANT {DEFAULT_TABLE_PRIVILEGES} ON TABLES TO {APP_ROLE}")
        op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} "
                   f"GRANT USAGE ON SEQUENCES TO {APP_ROLE}")
    for table, privileges in GRANTS.items():
        op.execute(f"GRANT {privileges} ON {table} TO {APP_ROLE}")


def downgrade() -> None:
    for schema in SCHEMAS:
        op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} "
                   f"REVOKE {DEFAULT_TABLE_PRIVILEGES} ON TABLES FROM {APP_ROLE}")
        op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} "
                   f"REVOKE USAGE ON SEQUENCES FROM {APP_ROLE}")
        op.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {APP_ROLE}")
        op.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema} FROM {APP_ROLE}")
        op.execute(f"REVOKE USAGE ON SCHEMA {schema} FROM {APP_ROLE}")
    op.execute("""
DO $$ BEGIN
    EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM dropship_app', current_database());
END $$""")
    # CREATE on public and TEMPORARY stay revoked from PUBLIC (PostgreSQL 15's default),
    # and the role stays: other databases of the cluster may use it.
