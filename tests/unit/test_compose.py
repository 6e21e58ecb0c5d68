"""docker-compose.yml is checked against the code, since no Docker engine runs here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from pipeline.runtime.settings import Settings
from tests.helpers import REPO

NEEDED_BY_WORKER = {"kafka", "postgres", "migrate"}
SECRET_VARS = {"DROPSHIP_KAFKA_SASL_PASSWORD", "DROPSHIP_DATABASE_URL",
               "DROPSHIP_DATABASE_ADMIN_URL"}
DROPSHIP_SERVICES = ("migrate", "topics", "worker", "simulator", "retention")
OWNERS = {"migrate", "retention"}  # DDL, and deletes the workers' role may not do


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return loaded


def _env_files(service: dict[str, Any]) -> list[str]:
    files = service.get("env_file") or []
    return [files] if isinstance(files, str) else list(files)


def _example(env_file: str) -> Path:
    """The committed template of a generated ``deploy/secrets/X.env``."""
    return REPO / "deploy" / "env" / (Path(env_file).name + ".example")


def _dropship_env(service: dict[str, Any]) -> dict[str, str]:
    """The service's DROPSHIP_ variables: ``environment``, then its env files (read
    from their templates in deploy/env/, as deploy/make-secrets.sh fills them)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    merged = {k: str(v) for k, v in env.items() if k.startswith("DROPSHIP_")}
    for env_file in _env_files(service):
        for line in _example(env_file).read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                key, _, value = line.partition("=")
                if key.startswith("DROPSHIP_"):
                    merged[key] = value
    return merged


def test_every_dropship_variable_is_a_real_setting(compose: dict[str, Any]) -> None:
    fields = {"DROPSHIP_" + name.upper() for name in Settings.model_fields}
    seen = 0
    for name, service in compose["services"].items():
        for var in _dropship_env(service):
            assert var in fields, f"service {name} sets unknown setting {var}"
            seen += 1
    assert seen > 0


def test_dropship_values_pass_validation(compose: dict[str, Any]) -> None:
    env = _dropship_env(compose["services"]["worker"])
    overrides: dict[str, Any] = {k.removeprefix("DROPSHIP_").lower(): v for k, v in env.items()}
    s = Settings(_env_file=None, **overrides)
    assert s.kafka_enable_idempotence is True  # real Kafka supports it


def test_services_the_worker_needs_are_defined(compose: dict[str, Any]) -> None:
    services = compose["services"]
    worker = services["worker"]
    assert set(services) >= NEEDED_BY_WORKER
    assert set(worker["depends_on"]) >= NEEDED_BY_WORKER
    assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["command"][:3] == ["dropship", "db", "upgrade"]
    assert "--wait-s" in services["migrate"]["command"]  # Postgres may still be starting
    assert worker["command"] == ["dropship", "worker"]


def test_worker_can_be_scaled(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker


def test_kafka_is_apache_kafka_in_kraft_mode(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]
    assert "ZOOKEEPER" not in " ".join(kafka["environment"]).upper()


def _listener_of(kafka_env: dict[str, Any], address: str) -> tuple[str, str]:
    """(listener name, security protocol) of the advertised listener at ``address``."""
    protocols = dict(pair.split(":") for pair in
                     kafka_env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    for listener in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(","):
        name, _, where = listener.partition("://")
        if where == address:
            return name, protocols[name]
    raise AssertionError(f"no advertised listener at {address}")


def test_settings_point_at_the_compose_services(compose: dict[str, Any]) -> None:
    env = _dropship_env(compose["services"]["worker"])
    host = env["DROPSHIP_KAFKA_BOOTSTRAP_SERVERS"].split(":")[0]
    assert host in compose["services"]
    kafka_env = compose["services"]["kafka"]["environment"]
    name, protocol = _listener_of(kafka_env, env["DROPSHIP_KAFKA_BOOTSTRAP_SERVERS"])
    assert protocol == env["DROPSHIP_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert name == kafka_env["KAFKA_INTER_BROKER_LISTENER_NAME"]
    assert "@postgres:5432/" in env["DROPSHIP_DATABASE_URL"]


def test_kafka_speaks_only_sasl_ssl_with_scram_on_the_network(compose: dict[str, Any]) -> None:
    kafka_env = compose["services"]["kafka"]["environment"]
    worker = _dropship_env(compose["services"]["worker"])
    assert worker["DROPSHIP_KAFKA_SASL_MECHANISM"] == kafka_env["KAFKA_SASL_ENABLED_MECHANISMS"]
    assert kafka_env["KAFKA_SASL_MECHANISM_INTER_BROKER_PROTOCOL"] == "SCRAM-SHA-512"
    for listener in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(","):
        address = listener.partition("://")[2]
        assert _listener_of(kafka_env, address)[1] == "SASL_SSL", listener
    controller = [item for item in kafka_env["KAFKA_LISTENERS"].split(",")
                  if item.startswith("CONTROLLER://")]
    assert controller == ["CONTROLLER://127.0.0.1:9093"]  # plaintext stays in the container
    for service in ("topics", "worker"):  # the Kafka clients need the CA
        assert "kafka-certs:/certs:ro" in compose["services"][service]["volumes"], service
    assert worker["DROPSHIP_KAFKA_SSL_CAFILE"].startswith("/certs/")
    assert set(compose["services"]["kafka"]["secrets"]) >= {
        "kafka_admin_password", "kafka_worker_password", "kafka_store_password"}


def test_secrets_come_from_env_files_not_this_file(compose: dict[str, Any]) -> None:
    for name in DROPSHIP_SERVICES:
        service = compose["services"][name]
        inline = set(service.get("environment") or {})
        assert not inline & SECRET_VARS, f"{name} sets a secret inline"
        assert all(f.startswith("deploy/secrets/") for f in _env_files(service)), name
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("deploy/secrets/")
    assert "POSTGRES_PASSWORD" not in compose["services"]["postgres"]["environment"]
    text = (REPO / "docker-compose.yml").read_text()
    assert "password=" not in text.lower()


def test_workers_are_the_app_role_and_only_migrate_is_the_owner(
        compose: dict[str, Any]) -> None:
    owner = compose["services"]["postgres"]["environment"]["POSTGRES_USER"]
    for name in DROPSHIP_SERVICES:
        env = _dropship_env(compose["services"][name])
        overrides: dict[str, Any] = {k.removeprefix("DROPSHIP_").lower(): v
                                     for k, v in env.items()}
        s = Settings(_env_file=None, **overrides)
        assert make_url(s.database_url).username == "dropship_app", name
        admin = make_url(s.admin_database_url).username
        assert admin == (owner if name in OWNERS else "dropship_app"), name


def test_host_ports_are_loopback_only(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for mapping in service.get("ports", []):
            assert str(mapping).startswith("127.0.0.1:"), f"{name} publishes {mapping}"


def test_the_image_holds_every_package_the_project_installs() -> None:
    """``pip install .`` in the image finds only what the Dockerfile copied."""
    import tomllib

    include = tomllib.loads((REPO / "pyproject.toml").read_text())[
        "tool"]["setuptools"]["packages"]["find"]["include"]
    copied = {line.split()[1] for line in (REPO / "Dockerfile").read_text().splitlines()
              if line.startswith("COPY ")}
    assert {pattern.rstrip("*") for pattern in include} <= copied


def test_postgres_health_is_asked_over_tcp(compose: dict[str, Any]) -> None:
    """The image's init phase serves the unix socket only; a check without -h would
    pass before the real server listens."""
    check = " ".join(compose["services"]["postgres"]["healthcheck"]["test"])
    assert "pg_isready -h 127.0.0.1" in check


def test_every_alert_is_explained_in_the_ops_guide() -> None:
    rules = yaml.safe_load((REPO / "deploy/prometheus/rules.yml").read_text())
    alerts = [r["alert"] for g in rules["groups"] for r in g["rules"]]
    guide = (REPO / "docs/ops.md").read_text()
    assert len(alerts) >= 6
    assert [a for a in alerts if f"`{a}`" not in guide] == []
    prometheus = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    assert prometheus["rule_files"] == ["/etc/prometheus/rules.yml"]
    assert prometheus["scrape_configs"][0]["dns_sd_configs"][0]["names"] == ["worker"]
