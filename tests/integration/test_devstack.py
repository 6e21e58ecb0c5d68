"""`dropship dev up | status | down`, driven through the CLI as a user would."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from pipeline.devstack.postgres import superuser_dsn
from pipeline.devstack.processes import Proc, StackError, accepts_connections, free_port
from tests.helpers import clean_env, make_state_dir, run_cli

pytestmark = pytest.mark.integration


@pytest.fixture
def state_dir() -> Iterator[Path]:
    path = make_state_dir("dropship-devstack-")
    try:
        yield path
    finally:
        run_cli("dev", "down", env=_env(path))
        shutil.rmtree(path, ignore_errors=True)


def _env(state_dir: Path, **extra: str) -> dict[str, str]:
    return clean_env(DROPSHIP_STATE_DIR=str(state_dir), **extra)


def _recorded(state_dir: Path) -> tuple[Proc, Proc]:
    raw = json.loads((state_dir / "stack.json").read_text())
    return Proc(**raw["broker"]), Proc(**raw["postgres"])


def test_up_twice_status_down(state_dir: Path) -> None:
    env = _env(state_dir, DROPSHIP_DEV_KAFKA_PORT=str(free_port()),
               DROPSHIP_DEV_PG_PORT=str(free_port()))
    first = run_cli("dev", "up", env=env)
    assert first.returncode == 0, first.stderr
    assert "started" in first.stdout
    broker, postgres = _recorded(state_dir)
    assert broker.alive()
    assert postgres.alive()
    assert "DROPSHIP_KAFKA_BOOTSTRAP_SERVERS" in (state_dir / "dev.env").read_text()

    second = run_cli("dev", "up", env=env)
    assert second.returncode == 0, second.stderr
    assert "already running" in second.stdout
    assert _recorded(state_dir) == (broker, postgres)  # same processes, nothing new
    port = int(env["DROPSHIP_DEV_PG_PORT"])
    _sql(port, "CREATE TABLE checkpoints_of_a_past_run (x int)")

    status = run_cli("dev", "status", env=env)
    assert status.returncode == 0, status.stderr
    assert "memory only" in status.stdout
    assert str(broker.pid) in status.stdout
    assert str(postgres.pid) in status.stdout

    stopped = run_cli("dev", "down", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert not broker.alive()
    assert not postgres.alive()
    assert not (state_dir / "stack.json").exists()
    assert not (state_dir / "dev.env").exists()

    after = run_cli("dev", "status", env=env)
    assert after.returncode == 1
    assert len(after.stderr.strip().splitlines()) == 1

    # up again: a new, empty broker, so an empty database too (what the old one held
    # pointed at records no broker has any more); the cluster's folder is reused
    again = run_cli("dev", "up", env=env)
    assert again.returncode == 0, again.stderr
    assert _sql(port, "SELECT to_regclass('checkpoints_of_a_past_run')") is None
    assert run_cli("dev", "down", env=env).returncode == 0


def _sql(port: int, query: str) -> object:
    async def run() -> object:
        conn = await asyncpg.connect(superuser_dsn(port), timeout=10)
        try:
            return await conn.fetchval(query)
        finally:
            await conn.close()

    return asyncio.run(run())


def test_taken_port_is_one_clear_line_and_leaves_nothing_running(state_dir: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        for var in ("DROPSHIP_DEV_KAFKA_PORT", "DROPSHIP_DEV_PG_PORT"):
            ports = {"DROPSHIP_DEV_KAFKA_PORT": str(free_port()),
                     "DROPSHIP_DEV_PG_PORT": str(free_port()), var: str(taken)}
            result = run_cli("dev", "up", env=_env(state_dir, **ports))
            assert result.returncode == 1
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1, result.stderr
            assert f"port {taken}" in lines[0]
            assert "taken" in lines[0]
            assert var in lines[0]
            assert "Traceback" not in result.stderr
            assert not (state_dir / "stack.json").exists()
            # Whatever started before the failure (the broker, when Postgres' port
            # was taken) was stopped again: nothing listens on the ports we gave.
            for port in ports.values():
                if port != str(taken):
                    assert not accepts_connections(int(port))


def test_missing_broker_binary_is_one_clear_line(state_dir: Path) -> None:
    env = _env(state_dir, CALF_TANSU_BIN=str(state_dir / "no-such-broker"),
               DROPSHIP_DEV_KAFKA_PORT=str(free_port()), DROPSHIP_DEV_PG_PORT=str(free_port()))
    result = run_cli("dev", "up", env=env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "broker binary" in lines[0]


def test_down_without_a_stack_is_harmless(state_dir: Path) -> None:
    result = run_cli("dev", "down", env=_env(state_dir))
    assert result.returncode == 0
    assert "nothing to stop" in result.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs Postgres as another user")
def test_state_dir_the_postgres_user_cannot_reach_falls_back_to_var_tmp() -> None:
    private = Path(tempfile.mkdtemp(prefix="dropship-private-"))  # mode 0700, root only
    state_dir = private / "state"
    env = _env(state_dir, DROPSHIP_DEV_KAFKA_PORT=str(free_port()),
               DROPSHIP_DEV_PG_PORT=str(free_port()))
    pg_dir: str | None = None
    try:
        result = run_cli("dev", "up", env=env)
        assert result.returncode == 0, result.stderr
        pg_dir = json.loads((state_dir / "stack.json").read_text())["pg_dir"]
        assert pg_dir.startswith("/var/tmp/dropship-pg-")
        assert _recorded(state_dir)[1].alive()
    finally:
        assert run_cli("dev", "down", env=env).returncode == 0
        if pg_dir:
            shutil.rmtree(pg_dir, ignore_errors=True)
        shutil.rmtree(private, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs Postgres as another user")
def test_a_planted_fallback_folder_is_refused() -> None:
    from pipeline.devstack.postgres import PgInstall, choose_pg_dir

    private = Path(tempfile.mkdtemp(prefix="dropship-private-"))
    install = PgInstall(Path("/nonexistent"), "dropship-pg")
    fallback = choose_pg_dir(install, private)  # computes a path, creates nothing
    try:
        fallback.symlink_to(private)  # an attacker's symlink at the predictable path
        with pytest.raises(StackError, match="not made by dropship"):
            choose_pg_dir(install, private)
    finally:
        fallback.unlink(missing_ok=True)
        shutil.rmtree(private, ignore_errors=True)


def test_the_readme_manual_sequence_runs(state_dir: Path) -> None:
    """README's manual sequence, line by line, from a project folder of its own:
    ``&`` starts a line in the background, ``kill %1`` stops it with SIGTERM,
    ``dropship health`` is retried until the worker is ready, every other line
    must exit 0. Ports are free ones (settings), the rest as written."""
    import re
    import signal
    import subprocess
    import sys
    import time

    from tests.helpers import REPO

    readme = (REPO / "README.md").read_text()
    block = re.search(r"<!-- manual-sequence -->\n```sh\n(.*?)```", readme, re.S)
    assert block is not None
    lines = [ln.split("#")[0].strip() for ln in block.group(1).splitlines()]
    env = clean_env(DROPSHIP_DEV_KAFKA_PORT=str(free_port()),
                    DROPSHIP_DEV_PG_PORT=str(free_port()), DROPSHIP_WEB_PORT=str(free_port()))
    cli = [sys.executable, "-m", "pipeline.entry.cli"]
    background: list[subprocess.Popen[bytes]] = []
    ran: list[str] = []
    try:
        for line in filter(None, lines):
            words = line.rstrip("&").split()
            if line == "kill %1":
                background[0].send_signal(signal.SIGTERM)
                assert background[0].wait(timeout=60) == 0
            elif line.endswith("&"):
                background.append(subprocess.Popen([*cli, *words[1:]], env=env, cwd=state_dir,
                                                   stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.STDOUT))
            else:
                deadline = time.monotonic() + (120 if words[1] == "health" else 0)
                while True:
                    done = subprocess.run([*cli, *words[1:]], env=env, cwd=state_dir,
                                          capture_output=True, text=True, timeout=300,
                                          check=False)
                    if done.returncode == 0 or time.monotonic() > deadline:
                        break
                    time.sleep(1)
                assert done.returncode == 0, (line, done.stdout, done.stderr)
                if words[1] == "simulate":
                    assert "placed 20 orders" in done.stdout
            ran.append(words[1] if words[0] == "dropship" else words[0])
    finally:
        for proc in background:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        run_cli("dev", "down", env=env, cwd=state_dir)
    assert ran == ["dev", "db", "topics", "worker", "health", "simulate", "ops", "kill", "dev"]
    assert not (state_dir / ".dropship" / "stack.json").exists()
