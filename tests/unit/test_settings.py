"""Settings: credentials read from files (mounted Secrets), Kafka authentication."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from jobflow.core.settings import KafkaSettings, PostgresSettings

# run by make security-check too (tests/targets.mk)
pytestmark = pytest.mark.security


def test_credentials_are_read_from_files_in_place_of_the_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "username").write_text("jobflow")  # as a mounted Secret: no newline
    (tmp_path / "password").write_text("from-the-file\r\n")  # as a hand-made file
    monkeypatch.setenv("POSTGRES_USER", "from-the-variable")
    monkeypatch.setenv("POSTGRES_PASSWORD", "from-the-variable")
    monkeypatch.setenv("POSTGRES_USER_FILE", str(tmp_path / "username"))
    monkeypatch.setenv("POSTGRES_PASSWORD_FILE", str(tmp_path / "password"))
    settings = PostgresSettings()
    assert settings.user == "jobflow"
    assert settings.password.get_secret_value() == "from-the-file"
    assert "password=from-the-file " in settings.conninfo()
    assert "from-the-file" not in repr(settings)


def test_without_files_the_variables_are_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTGRES_PASSWORD", "from-the-variable")
    assert PostgresSettings().password.get_secret_value() == "from-the-variable"


def test_a_missing_file_is_a_clear_settings_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTGRES_PASSWORD_FILE", str(tmp_path / "absent"))
    with pytest.raises(ValidationError, match=r"cannot read .*absent: No such file"):
        PostgresSettings()


def test_kafka_clients_talk_plaintext_unless_told_otherwise() -> None:
    config = KafkaSettings().client_config()
    assert config["security.protocol"] == "PLAINTEXT"
    assert not [key for key in config if key.startswith(("sasl.", "ssl."))]


def test_kafka_clients_authenticate_with_scram_over_tls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "password").write_text("scram-secret")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "jobflow-processor")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "password"))
    monkeypatch.setenv("KAFKA_SSL_CA_LOCATION", "/run/secrets/kafka-ca/ca.crt")
    assert KafkaSettings().client_config() == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "jobflow-processor",
        "sasl.password": "scram-secret",
        "ssl.ca.location": "/run/secrets/kafka-ca/ca.crt",
    }


def test_sasl_without_credentials_is_a_clear_settings_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "jobflow-processor")
    with pytest.raises(
        ValidationError, match=r"SASL_SSL needs KAFKA_SASL_PASSWORD \(or KAFKA_SASL"
    ):
        KafkaSettings()


def test_without_sasl_the_sasl_settings_are_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SASL_PASSWORD_FILE", "/nonexistent/password")
    assert "sasl.password" not in KafkaSettings().client_config()
