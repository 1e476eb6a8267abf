"""GET /info/{id}: a job's status, or ``unknown``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Literal

from fastapi import FastAPI, HTTPException, Path, Response
from prometheus_client import Counter, Histogram
from psycopg_pool import AsyncConnectionPool
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from jobflow.core.ksqldb import KsqlDbClient
from jobflow.core.metrics import LATENCY_BUCKETS
from jobflow.core.models import ErrorAnswer, JobInfo
from jobflow.core.service import create_app, serve
from jobflow.core.settings import PostgresSettings, ServiceSettings
from jobflow.informer.backends import (
    BackendError,
    KsqlDbBackend,
    PostgresBackend,
    StatusBackend,
)

LOOKUPS = Counter(
    "jobflow_informer_lookups_total", "Status lookups by answered status.", ["status"]
)
BACKEND_SECONDS = Histogram(
    "jobflow_informer_backend_duration_seconds",
    "Time the status backend took to answer.",
    ["backend"],
    buckets=LATENCY_BUCKETS,
)
BACKEND_ERRORS = Counter(
    "jobflow_informer_backend_errors_total", "Lookups the backend failed.", ["backend"]
)

# Canonical UUID text, any case; the path parameter is matched before any backend is asked,
# so nothing but a UUID ever reaches a query.
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


class InformerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="INFORMER_", extra="ignore")

    port: int = Field(default=8004, ge=1, le=65535, description="Port of the HTTP API.")
    backend: Literal["ksqldb", "postgres"] = Field(
        default="ksqldb", description="Where statuses are read: ksqldb or postgres."
    )
    ksqldb_url: str = Field(default="http://127.0.0.1:8088", description="ksqlDB server URL.")
    ksqldb_source: str = Field(
        default="jobs_table",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="ksqlDB table (or stream) queried by id.",
    )
    backend_timeout_s: float = Field(
        default=2.0, gt=0, description="How long one backend lookup may take."
    )


def build_backend(settings: InformerSettings, postgres: PostgresSettings) -> StatusBackend:
    if settings.backend == "ksqldb":
        client = KsqlDbClient(settings.ksqldb_url, settings.backend_timeout_s)
        return KsqlDbBackend(client, settings.ksqldb_source)
    pool = AsyncConnectionPool(
        postgres.conninfo(),
        min_size=1,
        max_size=10,
        open=False,
        timeout=settings.backend_timeout_s,
        kwargs={"options": f"-c statement_timeout={int(settings.backend_timeout_s * 1000)}"},
        # A connection PostgreSQL closed (a restart) is found out and replaced before a lookup
        # uses it, rather than failing that lookup with a 503.
        check=AsyncConnectionPool.check_connection,
    )
    return PostgresBackend(pool, postgres.table)


def create(settings: InformerSettings, postgres: PostgresSettings) -> FastAPI:
    backend = build_backend(settings, postgres)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await backend.open()
        yield
        await backend.close()

    app = create_app(service="informer", lifespan=lifespan, readiness=backend.unready_reason)

    @app.get(
        "/info/{job_id}",
        response_model=JobInfo,
        response_model_exclude_none=True,
        responses={
            503: {"model": ErrorAnswer, "description": "The status backend could not answer."}
        },
        summary="The status of a job: finish, or unknown.",
    )
    async def info(
        job_id: Annotated[str, Path(pattern=UUID_PATTERN, description="The job's id, a UUID.")],
    ) -> Response:
        started = time.perf_counter()
        try:
            found = await backend.lookup(job_id.lower())
        except BackendError as exc:
            BACKEND_ERRORS.labels(settings.backend).inc()
            raise HTTPException(503, f"status backend unavailable: {exc}") from None
        finally:
            BACKEND_SECONDS.labels(settings.backend).observe(time.perf_counter() - started)
        LOOKUPS.labels(found.status).inc()
        return Response(found.to_json(), media_type="application/json")

    return app


def main() -> None:
    """``python -m jobflow informer``: serve until SIGTERM, with settings from the environment."""
    settings = InformerSettings()
    serve(create(settings, PostgresSettings()), settings, "informer")
