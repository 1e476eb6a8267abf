"""Where the informer reads a job's status: ksqlDB (the seed's design) or PostgreSQL."""

from __future__ import annotations

from typing import Protocol

from psycopg import sql
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool
from pydantic import ValidationError

from jobflow.core.ksqldb import KsqlDbClient, KsqlDbError, quote_literal
from jobflow.core.models import JobInfo, JobStatus
from jobflow.core.timestamps import NANOS_PER_SECOND, format_rfc3339_nano


class BackendError(Exception):
    """The backend could not answer; the informer answers 503."""


class StatusBackend(Protocol):
    async def open(self) -> None: ...

    async def lookup(self, job_id: str) -> JobInfo:
        """The job's status; ``unknown`` when the backend has no record of it."""

    async def unready_reason(self) -> str | None:
        """None when the backend can answer lookups, else why not."""

    async def close(self) -> None: ...


def unknown(job_id: str) -> JobInfo:
    return JobInfo(id=job_id, status=JobStatus.UNKNOWN)


class KsqlDbBackend:
    """Looks a job up by key in a ksqlDB table (or stream) over processor-topic."""

    def __init__(self, client: KsqlDbClient, source: str) -> None:
        self._client = client
        self._source = source

    def statement(self, job_id: str) -> str:
        # The source is a validated identifier and the id a quoted literal.
        return f"SELECT * FROM {self._source} WHERE id = {quote_literal(job_id)};"  # noqa: S608

    async def lookup(self, job_id: str) -> JobInfo:
        try:
            result = await self._client.query(self.statement(job_id))
        except KsqlDbError as exc:
            raise BackendError(str(exc)) from exc
        records = result.records()
        if not records:
            return unknown(job_id)
        # A stream may hold a job more than once after a replay; the latest record wins.
        latest = records[-1]
        try:
            return JobInfo(
                id=job_id,
                status=latest["status"],
                create_date=latest.get("create_date"),
                finish_date=latest.get("finish_date"),
            )
        except (KeyError, ValidationError) as exc:
            raise BackendError(f"{self._source} row out of shape: {exc!r}") from exc

    async def open(self) -> None:
        """Nothing to open: the HTTP client connects on first use."""

    async def unready_reason(self) -> str | None:
        return await self._client.healthy()

    async def close(self) -> None:
        await self._client.close()


class PostgresBackend:
    """Looks a job up in the sink's table ``jobs`` (dates there are whole epoch seconds)."""

    _QUERY = sql.SQL("SELECT status, create_date, finish_date FROM {} WHERE id = %s")

    def __init__(self, pool: AsyncConnectionPool, table: str) -> None:
        self._pool = pool
        self._query = self._QUERY.format(sql.Identifier(table))

    async def open(self) -> None:
        # Not waiting: the informer starts (and says it is not ready) while PostgreSQL is away.
        await self._pool.open(wait=False)

    async def lookup(self, job_id: str) -> JobInfo:
        try:
            async with self._pool.connection() as connection:
                cursor = connection.cursor(row_factory=tuple_row)
                await cursor.execute(self._query, (job_id,))
                row = await cursor.fetchone()
        except Exception as exc:
            raise BackendError(f"PostgreSQL lookup failed: {exc}") from exc
        if row is None:
            return unknown(job_id)
        status, create_date, finish_date = row
        return JobInfo(
            id=job_id,
            status=status,
            create_date=_from_epoch_seconds(create_date),
            finish_date=_from_epoch_seconds(finish_date),
        )

    async def unready_reason(self) -> str | None:
        try:
            async with self._pool.connection(timeout=2.0) as connection:
                await connection.execute("SELECT 1")
        except Exception as exc:
            return f"PostgreSQL unreachable: {exc}"
        return None

    async def close(self) -> None:
        await self._pool.close()


def _from_epoch_seconds(seconds: int | None) -> str | None:
    return None if seconds is None else format_rfc3339_nano(seconds * NANOS_PER_SECOND)
