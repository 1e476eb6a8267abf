"""The HTTP face every service shares: health probes, /metrics, and the uvicorn entry point."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, Protocol

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from prometheus_fastapi_instrumentator import Instrumentator
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobflow.core.logging import configure_logging
from jobflow.core.metrics import publish_build_info
from jobflow.core.settings import ServiceSettings

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[str | None]]
"""Returns None when ready, else a short reason why not."""

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


ProbeStatus = Literal["ok", "dead", "ready", "not ready"]
"""/healthz answers ok or dead, /readyz ready or not ready."""


class ProbeAnswer(BaseModel):
    """The body of /healthz and /readyz: the state and, when it is not the good one, why."""

    status: ProbeStatus
    reason: str | None = None


def _probe_answer(
    status: ProbeStatus, reason: str | None = None, status_code: int = 200
) -> JSONResponse:
    answer = ProbeAnswer(status=status, reason=reason)
    return JSONResponse(answer.model_dump(exclude_none=True), status_code=status_code)


def _probe(summary: str, unwell: str) -> dict[str, Any]:
    """A probe route's OpenAPI description."""
    return {
        "tags": ["health"],
        "summary": summary,
        "response_model": ProbeAnswer,
        "responses": {
            503: {"model": ProbeAnswer, "description": f"{unwell}: the reason says why."}
        },
    }


def create_app(
    *,
    service: str,
    lifespan: Lifespan,
    readiness: ReadinessCheck,
    liveness: Callable[[], str | None] = lambda: None,
) -> FastAPI:
    """A FastAPI app with /healthz (liveness), /readyz (readiness) and /metrics."""
    app = FastAPI(title=f"jobflow {service}", lifespan=lifespan)

    # A probe's 503 is part of its contract (Kubernetes acts on it), so the OpenAPI document
    # says so; clients that check answers against it would otherwise take it for a fault.
    @app.get("/healthz", **_probe("Liveness: the process can do its work.", "Dead"))
    async def healthz() -> JSONResponse:
        reason = liveness()
        if reason is not None:
            return _probe_answer("dead", reason, status_code=503)
        return _probe_answer("ok")

    @app.get("/readyz", **_probe("Readiness: dependencies are reachable.", "Not ready"))
    async def readyz() -> JSONResponse:
        reason = await readiness()
        if reason is not None:
            return _probe_answer("not ready", reason, status_code=503)
        return _probe_answer("ready")

    Instrumentator(excluded_handlers=["/metrics", "/healthz", "/readyz"]).instrument(app).expose(
        app, include_in_schema=False
    )
    publish_build_info(service)
    return app


class TopicLister(Protocol):
    def list_topics(self, timeout_s: float) -> set[str]: ...


def kafka_readiness(
    client: TopicLister, topics: set[str], timeout_s: float = 2.0
) -> ReadinessCheck:
    """Ready when the cluster answers a metadata request and every topic in ``topics`` exists."""

    async def check() -> str | None:
        try:
            existing = await asyncio.to_thread(client.list_topics, timeout_s)
        except Exception as exc:
            return f"kafka unreachable: {exc}"
        missing = sorted(topics - existing)
        return f"missing topics: {', '.join(missing)}" if missing else None

    return check


class DrainingServer(uvicorn.Server):
    """A uvicorn server that, told to stop, first asks its clients to leave.

    uvicorn alone closes every idle keep-alive connection at once, and a client that sent its
    next request on one at that moment gets no answer (a rolling upgrade under load lost one
    request that way). Here, for up to ``drain_s``, requests on open connections are served
    as before, answered with ``Connection: close``, so clients go on with a new connection
    (to another pod, once the Service's endpoints let this one go); only then does uvicorn's
    own shutdown begin.
    """

    def __init__(self, config: uvicorn.Config, drain_s: float) -> None:
        super().__init__(config)
        self.drain_s = drain_s
        self.draining = False

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.draining = True
        deadline = time.monotonic() + self.drain_s
        # uvicorn's set of connections signals nothing when it empties; it polls it too.
        while self.server_state.connections and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await super().shutdown(sockets)


class CloseWhileDraining:
    """ASGI middleware: while ``server`` drains, every answer says ``Connection: close``."""

    def __init__(self, app: ASGIApp, server: DrainingServer) -> None:
        self.app = app
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and self.server.draining:
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, send_closing)


def stop_process_on_failure(task: asyncio.Task[None]) -> None:
    """A done callback for a task the service cannot go on without: when it failed, say why,
    and stop the process so that its supervisor (supervisord locally, the kubelet in a
    cluster) starts a fresh one."""
    if task.cancelled() or task.exception() is None:
        return
    log.critical(f"{task.get_name()} stopped", exc_info=task.exception())
    os.kill(os.getpid(), signal.SIGTERM)


def serve(app: FastAPI, settings: ServiceSettings, service: str) -> None:
    """Run ``app`` with uvicorn until SIGTERM or SIGINT, logging as JSON."""
    configure_logging(settings.log_level, service)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout_s),
        timeout_keep_alive=settings.keep_alive_s,
    )
    server = DrainingServer(config, settings.shutdown_drain_s)
    app.add_middleware(CloseWhileDraining, server=server)
    server.run()
