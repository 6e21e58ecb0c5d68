"""Helpers shared by the benchmarks that start their own embedded stack.

- :func:`embedded_stack`: broker + Postgres on free ports in a temporary folder,
  migrated, every topic created; stopped and removed on exit, whatever happened;
- :func:`cpu_seconds` / :func:`tree_cpu_seconds`: CPU time from ``/proc``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipeline.devstack import Stack, down, up
from pipeline.devstack.processes import Proc, spawn
from pipeline.runtime.kafka import ensure_topics
from pipeline.runtime.migrate import upgrade_sync
from pipeline.runtime.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results"
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Embedded:
    """A running embedded stack and the settings that reach it as the schema owner."""

    stack: Stack
    settings: Settings
    temp: Path


@contextmanager
def embedded_stack(prefix: str = "dropship-bench-") -> Iterator[Embedded]:
    """Start a stack in a new temporary folder, migrate it and create every topic;
    on exit stop exactly its processes and remove its folders."""
    temp = Path(tempfile.mkdtemp(prefix=prefix))
    temp.chmod(0o755)  # Postgres may run as another user (we are root)
    stack, _ = up(temp, 0, 0)
    try:
        settings = Settings(_env_file=None, kafka_bootstrap_servers=stack.bootstrap_servers,
                            database_url=stack.database_url, database_admin_url=None,
                            app_id=f"bench-{secrets.token_hex(3)}")
        upgrade_sync(settings)
        asyncio.run(ensure_topics(settings))
        yield Embedded(stack, settings, temp)
    finally:
        down(temp)
        shutil.rmtree(stack.pg_dir, ignore_errors=True)  # may live outside temp
        shutil.rmtree(temp, ignore_errors=True)


def _stat(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2:].split()  # fields from 3 (state) on


def cpu_seconds(pid: int, reaped_children: bool = False) -> float:
    """User + system CPU of ``pid`` (with ``reaped_children``: plus that of its children
    that have exited and been waited for); 0.0 if the process is gone."""
    try:
        fields = _stat(pid)
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / _TICKS


def children(pid: int) -> list[int]:
    """The live child processes of ``pid``."""
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found.extend(int(c) for c in (task / "children").read_text().split())
    except OSError:
        return found
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a server and its children (Postgres: the postmaster and its backends),
    live ones and those that exited."""
    return cpu_seconds(pid, reaped_children=True) + sum(cpu_seconds(c) for c in children(pid))


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """A process's ``VmRSS`` (or ``VmHWM``: its peak) in bytes; raises ``OSError`` if
    it is gone."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """:func:`rss_bytes` in MiB; 0.0 if the process is gone."""
    try:
        return round(rss_bytes(pid, field) / 2**20, 1)
    except OSError:
        return 0.0


def start_profile(pid: int, out: Path, rate: int = 100) -> Proc:
    """Sample ``pid`` with py-spy (``pip install -e '.[bench]'``) into ``out`` (raw format)
    until it exits or the returned process is stopped."""
    py_spy = Path(sys.executable).with_name("py-spy")
    return spawn([str(py_spy), "record", "--pid", str(pid), "--rate", str(rate), "--format",
                  "raw", "--nolineno", "--nonblocking", "--output", str(out)],
                 {}, out.with_suffix(".py-spy.log"))


def profile_shares(raw: Path, categories: Sequence[tuple[str, str]]) -> dict[str, float]:
    """Share of a py-spy raw profile's samples per category: a sample counts for the
    category of its deepest frame that contains one of the ``(substring, category)``
    patterns (the first pattern that matches that frame), else for "other"."""
    counts: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        total += int(n)
        found = "other"
        for frame in reversed(stack.split(";")):
            match = next((cat for pattern, cat in categories if pattern in frame), None)
            if match is not None:
                found = match
                break
        counts[found] = counts.get(found, 0) + int(n)
    return {cat: round(100 * n / total, 1)
            for cat, n in sorted(counts.items(), key=lambda kv: -kv[1])} if total else {}
