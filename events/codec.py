"""The one codec: Kafka record bytes <-> typed CloudEvents.

Used by every agent, the publisher and the tests. :func:`decode` validates in
one pass (pydantic-core parses the JSON and picks the payload class from
``type``); every refusal is a :class:`DecodeError` naming the field and the rule.
:func:`encode` is deterministic: the same event always gives the same bytes,
so reprocessing emits byte-identical records.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Union

from pydantic import Field, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from events.envelope import ENVELOPES, CloudEvent

#: Largest record value accepted or produced, in bytes.
MAX_EVENT_BYTES: Final = 64 * 1024

#: One tagged union over every envelope class: pydantic-core reads ``type`` first
#: and validates against that class only.
_ANY_ENVELOPE: Any = Annotated[Union[tuple(ENVELOPES.values())], Field(discriminator="type")]  # noqa: UP007
_ADAPTER: TypeAdapter[CloudEvent] = TypeAdapter(_ANY_ENVELOPE)

#: Rules whose field is implied rather than given by pydantic's error location.
_RULE_FIELDS = {
    "union_tag_not_found": ("type", "missing"),
    "source_kind": ("source", "source_kind"),
    "source_mismatch": ("source", "source_mismatch"),
    "subject_mismatch": ("subject", "subject_mismatch"),
}


class DecodeError(ValueError):
    """A record was refused. ``field`` is a dotted path (``data.lines.0.quantity``),
    ``rule`` a stable name (``greater_than``, ``money_minor_units``, ``key_mismatch``...).
    """

    def __init__(self, field: str, rule: str, message: str) -> None:
        super().__init__(f"{field}: {rule}: {message}")
        self.field = field
        self.rule = rule
        self.message = message


def _from_pydantic(err: ValidationError, raw: bytes) -> DecodeError:
    first: ErrorDetails = err.errors(include_url=False)[0]
    rule = first["type"]
    loc = [str(part) for part in first["loc"]]
    if loc and loc[0] in ENVELOPES:  # the union tag pydantic puts first
        loc = loc[1:]
    if rule == "json_invalid":
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return DecodeError("$", "not_utf8", f"not UTF-8 text: {exc.reason} at byte {exc.start}")
        return DecodeError("$", "invalid_json", first["msg"])
    if rule in ("model_type", "model_attributes_type", "dict_type") and not loc:
        return DecodeError("$", "not_an_object", "a CloudEvent must be a JSON object")
    if rule == "union_tag_invalid":
        tag = str(first.get("ctx", {}).get("tag", ""))[:100]
        return DecodeError("type", "unknown_type",
                           f"'{tag}' is not a known event type (see docs/asyncapi.json)")
    field, rule = _RULE_FIELDS.get(rule, (".".join(loc) or "$", rule))
    return DecodeError(field, rule, first["msg"])


def decode(raw: bytes, *, key: bytes | None = None, topic: str | None = None) -> CloudEvent:
    """Bytes of a record value -> its typed CloudEvent, or DecodeError.

    Steps: 1. size limit (``too_large``); 2. parse + validate in one pass;
    3. if ``key`` is given, it must be the UTF-8 ``subject`` (``key_mismatch``);
    4. if ``topic`` is given, the type must travel on it (``wrong_topic``).
    """
    if len(raw) > MAX_EVENT_BYTES:
        raise DecodeError("$", "too_large", f"{len(raw)} bytes > limit of {MAX_EVENT_BYTES}")
    try:
        event = _ADAPTER.validate_json(raw)
    except ValidationError as err:
        raise _from_pydantic(err, raw) from None
    if key is not None and key != event.subject.encode():
        raise DecodeError("subject", "key_mismatch",
                          f"Kafka key {key[:80]!r} is not the subject '{event.subject}'")
    if topic is not None and topic != event.data.TOPIC:
        raise DecodeError("type", "wrong_topic",
                          f"{event.type} travels on {event.data.TOPIC}, not on {topic}")
    return event


def encode(event: CloudEvent) -> bytes:
    """A CloudEvent -> record value bytes (deterministic; optional absent fields omitted).

    Raises ValueError if the result would exceed :data:`MAX_EVENT_BYTES`.
    """
    raw = event.model_dump_json(exclude_none=True).encode()
    if len(raw) > MAX_EVENT_BYTES:
        raise ValueError(f"{event.type} {event.id}: {len(raw)} bytes > {MAX_EVENT_BYTES}")
    return raw


def key_of(event: CloudEvent) -> bytes:
    """The Kafka key of an event: its subject, UTF-8."""
    return event.subject.encode()
