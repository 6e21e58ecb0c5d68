"""Secrets in settings: masked in every output, admin URL rules (no server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.runtime.settings import (
    Settings,
    SettingsError,
    database_name,
    load_settings,
    masked,
    redact_url,
)
from tests.helpers import clean_env, isolate_env, run_cli

PASSWORD = "s3cr3t-P@ss/word"  # '@' and '/' unencoded: the parser must keep it whole
URL = f"postgresql+asyncpg://dropship_app:{PASSWORD}@db.internal:5432/dropship"
ADMIN_URL = "postgresql+asyncpg://owner:0wnerPassw0rd@db.internal:5432/dropship"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No DROPSHIP_ variable or env file of the developer leaks into these tests."""
    isolate_env(monkeypatch, tmp_path)


@pytest.mark.parametrize(("url", "shown"), [
    (URL, "postgresql+asyncpg://dropship_app:***@db.internal:5432/dropship"),
    ("postgresql+asyncpg://postgres@127.0.0.1:1/x", "postgresql+asyncpg://postgres@127.0.0.1:1/x"),
    ("postgresql+asyncpg://u:@h/d", "postgresql+asyncpg://u:***@h/d"),
    ("mysql://x", "mysql://x"),
])
def test_redact_url_hides_exactly_the_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_database_name_ignores_credentials_and_query() -> None:
    assert database_name(URL) == "dropship"
    assert database_name("postgresql+asyncpg://h:5/other?ssl=require") == "other"


def test_admin_url_defaults_to_the_database_url() -> None:
    s = Settings(_env_file=None, database_url=URL)
    assert s.database_admin_url is None
    assert s.admin_database_url == URL


def test_admin_url_is_a_secret_for_the_same_database() -> None:
    s = Settings(_env_file=None, database_url=URL, database_admin_url=ADMIN_URL)
    assert s.admin_database_url == ADMIN_URL
    other = Settings(_env_file=None, database_url=URL.replace("/dropship", "/other"),
                     database_admin_url=ADMIN_URL)
    with pytest.raises(SettingsError, match="DROPSHIP_DATABASE_ADMIN_URL: names database"):
        _ = other.admin_database_url
    assert Settings(_env_file=None, database_admin_url="").database_admin_url is None


def test_repr_and_masked_settings_show_no_password() -> None:
    s = Settings(_env_file=None, database_url=URL, database_admin_url=ADMIN_URL,
                 kafka_security_protocol="SASL_SSL", kafka_sasl_username="svc",
                 kafka_sasl_password="kafkaSecret123")
    shown = masked(s)
    text = f"{s!r} {s} {shown}"
    for secret in (PASSWORD, "0wnerPassw0rd", "kafkaSecret123"):
        assert secret not in text
    assert shown["database_url"] == redact_url(URL)
    assert shown["database_admin_url"] == "***"
    assert shown["kafka_sasl_password"] == "***"
    assert shown["kafka_sasl_username"] == "svc"


@pytest.mark.parametrize("var", ["DROPSHIP_DATABASE_URL", "DROPSHIP_DATABASE_ADMIN_URL"])
def test_invalid_url_error_names_the_variable_but_not_the_password(
        monkeypatch: pytest.MonkeyPatch, var: str) -> None:
    monkeypatch.setenv(var, f"mysql://root:{PASSWORD}@h/d")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert str(err.value).startswith(var + ":")
    assert PASSWORD not in str(err.value)
    assert "mysql://root:***@h/d" in str(err.value)


def test_dropship_settings_prints_no_secret() -> None:
    env = clean_env(DROPSHIP_DATABASE_URL=URL, DROPSHIP_DATABASE_ADMIN_URL=ADMIN_URL,
                    DROPSHIP_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
                    DROPSHIP_KAFKA_SASL_USERNAME="svc",
                    DROPSHIP_KAFKA_SASL_PASSWORD="kafkaSecret123")
    result = run_cli("settings", env=env)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    for secret in (PASSWORD, "0wnerPassw0rd", "kafkaSecret123"):
        assert secret not in "".join(output.split())  # also if a line was wrapped
    assert "DROPSHIP_DATABASE_URL=postgresql+asyncpg://dropship_app:***@db.internal" in output
    assert "DROPSHIP_DATABASE_ADMIN_URL=***" in output
