"""Secrets never reach the output: ``dropship worker`` started as a user would, with a
database password and a Kafka SASL password set, on the happy path and on the
error paths (SASL against a broker that may not speak it, Postgres refusing the
password, debug logging with tracebacks); plus ``settings``, ``dev status`` and
``db upgrade``. Every byte a process writes is captured and searched.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from pipeline.devstack import Stack
from pipeline.devstack.processes import free_port
from pipeline.runtime.settings import Settings
from tests.helpers import run_cli

pytestmark = pytest.mark.integration

SASL_PASSWORD = "KafkaSASL-pw-7d1f0c"  # distinctive: a hit cannot be a coincidence
WRONG_DB_PASSWORD = "Wrong-DB-pw-93ab2e"


def _run_briefly(env: dict[str, str], log: Path, seconds: float,
                 until: str | None = None) -> str:
    """Start ``dropship worker``; let it run ``seconds`` (less if it exits, or once
    ``until`` shows in its output), then SIGTERM it (SIGKILL after 30 s); return
    everything it wrote to stdout and stderr."""
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.entry.cli", "worker"], env=env,
                                stdout=out, stderr=subprocess.STDOUT,
                                cwd=tempfile.gettempdir())
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and proc.poll() is None:
            if until and until in log.read_text(errors="replace"):
                break
            time.sleep(0.5)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    return log.read_text(errors="replace")


def _assert_clean(output: str, *secrets: str) -> None:
    """No secret in ``output``, also once line wrapping (rich wraps long lines) is undone."""
    unwrapped = "".join(output.split())
    for secret in secrets:
        assert secret, "an empty secret proves nothing"
        assert secret not in output, f"secret leaked:\n{output[-4000:]}"
        assert secret not in unwrapped, f"secret leaked across lines:\n{output[-4000:]}"


@pytest.fixture
def app_password(stack: Stack) -> str:
    assert stack.app_password
    return stack.app_password


@pytest.mark.parametrize(("mechanism", "level"), [
    ("SCRAM-SHA-512", "info"), ("SCRAM-SHA-512", "debug"), ("PLAIN", "debug")])
def test_worker_with_sasl_prints_no_password(
    stack: Stack, migrated: Settings, app_password: str, mechanism: str, level: str,
    cli_env: Callable[..., dict[str, str]], tmp_path: Path,
) -> None:
    """The embedded broker refuses SCRAM (the worker stops with one line, or a
    traceback at debug level); whatever it does with PLAIN, nothing may leak."""
    env = cli_env(DROPSHIP_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
                  DROPSHIP_KAFKA_SASL_MECHANISM=mechanism,
                  DROPSHIP_KAFKA_SASL_USERNAME="dropship-worker",
                  DROPSHIP_KAFKA_SASL_PASSWORD=SASL_PASSWORD,
                  DROPSHIP_LOG_LEVEL=level, DROPSHIP_WEB_PORT=str(free_port()))
    assert app_password in env["DROPSHIP_DATABASE_URL"]
    output = _run_briefly(env, tmp_path / "worker.log", 20)
    print(output[-3000:])
    assert output.strip(), "the worker said nothing: nothing was checked"
    _assert_clean(output, SASL_PASSWORD, app_password)


def test_worker_refused_by_postgres_prints_no_password(
    stack: Stack, migrated: Settings, app_password: str,
    cli_env: Callable[..., dict[str, str]], tmp_path: Path,
) -> None:
    wrong = make_url(stack.app_database_url).set(password=WRONG_DB_PASSWORD)
    env = cli_env(DROPSHIP_DATABASE_URL=wrong.render_as_string(hide_password=False),
                  DROPSHIP_WEB_PORT=str(free_port()))
    output = _run_briefly(env, tmp_path / "worker.log", 60,
                          until="password authentication failed")
    assert "password authentication failed" in output, output[-3000:]
    _assert_clean(output, WRONG_DB_PASSWORD, app_password)


def test_worker_at_work_prints_no_password(
    stack: Stack, migrated: Settings, app_password: str,
    cli_env: Callable[..., dict[str, str]], tmp_path: Path,
) -> None:
    env = cli_env(DROPSHIP_LOG_LEVEL="debug", DROPSHIP_WEB_PORT=str(free_port()))
    output = _run_briefly(env, tmp_path / "worker.log", 20)
    assert "[^Worker]: Starting" in output, output[-3000:]
    _assert_clean(output, app_password)


def test_commands_print_no_password(
    stack: Stack, migrated: Settings, app_password: str,
    cli_env: Callable[..., dict[str, str]],
) -> None:
    env = cli_env(DROPSHIP_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
                  DROPSHIP_KAFKA_SASL_USERNAME="dropship-worker",
                  DROPSHIP_KAFKA_SASL_PASSWORD=SASL_PASSWORD)
    for args in (("settings",), ("dev", "status")):
        result = run_cli(*args, env=env)
        assert result.returncode == 0, result.stderr
        _assert_clean(result.stdout + result.stderr, SASL_PASSWORD, app_password)
    assert "dropship_app:***@" in run_cli("settings", env=env).stdout
    # migrations as the owner while the worker's URL holds the password
    upgrade = run_cli("db", "upgrade", env=cli_env(
        DROPSHIP_DATABASE_ADMIN_URL=stack.database_url, DROPSHIP_LOG_LEVEL="debug"))
    assert upgrade.returncode == 0, upgrade.stderr
    _assert_clean(upgrade.stdout + upgrade.stderr, app_password)
    # and as the app role, which may not migrate: refused, still without the password
    refused = run_cli("db", "upgrade", "0006", env=cli_env(
        DROPSHIP_DATABASE_ADMIN_URL=stack.app_database_url))
    _assert_clean(refused.stdout + refused.stderr, app_password)


def test_dev_env_holds_the_password_for_our_eyes_only(stack: Stack, app_password: str) -> None:
    dev_env = stack.state_dir / "dev.env"
    assert app_password in dev_env.read_text()
    assert dev_env.stat().st_mode & 0o777 == 0o600
    assert (stack.state_dir / "stack.json").stat().st_mode & 0o777 == 0o600
