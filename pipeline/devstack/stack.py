"""``dropship dev up | down | status``: the embedded broker + Postgres, as one stack.

The stack lives under a state folder (default ``.dropship/``):

- ``stack.json``: ports and the identity (PID + start time) of each process we
  started: ``down`` signals exactly these and nothing else;
- ``dev.env``: the ``DROPSHIP_`` settings that reach the stack, read by
  :func:`pipeline.runtime.settings.load_settings` from the project folder: the worker's
  URL as the application role ``dropship_app`` with the password ``up`` generated,
  and the superuser's as ``DROPSHIP_DATABASE_ADMIN_URL``. It and ``stack.json``
  (which also holds the password) are written with mode 0600;
- ``broker.log``, ``pg/`` (cluster data and ``postgres.log``; see
  :func:`pipeline.devstack.postgres.choose_pg_dir` for when it lives elsewhere).

Callers: the CLI, ``dropship demo`` and the test fixtures (tests use the same
code with a temporary state folder and free ports).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from pipeline.devstack.broker import start_broker
from pipeline.devstack.postgres import (
    APP_ROLE,
    DATABASE,
    SUPERUSER,
    PgInstall,
    choose_pg_dir,
    resolve_install,
    run_pg,
    set_app_password,
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
    #: The password of the application role (None: a stack recorded before roles).
    app_password: str | None = field(default=None, repr=False)

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def database_url(self) -> str:
        """The superuser's URL (owner of the schema): migrations, DDL, tests."""
        return f"postgresql+asyncpg://{SUPERUSER}@127.0.0.1:{self.pg_port}/{DATABASE}"

    @property
    def app_database_url(self) -> str:
        """The application role's URL, password included: what the worker uses."""
        if self.app_password is None:
            return self.database_url
        return (f"postgresql+asyncpg://{APP_ROLE}:{self.app_password}"
                f"@127.0.0.1:{self.pg_port}/{DATABASE}")

    def env(self) -> dict[str, str]:
        """The settings variables that point a dropship process (a worker, the ops
        commands) at this stack, as the application role. The group session timeout
        is 2 s here (heartbeats every 0.5 s): a worker killed with SIGKILL has its
        partitions served again by the others within about 4 s (bench/recovery.py,
        docs/reliability.md) instead of about 10 s with the default 6 s, which real
        Kafka needs (its brokers refuse sessions under group.min.session.timeout.ms,
        6 s by default)."""
        return {
            "DROPSHIP_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "DROPSHIP_KAFKA_ENABLE_IDEMPOTENCE": "false",
            "DROPSHIP_KAFKA_SESSION_TIMEOUT_S": "2",
            "DROPSHIP_KAFKA_HEARTBEAT_INTERVAL_S": "0.5",
            "DROPSHIP_DATABASE_URL": self.app_database_url,
            "DROPSHIP_STATE_DIR": str(self.state_dir),
        }

    def dev_env(self) -> dict[str, str]:
        """:meth:`env` plus the owner's URL for migrations and admin commands: the
        contents of ``dev.env``."""
        return {**self.env(), "DROPSHIP_DATABASE_ADMIN_URL": self.database_url}

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
        app_password=raw.get("app_password"),
    )


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by us only (0600, also if it existed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


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
        "app_password": stack.app_password,
    }
    _write_private(_state_path(stack.state_dir), json.dumps(raw, indent=2) + "\n")
    env = "".join(f"{k}={v}\n" for k, v in stack.dev_env().items())
    _write_private(stack.state_dir / ENV_FILE,
                   "# Written by `dropship dev up`; removed by `dropship dev down`.\n" + env)


def up(state_dir: Path, kafka_port: int, pg_port: int) -> tuple[Stack, bool]:
    """Start the stack, or report the one already running. Returns (stack, started).

    Idempotent: if ``state_dir`` records a healthy stack, it is returned as is
    (given an application password first if it was recorded without one).
    A recorded but broken stack is stopped first. Port 0 picks a free port.
    Steps: 1. broker (empty: it keeps nothing on disk); 2. Postgres (init once,
    create the database afresh, as the broker has none of the records it refers to;
    set a new random password for the application role); 3. write ``stack.json``
    and ``dev.env``.
    If step 2 fails, what started is stopped again, so a failed ``up`` leaves
    nothing running. Raises StackError (one line).
    """
    state_dir = state_dir.resolve()
    current = load(state_dir)
    if current is not None:
        if current.healthy():
            if current.app_password is None:
                current = replace(current, app_password=_new_app_password(current.pg_port))
                _save(current)
            return current, False
        _stop(current)
    state_dir.mkdir(parents=True, exist_ok=True)
    kafka_port = kafka_port or free_port()
    pg_port = pg_port or free_port()
    install = resolve_install()
    pg_dir = choose_pg_dir(install, state_dir)
    broker = start_broker(kafka_port, state_dir / "broker.log")
    try:
        postgres = start_postgres(install, pg_dir, pg_port, fresh=True)  # the broker is empty
    except BaseException:
        broker.stop()
        raise
    stack = Stack(state_dir, kafka_port, pg_port, broker, postgres,
                  str(install.bindir), install.os_user, pg_dir)
    try:
        stack = replace(stack, app_password=_new_app_password(pg_port))
    except BaseException:
        _stop(stack)
        raise
    _save(stack)
    return stack, True


def _new_app_password(pg_port: int) -> str:
    """Generate a password for the application role and set it in the cluster."""
    password = secrets.token_urlsafe(24)
    set_app_password(pg_port, password)
    return password


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


def restart_postgres(stack: Stack, mode: str = "immediate", down_s: float = 0.0) -> Stack:
    """Restart the stack's Postgres the way a crash or an outage would; return the new stack.

    Who calls it: the chaos and outage tests. ``mode`` is ``pg_ctl``'s shutdown
    mode (``immediate``: no checkpoint, crash recovery on start). With
    ``down_s`` > 0 the server stays stopped that long before it starts again.
    The new postmaster's identity is recorded in ``stack.json``, so ``down``
    stops it. Raises StackError (one line) if it does not come back.
    """
    install = PgInstall(Path(stack.pg_bindir), stack.pg_os_user)
    data = stack.pg_dir / "data"
    log = str(stack.pg_dir / "postgres.log")
    if down_s <= 0:
        run_pg(install, [install.tool("pg_ctl"), "-D", str(data), "-l", log, "-m", mode,
                         "-w", "-t", "60", "restart"], cwd=stack.pg_dir)
        postgres = Proc.of(int((data / "postmaster.pid").read_text().splitlines()[0]))
    else:
        run_pg(install, [install.tool("pg_ctl"), "-D", str(data), "-m", mode, "-w", "-t", "60",
                         "stop"], cwd=stack.pg_dir)
        time.sleep(down_s)
        postgres = start_postgres(install, stack.pg_dir, stack.pg_port)
    restarted = replace(stack, postgres=postgres)
    _save(restarted)
    return restarted
