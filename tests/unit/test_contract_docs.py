"""The committed contract documents are what the code generates, and they are valid."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from jsonschema import Draft7Validator, Draft202012Validator

from events.codec import decode
from events.envelope import ENVELOPES
from events.schemas import render
from tests.helpers import REPO

DOCS = REPO / "docs"
ASYNCAPI_SPEC = json.loads((REPO / "tests/fixtures/asyncapi-3.0.0.schema.json").read_text())
EXAMPLE_FILES = {"shop-orders.jsonl": "shop.orders", "supplier-events.jsonl": "supplier.events",
                 "supplier-catalog.jsonl": "supplier.catalog"}


def _asyncapi() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((DOCS / "asyncapi.json").read_text())
    return doc


@pytest.mark.parametrize("rel", sorted(render()))
def test_committed_document_is_what_the_code_generates(rel: str) -> None:
    path = DOCS / rel
    assert path.exists(), f"docs/{rel} is missing: run `dropship schema export`"
    assert path.read_text() == render()[rel], f"docs/{rel} is stale: run `dropship schema export`"


def test_no_stale_schema_files_are_left_behind() -> None:
    committed = {f"schemas/{p.name}" for p in (DOCS / "schemas").glob("*.json")}
    assert committed == {rel for rel in render() if rel.startswith("schemas/")}


def test_asyncapi_document_is_valid_asyncapi_3() -> None:
    errors = list(Draft7Validator(ASYNCAPI_SPEC).iter_errors(_asyncapi()))
    assert errors == [], [e.message for e in errors[:5]]


def test_the_asyncapi_validator_catches_a_broken_document() -> None:
    broken = copy.deepcopy(_asyncapi())
    first_op = next(iter(broken["operations"].values()))
    first_op["action"] = "publish"  # AsyncAPI 2 wording, invalid in 3.0
    del broken["info"]["version"]
    assert len(list(Draft7Validator(ASYNCAPI_SPEC).iter_errors(broken))) >= 2


def test_asyncapi_covers_every_topic_and_event_type() -> None:
    doc = _asyncapi()
    types = {m["x-cloudevents-type"] for m in doc["components"]["messages"].values()}
    assert types == set(ENVELOPES)
    addresses = {c["address"] for c in doc["channels"].values()}
    assert "shop.orders" in addresses
    assert "fulfillment.dlq" in addresses
    for channel in doc["channels"].values():  # every message ref resolves
        for ref in channel["messages"].values():
            assert ref["$ref"].split("/")[-1] in doc["components"]["messages"]


@pytest.mark.parametrize("type_", sorted(ENVELOPES))
def test_event_schema_is_valid_json_schema(type_: str) -> None:
    Draft202012Validator.check_schema(json.loads((DOCS / "schemas" / f"{type_}.json").read_text()))


def _examples() -> list[tuple[str, str, bytes]]:
    return [(name, topic, line.encode())
            for name, topic in EXAMPLE_FILES.items()
            for line in (DOCS / "examples" / name).read_text().splitlines() if line.strip()]


@pytest.mark.parametrize(("name", "topic", "raw"), _examples())
def test_examples_are_valid_for_codec_and_schema(name: str, topic: str, raw: bytes) -> None:
    instance = json.loads(raw)
    event = decode(raw, key=instance["subject"].encode(), topic=topic)
    schema = json.loads((DOCS / "schemas" / f"{event.type}.json").read_text())
    Draft202012Validator(schema).validate(instance)


def test_schema_refuses_what_the_codec_refuses() -> None:
    instance = json.loads(_examples()[0][2])
    instance["data"]["lines"][0]["quantity"] = 0
    schema = json.loads((DOCS / "schemas" / "dropship.order.placed.v1.json").read_text())
    assert not Draft202012Validator(schema).is_valid(instance)


def test_every_event_type_is_documented() -> None:
    text = (DOCS / "events.md").read_text()
    missing = [t for t in ENVELOPES if f"`{t}`" not in text]
    assert missing == []


def test_integration_guide_examples_are_valid() -> None:
    text = (DOCS / "integration.md").read_text()
    blocks = re.findall(r"```json\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    for block in blocks:
        decode(json.dumps(json.loads(block)).encode())
