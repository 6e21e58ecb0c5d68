"""``dropship simulate`` on the real broker: what it records is what Kafka holds."""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from events.codec import DecodeError, decode
from events.topics import SHOP_ORDERS, SUPPLIER_CATALOG
from pipeline.runtime.settings import Settings
from tests.helpers import run_cli
from tests.projection_story import read_back

pytestmark = pytest.mark.integration


def test_simulate_sends_what_it_records_and_garbles_what_it_says(
        settings: Settings, cli_env: Callable[..., dict[str, str]], tmp_path: Path) -> None:
    record = tmp_path / "sent.jsonl"
    prefix = f"sim{settings.app_id[-6:]}"
    result = run_cli("simulate", "--orders", "40", "--rate", "0", "--settle", "2",
                     "--speed", "600",
                     "--prefix", prefix, "--seed", "3", "--share", "malformed=0.2",
                     "--share", "duplicate=0.1", "--record", str(record), env=cli_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"run {prefix}: 3 shops, 6 suppliers, 40 skus" in result.stdout
    assert "placed 40 orders" in result.stdout
    sent = [json.loads(line) for line in record.read_text().splitlines()]
    on_kafka = {(r.topic, r.partition, r.offset): r.value
                for r in asyncio.run(read_back(settings, (SHOP_ORDERS, SUPPLIER_CATALOG)))}
    for s in sent:  # every record sent is on the broker, byte for byte, where it says
        assert on_kafka[(s["topic"], s["partition"], s["offset"])] == base64.b64decode(s["value"])
    faults = Counter(s["fault"] for s in sent)
    malformed = [s for s in sent if s["fault"] not in (None, "duplicate", "reorder")]
    assert malformed
    assert faults["duplicate"] > 0
    for s in malformed:
        with pytest.raises(DecodeError):
            decode(base64.b64decode(s["value"]), topic=s["topic"])
        assert f"at {s['topic']}[{s['partition']}]@{s['offset']}" in result.stdout
    placed = {decode(base64.b64decode(s["value"])).data.order_id  # type: ignore[attr-defined]
              for s in sent if s["type"] == "dropship.order.placed.v1" and s["fault"] is None}
    assert len(placed) == 40
    assert all(o.startswith(prefix) for o in placed)


def test_simulate_refuses_a_bad_share_in_one_line(cli_env: Callable[..., dict[str, str]]) -> None:
    result = run_cli("simulate", "--share", "malformd=0.1", env=cli_env())
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: --share: unknown share 'malformd'; known: pay, pay_late, pay_in_two, overpay, "
        "wrong_currency, cancel, cancel_units, coupon, confirm_delivery, return, defective, "
        "duplicate, reorder, malformed, reject, silent, late_dispatch, ship_anyway, resellable, "
        "sold_elsewhere, late_delivery, delivery_failed"]
