"""`dropship publish` against the embedded broker: valid files are sent keyed by
subject and read back; invalid files are refused line by line and nothing is sent."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from events.topics import SHOP_ORDERS
from pipeline.runtime.kafka import client_options, ensure_topics
from pipeline.runtime.settings import Settings
from tests.helpers import REPO, run_cli

pytestmark = pytest.mark.integration

EXAMPLES = REPO / "docs" / "examples"
SENT = re.compile(r"^line (\d+): \S+ id=(\S+) key=(\S+): sent to ([\w.-]+)\[(\d+)\] @ (\d+)$")


def _fresh(lines: list[str]) -> list[str]:
    """The example lines with ids and order ids unique to this test."""
    suffix = uuid.uuid4().hex[:8]
    out = []
    for line in lines:
        doc = json.loads(line)
        doc["id"] = f"{doc['id']}-{suffix}"
        doc["subject"] = doc["data"]["order_id"] = f"{doc['data']['order_id']}-{suffix}"
        out.append(json.dumps(doc))
    return out


async def _read_all(settings: Settings, topic: str) -> list[tuple[bytes, bytes]]:
    """Every (key, value) on ``topic``, read until the partitions stay quiet."""
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(settings.kafka_topic_partitions)]
        consumer.assign(parts)
        for tp in parts:
            consumer.seek(tp, 0)
        records: list[tuple[bytes, bytes]] = []
        quiet = 0
        while quiet < 2:
            batch = await consumer.getmany(timeout_ms=1000, max_records=1000)
            quiet = 0 if batch else quiet + 1
            records.extend((r.key, r.value) for recs in batch.values() for r in recs)
        return records
    finally:
        await consumer.stop()


async def test_a_valid_file_is_sent_keyed_by_subject_and_reads_back(
    settings: Settings, cli_env: Callable[..., dict[str, str]],
) -> None:
    await ensure_topics(settings)
    lines = _fresh((EXAMPLES / "shop-orders.jsonl").read_text().splitlines())
    result = run_cli("publish", "--topic", SHOP_ORDERS, "-", env=cli_env(),
                     stdin="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stdout + result.stderr
    sent = [SENT.match(line) for line in result.stdout.splitlines() if line.startswith("line ")]
    assert len(sent) == len(lines)
    assert f"{len(lines)} sent to {SHOP_ORDERS}" in result.stdout
    by_key: dict[bytes, list[bytes]] = {}
    for key, value in await _read_all(settings, SHOP_ORDERS):
        by_key.setdefault(key, []).append(value)
    for match, line in zip(sent, lines, strict=True):
        assert match is not None
        doc = json.loads(line)
        assert match.group(3) == doc["subject"]
        assert line.encode() in by_key[doc["subject"].encode()]  # key = subject, bytes intact


async def test_an_invalid_file_is_refused_per_line_and_nothing_is_sent(
    settings: Settings, cli_env: Callable[..., dict[str, str]],
) -> None:
    await ensure_topics(settings)
    lines = _fresh((EXAMPLES / "shop-orders.jsonl").read_text().splitlines())
    bad = json.loads(lines[1])
    bad["data"]["amount"]["amount"] = 44.9  # a float: refused
    lines[1] = json.dumps(bad)
    lines.append("{not json")
    result = run_cli("publish", "--topic", SHOP_ORDERS, "-", env=cli_env(),
                     stdin="\n".join(lines) + "\n")
    assert result.returncode == 1
    assert "line 2: refused: data.amount.amount: money_not_string" in result.stdout
    assert "line 6: refused: $: invalid_json" in result.stdout
    assert re.search(r"^line 1: .*: valid, not sent$", result.stdout, re.M)
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1
    assert errors[0].startswith("error: 2 of 6 lines refused, 0 sent")

    values = [value for _, value in await _read_all(settings, SHOP_ORDERS)]
    ids = [json.loads(line)["id"].encode() for line in lines if line.startswith("{\"")]
    assert len(ids) == 5
    # Other tests share the topic, and some of their records are not JSON: search bytes.
    assert not any(event_id in value for event_id in ids for value in values)


async def test_skip_invalid_sends_the_valid_lines_and_still_fails(
    settings: Settings, cli_env: Callable[..., dict[str, str]],
) -> None:
    await ensure_topics(settings)
    lines = _fresh((EXAMPLES / "shop-orders.jsonl").read_text().splitlines())[:2]
    bad = json.loads(lines[0])
    bad["id"] += "-bad"
    bad["data"]["lines"][0]["quantity"] = 0
    lines.insert(1, json.dumps(bad))
    result = run_cli("publish", "--topic", SHOP_ORDERS, "--skip-invalid", "-", env=cli_env(),
                     stdin="\n".join(lines))
    assert result.returncode == 1
    assert result.stdout.count(": sent to shop.orders") == 2
    assert "line 2: refused: data.lines.0.quantity: greater_than" in result.stdout
    values = {value for _, value in await _read_all(settings, SHOP_ORDERS)}
    assert lines[0].encode() in values
    assert lines[2].encode() in values
    assert lines[1].encode() not in values


def test_publishing_to_an_unknown_topic_or_missing_file_is_one_line(
    cli_env: Callable[..., dict[str, str]],
) -> None:
    for args in (["--topic", "nope", str(EXAMPLES / "shop-orders.jsonl")],
                 ["--topic", SHOP_ORDERS, "/no/such/file.jsonl"]):
        result = run_cli("publish", *args, env=cli_env())
        assert result.returncode == 1
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith("error: ")


async def test_the_integration_guides_aiokafka_recipe_runs_as_written(
    settings: Settings,
) -> None:
    """docs/integration.md's Python recipe, executed verbatim but for the broker
    address (the guide names the dev stack's 127.0.0.1:19092)."""
    await ensure_topics(settings)
    guide = (REPO / "docs" / "integration.md").read_text()
    recipe = re.search(r"## With aiokafka \(Python\)\n\n```python\n(.*?)```", guide, re.S)
    assert recipe is not None
    code = recipe.group(1)
    assert '"127.0.0.1:19092"' in code
    namespace: dict[str, object] = {}
    exec(code.replace("127.0.0.1:19092", settings.kafka_bootstrap_servers), namespace)  # noqa: S102
    events = [json.loads(line) for line in
              _fresh((EXAMPLES / "shop-orders.jsonl").read_text().splitlines())]
    await namespace["publish"](events)  # type: ignore[operator]
    values = {(key, value) for key, value in await _read_all(settings, SHOP_ORDERS)}
    for event in events:  # other tests share the topic: look for each event's bytes
        assert any(key == event["subject"].encode() and f'"id": "{event["id"]}"'.encode()
                   in value for key, value in values), event["id"]
