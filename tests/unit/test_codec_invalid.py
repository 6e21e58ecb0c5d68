"""Invalid records are refused with the field and the rule that they break."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from events.codec import MAX_EVENT_BYTES, DecodeError, decode
from tests.helpers import REPO

EXAMPLES = REPO / "docs" / "examples"
ORDER: dict[str, Any] = json.loads((EXAMPLES / "shop-orders.jsonl").read_text().splitlines()[0])
SHIPMENT: dict[str, Any] = next(
    json.loads(line) for line in (EXAMPLES / "supplier-events.jsonl").read_text().splitlines()
    if '"dropship.shipment.dispatched.v1"' in line
)
OFFER: dict[str, Any] = json.loads((EXAMPLES / "supplier-catalog.jsonl").read_text().splitlines()[0])

Mutation = Callable[[dict[str, Any]], None]


def _parent(doc: dict[str, Any], path: str) -> tuple[Any, Any]:
    """The container holding the dotted ``path`` and the key of it there."""
    *parents, last = path.split(".")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node, int(last) if isinstance(node, list) else last


def _set(path: str, value: Any) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        node, key = _parent(doc, path)
        node[key] = value
    return mutate


def _drop(path: str) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        node, key = _parent(doc, path)
        del node[key]
    return mutate


def _line(n: int, **fields: Any) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        doc["data"]["lines"][n].update(fields)
    return mutate


MUTATIONS: list[tuple[str, dict[str, Any], Mutation, str, str]] = [
    # (case, base event, mutation, expected field, expected rule)
    ("quantity zero", ORDER, _set("data.lines.0.quantity", 0), "data.lines.0.quantity", "greater_than"),
    ("quantity negative", ORDER, _set("data.lines.1.quantity", -3), "data.lines.1.quantity", "greater_than"),
    ("quantity as string", ORDER, _set("data.lines.0.quantity", "2"), "data.lines.0.quantity", "int_type"),
    ("quantity as float", ORDER, _set("data.lines.0.quantity", 2.0), "data.lines.0.quantity", "int_type"),
    ("quantity huge", ORDER, _set("data.lines.0.quantity", 10**12), "data.lines.0.quantity", "less_than_equal"),
    ("money as float", ORDER, _set("data.lines.0.unit_price.amount", 12.5), "data.lines.0.unit_price.amount", "money_not_string"),
    ("money as int", ORDER, _set("data.lines.0.unit_price.amount", 12), "data.lines.0.unit_price.amount", "money_not_string"),
    ("money too precise", ORDER, _set("data.lines.0.unit_price.amount", "12.505"), "data.lines.0.unit_price", "money_minor_units"),
    ("money negative", ORDER, _set("data.lines.0.unit_price.amount", "-1.00"), "data.lines.0.unit_price.amount", "money_format"),
    ("money exponent", ORDER, _set("data.lines.0.unit_price.amount", "1e3"), "data.lines.0.unit_price.amount", "money_format"),
    ("money NaN", ORDER, _set("data.lines.0.unit_price.amount", "NaN"), "data.lines.0.unit_price.amount", "money_format"),
    ("bad currency", ORDER, _set("data.currency", "EURO"), "data.currency", "iso4217"),
    ("lowercase currency", ORDER, _set("data.lines.0.unit_price.currency", "eur"), "data.lines.0.unit_price.currency", "iso4217"),
    ("line in other currency", ORDER, _set("data.lines.0.unit_price", {"amount": "12.50", "currency": "USD"}), "data", "currency_mismatch"),
    ("bad country", ORDER, _set("data.ship_to.country", "XX"), "data.ship_to.country", "iso3166"),
    ("alpha-3 country", ORDER, _set("data.ship_to.country", "FRA"), "data.ship_to.country", "iso3166"),
    ("time without timezone", ORDER, _set("time", "2026-11-22T09:00:00"), "time", "timezone_aware"),
    ("placed_at without timezone", ORDER, _set("data.placed_at", "2026-11-22T09:00:00"), "data.placed_at", "timezone_aware"),
    ("time not a date", ORDER, _set("time", "yesterday"), "time", "datetime_parsing"),
    ("subject is not the order id", ORDER, _set("subject", "ord-9999"), "subject", "subject_mismatch"),
    ("unknown type", ORDER, _set("type", "dropship.order.teleported.v1"), "type", "unknown_type"),
    ("old type version", ORDER, _set("type", "dropship.order.placed.v0"), "type", "unknown_type"),
    ("missing type", ORDER, _drop("type"), "type", "missing"),
    ("wrong specversion", ORDER, _set("specversion", "0.3"), "specversion", "literal_error"),
    ("wrong datacontenttype", ORDER, _set("datacontenttype", "text/xml"), "datacontenttype", "literal_error"),
    ("missing id", ORDER, _drop("id"), "id", "missing"),
    ("id with spaces", ORDER, _set("id", "evt 1"), "id", "string_pattern_mismatch"),
    ("id too long", ORDER, _set("data.order_id", "o" * 65), "data.order_id", "string_pattern_mismatch"),
    ("sku with SQL", ORDER, _set("data.lines.0.sku", "x'; DROP TABLE orders;--"), "data.lines.0.sku", "string_pattern_mismatch"),
    ("NUL in a name", ORDER, _set("data.ship_to.name", "Ada\u0000"), "data.ship_to.name", "string_pattern_mismatch"),
    ("name too long", ORDER, _set("data.ship_to.name", "A" * 501), "data.ship_to.name", "string_too_long"),
    ("no lines", ORDER, _set("data.lines", []), "data.lines", "too_short"),
    ("duplicate line ids", ORDER, _line(1, line_id="1"), "data", "duplicate_line"),
    ("unknown data field", ORDER, _set("data.coupon", "FREE"), "data.coupon", "extra_forbidden"),
    ("unknown envelope attribute", ORDER, _set("priority", "high"), "priority", "extra_forbidden"),
    ("source of another shop", ORDER, _set("source", "shop/evil"), "source", "source_mismatch"),
    ("shop event from a supplier", ORDER, _set("source", "supplier/acme"), "source", "source_kind"),
    ("source without kind", ORDER, _set("source", "acme"), "source", "string_pattern_mismatch"),
    ("data is a list", ORDER, _set("data", [1, 2]), "data", "model_type"),
    ("shipment from another supplier", SHIPMENT, _set("source", "supplier/sup-b"), "source", "source_mismatch"),
    ("bad reject reason", SHIPMENT, _set("type", "dropship.supplier_order.rejected.v1"), "data.reason", "missing"),
    ("tracking number with newline", SHIPMENT, _set("data.tracking_number", "AB\n12"), "data.tracking_number", "string_pattern_mismatch"),
    ("priority negative", OFFER, _set("data.priority", -1), "data.priority", "greater_than_equal"),
    ("active as string", OFFER, _set("data.active", "yes"), "data.active", "bool_type"),
    ("JPY cost with cents", OFFER, _set("data.unit_cost", {"amount": "450.5", "currency": "JPY"}), "data.unit_cost", "money_minor_units"),
]


@pytest.mark.parametrize(("case", "base", "mutate", "field", "rule"), MUTATIONS,
                         ids=[m[0] for m in MUTATIONS])
def test_invalid_event_is_refused_naming_field_and_rule(
    case: str, base: dict[str, Any], mutate: Mutation, field: str, rule: str
) -> None:
    doc = copy.deepcopy(base)
    decode(json.dumps(doc).encode())  # the base itself is valid
    mutate(doc)
    with pytest.raises(DecodeError) as err:
        decode(json.dumps(doc).encode())
    assert (err.value.field, err.value.rule) == (field, rule), str(err.value)
    assert str(err.value).startswith(f"{field}: {rule}: ")


RAW_CASES: list[tuple[str, bytes, bytes | None, str, str]] = [
    ("truncated JSON", json.dumps(ORDER).encode()[:-10], None, "$", "invalid_json"),
    ("not UTF-8", b'{"id": "\xff\xfe"}', None, "$", "not_utf8"),
    ("empty", b"", None, "$", "invalid_json"),
    ("JSON array", b"[1, 2, 3]", None, "$", "not_an_object"),
    ("JSON string", b'"OrderPlaced"', None, "$", "not_an_object"),
    ("oversize", b'{"pad": "' + b"x" * MAX_EVENT_BYTES + b'"}', None, "$", "too_large"),
    ("key is not the subject", json.dumps(ORDER).encode(), b"ord-1002", "subject", "key_mismatch"),
]


@pytest.mark.parametrize(("case", "raw", "key", "field", "rule"), RAW_CASES,
                         ids=[c[0] for c in RAW_CASES])
def test_invalid_bytes_are_refused_naming_field_and_rule(
    case: str, raw: bytes, key: bytes | None, field: str, rule: str
) -> None:
    with pytest.raises(DecodeError) as err:
        decode(raw, key=key)
    assert (err.value.field, err.value.rule) == (field, rule), str(err.value)


def test_wrong_topic_is_refused() -> None:
    with pytest.raises(DecodeError) as err:
        decode(json.dumps(ORDER).encode(), topic="supplier.catalog")
    assert (err.value.field, err.value.rule) == ("type", "wrong_topic")


def test_there_are_at_least_thirty_cases() -> None:
    assert len(MUTATIONS) + len(RAW_CASES) >= 30



def test_an_order_whose_total_is_no_valid_amount_is_refused() -> None:
    """Found by fuzzing: each line valid, the total beyond 15 digits, so the status
    event the order agent derived from it did not decode."""
    import json

    import pytest

    from events.codec import DecodeError, decode, encode
    from events.orders import OrderPlaced
    from tests.helpers import sample_order

    envelope = json.loads(encode(sample_order("big-1")))
    envelope["data"]["lines"][0]["unit_price"]["amount"] = "999999999999999"  # x 2
    with pytest.raises(DecodeError) as refused:
        decode(json.dumps(envelope).encode())
    assert refused.value.rule == "total_too_large"
    envelope["data"]["lines"][0]["unit_price"]["amount"] = "499999999999999"
    accepted = decode(json.dumps(envelope).encode()).data
    assert isinstance(accepted, OrderPlaced)
    assert accepted.total().amount < 10**15
