"""A request body, when there is one, is JSON and small, or it is refused before it is read.

FastAPI reads a body of any size into memory and, on a validation error, echoes it back in its
422; a body in another media type gets a 422 that only says the input is no object. This ASGI
middleware answers those cases first, in the services' error shape: 415 for a body that is not
JSON, 413 for one over the limit, announced by Content-Length or counted as it streams in.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def is_json(content_type: str | None) -> bool:
    """application/json, or a +json type such as application/problem+json; parameters allowed."""
    if content_type is None:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


class JsonBodyGuard:
    """Refuses a request body that is not JSON (415) or is longer than ``max_bytes`` (413)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        length = headers.get("content-length")
        streamed = "chunked" in headers.get("transfer-encoding", "").lower()
        if (streamed or length not in (None, "0")) and not is_json(headers.get("content-type")):
            await refuse(
                scope, receive, send, 415, "the body must be JSON (Content-Type: application/json)"
            )
            return
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await refuse(scope, receive, send, 413, self.too_large())
            return
        await self.buffered(scope, receive, send)

    async def buffered(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Reads the whole body, at most ``max_bytes`` of it, then hands it to the app as one
        message (FastAPI would turn an error raised while it reads into a 400)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await refuse(scope, receive, send, 413, self.too_large())
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        handed_over = False

        async def replay() -> Message:
            nonlocal handed_over
            if handed_over:
                return await receive()
            handed_over = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    def too_large(self) -> str:
        return f"the body is longer than {self.max_bytes} bytes"


async def refuse(scope: Scope, receive: Receive, send: Send, status: int, detail: str) -> None:
    await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)
