"""The Faust app is built from settings and connects to nothing while built."""

from __future__ import annotations

from events.topics import ALL_TOPICS, INPUT_TOPICS
from pipeline.app import create_app, declare_topics
from pipeline.settings import Settings


def test_app_options_come_from_settings() -> None:
    s = Settings(_env_file=None, app_id="unit-app", kafka_topic_partitions=7,
                 kafka_session_timeout_s=9.0, kafka_heartbeat_interval_s=2.0,
                 kafka_bootstrap_servers="127.0.0.1:1,127.0.0.1:2")
    app = create_app(s)
    assert app.conf.id == "unit-app"
    assert app.conf.web_bind == "127.0.0.1"
    assert app.conf.broker_session_timeout == 9.0
    assert app.conf.consumer_auto_offset_reset == "earliest"
    assert [str(u) for u in app.conf.broker] == ["kafka://127.0.0.1:1", "kafka://127.0.0.1:2"]
    topics = declare_topics(app, s)
    assert set(topics) == set(ALL_TOPICS)
    assert all(t.partitions == 7 for t in topics.values())
    assert set(INPUT_TOPICS) <= set(topics)


def test_worker_wiring_registers_the_agents_without_connecting() -> None:
    from pipeline.worker import build

    app = build(Settings(_env_file=None, app_id="unit-wiring",
                         kafka_bootstrap_servers="127.0.0.1:9",
                         database_url="postgresql+asyncpg://nobody@127.0.0.1:9/none"))
    names = {agent.name.rsplit(".", 1)[-1] for agent in app.agents.values()}
    assert {"projector", "allocation", "orders"} <= names


def test_shutdown_does_not_wait_for_buffered_events() -> None:
    """With a backlog, Faust's default (finish every buffered event on SIGTERM) kept a
    worker from stopping for over a minute in CI; checkpoints make waiting pointless."""
    app = create_app(Settings(_env_file=None, app_id="unit-shutdown"))
    assert app.conf.stream_wait_empty is False
