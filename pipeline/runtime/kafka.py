"""Kafka wiring: client options from settings, topic creation, a producer factory.

Every aiokafka client of ours is built from :func:`client_options`, so the
security settings (TLS, SASL) apply everywhere. Nothing connects at import time.
"""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from events.topics import ALL_TOPICS
from pipeline.runtime.settings import Settings


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """A TLS context for SSL/SASL_SSL protocols, else None."""
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    ctx = ssl.create_default_context(
        cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    )
    if settings.kafka_ssl_certfile:
        ctx.load_cert_chain(
            str(settings.kafka_ssl_certfile),
            str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
        )
    return ctx


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments shared by every aiokafka client (servers + security)."""
    opts: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers.split(","),
        "security_protocol": settings.kafka_security_protocol,
    }
    ctx = ssl_context(settings)
    if ctx is not None:
        opts["ssl_context"] = ctx
    if settings.kafka_security_protocol.startswith("SASL"):
        assert settings.kafka_sasl_password is not None  # checked by Settings
        opts["sasl_mechanism"] = settings.kafka_sasl_mechanism
        opts["sasl_plain_username"] = settings.kafka_sasl_username
        opts["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return opts


def create_producer(settings: Settings, **extra: Any) -> AIOKafkaProducer:
    """A producer with acks=all and idempotence as the settings say (not started)."""
    return AIOKafkaProducer(
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
        **client_options(settings),
        **extra,
    )


async def ensure_topics(settings: Settings, topics: tuple[str, ...] = ALL_TOPICS) -> list[str]:
    """Create the missing topics with the configured partitions; return those created.

    Idempotent: topics that exist are left as they are (their partition count is
    not changed). Raises aiokafka's errors if the broker cannot be reached.
    """
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        created: list[str] = []
        for topic in missing:
            try:
                await admin.create_topics([NewTopic(
                    topic, settings.kafka_topic_partitions, settings.kafka_replication_factor
                )])
                created.append(topic)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        await admin.close()
