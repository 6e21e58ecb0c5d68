"""docker-compose.yml is checked against the code, since no Docker engine runs here."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from pipeline.settings import Settings
from tests.helpers import REPO

NEEDED_BY_WORKER = {"kafka", "postgres", "migrate"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return loaded


def _dropship_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items() if k.startswith("DROPSHIP_")}


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
    assert services["migrate"]["command"] == ["dropship", "db", "upgrade"]
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


def test_settings_point_at_the_compose_services(compose: dict[str, Any]) -> None:
    env = _dropship_env(compose["services"]["worker"])
    host = env["DROPSHIP_KAFKA_BOOTSTRAP_SERVERS"].split(":")[0]
    assert host in compose["services"]
    assert f"PLAINTEXT://{env['DROPSHIP_KAFKA_BOOTSTRAP_SERVERS']}" in (
        compose["services"]["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    )
    assert "@postgres:5432/" in env["DROPSHIP_DATABASE_URL"]


def test_host_ports_are_loopback_only(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for mapping in service.get("ports", []):
            assert str(mapping).startswith("127.0.0.1:"), f"{name} publishes {mapping}"
