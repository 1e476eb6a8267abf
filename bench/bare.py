"""The framework's ceiling: the receiver's endpoint without Kafka.

Same FastAPI app factory (health, metrics instrumentation), same body guard, same request
model, same job generation and the same JSON answer, served by the same uvicorn call; only the
write to Kafka and the wait for its acknowledgement are gone. What the receiver loses against
this is the price of Kafka.

    python -m bench.bare            (RECEIVER_PORT, as the receiver, says where)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Body, FastAPI, Response

from jobflow.core.body_guard import JsonBodyGuard
from jobflow.core.models import CreatedJob
from jobflow.core.service import create_app, serve
from jobflow.receiver.jobs import CreateJobRequest
from jobflow.receiver.service import ReceiverSettings


def create(settings: ReceiverSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield

    async def always_ready() -> str | None:
        return None

    app = create_app(service="bare", lifespan=lifespan, readiness=always_ready)
    app.add_middleware(JsonBodyGuard, max_bytes=settings.max_body_bytes)

    @app.post("/api/v1/create/job", response_model=CreatedJob)
    async def create_job(
        request: Annotated[CreateJobRequest | None, Body()] = None,
    ) -> Response:
        job = settings.new_job(request)
        return Response(CreatedJob.from_job(job).to_json(), media_type="application/json")

    return app


def main() -> None:
    settings = ReceiverSettings()
    serve(create(settings), settings, "bare")


if __name__ == "__main__":
    main()
