"""``dropship dev up | down | status``: the embedded broker + Postgres, as one stack.

The stack lives under a state folder (default ``.dropship/``):

- ``stack.json``: ports and the identity (PID + start time) of each process we
  started: ``down`` signals exactly these and nothing else;
- ``dev.env``: the ``DROPSHIP_`` settings that reach the stack, read by
  :func:`pipeline.settings.load_settings` from the project folder;
- ``broker.log``, ``pg/`` (cluster data and ``postgres.log``; see
  :func:`pipeline.devstack.postgres.choose_pg_dir` for when it lives elsewhere).

Callers: the CLI, ``dropship demo`` and the test fixtures (tests use the same
code with a temporary state folder and free ports).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.devstack.broker import start_broker
from pipeline.devstack.postgres import (
    DATABASE,
    SUPERUSER,
    PgInstall,
    choose_pg_dir,
    resolve_install,
    start_postgres,
    stop_postgres,
)
from pipeline.devstack.processes import Proc, StackError, accepts_connections, free_port

STATE_FILE = "stack.json"
ENV_FILE = "dev.env"


@dataclass(frozen=True)
class Stack:
    """A running (or recorded) embedded stack."""

    state_dir: Path
    kafka_port: int
    pg_port: int
    broker: Proc
    postgres: Proc
    pg_bindir: str
    pg_os_user: str | None
    pg_dir: Path

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def database_url(self) -> str:
        return f"postgresql+asyncpg://{SUPERUSER}@127.0.0.1:{self.pg_port}/{DATABASE}"

    def env(self) -> dict[str, str]:
        """The settings variables that point a dropship process at this stack."""
        return {
            "DROPSHIP_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "DROPSHIP_KAFKA_ENABLE_IDEMPOTENCE": "false",
            "DROPSHIP_DATABASE_URL": self.database_url,
            "DROPSHIP_STATE_DIR": str(self.state_dir),
        }

    def health(self) -> dict[str, bool]:
        """Per component: is our process alive and accepting connections."""
        return {
            "broker": self.broker.alive() and accepts_connections(self.kafka_port),
            "postgres": self.postgres.alive() and accepts_connections(self.pg_port),
        }

    def healthy(self) -> bool:
        return all(self.health().values())


def _state_path(state_dir: Path) -> Path:
    return state_dir / STATE_FILE


def load(state_dir: Path) -> Stack | None:
    """The stack recorded in ``state_dir``, or None if none was started there."""
    path = _state_path(state_dir)
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    return Stack(
        state_dir=state_dir,
        kafka_port=raw["kafka_port"],
        pg_port=raw["pg_port"],
        broker=Proc(**raw["broker"]),
        postgres=Proc(**raw["postgres"]),
        pg_bindir=raw["pg_bindir"],
        pg_os_user=raw.get("pg_os_user"),
        pg_dir=Path(raw["pg_dir"]),
    )


def _save(stack: Stack) -> None:
    raw = {
        "kafka_port": stack.kafka_port,
        "pg_port": stack.pg_port,
        "broker": asdict(stack.broker),
        "postgres": asdict(stack.postgres),
        "pg_bindir": stack.pg_bindir,
        "pg_os_user": stack.pg_os_user,
        "pg_dir": str(stack.pg_dir),
        "broker_storage": "memory (forgotten when the broker stops)",
    }
    _state_path(stack.state_dir).write_text(json.dumps(raw, indent=2) + "\n")
    env = "".join(f"{k}={v}\n" for k, v in stack.env().items())
    (stack.state_dir / ENV_FILE).write_text(
        "# Written by `dropship dev up`; removed by `dropship dev down`.\n" + env
    )


def up(state_dir: Path, kafka_port: int, pg_port: int) -> tuple[Stack, bool]:
    """Start the stack, or report the one already running. Returns (stack, started).

    Idempotent: if ``state_dir`` records a healthy stack, it is returned as is.
    A recorded but broken stack is stopped first. Port 0 picks a free port.
    Steps: 1. broker; 2. Postgres (init once, create database); 3. write
    ``stack.json`` and ``dev.env``. If step 2 fails, the broker is stopped again,
    so a failed ``up`` leaves nothing running. Raises StackError (one line).
    """
    state_dir = state_dir.resolve()
    current = load(state_dir)
    if current is not None:
        if current.healthy():
            return current, False
        _stop(current)
    state_dir.mkdir(parents=True, exist_ok=True)
    kafka_port = kafka_port or free_port()
    pg_port = pg_port or free_port()
    install = resolve_install()
    pg_dir = choose_pg_dir(install, state_dir)
    broker = start_broker(kafka_port, state_dir / "broker.log")
    try:
        postgres = start_postgres(install, pg_dir, pg_port)
    except BaseException:
        broker.stop()
        raise
    stack = Stack(state_dir, kafka_port, pg_port, broker, postgres,
                  str(install.bindir), install.os_user, pg_dir)
    _save(stack)
    return stack, True


def _stop(stack: Stack) -> None:
    stack.broker.stop()
    stop_postgres(PgInstall(Path(stack.pg_bindir), stack.pg_os_user),
                  stack.pg_dir, stack.postgres)


def down(state_dir: Path) -> Stack | None:
    """Stop exactly the processes ``up`` recorded in ``state_dir`` and forget them.

    Returns the stack that was stopped, or None if none was recorded. The
    Postgres data folder is kept (the next ``up`` reuses it); the broker's data
    is gone. Raises StackError if a recorded process survives.
    """
    state_dir = state_dir.resolve()
    stack = load(state_dir)
    if stack is None:
        return None
    _stop(stack)
    if stack.broker.alive() or stack.postgres.alive():
        raise StackError(f"could not stop the stack recorded in {state_dir}")
    _state_path(state_dir).unlink(missing_ok=True)
    (state_dir / ENV_FILE).unlink(missing_ok=True)
    return stack


def require_running(state_dir: Path) -> Stack:
    """The healthy stack in ``state_dir``; StackError (one line) otherwise."""
    stack = load(state_dir.resolve())
    if stack is None or not stack.healthy():
        raise StackError(f"no embedded stack runs in {state_dir}; run `dropship dev up`")
    return stack
