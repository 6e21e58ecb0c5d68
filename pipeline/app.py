"""The Faust app, built from settings (the one place its options are decided).

Faust is used for consuming, partition ownership, batching and its web server;
it never holds state of record (DESIGN.md, "Where state lives"). No Tables.
"""

from __future__ import annotations

from typing import Any

import faust

from events.topics import ALL_TOPICS
from pipeline.kafka import ssl_context
from pipeline.settings import Settings


def broker_credentials(settings: Settings) -> Any:
    """Faust credentials matching the Kafka security settings, or None."""
    ctx = ssl_context(settings)
    if settings.kafka_security_protocol.startswith("SASL"):
        assert settings.kafka_sasl_password is not None
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.get_secret_value(),
            ssl_context=ctx,
            mechanism=settings.kafka_sasl_mechanism,
        )
    if ctx is not None:
        return faust.SSLCredentials(ctx)
    return None


def create_app(settings: Settings) -> faust.App:
    """A Faust app for ``settings``; connects to nothing until a worker starts it.

    Options suited to the embedded broker (short session timeout, earliest
    offset reset) come from settings, so real Kafka gets its own values the same way.
    ``stream_wait_empty`` is off: on shutdown Faust would otherwise first work
    through every buffered event, which with a backlog delays SIGTERM without
    bound. Nothing is lost by not waiting: Postgres checkpoints decide what is
    applied, and the next start resumes from them.
    """
    return faust.App(
        settings.app_id,
        broker=settings.kafka_broker_url,
        broker_credentials=broker_credentials(settings),
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=settings.kafka_heartbeat_interval_s,
        consumer_auto_offset_reset=settings.kafka_auto_offset_reset,
        topic_partitions=settings.kafka_topic_partitions,
        topic_replication_factor=settings.kafka_replication_factor,
        topic_allow_declare=False,  # topics are created by pipeline.kafka.ensure_topics
        web_enabled=True,
        web_bind=settings.web_bind,
        web_host=settings.web_bind,
        web_port=settings.web_port,
        autodiscover=False,
        store="memory://",
        producer_acks=-1,
        stream_wait_empty=False,
    )


def raw_topic(app: faust.App, *names: str, partitions: int | None = None) -> Any:
    """A Faust topic over ``names`` whose keys and values stay raw bytes."""
    return app.topic(*names, key_type=bytes, value_type=bytes, partitions=partitions,
                     key_serializer="raw", value_serializer="raw")


def declare_topics(app: faust.App, settings: Settings) -> dict[str, Any]:
    """Every topic of DESIGN.md as a raw Faust topic, with the configured partitions.

    Agents subscribe to these (or to a multi-topic over several names); the
    topics themselves are created on the broker by ``pipeline.kafka.ensure_topics``.
    """
    return {name: raw_topic(app, name, partitions=settings.kafka_topic_partitions)
            for name in ALL_TOPICS}
