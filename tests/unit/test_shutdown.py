"""``pipeline.runtime.shutdown``: a stop that outlasts its deadline is logged and cut short."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time

import pytest

from pipeline.runtime.shutdown import StopDeadline, describe_tasks
from tests.helpers import REPO


async def _waits_on(event: asyncio.Event) -> None:
    await event.wait()


async def _stuck_batch(event: asyncio.Event) -> None:
    await _waits_on(event)


async def test_an_expired_deadline_logs_where_each_task_waits_then_exits_0(
    caplog: pytest.LogCaptureFixture,
) -> None:
    never = asyncio.Event()
    stuck = asyncio.create_task(_stuck_batch(never), name="agent-batch")
    exits: list[int] = []
    deadline = StopDeadline(0.2, asyncio.get_running_loop(), exit=exits.append)
    with caplog.at_level(logging.WARNING, logger="dropship"):
        deadline.start()
        deadline.start()  # a second stop signal does not start a second clock
        for _ in range(50):
            if exits:
                break
            await asyncio.sleep(0.05)
    stuck.cancel()
    assert exits == [0]
    [record] = [r for r in caplog.records if "did not stop within" in r.getMessage()]
    line = next(ln for ln in record.getMessage().splitlines() if "agent-batch" in ln)
    # outermost first, down to the innermost await
    assert line.index("_stuck_batch") < line.index("_waits_on") < line.index("wait (")


def test_a_process_that_stops_in_time_does_not_wait_for_the_clock() -> None:
    code = ("import asyncio; from pipeline.runtime.shutdown import StopDeadline\n"
            "async def main():\n"
            "    StopDeadline(60, asyncio.get_running_loop(), exit=print).start()\n"
            "asyncio.run(main())\n")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=30)
    assert (done.returncode, done.stdout) == (0, "")  # exit() never called
    assert time.monotonic() - started < 30


def test_describe_tasks_of_an_idle_loop() -> None:
    loop = asyncio.new_event_loop()
    try:
        assert describe_tasks(loop) == "  (no task)"
    finally:
        loop.close()
