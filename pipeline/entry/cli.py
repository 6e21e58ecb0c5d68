"""The ``dropship`` command line (entry point; nothing of ours imports this module).

Every failure a user can cause or meet (bad setting, port taken, server down)
ends with one line on stderr, ``error: ...``, and a non-zero exit; never a
traceback (set ``DROPSHIP_LOG_LEVEL=debug`` to get one).
"""

from __future__ import annotations

import asyncio
import os
import sys
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from pipeline.devstack import StackError
from pipeline.entry import ops_levers
from pipeline.entry.cli_support import err, fail
from pipeline.entry.ops_cli import ops_app, order_app, projections_app
from pipeline.runtime.settings import Settings, SettingsError, load_settings

app = typer.Typer(help="dropship: order fulfillment pipeline for dropshipping.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
dev_app = typer.Typer(help="The embedded development stack (Tansu broker + PostgreSQL).",
                      no_args_is_help=True)
db_app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)
retention_app = typer.Typer(help="Bounded tables: prune what is past its window.",
                            no_args_is_help=True)
app.add_typer(dev_app, name="dev")
app.add_typer(db_app, name="db")
app.add_typer(retention_app, name="retention")
app.add_typer(order_app, name="order")
ops_levers.register(ops_app)
app.add_typer(ops_app, name="ops")
app.add_typer(projections_app, name="projections")

out = Console()

StateDirOpt = Annotated[
    Path | None, typer.Option("--state-dir", help="State folder [env DROPSHIP_STATE_DIR]")
]


def _settings(**overrides: object) -> Settings:
    return load_settings(**{k: v for k, v in overrides.items() if v is not None})


# --- dev ---------------------------------------------------------------------

@dev_app.command("up")
def dev_up(
    state_dir: StateDirOpt = None,
    kafka_port: Annotated[int | None, typer.Option(help="[env DROPSHIP_DEV_KAFKA_PORT]")] = None,
    pg_port: Annotated[int | None, typer.Option(help="[env DROPSHIP_DEV_PG_PORT]")] = None,
) -> None:
    """Start the broker and Postgres (or report the running stack) and print their settings."""
    from pipeline.devstack import up

    s = _settings(state_dir=state_dir, dev_kafka_port=kafka_port, dev_pg_port=pg_port)
    stack, started = up(s.state_dir, s.dev_kafka_port, s.dev_pg_port)
    out.print("started" if started else "already running", f"(state in {stack.state_dir})")
    _print_stack(stack)


@dev_app.command("down")
def dev_down(state_dir: StateDirOpt = None) -> None:
    """Stop exactly the processes `dev up` started (by PID)."""
    from pipeline.devstack import down

    s = _settings(state_dir=state_dir)
    stack = down(s.state_dir)
    if stack is None:
        out.print(f"no stack recorded in {s.state_dir.resolve()}; nothing to stop")
    else:
        out.print(f"stopped broker (pid {stack.broker.pid}) and "
                  f"postgres (pid {stack.postgres.pid}); "
                  f"Postgres data kept in {stack.pg_dir}")


@dev_app.command("status")
def dev_status(state_dir: StateDirOpt = None) -> None:
    """Show the stack's processes, ports and health; exit 1 if it is not running."""
    from pipeline.devstack import load

    s = _settings(state_dir=state_dir)
    stack = load(s.state_dir.resolve())
    if stack is None:
        fail(f"no embedded stack in {s.state_dir.resolve()}; run `dropship dev up`")
    _print_stack(stack)
    if not stack.healthy():
        fail("the embedded stack is not healthy; run `dropship dev up` to restart it")


def _print_stack(stack: object) -> None:
    from pipeline.devstack import Stack

    assert isinstance(stack, Stack)
    health = stack.health()
    table = Table(title="embedded stack")
    for col in ("component", "pid", "address", "state", "storage"):
        table.add_column(col)
    table.add_row("broker (Tansu)", str(stack.broker.pid), stack.bootstrap_servers,
                  "up" if health["broker"] else "DOWN",
                  "memory only: forgets everything when stopped")
    table.add_row("postgres", str(stack.postgres.pid), f"127.0.0.1:{stack.pg_port}",
                  "up" if health["postgres"] else "DOWN", f"{stack.pg_dir}/data")
    out.print(table)
    from pipeline.runtime.settings import redact_url

    out.print(f"settings (in {stack.state_dir}/dev.env, with the password; mode 0600):")
    for key, value in stack.dev_env().items():
        out.print(f"  export {key}={redact_url(value) if key.endswith('_URL') else value}",
                  highlight=False)


# --- db ----------------------------------------------------------------------

@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument()] = "head",
    wait_s: Annotated[float, typer.Option(
        min=0, help="Wait up to this long for Postgres to accept connections "
                    "(retrying every second) before migrating.")] = 0.0,
) -> None:
    """Apply the schema migrations up to REVISION (default: head), to every database
    of the settings (DROPSHIP_DATABASE_URL and each agent's own, if set)."""
    from pipeline.runtime.migrate import upgrade_sync, wait_for_database
    from pipeline.runtime.settings import database_name

    every = _settings().databases()
    for s in every:
        if wait_s > 0:
            wait_for_database(s, wait_s)
        upgrade_sync(s, revision)
    if len(every) == 1:
        out.print(f"database migrated to {revision}")
    else:
        out.print(f"databases {', '.join(database_name(s.database_url) for s in every)} "
                  f"migrated to {revision}", highlight=False)


# --- worker, topics, settings --------------------------------------------------

@app.command("worker")
def worker(
    web_bind: Annotated[str | None, typer.Option(help="[env DROPSHIP_WEB_BIND]")] = None,
    web_port: Annotated[int | None, typer.Option(help="[env DROPSHIP_WEB_PORT]")] = None,
    agents: Annotated[str, typer.Option(
        help="Comma-separated agents to run: projector, allocation, orders")] = "all",
) -> None:
    """Run a pipeline worker until stopped with SIGTERM or Ctrl-C."""
    from pipeline.entry import worker as worker_module

    only = worker_module.AGENTS if agents == "all" else tuple(
        a.strip() for a in agents.split(",") if a.strip())
    unknown = sorted(set(only) - set(worker_module.AGENTS))
    if unknown or not only:
        fail(f"--agents: unknown agent(s) {', '.join(unknown) or '(none given)'}; "
             f"choose from {', '.join(worker_module.AGENTS)}")
    s = _settings(web_bind=web_bind, web_port=web_port)
    sys.argv = [sys.argv[0], "worker"]  # Faust's Worker reads argv; keep ours out of it
    worker_module.run(s, only)


@retention_app.command("run")
def retention_run(
    every_s: Annotated[float, typer.Option(
        min=0, help="Run again every this many seconds until stopped (0: once).")] = 0.0,
) -> None:
    """Delete applied-event ids, published outbox rows and (if a window is set)
    event_log rows past their DROPSHIP_RETENTION_* windows, as the schema owner, in
    every database of the settings (one line each)."""
    import time

    from pipeline.entry.cli_support import with_engine
    from pipeline.runtime.retention import describe

    every = _settings().databases()  # each agent's own database too, if it has one
    while True:
        for s in every:
            t0 = time.monotonic()
            deleted = with_engine(partial(_prune_with, s), s, admin=True, agent=None)
            out.print(describe(deleted, time.monotonic() - t0), highlight=False)
        if every_s <= 0:
            return
        time.sleep(every_s)


async def _prune_with(settings: Settings, engine: Any) -> dict[str, int] | None:
    from pipeline.runtime.retention import prune

    return await prune(engine, settings)


@app.command("health")
def health(
    web_port: Annotated[int | None, typer.Option(help="[env DROPSHIP_WEB_PORT]")] = None,
) -> None:
    """Ask the worker on this machine whether it is ready (assigned and caught up):
    exit 0 if so, else 1 with the reason. Compose's worker healthcheck runs it."""
    import json
    import urllib.error
    import urllib.request

    s = _settings(web_port=web_port)
    url = f"http://127.0.0.1:{s.web_port}/health"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read() or b"{}")
        fail(f"not ready: {body.get('reason') or exc.code}")
    except (OSError, ValueError) as exc:
        fail(f"no worker answers {url}: {exc}")
    out.print(f"ready: {body.get('partitions')} partitions, "
              f"at most {body.get('max_lag')} records behind", highlight=False)


@app.command("topics")
def topics() -> None:
    """Create any missing topic with the configured partition count."""
    from pipeline.runtime.kafka import ensure_topics

    s = _settings()
    created = asyncio.run(ensure_topics(s))
    out.print(f"created: {', '.join(created) or 'none (all exist)'}")


@app.command("publish")
def publish(
    file: Annotated[str, typer.Argument(help="JSON Lines file of CloudEvents, or - for stdin")],
    topic: Annotated[str, typer.Option(help="Topic to publish to, e.g. shop.orders")],
    skip_invalid: Annotated[bool, typer.Option(help="Send the valid lines anyway.")] = False,
) -> None:
    """Validate every line, then send them keyed by subject; report each line."""
    from pipeline.entry.publisher import publish as publish_lines

    s = _settings()
    if file == "-":
        lines = sys.stdin.buffer.readlines()
    else:
        path = Path(file)
        if not path.is_file():
            fail(f"no such file: {file}")
        lines = path.read_bytes().splitlines()
    try:
        outcomes = asyncio.run(publish_lines(s, topic, lines, skip_invalid))
    except ValueError as exc:
        fail(str(exc))
    for outcome in outcomes:
        out.print(outcome.describe(topic), markup=False, highlight=False, soft_wrap=True)
    refused = sum(1 for o in outcomes if o.error)
    sent = sum(1 for o in outcomes if o.sent)
    if refused:
        tail = "" if skip_invalid else "; nothing sent (use --skip-invalid to send the valid ones)"
        fail(f"{refused} of {len(outcomes)} lines refused, {sent} sent{tail}")
    out.print(f"{sent} sent to {topic}")


schema_app = typer.Typer(help="The event contracts as documents.", no_args_is_help=True)
app.add_typer(schema_app, name="schema")


@schema_app.command("export")
def schema_export(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write into.")] = Path("docs"),
    check: Annotated[bool, typer.Option(help="Only check the files are current.")] = False,
) -> None:
    """Write docs/schemas/<type>.json (JSON Schema) and docs/asyncapi.json (AsyncAPI 3.0)."""
    from events.schemas import render

    stale = []
    for rel, text in render().items():
        path = out_dir / rel
        if path.exists() and path.read_text() == text:
            continue
        stale.append(rel)
        if not check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if check and stale:
        fail(f"{len(stale)} contract documents are stale ({', '.join(stale[:3])}...); "
             "run `dropship schema export`")
    out.print(f"{len(stale)} files {'stale' if check else 'written'} under {out_dir}")


@app.command("settings")
def show_settings() -> None:
    """Print the effective settings (secrets masked)."""
    from pipeline.runtime.settings import masked

    for name, value in masked(_settings()).items():
        out.print(f"DROPSHIP_{name.upper()}={value}", highlight=False, soft_wrap=True)


SharesOpt = Annotated[list[str] | None, typer.Option(
    "--share", help="Behaviour share NAME=P (0..1), repeatable; names: "
                    "pay, pay_late, cancel, confirm_delivery, return, duplicate, reorder, "
                    "malformed, reject, silent, late_dispatch, resellable")]


def _shares(pairs: list[str] | None) -> dict[str, float]:
    from simulator.world import Shares

    shares: dict[str, float] = {}
    for pair in pairs or ():
        name, _, value = pair.partition("=")
        try:
            shares[name.strip()] = float(value)
        except ValueError:
            fail(f"--share {pair!r}: expected NAME=P with P from 0 to 1, e.g. malformed=0.02")
    try:
        Shares().with_overrides(shares)
    except ValueError as exc:
        fail(f"--share: {exc}")
    return shares


@app.command("demo")
def demo(
    orders: Annotated[int, typer.Option(min=1, help="Orders the shops place.")] = 300,
    rate: Annotated[float, typer.Option(min=0.1, help="Orders per second.")] = 10.0,
    settle: Annotated[float, typer.Option(
        min=0, help="Seconds the market lives on after the last order.")] = 30.0,
    speed: Annotated[float, typer.Option(
        min=1, help="Simulated seconds per real second (1200: a second is 20 minutes).")] = 1200.0,
    seed: Annotated[int, typer.Option(help="Seed of the simulated market.")] = 7,
    share: SharesOpt = None,
    keep: Annotated[bool, typer.Option(help="Leave the stack running afterwards.")] = False,
    timeout: Annotated[float, typer.Option(
        help="Seconds to wait for the pipeline to catch up.")] = 120.0,
    summary_json: Annotated[Path | None, typer.Option(
        help="Also write the summary as JSON to this file.")] = None,
    state_dir: StateDirOpt = None,
) -> None:
    """Run the pipeline end to end on the embedded stack, driven by simulated shops and
    suppliers, with a live view; exit 0 only if the pipeline's invariants held."""
    from pipeline.entry import demo as demo_module

    s = _settings(state_dir=state_dir)
    options = demo_module.DemoOptions(orders=orders, rate=rate, settle_s=settle, speed=speed,
                                      seed=seed, keep=keep, timeout_s=timeout,
                                      shares=_shares(share), summary_json=summary_json)
    if not demo_module.run(s, options, console=out):
        fail("the pipeline broke an invariant (see above); the worker log is named above")


@app.command("simulate")
def simulate(
    orders: Annotated[int | None, typer.Option(min=1, help="Stop after this many orders.")] = 100,
    duration: Annotated[float | None, typer.Option(
        min=0.1, help="Stop placing orders after this many seconds.")] = None,
    rate: Annotated[float, typer.Option(
        min=0, help="Orders per second (0: as fast as Kafka takes them).")] = 10.0,
    settle: Annotated[float, typer.Option(
        min=0, help="Seconds shops and suppliers go on reacting after the last order.")] = 10.0,
    speed: Annotated[float, typer.Option(
        min=1, help="Simulated seconds per real second; with --clock-file the workers' "
                    "deadlines follow.")] = 1.0,
    clock_file: Annotated[Path | None, typer.Option(
        help="Write the simulated time here (the workers' DROPSHIP_CLOCK_FILE).")] = None,
    seed: Annotated[int, typer.Option(help="Seed: the same seed, the same market.")] = 7,
    prefix: Annotated[str | None, typer.Option(
        help="Id prefix of this run's shops, suppliers, skus and orders "
             "(default: from the seed plus a random part).")] = None,
    shops: Annotated[int, typer.Option(min=1, max=100)] = 3,
    suppliers: Annotated[int, typer.Option(min=1, max=100)] = 6,
    skus: Annotated[int, typer.Option(min=1, max=100_000)] = 40,
    share: SharesOpt = None,
    record: Annotated[Path | None, typer.Option(
        help="Append every record sent to this JSON-lines file.")] = None,
) -> None:
    """Simulated shops and suppliers on the real topics (each its own Kafka client):
    orders, payments, cancellations, supplier answers, shipments, returns, and a share
    of duplicated, reordered and malformed messages. Needs a running pipeline to react."""
    from pipeline.entry import simulate as simulate_module

    s = _settings()
    options = simulate_module.SimulateOptions(
        orders=orders, duration_s=duration, rate=rate, settle_s=settle, speed=speed,
        clock_file=clock_file, seed=seed, prefix=prefix, shops=shops, suppliers=suppliers,
        skus=skus, shares=_shares(share), record=record)
    simulate_module.run(s, options, out)


# --- error handling --------------------------------------------------------------

def _one_line(exc: BaseException) -> str:
    """A one-line explanation of an error a user can meet."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    name = type(exc).__name__
    if isinstance(exc, ConnectionRefusedError | OSError) or "Connect" in name:
        return f"cannot connect: {text} (is the stack running? try `dropship dev up`)"
    if name == "KafkaConnectionError":
        return f"cannot reach Kafka: {text}"
    return f"{name}: {text}"


def main() -> None:
    """Console-script entry point: run the CLI, turning failures into one line."""
    try:
        app()
    except SettingsError as exc:
        err.print(f"error: invalid setting {exc}", markup=False)
        sys.exit(2)
    except StackError as exc:
        err.print(f"error: {exc}", markup=False)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("DROPSHIP_LOG_LEVEL", "").lower() == "debug":
            raise
        err.print(f"error: {_one_line(exc)}", markup=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
