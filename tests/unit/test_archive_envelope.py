"""The archive agent reads what it can of any value and never fails on it."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from pipeline.runtime.records import Record
from projections.archive import envelope_fields, logged


def test_reads_cloudevents_fields() -> None:
    value = json.dumps({"id": "e1", "type": "dropship.order.placed.v1", "subject": "o-1"})
    assert envelope_fields(value.encode()) == ("e1", "dropship.order.placed.v1", "o-1")


def test_missing_or_wrongly_typed_fields_are_none() -> None:
    assert envelope_fields(b'{"id": 5, "type": null}') == (None, None, None)
    assert envelope_fields(b"[1, 2]") == (None, None, None)
    assert envelope_fields(b"\xff\xfe not json") == (None, None, None)


@given(st.binary(max_size=512))
def test_any_bytes_make_a_record(value: bytes) -> None:
    rec = logged(Record("shop.orders", 1, 7, b"k", value, 1_700_000_000_000))
    assert rec.value == value
    assert rec.offset == 7
    assert rec.timestamp is not None


def test_overlong_ids_are_truncated() -> None:
    event_id, _, _ = envelope_fields(json.dumps({"id": "x" * 10_000}).encode())
    assert event_id is not None
    assert len(event_id) == 200


def test_valid_events_are_read_with_the_codec() -> None:
    from events.codec import encode
    from tests.helpers import sample_order

    event = sample_order("o-77")
    assert envelope_fields(encode(event)) == (event.id, "dropship.order.placed.v1", "o-77")
