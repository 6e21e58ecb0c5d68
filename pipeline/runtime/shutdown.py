"""A bounded stop: a worker told to stop is gone within ``stop_timeout_s``.

Who calls it: :mod:`pipeline.entry.worker` starts a :class:`StopDeadline` when its Faust
worker begins to stop (SIGTERM, Ctrl-C, a crash).

Why: Faust stops an agent by asking its actor to leave the stream and waiting,
without a limit, for it to do so. Twice in some twenty runs of the test suite that
wait lasted over a minute (cause not found); an orchestrator would then SIGKILL
the worker after its grace period, with nothing in the log to say why.

Why exiting is safe: every agent commits its state, its outbox and its checkpoint
in one transaction. A worker that exits mid-batch leaves that batch uncommitted:
the next worker applies it again from the checkpoint and publishes any outbox row
left unsent. It is the crash every agent is tested against (SIGKILL tests).

What the deadline does when it expires: logs one warning with what was still
running (each asyncio task, down its chain of awaits), then exits the process
with status 0, as the stop asked for.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

log = logging.getLogger("dropship")


class StopDeadline:
    """A daemon timer that ends the process if a stop takes longer than ``timeout_s``."""

    def __init__(self, timeout_s: float, loop: asyncio.AbstractEventLoop,
                 exit: Callable[[int], Any] = os._exit) -> None:
        self.timeout_s, self.loop, self.exit = timeout_s, loop, exit
        self._timer: threading.Timer | None = None

    def start(self) -> None:
        """Start the clock (once; later calls do nothing). Called from the loop's thread."""
        if self._timer is None:
            self._timer = threading.Timer(self.timeout_s, self.expire)
            self._timer.daemon = True  # never keeps a finished process alive
            self._timer.start()

    def expire(self) -> None:
        """Runs on the timer's thread: 1. log what is still running; 2. flush every
        log handler; 3. exit without waiting for the stuck tasks."""
        log.warning("worker did not stop within %.0f s; exiting now (nothing is lost: "
                    "uncommitted batches are applied again from the checkpoints). "
                    "Still running:\n%s", self.timeout_s, describe_tasks(self.loop))
        for handler in logging.getLogger().handlers + log.handlers:
            handler.flush()
        self.exit(0)


def describe_tasks(loop: asyncio.AbstractEventLoop) -> str:
    """One line per unfinished task of ``loop``: its name, then where it waits,
    outermost call first. Safe to call from another thread (a snapshot that may
    miss a task started meanwhile)."""
    tasks: list[asyncio.Task[Any]] = []
    for _ in range(5):  # the loop's thread may change the task set while we copy it
        try:
            tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
            break
        except RuntimeError:
            continue
    lines = []
    for task in sorted(tasks, key=lambda t: t.get_name()):
        where = " > ".join(f"{f.f_code.co_name} ({Path(f.f_code.co_filename).name}:"
                           f"{f.f_lineno})" for f in awaits(task.get_coro()))
        lines.append(f"  {task.get_name()}: {where or repr(task.get_coro())}")
    return "\n".join(lines) or "  (no task)"


def awaits(coro: Any) -> Iterator[FrameType]:
    """The frames of ``coro`` and of what it awaits, down to the innermost
    (coroutines, async generators and generators)."""
    seen = 0
    while coro is not None and seen < 50:
        frame = (getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
                 or getattr(coro, "gi_frame", None))
        if frame is not None:
            yield frame
        coro = (getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None)
                or getattr(coro, "gi_yieldfrom", None))
        seen += 1
