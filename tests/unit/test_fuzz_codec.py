"""Fuzz of the codec (issue 8, item 4): whatever the bytes, ``decode`` returns a
CloudEvent or raises :class:`DecodeError` naming a field and a rule, never anything
else; what it accepts it can encode again; hostile but valid text (SQL, RTL marks,
emoji, combining characters, the longest allowed) survives encode/decode unchanged.

``test_codec_invalid.py`` pins one field/rule per hand-written case and
``test_codec_roundtrip.py`` the round trip of generated events; this file throws
arbitrary and mutated input at every type on every topic.
"""

from __future__ import annotations

import json
import types
from typing import Annotated, Any, Union, get_args, get_origin

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, StringConstraints

from events.codec import DecodeError, decode, encode, key_of
from events.envelope import MESSAGE_TYPES, CloudEvent
from events.topics import ALL_TOPICS
from events.types import TEXT_PATTERN
from tests.helpers import REPO
from tests.strategies import ALL_TYPES, TEXT_ALPHABET, cloud_events

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

#: Valid text (1-500 characters, no control characters but tab and newline) that
#: has broken systems before.
HOSTILE_TEXTS = (
    "'; DROP TABLE order_status; --",
    "Robert'); DELETE FROM read.dead_letters WHERE ''='",
    "$$; SELECT pg_sleep(10); $$",
    "%s %(name)s {0} $1 :param ? \\N \\x00 \\u0000",
    "\u202eevil.exe\u202c \u200f\u200e\u061c",  # RTL override, marks
    "e\u0301\u0302\u0303\u0304 Z\u0351\u0352\u0353",  # combining characters
    "\U0001f600\U0001f44d\U0001f3fd \U0001f468\u200d\U0001f469\u200d\U0001f467",
    "\ufeffBOM \u2028\u2029 \ufffe\uffff \U0010ffff",
    "\x85\x9f C1 controls are not in the refused range",
    "\t\n",
    "<script>alert(1)</script>",
    "NULL", "null", "'", '"', "\\",
    "a" * 500, "\u00df" * 500, "\U0001f600" * 500,
)
hostile_texts = st.sampled_from(HOSTILE_TEXTS) | st.text(TEXT_ALPHABET, min_size=1, max_size=500)


def texts_up_to(length: int) -> st.SearchStrategy[str]:
    """Hostile texts of at most ``length`` characters."""
    return hostile_texts.filter(lambda t: len(t) <= length)

#: Characters the text rule refuses (Postgres cannot store NUL; the rest are controls).
REFUSED_CONTROLS = [chr(c) for c in (*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F)]

json_scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                | st.text(max_size=50))
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.text(max_size=20), inner, max_size=5), max_leaves=30)
topics = st.none() | st.sampled_from(ALL_TOPICS)
keys = st.none() | st.binary(max_size=80)
#: Replacements for one value of a valid event: wrong types, out-of-range
#: numbers, float specials as strings, long strings, deep nesting.
HOSTILE_VALUES: list[Any] = [
    None, True, 0, -1, 1.5, 10**30, -(10**30), 2**31, 2**63, 10**100, "", "NaN", "Infinity",
    "-Infinity", "1e400", "0x10", "2", [], {}, [[[[[[[[[[]]]]]]]]]], {"amount": {"amount": 1}},
    "x" * 501, "x" * 70_000, "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00",
    "1971-01-01T00:00:00Z", "2199-12-31T23:59:59Z", "2026-13-45T25:61:61Z",
    "\x00", "a\x00b", "\ud800", "\udfff x",  # NUL, lone surrogates (json.dumps escapes them)
]


def check_decode(raw: bytes, key: bytes | None, topic: str | None) -> CloudEvent | None:
    """Decode; a refusal must be a DecodeError with a field, a rule and a message.
    What is accepted must encode again to bytes that decode to the same event."""
    refused: DecodeError | None = None
    try:
        event = decode(raw, key=key, topic=topic)
    except DecodeError as err:
        refused = err
    if refused is not None:
        assert refused.field, repr(refused)
        assert refused.rule, repr(refused)
        assert refused.message, repr(refused)
        assert str(refused).startswith(f"{refused.field}: {refused.rule}: ")
        return None
    again = decode(encode(event), key=key_of(event), topic=event.data.TOPIC)
    assert again == event
    return event


@FUZZ
@given(raw=st.binary(max_size=300), key=keys, topic=topics)
def test_arbitrary_bytes_are_refused_with_a_rule(raw: bytes, key: bytes | None,
                                                 topic: str | None) -> None:
    """Random bytes never raise anything but DecodeError (and never decode)."""
    assert check_decode(raw, key, topic) is None


@FUZZ
@given(value=json_values, key=keys, topic=topics)
def test_arbitrary_json_is_refused_with_a_rule(value: Any, key: bytes | None,
                                               topic: str | None) -> None:
    """Any JSON document, including non-objects, gets a DecodeError with a rule."""
    assert check_decode(json.dumps(value).encode(), key, topic) is None


@FUZZ
@given(type_=st.sampled_from(ALL_TYPES), data=json_values, extra=json_values, topic=topics)
def test_envelope_with_arbitrary_data_is_refused_with_a_rule(
    type_: str, data: Any, extra: Any, topic: str | None
) -> None:
    """A well-formed envelope of a known type around arbitrary ``data`` reaches the
    payload validators of that type; they refuse with a rule, never crash."""
    doc = {"specversion": "1.0", "id": "e-1", "source": "shop/acme", "type": type_,
           "time": "2026-01-01T00:00:00Z", "subject": "o-1",
           "datacontenttype": "application/json", "data": data, "x": extra}
    for drop_extra in (False, True):
        if drop_extra:
            del doc["x"]
        assert check_decode(json.dumps(doc).encode(), None, topic) is None


def _paths(node: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every path (dict keys and list indexes) inside a JSON document."""
    out: list[tuple[str | int, ...]] = [prefix] if prefix else []
    if isinstance(node, dict):
        for name, child in node.items():
            out += _paths(child, (*prefix, name))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            out += _paths(child, (*prefix, i))
    return out


def _set(doc: Any, path: tuple[str | int, ...], value: Any, delete: bool = False) -> None:
    node = doc
    for part in path[:-1]:
        node = node[part]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value


@settings(FUZZ, max_examples=200)
@given(type_=st.sampled_from(ALL_TYPES), data=st.data(), topic=topics)
def test_mutated_valid_events_are_refused_or_accepted_whole(
    type_: str, data: st.DataObject, topic: str | None
) -> None:
    """A valid event with one value dropped or replaced by a hostile one (wrong
    type, 10**30, "NaN", 70 KB string, deep nesting, year 1 or 9999...) is either
    refused with a rule or accepted, and then it round-trips."""
    message = MESSAGE_TYPES[type_]
    doc = json.loads(data.draw(cloud_events(message)))
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(doc)))
        if data.draw(st.booleans()) and not isinstance(path[-1], int):
            _set(doc, path, None, delete=True)
        else:
            _set(doc, path, data.draw(st.sampled_from(HOSTILE_VALUES) | hostile_texts))
    subject = str(doc.get("subject")).encode("utf-8", "surrogatepass")  # a hostile text may
    key = data.draw(st.none() | st.just(subject) | keys)                  # hold a lone surrogate
    raw = json.dumps(doc).encode()
    check_decode(raw, key, topic)
    check_decode(raw.replace(b"1.5", b"NaN"), key, topic)  # a bare NaN literal


Path = tuple[str, ...]


def text_paths(model: type[BaseModel], prefix: Path = ()) -> dict[Path, int]:
    """Fields of ``model`` (and its nested models) that are free text -> max length."""
    out: dict[Path, int] = {}
    for name, info in model.model_fields.items():
        out.update(_text_in(info.annotation, list(info.metadata), (*prefix, name)))
    return out


def _text_in(annotation: Any, metadata: list[Any], path: Path) -> dict[Path, int]:
    origin = get_origin(annotation)
    if origin is Annotated:
        inner, *extra = get_args(annotation)
        return _text_in(inner, [*metadata, *extra], path)
    if origin in (Union, types.UnionType):
        return {p: n for a in get_args(annotation) if a is not type(None)
                for p, n in _text_in(a, metadata, path).items()}
    rule = next((m for m in metadata if isinstance(m, StringConstraints)
                 and m.pattern == TEXT_PATTERN), None)
    if annotation is str and rule is not None:
        return {path: rule.max_length or 500}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return text_paths(annotation, path)
    return {}


TEXT_TYPES = {t: text_paths(MESSAGE_TYPES[t]) for t in ALL_TYPES if text_paths(MESSAGE_TYPES[t])}


def test_text_fields_are_found() -> None:
    """The walk finds the free-text fields (else the tests below prove nothing)."""
    assert TEXT_TYPES["dropship.order.placed.v1"][("ship_to", "name")] == 500
    assert ("reason",) in TEXT_TYPES["dropship.order.cancelled.v1"]
    assert ("carrier",) in TEXT_TYPES["dropship.shipment.dispatched.v1"]
    assert TEXT_TYPES["dropship.dead_letter.v1"] == {("original_key",): 256, ("error",): 2000}
    assert len(TEXT_TYPES) >= 8


#: Valid values of optional nested fields that hold text.
SKELETONS = {"ship_to": {"name": "n", "line1": "l", "city": "c", "country": "FR"}}


def with_texts(doc: dict[str, Any], texts: dict[Path, str]) -> dict[str, Any]:
    """``doc`` with text fields (present or optional) set to the given texts."""
    for path, text in texts.items():
        node = doc["data"]
        for part in path[:-1]:  # an optional nested value absent from the draw: a valid one
            node = node.setdefault(part, dict(SKELETONS.get(part, {})))
        node[path[-1]] = text
    if "original_key" in doc["data"]:  # a dead letter's subject is its original key
        doc["subject"] = doc["data"]["original_key"]
    return doc


def _at(node: Any, path: Path, attribute: bool = False) -> Any:
    for part in path:
        node = getattr(node, part) if attribute else node[part]
    return node


@settings(FUZZ, max_examples=150)
@given(type_=st.sampled_from(sorted(TEXT_TYPES)), data=st.data())
def test_hostile_text_round_trips_verbatim(type_: str, data: st.DataObject) -> None:
    """SQL, bidi marks, emoji, combining characters, the longest allowed: valid text
    in every text field of every type decodes to exactly that string and encodes
    to the same bytes every time."""
    texts = {path: data.draw(texts_up_to(n)) for path, n in TEXT_TYPES[type_].items()}
    doc = with_texts(json.loads(data.draw(cloud_events(MESSAGE_TYPES[type_]))), texts)
    raw = json.dumps(doc, ensure_ascii=data.draw(st.booleans())).encode()
    event = decode(raw, key=doc["subject"].encode(), topic=MESSAGE_TYPES[type_].TOPIC)
    encoded = encode(event)
    assert encode(decode(encoded)) == encoded
    back = json.loads(encoded)["data"]
    for path, text in texts.items():
        assert _at(event.data, path, attribute=True) == text
        assert _at(back, path) == text


@FUZZ
@given(type_=st.sampled_from(sorted(TEXT_TYPES)), data=st.data())
def test_control_characters_in_any_text_field_are_refused(type_: str,
                                                          data: st.DataObject) -> None:
    """A refused control character (NUL included) anywhere in any text field is
    refused naming that field and ``string_pattern_mismatch``."""
    path = data.draw(st.sampled_from(sorted(TEXT_TYPES[type_])))
    text = data.draw(texts_up_to(199))
    at = data.draw(st.integers(0, len(text)))
    bad = text[:at] + data.draw(st.sampled_from(REFUSED_CONTROLS)) + text[at:]
    doc = with_texts(json.loads(data.draw(cloud_events(MESSAGE_TYPES[type_]))), {path: bad})
    with pytest.raises(DecodeError) as err:
        decode(json.dumps(doc).encode())
    assert (err.value.field, err.value.rule) == (".".join(("data", *path)),
                                                 "string_pattern_mismatch"), str(err.value)


@pytest.mark.parametrize(("time", "accepted"), [
    ("1970-01-01T00:00:00Z", True), ("1971-01-01T00:00:00+14:00", True),
    ("2199-12-31T23:59:59-14:00", True), ("2999-12-31T23:59:59.999999Z", True),
    ("1969-12-31T23:59:59Z", False), ("1970-01-01T00:00:00+00:01", False),
    ("0001-01-01T00:00:00+14:00", False), ("3000-01-01T00:00:00Z", False),
    ("9999-12-31T23:59:59-14:00", False),
])
@pytest.mark.parametrize("field", ["time", "data.placed_at"])
def test_times_are_refused_outside_1970_to_2999(time: str, accepted: bool, field: str) -> None:
    """Regression (found by tests/integration/test_fuzz_agents.py): a time in year 1
    or 9999 passed the codec, and a deadline computed from it could not be stored,
    which stopped the order agent. Every time, envelope or payload, is 1970..2999."""
    doc = json.loads((REPO / "docs" / "examples" / "shop-orders.jsonl").read_text()
                     .splitlines()[0])
    if field == "time":
        doc["time"] = time
    else:
        doc["data"]["placed_at"] = time
    if accepted:
        decode(json.dumps(doc).encode())
        return
    with pytest.raises(DecodeError) as err:
        decode(json.dumps(doc).encode())
    assert (err.value.field, err.value.rule) == (field, "time_range")
