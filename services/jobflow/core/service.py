"""The HTTP face every service shares: health probes, /metrics, and the uvicorn entry point."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from prometheus_fastapi_instrumentator import Instrumentator

from jobflow.core.kafka import AsyncProducer
from jobflow.core.logging import configure_logging
from jobflow.core.metrics import publish_build_info
from jobflow.core.settings import ServiceSettings

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[str | None]]
"""Returns None when ready, else a short reason why not."""

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def create_app(
    *,
    service: str,
    lifespan: Lifespan,
    readiness: ReadinessCheck,
    liveness: Callable[[], str | None] = lambda: None,
) -> FastAPI:
    """A FastAPI app with /healthz (liveness), /readyz (readiness) and /metrics."""
    app = FastAPI(title=f"jobflow {service}", lifespan=lifespan)

    @app.get("/healthz", tags=["health"], summary="Liveness: the process can do its work.")
    async def healthz() -> JSONResponse:
        reason = liveness()
        if reason is not None:
            return JSONResponse({"status": "dead", "reason": reason}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", tags=["health"], summary="Readiness: dependencies are reachable.")
    async def readyz() -> JSONResponse:
        reason = await readiness()
        if reason is not None:
            return JSONResponse({"status": "not ready", "reason": reason}, status_code=503)
        return JSONResponse({"status": "ready"})

    Instrumentator(excluded_handlers=["/metrics", "/healthz", "/readyz"]).instrument(app).expose(
        app, include_in_schema=False
    )
    publish_build_info(service)
    return app


def kafka_readiness(
    producer: AsyncProducer, topics: set[str], timeout_s: float = 2.0
) -> ReadinessCheck:
    """Ready when the cluster answers a metadata request and every topic in ``topics`` exists."""

    async def check() -> str | None:
        try:
            existing = await asyncio.to_thread(producer.list_topics, timeout_s)
        except Exception as exc:
            return f"kafka unreachable: {exc}"
        missing = sorted(topics - existing)
        return f"missing topics: {', '.join(missing)}" if missing else None

    return check


def serve(app: FastAPI, settings: ServiceSettings, service: str) -> None:
    """Run ``app`` with uvicorn until SIGTERM or SIGINT, logging as JSON."""
    configure_logging(settings.log_level, service)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout_s),
    )
