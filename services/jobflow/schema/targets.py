"""The servers statements are applied to: ClickHouse and ksqlDB, behind one small interface."""

from __future__ import annotations

from typing import ClassVar, Protocol

from jobflow.core.ksqldb import KsqlDbClient, KsqlDbError
from jobflow.schema.clickhouse import ClickHouseError, ClickHouseHttp


class TargetError(Exception):
    """The target refused a statement or could not be reached."""


class Target(Protocol):
    async def unready_reason(self) -> str | None:
        """None when the target accepts statements, else why not."""

    async def apply(self, statement: str) -> str:
        """Apply one statement; return what happened (``applied``, ``exists``)."""

    async def close(self) -> None: ...


class ClickHouseTarget:
    def __init__(self, client: ClickHouseHttp) -> None:
        self._client = client

    async def unready_reason(self) -> str | None:
        return await self._client.unready_reason()

    async def apply(self, statement: str) -> str:
        try:
            await self._client.execute(statement)
        except ClickHouseError as exc:
            raise TargetError(str(exc)) from exc
        # Every canonical statement is IF NOT EXISTS: ClickHouse does not say which it was.
        return "applied"

    async def close(self) -> None:
        await self._client.close()


class KsqlDbTarget:
    # A materialized table built after its topic has data must read that data too.
    PROPERTIES: ClassVar[dict[str, str]] = {"ksql.streams.auto.offset.reset": "earliest"}

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        self._client = KsqlDbClient(url, timeout_s)

    async def unready_reason(self) -> str | None:
        return await self._client.healthy()

    async def apply(self, statement: str) -> str:
        try:
            return await self._client.execute(statement, self.PROPERTIES)
        except KsqlDbError as exc:
            raise TargetError(str(exc)) from exc

    async def close(self) -> None:
        await self._client.close()
