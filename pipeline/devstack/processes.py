"""Process and port helpers for the embedded stack.

A process we start is remembered as a :class:`Proc`: its PID *and* its start
time (from ``/proc/<pid>/stat``), so that a PID recycled by the kernel for some
other program is never mistaken for ours and never signalled.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


class StackError(Exception):
    """The embedded stack cannot do what was asked; ``str(err)`` is one line."""


@dataclass(frozen=True)
class Proc:
    """A process started by us: PID plus kernel start time (clock ticks since boot)."""

    pid: int
    start_ticks: int

    @classmethod
    def of(cls, pid: int) -> Proc:
        """Capture a live PID's identity; raises StackError if it is gone."""
        ticks = start_ticks(pid)
        if ticks is None:
            raise StackError(f"process {pid} exited right after it was started")
        return cls(pid, ticks)

    def alive(self) -> bool:
        """True if this very process (same PID *and* start time) still runs."""
        return start_ticks(self.pid) == self.start_ticks

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL. Only if it is still ours."""
        if not self.alive():
            return
        os.kill(self.pid, signal.SIGTERM)
        if not wait_until(lambda: not self.alive(), timeout_s):
            if self.alive():
                os.kill(self.pid, signal.SIGKILL)
            wait_until(lambda: not self.alive(), 5.0)


def start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks, or None if no such live process.

    A zombie (exited, not yet reaped) counts as gone.
    """
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # Field 2 (comm) may hold spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll ``predicate()`` until true or ``timeout_s`` passes; return its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def check_port_free(port: int, what: str, env_var: str) -> None:
    """Raise StackError (one line) if 127.0.0.1:``port`` cannot be bound.

    Probes as the servers bind, with ``SO_REUSEADDR``: connections of a server
    stopped a moment ago (TIME-WAIT) do not make its port look taken, while a
    live listener still does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as err:
            reason = "is taken" if err.errno == errno.EADDRINUSE else f"cannot be used ({err})"
            raise StackError(
                f"port {port} on 127.0.0.1 for the {what} {reason}; "
                f"free it or choose another with {env_var}"
            ) from None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for tests and port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def accepts_connections(port: int, timeout_s: float = 0.5) -> bool:
    """True if something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def spawn(argv: Sequence[str], env: dict[str, str], log_path: Path) -> Proc:
    """Start ``argv`` as a child process with our environment plus ``env``, output
    appended to ``log_path``. The caller stops it with :meth:`Proc.stop`."""
    with log_path.open("ab") as log:
        popen = subprocess.Popen(list(argv), env={**os.environ, **env},
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    return Proc.of(popen.pid)


def spawn_worker(env: dict[str, str], log_path: Path, agents: str | None = None) -> Proc:
    """Start ``dropship worker`` (``--agents agents`` if given) with :func:`spawn`, on a
    free web port unless ``env`` names one. Used by the demo and the benchmarks."""
    return spawn([sys.executable, "-m", "pipeline.entry.cli", "worker",
                  *(["--agents", agents] if agents else [])],
                 {"DROPSHIP_WEB_PORT": str(free_port()), **env}, log_path)
