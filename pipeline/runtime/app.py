"""The Faust app, built from settings (the one place its options are decided).

Faust is used for consuming, partition ownership, batching and its web server;
it never holds state of record (DESIGN.md, "Where state lives"). No Tables.

Faust offers no setting for the consumer's fetch wait (it passes
``fetch_max_wait_ms=1500`` to aiokafka itself), so :class:`DropshipApp` brings
``DROPSHIP_KAFKA_FETCH_MAX_WAIT_MS`` to it through three small subclasses of
Faust's aiokafka driver; nothing of Faust's is patched in place.
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TransportT

from events.topics import ALL_TOPICS
from pipeline.runtime.kafka import ssl_context
from pipeline.runtime.settings import Settings


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


class AIOKafkaConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's aiokafka consumer thread, whose consumer waits at most the app's
    :attr:`DropshipApp.fetch_max_wait_ms` for a fetch. (This class and the two
    below are named as Faust's, so that log lines keep Faust's labels.)"""

    def _create_consumer(self, loop: asyncio.AbstractEventLoop) -> Any:
        """Faust's ``AIOKafkaConsumer`` with ``fetch_max_wait_ms`` replaced.

        Called by the thread's ``on_start`` just before ``consumer.start()``;
        aiokafka builds its ``Fetcher`` in ``start()`` from the consumer's
        ``_fetch_max_wait_ms``, and every fetch request takes the Fetcher's,
        so the value set here is the one sent to the broker. Raises
        ``RuntimeError`` if aiokafka no longer has that attribute or the
        consumer has already started (the setting would be silently lost).
        """
        consumer = super()._create_consumer(loop)
        app = self.app
        assert isinstance(app, DropshipApp), "only DropshipApp creates this thread"
        if not hasattr(consumer, "_fetch_max_wait_ms") or consumer._fetcher is not None:
            raise RuntimeError(
                "this aiokafka version takes fetch_max_wait_ms differently; "
                "DROPSHIP_KAFKA_FETCH_MAX_WAIT_MS cannot reach it (pipeline/runtime/app.py)")
        consumer._fetch_max_wait_ms = app.fetch_max_wait_ms
        return consumer


class Consumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, running our :class:`AIOKafkaConsumerThread`."""

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return AIOKafkaConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    """Faust's aiokafka transport, whose consumers are our :class:`Consumer`."""

    Consumer = Consumer


class DropshipApp(faust.App):
    """A ``faust.App`` whose Kafka consumer waits at most ``fetch_max_wait_ms``
    milliseconds for a fetch (Faust's own is a fixed 1,500 ms).

    The value lives on the app, so apps with different values in one process
    each keep their own. The consumer's transport is always Faust's aiokafka
    one (:func:`create_app` gives ``kafka://`` URLs, which Faust maps to it
    too); the producer's is left to Faust.
    """

    def __init__(self, id: str, *, fetch_max_wait_ms: int, **options: Any) -> None:
        self.fetch_max_wait_ms = fetch_max_wait_ms
        super().__init__(id, **options)

    def _new_transport(self) -> TransportT:
        return Transport(self.conf.broker_consumer, self)


def create_app(settings: Settings) -> DropshipApp:
    """A Faust app for ``settings``; connects to nothing until a worker starts it.

    Options suited to the embedded broker (short session timeout, earliest
    offset reset) come from settings, so real Kafka gets its own values the same way.
    ``stream_wait_empty`` is off: on shutdown Faust would otherwise first work
    through every buffered event, which with a backlog delays SIGTERM without
    bound. Nothing is lost by not waiting: Postgres checkpoints decide what is
    applied, and the next start resumes from them. The consumer's fetch wait is
    ``settings.kafka_fetch_max_wait_ms`` (see :class:`DropshipApp`).
    """
    return DropshipApp(
        settings.app_id,
        datadir=str(settings.worker_data_dir / "{conf.name}-data"),
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        broker=settings.kafka_broker_url,
        broker_credentials=broker_credentials(settings),
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=settings.kafka_heartbeat_interval_s,
        consumer_auto_offset_reset=settings.kafka_auto_offset_reset,
        topic_partitions=settings.kafka_topic_partitions,
        topic_replication_factor=settings.kafka_replication_factor,
        topic_allow_declare=False,  # topics are created by pipeline.runtime.kafka.ensure_topics
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
    topics themselves are created on the broker by ``pipeline.runtime.kafka.ensure_topics``.
    """
    return {name: raw_topic(app, name, partitions=settings.kafka_topic_partitions)
            for name in ALL_TOPICS}
