"""``python -m jobflow.schema``: apply a store's migrations (ClickHouse, PostgreSQL, ksqlDB).

What the operator's Kubernetes Job runs. Configured by environment (``SCHEMA_*``). Its last
line says how it ended, and so does its exit status:

- 0 ``done``: every migration is applied and the tables are what the migrations say;
- 1 ``failed``: a statement failed (the store's own reason), or the migrations are unreadable;
- 2 ``target not ready``: the store never answered;
- 3 ``drifted``: the tables differ from what the migrations say (each difference named);
- 4 ``refused``: the store's record and the migrations disagree (an applied migration changed,
  a new one numbered before an applied one, the store ahead of the migrations).

Exit statuses 3 and 4 are not passing faults: the operator's Job fails at once on them
(``podFailurePolicy``) instead of trying again.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from jobflow.schema.apply import DriftError, Exit, NotReadyError, apply
from jobflow.schema.clickhouse import ClickHouseHttp
from jobflow.schema.definitions import ModelError
from jobflow.schema.migrations import Migration, MigrationError, load_directory, parse_bundle
from jobflow.schema.targets import (
    ClickHouseTarget,
    KsqlDbTarget,
    PostgresTarget,
    Target,
    TargetError,
)


class ApplySettings(BaseSettings):
    """Settings of the apply command (``SCHEMA_`` prefix)."""

    model_config = SettingsConfigDict(env_prefix="SCHEMA_", extra="ignore")

    target: Literal["clickhouse", "postgres", "ksqldb"] = Field(description="Kind of store.")
    url: str = Field(
        description="The store: its HTTP URL (ClickHouse, ksqlDB) or postgresql://host:port/db."
    )
    statements: str = Field(
        default="", description="The migrations as one bundle (used if no file is given)."
    )
    statements_file: Path | None = Field(
        default=None, description="File holding the migrations' bundle."
    )
    migrations_dir: Path | None = Field(
        default=None, description="Folder of the migration files (instead of a bundle)."
    )
    parameters: dict[str, str] = Field(
        default_factory=dict, description="Values of ${name} placeholders, as a JSON object."
    )
    database: str = Field(
        default="", description="ClickHouse database of the tables (the user's default if empty)."
    )
    user: str = Field(default="default", description="User (ClickHouse, PostgreSQL).")
    password: SecretStr = Field(
        default=SecretStr(""), description="Password (ClickHouse, PostgreSQL)."
    )
    wait_timeout_s: float = Field(
        default=300.0, gt=0, description="How long to wait for the store to become ready."
    )

    def migrations(self) -> list[Migration]:
        if self.migrations_dir:
            return load_directory(self.migrations_dir, self.parameters)
        text = self.statements_file.read_text() if self.statements_file else self.statements
        return parse_bundle(text, self.parameters)

    def build_target(self) -> Target:
        password = self.password.get_secret_value()
        if self.target == "clickhouse":
            return ClickHouseTarget(
                ClickHouseHttp(self.url, self.user, password, database=self.database)
            )
        if self.target == "postgres":
            return PostgresTarget(self.url, self.user, password)
        return KsqlDbTarget(self.url)


def report(line: str) -> None:
    print(line, flush=True)


def main() -> int:
    settings = ApplySettings()
    try:
        migrations = settings.migrations()
    except (MigrationError, ValueError) as exc:
        report(f"failed: {exc}")
        return Exit.FAILED
    report(f"{len(migrations)} migration(s) for {settings.target} at {settings.url}")
    try:
        asyncio.run(apply(settings.build_target(), migrations, settings.wait_timeout_s, report))
    except NotReadyError as exc:
        report(f"target not ready: {exc}")
        return Exit.NOT_READY
    except DriftError as exc:
        report(f"drifted: {exc}")
        return Exit.DRIFTED
    except MigrationError as exc:
        report(f"refused: {exc}")
        return Exit.REFUSED
    except (TargetError, ModelError) as exc:
        report(f"failed: {exc}")
        return Exit.FAILED
    return Exit.DONE


if __name__ == "__main__":
    sys.exit(main())
