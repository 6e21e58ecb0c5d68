"""The contracts as documents: one JSON Schema per event type and an AsyncAPI 3.0 document.

``dropship schema export`` writes :func:`render` under ``docs/``; a test fails
when the committed files differ from what the code generates, and validates
them with a JSON Schema validator against the official AsyncAPI 3.0.0 schema.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic.json_schema import models_json_schema

from events.base import Message
from events.envelope import CONTENT_TYPE, ENVELOPES, CloudEvent
from events.topics import ALL_TOPICS, INPUT_TOPICS, KEYED_BY, TOPIC_DOCS

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
KAFKA_BINDING_VERSION = "0.5.0"
#: Topics our agents read (besides the input topics) and write.
_INTERNAL_READS = ("fulfillment.allocation", "fulfillment.decisions", "fulfillment.dlq")


def _summary(cls: type[Any]) -> str:
    return (cls.__doc__ or cls.__name__).strip().splitlines()[0]


def event_schema(envelope: type[CloudEvent]) -> dict[str, Any]:
    """The JSON Schema (2020-12) of one event type's whole record value."""
    schema = envelope.model_json_schema(mode="validation")
    return {"$schema": JSON_SCHEMA_DIALECT, **schema}


def _channel_id(topic: str) -> str:
    head, *rest = topic.replace("-", ".").split(".")
    return head + "".join(part.capitalize() for part in rest)


def _message(envelope: type[CloudEvent]) -> dict[str, Any]:
    message: type[Message] = envelope.MESSAGE
    return {
        "name": message.__name__,
        "title": message.__name__,
        "summary": _summary(message),
        "contentType": CONTENT_TYPE,
        "payload": {"$ref": f"#/components/schemas/{envelope.__name__}"},
        "bindings": {"kafka": {
            "key": {"type": "string",
                    "description": f"the CloudEvents subject: data.{message.SUBJECT}"},
            "bindingVersion": KAFKA_BINDING_VERSION,
        }},
        "x-cloudevents-type": message.TYPE,
        "x-source": f"{message.SOURCE_KIND}/<id>",
    }


def _channels() -> dict[str, Any]:
    channels: dict[str, Any] = {}
    for topic in ALL_TOPICS:
        description, producers, consumers = TOPIC_DOCS[topic]
        names = [env.MESSAGE.__name__ for env in ENVELOPES.values() if topic == env.MESSAGE.TOPIC]
        channels[_channel_id(topic)] = {
            "address": topic,
            "title": topic,
            "description": f"{description} Key: {KEYED_BY[topic]}.",
            "messages": {n: {"$ref": f"#/components/messages/{n}"} for n in names},
            "bindings": {"kafka": {"topic": topic, "bindingVersion": KAFKA_BINDING_VERSION}},
            "x-key": KEYED_BY[topic],
            "x-producers": list(producers),
            "x-consumers": list(consumers),
        }
    return channels


def _operations(channels: dict[str, Any]) -> dict[str, Any]:
    operations: dict[str, Any] = {}
    for channel_id, channel in channels.items():
        topic = channel["address"]
        refs = [{"$ref": f"#/channels/{channel_id}/messages/{n}"} for n in channel["messages"]]
        actions = []
        if topic in INPUT_TOPICS or topic in _INTERNAL_READS:
            actions.append("receive")
        if topic not in INPUT_TOPICS:
            actions.append("send")
        for action in actions:
            operations[f"{action}{channel_id[0].upper()}{channel_id[1:]}"] = {
                "action": action,
                "channel": {"$ref": f"#/channels/{channel_id}"},
                "summary": f"dropship {'consumes' if action == 'receive' else 'publishes'} {topic}",
                "messages": refs,
            }
    return operations


def asyncapi() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of every topic and event, from dropship's point of view."""
    _, defs = models_json_schema(
        [(env, "validation") for env in ENVELOPES.values()],
        ref_template="#/components/schemas/{model}",
    )
    channels = _channels()
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "dropship fulfillment events",
            "version": "1.0.0",
            "description": (
                "Every record value is a CloudEvents 1.0 event in structured JSON mode; "
                "the record key is the event's subject. See docs/events.md for the rules."
            ),
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {
            "embedded": {"host": "127.0.0.1:19092", "protocol": "kafka",
                          "description": "`dropship dev up` (Tansu, memory only)"},
            "compose": {"host": "127.0.0.1:29092", "protocol": "kafka",
                        "description": "docker-compose.yml (Apache Kafka, KRaft)"},
        },
        "channels": channels,
        "operations": _operations(channels),
        "components": {
            "messages": {env.MESSAGE.__name__: _message(env) for env in ENVELOPES.values()},
            "schemas": defs["$defs"],
        },
    }


def _dump(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def render() -> dict[str, str]:
    """Path under ``docs/`` -> file text, for every generated contract document."""
    files = {f"schemas/{type_}.json": _dump(event_schema(env)) for type_, env in ENVELOPES.items()}
    files["asyncapi.json"] = _dump(asyncapi())
    return files
