"""ClickHouse's HTTP interface, as far as applying statements needs it."""

from __future__ import annotations

import httpx


class ClickHouseError(Exception):
    """ClickHouse refused a statement or could not be reached."""


class ClickHouseHttp:
    def __init__(self, url: str, user: str, password: str, timeout_s: float = 30.0) -> None:
        self._http = httpx.AsyncClient(
            base_url=url,
            timeout=timeout_s,
            headers={"X-ClickHouse-User": user, "X-ClickHouse-Key": password},
        )

    async def unready_reason(self) -> str | None:
        try:
            response = await self._http.get("/ping")
        except httpx.HTTPError as exc:
            return f"ClickHouse unreachable: {exc!r}"
        if response.status_code != httpx.codes.OK:
            return f"ClickHouse answered /ping with HTTP {response.status_code}"
        return None

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
