"""JsonBodyGuard on a small app: 415 for a body that is not JSON, 413 for a long one however
it arrives, and the body handed over whole otherwise."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, Request

from jobflow.core.body_guard import JsonBodyGuard, is_json

# run by make security-check too (tests/targets.mk)
pytestmark = pytest.mark.security

LIMIT = 64


def app() -> FastAPI:
    echo = FastAPI()

    @echo.post("/echo")
    async def _echo(request: Request) -> dict[str, int]:
        return {"length": len(await request.body())}

    echo.add_middleware(JsonBodyGuard, max_bytes=LIMIT)
    return echo


async def post(content: bytes | AsyncIterator[bytes], headers: dict[str, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app=app())
    async with httpx.AsyncClient(transport=transport, base_url="http://guarded") as client:
        return await client.post("/echo", content=content, headers=headers)


async def chunks(total: int) -> AsyncIterator[bytes]:
    for _ in range(total // 16):
        yield b"x" * 16


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "application/merge-patch+json"],
)
async def test_a_json_body_within_the_limit_is_handed_over_whole(content_type: str) -> None:
    answer = await post(b"{" + b" " * (LIMIT - 2) + b"}", {"Content-Type": content_type})
    assert (answer.status_code, answer.json()) == (200, {"length": LIMIT})


async def test_a_streamed_body_within_the_limit_is_handed_over_whole() -> None:
    answer = await post(chunks(LIMIT), {"Content-Type": "application/json"})
    assert (answer.status_code, answer.json()) == (200, {"length": LIMIT})


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
async def test_a_body_that_is_not_json_gets_415(content_type: str) -> None:
    answer = await post(b'{"sleep": 1}', {"Content-Type": content_type} if content_type else {})
    assert answer.status_code == 415
    assert answer.json() == {"detail": "the body must be JSON (Content-Type: application/json)"}


async def test_no_body_needs_no_content_type() -> None:
    assert (await post(b"", {"Content-Type": "text/plain"})).status_code == 200


async def test_a_long_body_gets_413_by_its_length() -> None:
    answer = await post(b"x" * (LIMIT + 1), {"Content-Type": "application/json"})
    assert answer.status_code == 413
    assert answer.json() == {"detail": f"the body is longer than {LIMIT} bytes"}


async def test_a_long_streamed_body_gets_413_as_it_arrives() -> None:
    answer = await post(chunks(LIMIT * 4), {"Content-Type": "application/json"})
    assert answer.status_code == 413


def test_json_media_types() -> None:
    assert is_json("application/json")
    assert is_json("Application/JSON; charset=utf-8")
    assert is_json("application/vnd.api+json")
    assert not is_json("text/json+plain")
    assert not is_json(None)
