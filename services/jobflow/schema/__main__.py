"""``python -m jobflow.schema``: apply a statement file to ClickHouse or ksqlDB.

What the operator's Kubernetes Job runs. Configured by environment (``SCHEMA_*``); exits 0
when every statement is in place, 1 at the first failure, 2 when the target never got ready.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from jobflow.schema.apply import NotReadyError, apply
from jobflow.schema.clickhouse import ClickHouseHttp
from jobflow.schema.statements import render, split_statements
from jobflow.schema.targets import ClickHouseTarget, KsqlDbTarget, Target, TargetError


class ApplySettings(BaseSettings):
    """Settings of the apply command (``SCHEMA_`` prefix)."""

    model_config = SettingsConfigDict(env_prefix="SCHEMA_", extra="ignore")

    target: Literal["clickhouse", "ksqldb"] = Field(description="Kind of server to apply to.")
    url: str = Field(description="The server's HTTP URL.")
    statements: str = Field(default="", description="The statements (used if no file is given).")
    statements_file: Path | None = Field(default=None, description="File holding the statements.")
    parameters: dict[str, str] = Field(
        default_factory=dict, description="Values of ${name} placeholders, as a JSON object."
    )
    user: str = Field(default="default", description="ClickHouse user.")
    password: SecretStr = Field(default=SecretStr(""), description="ClickHouse password.")
    wait_timeout_s: float = Field(
        default=300.0, gt=0, description="How long to wait for the server to become ready."
    )

    def statement_list(self) -> list[str]:
        text = self.statements_file.read_text() if self.statements_file else self.statements
        return split_statements(render(text, self.parameters))

    def build_target(self) -> Target:
        if self.target == "clickhouse":
            client = ClickHouseHttp(self.url, self.user, self.password.get_secret_value())
            return ClickHouseTarget(client)
        return KsqlDbTarget(self.url)


def report(line: str) -> None:
    print(line, flush=True)


def main() -> int:
    settings = ApplySettings()
    statements = settings.statement_list()
    if not statements:
        report("no statements to apply")
        return 1
    report(f"applying {len(statements)} statement(s) to {settings.target} at {settings.url}")
    try:
        asyncio.run(apply(settings.build_target(), statements, settings.wait_timeout_s, report))
    except NotReadyError as exc:
        report(f"target not ready: {exc}")
        return 2
    except TargetError as exc:
        report(f"failed: {exc}")
        return 1
    report("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
