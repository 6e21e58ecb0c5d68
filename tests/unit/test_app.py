"""The Faust app is built from settings and connects to nothing while built."""

from __future__ import annotations

from typing import cast

from events.topics import ALL_TOPICS, INPUT_TOPICS
from pipeline.runtime.app import create_app, declare_topics
from pipeline.runtime.settings import Settings


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
    from pipeline.entry.worker import build

    app = build(Settings(_env_file=None, app_id="unit-wiring",
                         kafka_bootstrap_servers="127.0.0.1:9",
                         database_url="postgresql+asyncpg://nobody@127.0.0.1:9/none"))
    names = {agent.name.rsplit(".", 1)[-1] for agent in app.agents.values()}
    assert {"projector", "allocation", "orders"} <= names


def test_workers_of_different_agents_never_share_a_consumer_group() -> None:
    """Faust assigns a group's partitions as if every member ran the same agents: a
    worker of a subset gets a group of its own, named by its agents in one order."""
    from pipeline.entry.worker import build, group_of

    s = Settings(_env_file=None, app_id="unit-groups", kafka_bootstrap_servers="127.0.0.1:9",
                 database_url="postgresql+asyncpg://nobody@127.0.0.1:9/none")
    assert group_of(s, ("projector", "allocation", "orders")) == "unit-groups"
    assert group_of(s, ("orders", "allocation")) == "unit-groups-allocation-orders"
    assert group_of(s, ("allocation", "orders")) == group_of(s, ("orders", "allocation"))
    assert len({group_of(s, (a,)) for a in ("projector", "allocation", "orders")}) == 3
    app = build(s, ("allocation",))
    assert app.conf.id == "unit-groups-allocation"
    assert {agent.name.rsplit(".", 1)[-1] for agent in app.agents.values()} == {"allocation"}


def test_shutdown_does_not_wait_for_buffered_events() -> None:
    """With a backlog, Faust's default (finish every buffered event on SIGTERM) kept a
    worker from stopping for over a minute in CI; checkpoints make waiting pointless."""
    app = create_app(Settings(_env_file=None, app_id="unit-shutdown"))
    assert app.conf.stream_wait_empty is False


async def test_each_apps_consumer_takes_its_own_fetch_wait() -> None:
    """Faust hard-codes 1,500 ms; the aiokafka consumer each app builds (not started,
    so nothing connects) carries that app's setting, two apps in one process apart."""
    import asyncio

    from faust.transport.drivers import aiokafka as faust_aiokafka

    apps = [create_app(Settings(_env_file=None, app_id=f"unit-fetch-{wait}",
                                kafka_bootstrap_servers="127.0.0.1:9",
                                kafka_fetch_max_wait_ms=wait))
            for wait in (37, 900)]
    consumers = [cast(faust_aiokafka.Consumer, app.consumer)._thread._create_consumer(
        asyncio.get_running_loop()) for app in apps]
    try:
        assert [c._fetch_max_wait_ms for c in consumers] == [37, 900]
        assert all(c._fetcher is None for c in consumers)  # start() builds it from the above
    finally:
        for c in consumers:
            await c.stop()
