"""SQLAlchemy Core tables of the runtime (checkpoints, outbox, event log).

These definitions are what the code queries; the Alembic migrations in
``pipeline/runtime/migrations`` are what creates them. A test compares the two, so they
cannot drift apart.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSON, JSONB, UUID

metadata = MetaData()

#: Tracking records: per (consumer, topic, partition), the last offset whose
#: effects are committed. Moves forward only (compare-and-set in
#: ``pipeline.runtime.checkpoints``); -1 means nothing applied yet.
checkpoints = Table(
    "checkpoints",
    metadata,
    Column("consumer", Text, nullable=False),
    Column("topic", Text, nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("consumer", "topic", "partition", name="checkpoints_pkey"),
    CheckConstraint('"offset" >= -1', name="checkpoints_offset_check"),
    CheckConstraint('"partition" >= 0', name="checkpoints_partition_check"),
)

#: Events an agent derived, written in the same transaction as its state and
#: checkpoint, published to Kafka after commit (and on start-up if left unsent).
outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("event_id", UUID(as_uuid=True), nullable=False, unique=True),
    Column("producer", Text, nullable=False),
    Column("topic", Text, nullable=False),
    Column("key", LargeBinary, nullable=False),
    Column("value", LargeBinary, nullable=False),
    Column("headers", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("published_at", DateTime(timezone=True), nullable=True),
    Index("outbox_unpublished_idx", "producer", "id",
          postgresql_where=text("published_at IS NULL")),
    #: retention deletes sent rows by age (pipeline.runtime.retention)
    Index("outbox_published_at_idx", "published_at",
          postgresql_where=text("published_at IS NOT NULL")),
)

#: Every input record the pipeline has seen, kept verbatim (Kafka retention is
#: finite; projections are rebuilt from here). One row per (topic, partition, offset).
event_log = Table(
    "event_log",
    metadata,
    Column("topic", Text, nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("event_id", Text, nullable=True),
    Column("event_type", Text, nullable=True),
    Column("subject", Text, nullable=True),
    Column("key", LargeBinary, nullable=True),
    Column("value", LargeBinary, nullable=False),
    Column("kafka_timestamp", DateTime(timezone=True), nullable=True),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("topic", "partition", "offset", name="event_log_pkey"),
    Index("event_log_event_id_idx", "event_id"),
    Index("event_log_subject_idx", "subject"),
    Index("event_log_recorded_at_idx", "recorded_at"),  # retention, by age
)

#: Event ids each consumer has applied, per CloudEvents (source, id): a
#: redelivered or re-published event is recognised and dropped.
processed_events = Table(
    "processed_events",
    metadata,
    Column("consumer", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    #: The order of application: a batch inserts its rows in the order it applies
    #: them, and one key's batches never overlap (one owner per partition, the
    #: processor's lock within a worker, the checkpoint's compare-and-set), so
    #: a checker can replay an agent's pure core in exactly this order (tests/chaos).
    Column("seq", BigInteger, Identity(), nullable=False),
    PrimaryKeyConstraint("consumer", "source", "event_id", name="processed_events_pkey"),
    Index("processed_events_processed_at_idx", "processed_at"),  # retention, by age
)

#: The allocation agent's state of record, the aggregate the pure core works on:
#: one document per sku (offers, stock budgets, queue counters; format 3) plus one
#: ``allocation_lines`` row per line (its reservations and backorder), so a batch
#: writes only the lines it changed. ``rev`` is a random stamp written with every
#: change: a worker that cached the state it wrote knows from it that nobody wrote since.
allocation_state = Table(
    "allocation_state",
    metadata,
    Column("sku", Text, primary_key=True),
    Column("state", JSONB, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("rev", BigInteger, nullable=True),
)

allocation_lines = Table(
    "allocation_lines",
    metadata,
    Column("sku", Text, primary_key=True),
    Column("order_id", Text, primary_key=True),
    Column("line_id", Text, primary_key=True),
    Column("line", JSONB, nullable=False),
)

#: The order agent's state of record: one document per order, with the next
#: deadline and the Kafka partition the order id maps to (timers fire per
#: owned partition). ``json``, not ``jsonb``: the order of keys (lines,
#: shipments in shipping order) is part of the state, and jsonb reorders keys.
order_state = Table(
    "order_state",
    metadata,
    Column("order_id", Text, primary_key=True),
    Column("partition", Integer, nullable=False),
    Column("state", JSON, nullable=False),
    Column("next_deadline", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("order_state_deadline_idx", "partition", "next_deadline",
          postgresql_where=text("next_deadline IS NOT NULL")),
)
