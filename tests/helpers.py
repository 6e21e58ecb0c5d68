"""Helpers for tests: run the CLI as a user would, build events, make state folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def make_state_dir(prefix: str = "dropship-test-") -> Path:
    """A fresh state folder the unprivileged Postgres user can traverse."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any ``DROPSHIP_`` setting, plus ``extra``:
    a developer's own settings never leak into a tested command."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROPSHIP_")}
    env.update(extra)
    return env


def start_worker(env: dict[str, str], log_path: Path, *args: str) -> subprocess.Popen[bytes]:
    """Start ``dropship worker ARGS`` as a user would, its output going to ``log_path``."""
    with log_path.open("wb") as log:
        return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "worker", *args],
                                env=env, stdout=log, stderr=subprocess.STDOUT)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120.0,
            cwd: Path | None = None, stdin: str | None = None,
            ) -> subprocess.CompletedProcess[str]:
    """Run ``dropship ARGS`` as a user would, capturing its output.

    Runs outside the project folder by default, so a developer's own
    ``.dropship/dev.env`` is never read.
    """
    if env is None:
        env = clean_env()
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], env=env, cwd=cwd or tempfile.gettempdir(),
        capture_output=True, text=True, timeout=timeout, check=False, input=stdin,
    )


def order_event(order_id: str) -> dict[str, Any]:
    """Factory: a valid CloudEvents ``OrderPlaced`` (as JSON) as a shop would publish it."""
    from events.codec import encode
    from pipeline.demo import sample_order

    event: dict[str, Any] = json.loads(encode(sample_order(order_id)))
    return event
