"""Settings read from files: the PostgreSQL credentials a Kubernetes Secret mounts."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from jobflow.core.settings import PostgresSettings


def test_credentials_are_read_from_files_in_place_of_the_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "username").write_text("jobflow")  # as a mounted Secret: no newline
    (tmp_path / "password").write_text("from-the-file\n")  # as a hand-made file
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
