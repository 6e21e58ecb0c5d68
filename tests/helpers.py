"""Helpers for tests: run the CLI as a user would, build events, make state folders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from events.envelope import CloudEvent, wrap
from events.orders import OrderLine, OrderPlaced
from events.types import Address, Money
from pipeline.runtime.migrate import upgrade_sync
from pipeline.runtime.settings import Settings

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
        return subprocess.Popen([sys.executable, "-m", "pipeline.entry.cli", "worker", *args],
                                env=env, stdout=log, stderr=subprocess.STDOUT)


def stop_worker(proc: subprocess.Popen[bytes], log_path: Path, timeout_s: float = 60.0) -> int:
    """SIGTERM a worker from :func:`start_worker` and return its exit code.

    If it has not exited within ``timeout_s``: SIGUSR1 (Faust then prints the stack
    of every asyncio task into its log), SIGKILL after 3 s, and an AssertionError
    carrying the end of the log, so a hang in CI says where it hung.
    """
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)
        time.sleep(3)
        proc.kill()
        proc.wait(timeout=10)
        tail = log_path.read_text(errors="replace")[-12000:]
        raise AssertionError(f"worker {proc.pid} still running {timeout_s:.0f} s after "
                             f"SIGTERM; end of its log:\n{tail}") from None
    log = log_path.read_text(errors="replace")
    if "did not stop within" in log:  # cut short by its stop timeout: say where it hung
        warnings.warn(f"worker {proc.pid}: {log[log.index('did not stop within'):][:6000]}",
                      stacklevel=2)
    return code


def isolate_env(monkeypatch: Any, workdir: Path) -> None:
    """For settings tests: drop every ``DROPSHIP_`` variable and work in ``workdir``,
    so no variable or env file of the developer leaks in."""
    for key in list(os.environ):
        if key.startswith("DROPSHIP_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(workdir)


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
        [sys.executable, "-m", "pipeline.entry.cli", *args], env=env,
        cwd=cwd or tempfile.gettempdir(),
        capture_output=True, text=True, timeout=timeout, check=False, input=stdin,
    )


def sample_order(order_id: str, now: datetime | None = None,
                 sku: str = "SKU-MUG") -> CloudEvent:
    """A valid ``OrderPlaced`` CloudEvent as the shop ``demo-shop`` publishes it."""
    now = now or datetime.now(UTC)
    order = OrderPlaced(
        order_id=order_id, shop_id="demo-shop", customer_ref="cust-1",
        ship_to=Address(name="Ada Lovelace", line1="1 Loop Road", city="Lyon",
                        postal_code="69001", country="FR"),
        currency="EUR",
        lines=(OrderLine(line_id="L1", sku=sku, quantity=2,
                         unit_price=Money(amount=Decimal("12.50"), currency="EUR")),),
        placed_at=now,
    )
    return wrap(order, id=str(uuid.uuid4()), source="shop/demo-shop", time=now)


def order_event(order_id: str) -> dict[str, Any]:
    """Factory: a valid CloudEvents ``OrderPlaced`` (as JSON) as a shop would publish it."""
    from events.codec import encode

    event: dict[str, Any] = json.loads(encode(sample_order(order_id)))
    return event


def new_database(base: Settings, prefix: str) -> Settings:
    """``base`` pointed at a new, migrated database ``<prefix>_<random>`` on the same
    server, created with ``base``'s URL (the owner's). Runs its own event loop:
    call it from sync code or a thread (the ``fresh_database`` fixture, benchmarks)."""
    import asyncio

    url = make_url(base.database_url)
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        conn = await asyncpg.connect(host=url.host, port=url.port, user=url.username,
                                     database=url.database)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    fresh = base.model_copy(update={
        "database_url": url.set(database=name).render_as_string(hide_password=False)})
    upgrade_sync(fresh)
    return fresh


def superuser_row(port: int, database: str, sql: str) -> Any:
    """The first row of ``sql`` (None for a statement) run as the embedded stack's
    superuser on 127.0.0.1:``port``, database ``database``."""
    import asyncio

    from pipeline.devstack.postgres import SUPERUSER

    async def run() -> Any:
        conn = await asyncpg.connect(host="127.0.0.1", port=port, user=SUPERUSER,
                                     database=database)
        try:
            return await conn.fetchrow(sql)
        finally:
            await conn.close()

    return asyncio.run(run())


def until(check: Any, timeout_s: float, what: str, interval_s: float = 1.0) -> Any:
    """Call ``check`` every ``interval_s`` until it returns something true, and return
    that; an AssertionError naming ``what`` (and the last value) after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s (last: {result!r})")
        time.sleep(interval_s)
