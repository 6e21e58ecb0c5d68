"""The deploy path as docker-compose.yml and the Dockerfile define it, run for real.

No Docker engine runs here, so each dropship service's command runs as the image
would run it (:mod:`tests.e2e.image`: its user's rights, its working directory,
its environment), in the order compose's ``depends_on`` gives, against a broker
of its own and an empty database: migrate (started before Postgres accepts
connections, as on a fresh volume), topics, two workers (``--scale worker=2``),
their compose healthcheck, then the simulator; orders must flow end to end.

Only what the container network and the secrets provide is replaced, and said so
in :func:`service_env`: the broker and Postgres addresses (the embedded ones,
plaintext), the passwords, the web server's address (loopback, one port per
replica: containers do not share ports). Everything else comes from the files.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from pipeline.devstack import Stack
from pipeline.devstack.broker import start_broker
from pipeline.devstack.postgres import APP_ROLE, SUPERUSER
from pipeline.devstack.processes import free_port
from pipeline.entry.registry import CONSUMERS
from tests.e2e.image import Image, Sandbox, read_dockerfile
from tests.helpers import REPO, clean_env, superuser_row, until

pytestmark = pytest.mark.e2e

RUN = ("migrate", "topics", "worker", "simulator", "retention")  # the dropship services
PROVIDED = {"kafka", "postgres", "kafka-certs"}  # stand-ins: the embedded broker, Postgres
REPLICAS = {"worker": 2}
NETWORK_VARS = {  # what the container network and the secrets give, replaced here
    "DROPSHIP_KAFKA_BOOTSTRAP_SERVERS", "DROPSHIP_KAFKA_SECURITY_PROTOCOL",
    "DROPSHIP_KAFKA_SASL_MECHANISM", "DROPSHIP_KAFKA_SASL_USERNAME",
    "DROPSHIP_KAFKA_SASL_PASSWORD", "DROPSHIP_KAFKA_SSL_CAFILE",
    "DROPSHIP_KAFKA_ENABLE_IDEMPOTENCE", "DROPSHIP_WEB_BIND", "DROPSHIP_WEB_PORT",
    "DROPSHIP_DATABASE_URL", "DROPSHIP_DATABASE_ADMIN_URL"}


def compose_order(services: dict[str, Any]) -> list[str]:
    """The services of RUN in an order ``depends_on`` allows (each after its needs)."""
    done: list[str] = []

    def visit(name: str) -> None:
        if name in done or name in PROVIDED:
            return
        for need in services[name].get("depends_on") or {}:
            visit(need)
        done.append(name)

    for name in RUN:
        visit(name)
    return [n for n in done if n in RUN]


def service_env(service: dict[str, Any], net: dict[str, str]) -> dict[str, str]:
    """The service's ``environment`` and env-file variables (their templates under
    deploy/env/), the NETWORK_VARS among them taken from ``net`` (or dropped: SASL
    and TLS, which the embedded broker does not speak)."""
    env = {k: str(v) for k, v in (service.get("environment") or {}).items()}
    files = service.get("env_file") or []
    for env_file in [files] if isinstance(files, str) else files:
        template = REPO / "deploy" / "env" / (Path(env_file).name + ".example")
        for line in template.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                key, _, value = line.partition("=")
                env[key] = value
    kept = {k: v for k, v in env.items() if k not in NETWORK_VARS}
    return {**kept, **{k: v for k, v in net.items() if k in env}}


@contextmanager
def late_port(target_port: int, delay_s: float) -> Iterator[int]:
    """A loopback port that refuses connections for ``delay_s``, then forwards to
    ``target_port``: Postgres as a fresh compose volume shows it to ``migrate``."""
    port, loop = free_port(), asyncio.new_event_loop()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def main() -> None:
        with suppress(asyncio.CancelledError):
            await asyncio.sleep(delay_s)
            server = await asyncio.start_server(serve, "127.0.0.1", port)
            async with server:
                await server.serve_forever()

    thread = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
    thread.start()
    try:
        yield port
    finally:
        for task in asyncio.all_tasks(loop):
            loop.call_soon_threadsafe(task.cancel)
        thread.join(5)


def _database(stack: Stack, name: str, port: int | None = None) -> dict[str, str]:
    """Settings for the database ``name``: the worker's role and the owner's."""
    base = make_url(stack.database_url).set(database=name, port=port or stack.pg_port)
    app = base.set(username=APP_ROLE, password=stack.app_password)
    return {"DROPSHIP_DATABASE_URL": app.render_as_string(hide_password=False),
            "DROPSHIP_DATABASE_ADMIN_URL": base.set(username=SUPERUSER).render_as_string(
                hide_password=False)}


def _exported(port: int) -> set[str]:
    """The metric names a worker's /metrics declares (a family with no series yet,
    e.g. dead letters by rule before the first, still counts)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            names |= {name, f"{name}_total"} if kind == "counter" else {name}
        elif line and not line.startswith("#"):
            names.add(line.split("{")[0].split(" ")[0])
    return names


def _series(port: int, name: str) -> list[dict[str, str]]:
    """The label sets of every sample of ``name`` on a worker's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return [dict(re.findall(r'(\w+)="([^"]*)"', line.split("{", 1)[1].rsplit("}", 1)[0]))
            for line in text.splitlines() if line.startswith(name + "{")]


def _names_in(text: str) -> set[str]:
    return set(re.findall(r"\bdropship_[a-z_]+", text))


def _stop(procs: list[subprocess.Popen[bytes]]) -> list[int]:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=60))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes.append(proc.wait(timeout=10))
    return codes


@pytest.fixture
def image() -> Image:
    return read_dockerfile(REPO / "Dockerfile")


@pytest.fixture
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return loaded


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[str]:
    """A broker of the deploy's own (compose runs its own Kafka): nothing of other tests."""
    port = free_port()
    proc = start_broker(port, tmp_path / "broker.log")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        proc.stop()


def test_compose_services_run_as_the_image_runs_them(
        stack: Stack, image: Image, compose: dict[str, Any], broker: str,
        tmp_path: Path) -> None:
    services = compose["services"]
    order = compose_order(services)
    assert order == ["migrate", "topics", "worker", "simulator", "retention"], order
    db = f"deploy_{uuid.uuid4().hex[:8]}"
    superuser_row(stack.pg_port, "postgres", f'CREATE DATABASE "{db}"')
    kafka = {"DROPSHIP_KAFKA_BOOTSTRAP_SERVERS": broker,
             "DROPSHIP_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
             "DROPSHIP_KAFKA_ENABLE_IDEMPOTENCE": "false"}
    sandboxes: list[Sandbox] = []

    def sandbox(name: str) -> Sandbox:
        box = Sandbox(tmp_path / name, image)
        sandboxes.append(box)
        return box

    workers: list[tuple[subprocess.Popen[bytes], Sandbox, dict[str, str], int, Path]] = []
    try:
        # 1. migrate: started while Postgres still refuses connections
        with late_port(stack.pg_port, delay_s=4.0) as port:
            box = sandbox("migrate")
            env = service_env(services["migrate"], {**kafka, **_database(stack, db, port)})
            t0 = time.monotonic()
            done = box.run(services["migrate"]["command"], env, timeout_s=180)
            assert done.returncode == 0, done.stdout + done.stderr
            assert time.monotonic() - t0 >= 3.5  # it did wait for Postgres
        # 2. topics
        box = sandbox("topics")
        done = box.run(services["topics"]["command"],
                       service_env(services["topics"], {**kafka, **_database(stack, db)}), 120)
        assert done.returncode == 0, done.stdout + done.stderr
        # 3. two workers, each ready by compose's own healthcheck
        check = [w for w in services["worker"]["healthcheck"]["test"] if w != "CMD"]
        for i in range(REPLICAS["worker"]):
            box, web = sandbox(f"worker-{i}"), free_port()
            env = service_env(services["worker"], {
                **kafka, **_database(stack, db), "DROPSHIP_WEB_BIND": "127.0.0.1",
                "DROPSHIP_WEB_PORT": str(web)})
            log = tmp_path / f"worker-{i}.log"
            workers.append((box.start(services["worker"]["command"], env, log), box, env, web,
                            log))
        for proc, box, env, _, log in workers:
            def healthy(box: Sandbox = box, env: dict[str, str] = env,
                        proc: subprocess.Popen[bytes] = proc, log: Path = log) -> bool:
                assert proc.poll() is None, f"worker exited:\n{log.read_text()[-4000:]}"
                return box.run(check, env, timeout_s=30).returncode == 0
            until(healthy, 180, "worker healthcheck")
        # 4. the simulator, once the workers are healthy (its depends_on)
        assert services["simulator"]["depends_on"]["worker"]["condition"] == "service_healthy"
        box = sandbox("simulator")
        done = box.run(services["simulator"]["command"],
                       service_env(services["simulator"], {**kafka, **_database(stack, db)}),
                       timeout_s=300)
        assert done.returncode == 0, done.stdout + done.stderr
        prefix = re.search(r"run (\S+):", done.stdout)
        placed = re.search(r"placed (\d+) orders", done.stdout)
        assert prefix, done.stdout
        assert placed, done.stdout
        # 5. orders flowed: every order the simulator placed is in the read model,
        #    and supplier orders went out
        want = int(placed.group(1))
        assert want > 0
        sql = (f"SELECT count(*) AS orders, count(*) FILTER (WHERE status <> 'placed') AS moved,"
               f" (SELECT count(*) FROM read.supplier_orders WHERE order_id LIKE "
               f"'{prefix.group(1)}%') AS supplier_orders FROM read.order_status "
               f"WHERE order_id LIKE '{prefix.group(1)}%'")
        row = until(lambda: (r := superuser_row(stack.pg_port, db, sql))["orders"] == want
                     and r["supplier_orders"] > 0 and r, 120,
                     f"{want} orders in read.order_status, supplier orders sent")
        assert row["moved"] > 0, dict(row)
        # 6. both replicas hold partitions; every metric the alert rules and the
        #    dashboard name is exported
        for *_, web, _log in workers:
            with urllib.request.urlopen(f"http://127.0.0.1:{web}/health", timeout=10) as r:
                assert json.loads(r.read())["partitions"] > 0
        #    every worker reports the lag of every partition, from the broker, not
        #    only of those it owns
        partitions = int(services["worker"]["environment"]["DROPSHIP_KAFKA_TOPIC_PARTITIONS"])
        for *_, web, _log in workers:
            ends = _series(web, "dropship_partition_last_offset")
            by_source = {(lb["consumer"], lb["topic"], lb["partition"]): lb["source"]
                         for lb in ends}
            for consumer, entry in CONSUMERS.items():
                mine = {(t, int(p)) for c, t, p in by_source if c == consumer}
                assert mine == {(t, p) for t in entry.topics for p in range(partitions)}, \
                    consumer
            assert set(by_source.values()) == {"broker"}, by_source
        exported = set().union(*(_exported(web) for _, _, _, web, _ in workers))
        rules = (REPO / "deploy/prometheus/rules.yml").read_text()
        assert yaml.safe_load(rules)["groups"][0]["rules"]
        dashboard = (REPO / "deploy/grafana/dashboards/dropship.json").read_text()
        json.loads(dashboard)
        named = _names_in(rules) | _names_in(dashboard)
        assert len(named) >= 8, named
        assert named <= exported, sorted(named - exported)
        # 7. retention, as the owner, beside the running workers: its first pass
        box = sandbox("retention")
        log = tmp_path / "retention.log"
        pruner = box.start(services["retention"]["command"],
                           service_env(services["retention"], {**kafka, **_database(stack, db)}),
                           log)
        try:
            until(lambda: "retention: pruned processed_events 0, outbox 0 rows"
                   in log.read_text(), 60, "a retention pass")
        finally:
            _stop([pruner])
    finally:
        codes = _stop([w[0] for w in workers])
        for box in sandboxes:
            box.remove()
    assert codes == [0] * len(workers), codes


def test_health_without_a_worker_says_so_in_one_line() -> None:
    port = free_port()
    done = subprocess.run([sys.executable, "-m", "pipeline.entry.cli", "health",
                           "--web-port", str(port)], capture_output=True, text=True,
                          timeout=60, env=clean_env(), check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: no worker answers http://127.0.0.1:{port}/health: "
        "<urlopen error [Errno 111] Connection refused>"]


def test_migrate_gives_up_after_its_wait_with_one_line(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/dropship"
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pipeline.entry.cli", "db", "upgrade",
                           "--wait-s", "3"], capture_output=True, text=True, timeout=60,
                          env=clean_env(DROPSHIP_DATABASE_URL=url), cwd=tmp_path, check=False)
    assert time.monotonic() - t0 >= 2.5  # it retried for its wait
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith("error: cannot connect:")
