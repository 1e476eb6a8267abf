"""Running the operator: ``python -m jobflow operator``."""

from __future__ import annotations

import kopf
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from jobflow.core.logging import configure_logging

LIVENESS_PATH = "/healthz"


class OperatorSettings(BaseSettings):
    """Settings of the operator (``OPERATOR_`` prefix)."""

    model_config = SettingsConfigDict(env_prefix="OPERATOR_", extra="ignore")

    namespace: str = Field(description="Namespace whose StreamSchemas the operator handles.")
    liveness_host: str = Field(default="0.0.0.0", description="Address of the liveness probe.")  # noqa: S104
    liveness_port: int = Field(
        default=8080, ge=1, le=65535, description="Port of the liveness probe."
    )
    log_level: str = Field(default="INFO", description="Log level.")


def main() -> None:
    settings = OperatorSettings()
    configure_logging(settings.log_level, "operator")
    import jobflow.operator.handlers  # noqa: F401 - registers the handlers with kopf

    kopf.run(
        standalone=True,
        namespaces=[settings.namespace],
        liveness_endpoint=f"http://{settings.liveness_host}:{settings.liveness_port}{LIVENESS_PATH}",
    )
