"""Hypothesis strategies for every event type, derived from the pydantic field definitions.

They build JSON-shaped values (strings for decimals and times, as on the wire)
that satisfy every rule of the contracts, then fix up the cross-field rules
(order currency on every line, unique line ids, subject and source).
"""

from __future__ import annotations

import base64
import json
import types
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types as at
from hypothesis import strategies as st
from pydantic import AwareDatetime, BaseModel, StringConstraints, WithJsonSchema
from pydantic.fields import FieldInfo

from events.base import Message
from events.envelope import ENVELOPES, EVENT_ID_PATTERN
from events.iso import CURRENCIES, MINOR_UNITS
from events.orders import MAX_TOTAL
from events.types import ID_PATTERN, TEXT_PATTERN, Money

TEXT_ALPHABET = st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from("\t\n")
ids = st.from_regex(ID_PATTERN, fullmatch=True)
event_ids = st.from_regex(EVENT_ID_PATTERN, fullmatch=True)


def texts(max_size: int = 500) -> st.SearchStrategy[str]:
    return st.text(TEXT_ALPHABET, min_size=1, max_size=min(max_size, 60))


def timestamps() -> st.SearchStrategy[str]:
    offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
    zones = st.just(UTC) | offsets
    moments = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1),
                           timezones=zones)
    return moments.map(lambda d: d.isoformat())


def amount_for(currency: str) -> st.SearchStrategy[str]:
    units = MINOR_UNITS[currency]
    return st.integers(0, 10**12).map(lambda n: str(Decimal(n).scaleb(-units)))


def money() -> st.SearchStrategy[dict[str, str]]:
    return st.sampled_from(sorted(CURRENCIES)).flatmap(
        lambda cur: amount_for(cur).map(lambda amt: {"amount": amt, "currency": cur})
    )


def _bounds(metadata: list[Any]) -> tuple[int, int]:
    low, high = -(10**9), 10**9
    for m in metadata:
        if isinstance(m, at.Gt):
            low = int(m.gt) + 1  # type: ignore[call-overload]
        elif isinstance(m, at.Ge):
            low = int(m.ge)  # type: ignore[call-overload]
        elif isinstance(m, at.Lt):
            high = int(m.lt) - 1  # type: ignore[call-overload]
        elif isinstance(m, at.Le):
            high = int(m.le)  # type: ignore[call-overload]
    return low, high


def _string(metadata: list[Any]) -> st.SearchStrategy[Any]:
    for m in metadata:
        if isinstance(m, WithJsonSchema) and m.json_schema and "enum" in m.json_schema:
            return st.sampled_from(m.json_schema["enum"])
    constraint = next((m for m in metadata if isinstance(m, StringConstraints)), None)
    if constraint is None:
        return st.text(TEXT_ALPHABET, max_size=40)
    pattern, max_len = constraint.pattern, constraint.max_length or 500
    if pattern == TEXT_PATTERN or pattern is None:
        return texts(max_len)
    if pattern == r"^[A-Za-z0-9+/]*={0,2}$":
        return st.binary(max_size=60).map(lambda b: base64.b64encode(b).decode())
    strategy = st.from_regex(str(pattern), fullmatch=True)
    return strategy.filter(lambda s: len(s) <= max_len and len(s) >= (constraint.min_length or 0))


def for_annotation(annotation: Any, metadata: list[Any]) -> st.SearchStrategy[Any]:
    """A strategy of JSON-shaped values valid for one annotated field."""
    origin = get_origin(annotation)
    if origin is Annotated:
        inner, *extra = get_args(annotation)
        unpacked = [x for m in extra for x in (m.metadata if isinstance(m, FieldInfo) else [m])]
        return for_annotation(inner, [*metadata, *unpacked])
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        values = st.one_of([for_annotation(a, metadata) for a in options])
        return st.none() | values if len(options) < len(get_args(annotation)) else values
    if origin is Literal:
        return st.sampled_from(get_args(annotation))
    if origin is tuple:
        item = get_args(annotation)[0]
        low = next((m.min_length for m in metadata if isinstance(m, at.MinLen)), 0)
        return st.lists(for_annotation(item, []), min_size=low, max_size=max(low, 4))
    if annotation is bool:
        return st.booleans()
    if annotation is AwareDatetime:
        return timestamps()
    if annotation is int:
        return st.integers(*_bounds(metadata))
    if annotation is str:
        return _string(metadata)
    if annotation is Money:
        return money()
    if annotation is Decimal:  # an Amount outside Money: a decimal string
        return st.integers(0, 10**8).map(lambda n: f"{n // 100}.{n % 100:02d}")
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return model_tree(annotation)
    raise NotImplementedError(f"no strategy for {annotation!r}")


def model_tree(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts of JSON-shaped field values for ``model`` (optional fields may be absent)."""
    fields = {name: for_annotation(f.annotation, list(f.metadata))
              for name, f in model.model_fields.items()}
    return st.fixed_dictionaries(fields).map(
        lambda tree: {k: v for k, v in tree.items() if v is not None}
    )


def _fix_up(message: type[Message], data: dict[str, Any]) -> dict[str, Any]:
    """Make the cross-field rules hold: unique line ids, one order currency."""
    if data.get("destinations"):  # one entry per country
        data["destinations"] = list({d["country"]: d for d in data["destinations"]}.values())
    lines = data.get("lines")
    if lines:
        data["lines"] = [{**line, "line_id": f"L{i}"} for i, line in enumerate(lines)]
    if "currency" in data and lines and "unit_price" in lines[0]:
        units = Decimal(1).scaleb(-MINOR_UNITS[data["currency"]])
        for line in data["lines"]:
            amount = Decimal(line["unit_price"]["amount"]).quantize(units)
            line["unit_price"] = {"amount": str(amount), "currency": data["currency"]}
        if sum(Decimal(ln["unit_price"]["amount"]) * ln["quantity"]
               for ln in data["lines"]) >= MAX_TOTAL / 10:  # the total has a bound
            for line in data["lines"]:
                line["unit_price"]["amount"] = "1"
        subtotal = sum(Decimal(ln["unit_price"]["amount"]) * ln["quantity"]
                       for ln in data["lines"])
        for name in ("shipping", "tax", "discount"):  # order-level, in the order's currency
            if name in data:
                amount = Decimal(data[name]["amount"]).quantize(units)
                if name == "discount":
                    amount = min(amount, subtotal)
                data[name] = {"amount": str(amount), "currency": data["currency"]}
    return data


@st.composite
def cloud_events(draw: st.DrawFn, message: type[Message]) -> bytes:
    """The bytes of a valid record value carrying ``message``."""
    data = _fix_up(message, draw(model_tree(message)))
    publisher = data.get("shop_id") or data.get("supplier_id") or draw(ids)
    if message.SOURCE_KIND == "dropship":
        publisher = draw(ids)
    envelope = {
        "specversion": "1.0", "id": draw(event_ids),
        "source": f"{message.SOURCE_KIND}/{publisher}", "type": message.TYPE,
        "time": draw(timestamps()), "subject": str(data[message.SUBJECT]),
        "datacontenttype": "application/json", "data": data,
    }
    return json.dumps(envelope).encode()


ALL_TYPES = sorted(ENVELOPES)
