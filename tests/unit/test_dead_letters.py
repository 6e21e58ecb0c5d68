"""Dead letters: one per refusal, stable ids, the refused bytes carried."""

from __future__ import annotations

import base64

from events.codec import DecodeError
from events.deadletter import DeadLetter
from pipeline.runtime.records import Record, dead_letter
from tests.unit.order_factories import paid


def test_each_refusal_of_one_record_is_its_own_dead_letter() -> None:
    rec = Record("shop.orders", 0, 7, b"o1", b'{"x": 1}', 1_700_000_000_000)
    letters = [dead_letter(rec, DecodeError("data", "refused", r), "orders", index=i)
               for i, r in enumerate(["x", "y"])]
    assert len({d.id for d in letters}) == 2
    again = dead_letter(rec, DecodeError("data", "refused", "x"), "orders", index=0)
    assert again == letters[0]  # stable: the same refusal re-derived is the same event


def test_a_released_held_event_is_carried_instead_of_the_record() -> None:
    rec = Record("shop.orders", 0, 7, b"o1", b"<the OrderPlaced>", 1_700_000_000_000)
    held = paid()
    letter = dead_letter(rec, DecodeError("data", "refused", "late"), "orders", original=held)
    assert isinstance(letter.data, DeadLetter)
    assert base64.b64decode(letter.data.original_b64) == held.model_dump_json().encode()
    assert letter.data.source_topic == held.TOPIC
