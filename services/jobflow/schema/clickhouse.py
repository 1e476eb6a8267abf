"""ClickHouse statements applied through its HTTP interface."""

from __future__ import annotations

import logging

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

log = logging.getLogger(__name__)


class ClickHouseError(Exception):
    """ClickHouse refused a statement or could not be reached."""


class ClickHouseHttp:
    def __init__(self, url: str, user: str, password: str, timeout_s: float = 30.0) -> None:
        self._http = httpx.AsyncClient(
            base_url=url,
            timeout=timeout_s,
            headers={"X-ClickHouse-User": user, "X-ClickHouse-Key": password},
        )

    async def wait_ready(self, within_s: float) -> None:
        """Return once GET /ping answers; raise ClickHouseError after ``within_s``."""
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(httpx.HTTPError),
                wait=wait_exponential(multiplier=0.2, max=5),
                stop=stop_after_delay(within_s),
                reraise=True,
            ):
                with attempt:
                    (await self._http.get("/ping")).raise_for_status()
        except httpx.HTTPError as exc:
            raise ClickHouseError(f"ClickHouse not ready after {within_s:.0f}s: {exc!r}") from exc

    async def execute(self, statement: str) -> str:
        """Run one statement; return its output; raise ClickHouseError with the server's text."""
        try:
            response = await self._http.post("/", content=statement.encode())
        except httpx.HTTPError as exc:
            raise ClickHouseError(f"ClickHouse unreachable: {exc!r}") from exc
        if response.status_code != httpx.codes.OK:
            raise ClickHouseError(response.text.strip())
        return response.text

    async def close(self) -> None:
        await self._http.aclose()
