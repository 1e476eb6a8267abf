"""ClickHouse's HTTP interface, as far as applying statements needs it."""

from __future__ import annotations

from typing import Any

import httpx
import orjson


class ClickHouseError(Exception):
    """ClickHouse refused a statement or could not be reached."""


class ClickHouseHttp:
    def __init__(
        self, url: str, user: str, password: str, timeout_s: float = 30.0, database: str = ""
    ) -> None:
        """``database``: where unqualified names are (the server's default when empty)."""
        self._http = httpx.AsyncClient(
            base_url=url,
            timeout=timeout_s,
            headers={"X-ClickHouse-User": user, "X-ClickHouse-Key": password},
        )
        # Per statement: 18.16 takes any parameter of /ping for a query.
        self._params = {"database": database} if database else {}

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
            response = await self._http.post("/", content=statement.encode(), params=self._params)
        except httpx.HTTPError as exc:
            raise ClickHouseError(f"ClickHouse unreachable: {exc!r}") from exc
        if response.status_code != httpx.codes.OK:
            raise ClickHouseError(response.text.strip())
        return response.text

    async def rows(self, query: str) -> list[dict[str, Any]]:
        """A SELECT's rows, as JSONEachRow gives them."""
        text = await self.execute(f"{query} FORMAT JSONEachRow")
        return [orjson.loads(line) for line in text.splitlines() if line.strip()]

    async def close(self) -> None:
        await self._http.aclose()
