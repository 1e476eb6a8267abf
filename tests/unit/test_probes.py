"""The probes every service shares: what they answer, and that the OpenAPI document says it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from jobflow.core.service import create_app


@asynccontextmanager
async def _no_lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield


def _app(readiness_reason: str | None, liveness_reason: str | None) -> FastAPI:
    async def readiness() -> str | None:
        return readiness_reason

    return create_app(
        service="probed",
        lifespan=_no_lifespan,
        readiness=readiness,
        liveness=lambda: liveness_reason,
    )


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://probed")


async def test_the_probes_answer_200_with_the_state() -> None:
    async with _client(_app(None, None)) as client:
        healthz, readyz = await client.get("/healthz"), await client.get("/readyz")
    assert (healthz.status_code, healthz.json()) == (200, {"status": "ok"})
    assert (readyz.status_code, readyz.json()) == (200, {"status": "ready"})


async def test_the_probes_answer_503_with_the_reason() -> None:
    async with _client(_app("no producer yet", "a producer failed")) as client:
        healthz, readyz = await client.get("/healthz"), await client.get("/readyz")
    assert (healthz.status_code, healthz.json()) == (
        503,
        {"status": "dead", "reason": "a producer failed"},
    )
    assert (readyz.status_code, readyz.json()) == (
        503,
        {"status": "not ready", "reason": "no producer yet"},
    )


def test_the_openapi_document_says_a_probe_may_answer_503() -> None:
    # Regression: only 200 was documented, so a client checking answers against the document
    # (schemathesis) took a receiver still setting up its producers for a faulty one.
    document = _app(None, None).openapi()
    answer = {"$ref": "#/components/schemas/ProbeAnswer"}
    for path in ("/healthz", "/readyz"):
        responses = document["paths"][path]["get"]["responses"]
        assert sorted(responses) == ["200", "503"], path
        for status in ("200", "503"):
            assert responses[status]["content"]["application/json"]["schema"] == answer
    assert document["components"]["schemas"]["ProbeAnswer"]["properties"]["status"]["enum"] == [
        "ok",
        "dead",
        "ready",
        "not ready",
    ]
