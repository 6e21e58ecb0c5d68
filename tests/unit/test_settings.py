"""Settings: parsing from DROPSHIP_ variables, one-line errors naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.runtime.settings import Settings, SettingsError, load_settings
from tests.helpers import clean_env, isolate_env, run_cli


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No DROPSHIP_ variable or env file of the developer leaks into these tests."""
    isolate_env(monkeypatch, tmp_path)


def test_defaults_target_the_embedded_stack_on_loopback() -> None:
    s = load_settings()
    assert s.kafka_bootstrap_servers == "127.0.0.1:19092"
    assert s.kafka_enable_idempotence is False
    assert s.web_bind == "127.0.0.1"
    assert s.kafka_auto_offset_reset == "earliest"
    assert s.database_url.startswith("postgresql+asyncpg://")


def test_values_come_from_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DROPSHIP_KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9093")
    monkeypatch.setenv("DROPSHIP_KAFKA_TOPIC_PARTITIONS", "12")
    monkeypatch.setenv("DROPSHIP_KAFKA_ENABLE_IDEMPOTENCE", "true")
    s = load_settings()
    assert s.kafka_topic_partitions == 12
    assert s.kafka_enable_idempotence is True
    assert s.kafka_broker_url == "kafka://k1:9092;kafka://k2:9093"
    assert s.group_id("archive") == "dropship.archive"


def test_dev_env_file_is_read_and_environment_wins(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    (tmp_path / ".dropship").mkdir()
    (tmp_path / ".dropship" / "dev.env").write_text(
        "DROPSHIP_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:1111\nDROPSHIP_DEV_PG_PORT=2222\n"
    )
    monkeypatch.setenv("DROPSHIP_DEV_PG_PORT", "3333")
    s = load_settings()
    assert s.kafka_bootstrap_servers == "127.0.0.1:1111"
    assert s.dev_pg_port == 3333


def test_fetch_wait_defaults_low_and_comes_from_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings().kafka_fetch_max_wait_ms == 20
    monkeypatch.setenv("DROPSHIP_KAFKA_FETCH_MAX_WAIT_MS", "1500")
    assert load_settings().kafka_fetch_max_wait_ms == 1500
    monkeypatch.setenv("DROPSHIP_KAFKA_FETCH_MAX_WAIT_MS", "0")
    assert load_settings().kafka_fetch_max_wait_ms == 0


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("DROPSHIP_KAFKA_FETCH_MAX_WAIT_MS", "-1"),
        ("DROPSHIP_KAFKA_FETCH_MAX_WAIT_MS", "60001"),
        ("DROPSHIP_KAFKA_TOPIC_PARTITIONS", "abc"),
        ("DROPSHIP_KAFKA_TOPIC_PARTITIONS", "0"),
        ("DROPSHIP_KAFKA_SECURITY_PROTOCOL", "TELNET"),
        ("DROPSHIP_DATABASE_URL", "mysql://x"),
        ("DROPSHIP_KAFKA_BOOTSTRAP_SERVERS", "no-port-here"),
        ("DROPSHIP_WEB_PORT", "70000"),
    ],
)
def test_invalid_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(var + ":")
    assert repr(value) in message


def test_cross_field_rules_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DROPSHIP_KAFKA_HEARTBEAT_INTERVAL_S", "5")
    with pytest.raises(SettingsError, match=r"^DROPSHIP_KAFKA_HEARTBEAT_INTERVAL_S:"):
        load_settings()


def test_sasl_requires_credentials_and_never_echoes_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DROPSHIP_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(SettingsError, match="DROPSHIP_KAFKA_SASL_USERNAME"):
        load_settings()
    monkeypatch.setenv("DROPSHIP_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("DROPSHIP_KAFKA_SASL_PASSWORD", "hunter2-secret")
    s = load_settings()
    assert "hunter2-secret" not in repr(s)
    assert s.kafka_sasl_password is not None
    assert s.kafka_sasl_password.get_secret_value() == "hunter2-secret"


def test_settings_are_immutable() -> None:
    s = Settings(_env_file=None)
    with pytest.raises(ValueError, match="frozen"):
        s.web_port = 1  # type: ignore[misc]


def test_cli_reports_an_invalid_setting_in_one_line_without_traceback(tmp_path: Path) -> None:
    env = clean_env(DROPSHIP_KAFKA_TOPIC_PARTITIONS="lots")
    result = run_cli("settings", env=env, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "DROPSHIP_KAFKA_TOPIC_PARTITIONS" in lines[0]
    assert "Traceback" not in result.stderr


def test_cli_masks_secrets(tmp_path: Path) -> None:
    env = clean_env(DROPSHIP_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
                    DROPSHIP_KAFKA_SASL_USERNAME="svc", DROPSHIP_KAFKA_SASL_PASSWORD="s3cr3t-value")
    result = run_cli("settings", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "DROPSHIP_KAFKA_SASL_PASSWORD=***" in result.stdout
    assert "s3cr3t-value" not in result.stdout + result.stderr
