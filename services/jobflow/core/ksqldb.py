"""A client for ksqlDB's REST API (v1): pull queries (POST /query), statements (POST /ksql).

The response of /query is one JSON array: a ``header`` element (query id and the column
schema as a SQL fragment), then one ``row`` element per row, then ``finalMessage``; an error
in mid-stream arrives as an ``errorMessage`` element, and a rejected statement as an HTTP
error whose body is a JSON object with ``@type``, ``error_code`` and ``message``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import orjson

KSQL_MEDIA_TYPE = "application/vnd.ksql.v1+json"
KSQL_CONTENT_TYPE = f"{KSQL_MEDIA_TYPE}; charset=utf-8"


class KsqlDbError(Exception):
    """ksqlDB refused or failed a request, or answered outside its protocol."""


@dataclass(frozen=True)
class QueryResult:
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    def records(self) -> list[dict[str, Any]]:
        """Rows as dicts keyed by lower-case column name."""
        names = [name.lower() for name in self.columns]
        return [dict(zip(names, row, strict=True)) for row in self.rows]


def quote_literal(value: str) -> str:
    """A ksqlDB SQL string literal: single quotes, embedded quotes doubled."""
    return "'" + value.replace("'", "''") + "'"


def column_names(schema: str) -> tuple[str, ...]:
    """Column names of a header schema such as "`ID` STRING KEY, `S` STRUCT<`A` INT, `B` INT>".

    Commas inside a type (STRUCT, MAP, DECIMAL) do not separate columns.
    """
    names: list[str] = []
    depth = 0
    in_quotes = False
    current = ""
    expecting_name = True
    for char in schema:
        if char == "`":
            in_quotes = not in_quotes
            if expecting_name and not in_quotes:
                names.append(current)
                current = ""
                expecting_name = False
            continue
        if in_quotes:
            if expecting_name:
                current += char
            continue
        if char in "<(":
            depth += 1
        elif char in ">)":
            depth -= 1
        elif char == "," and depth == 0:
            expecting_name = True
    if in_quotes or depth != 0:
        raise KsqlDbError(f"malformed schema in query header: {schema!r}")
    return tuple(names)


def parse_query_response(body: bytes) -> QueryResult:
    """Parse the JSON array of a /query response; raise KsqlDbError for errors in it."""
    try:
        elements = orjson.loads(body)
    except orjson.JSONDecodeError:
        # Older servers end a failed stream with an error element and never close the array;
        # any other unclosed array is a stream that was cut short.
        raise KsqlDbError(_unclosed_stream_error(body)) from None
    if isinstance(elements, dict):
        raise KsqlDbError(error_text(elements))
    if not isinstance(elements, list) or not elements:
        raise KsqlDbError("response is not a non-empty JSON array")
    try:
        return _result_of(elements)
    except (KeyError, TypeError) as exc:
        raise KsqlDbError(f"response element out of protocol: {exc!r}") from exc


def _result_of(elements: list[Any]) -> QueryResult:
    columns: tuple[str, ...] | None = None
    rows: list[tuple[Any, ...]] = []
    for element in elements:
        if not isinstance(element, dict):
            raise KsqlDbError(f"unexpected element in response: {element!r}")
        if "header" in element:
            columns = column_names(element["header"]["schema"])
        elif "row" in element:
            if columns is None:
                raise KsqlDbError("row before header in response")
            values = tuple(element["row"]["columns"])
            if len(values) != len(columns):
                raise KsqlDbError(f"row has {len(values)} values for {len(columns)} columns")
            rows.append(values)
        elif "errorMessage" in element:
            raise KsqlDbError(error_text(element["errorMessage"]))
    if columns is None:
        raise KsqlDbError("response has no header")
    return QueryResult(columns, tuple(rows))


def _unclosed_stream_error(body: bytes) -> str:
    """Why an unparseable /query body failed: its error element if it has one."""
    for line in body.splitlines():
        text = line.strip().removeprefix(b"[").removesuffix(b",").removesuffix(b"]")
        try:
            element = orjson.loads(text) if text else None
        except orjson.JSONDecodeError:
            continue
        if isinstance(element, dict) and "errorMessage" in element:
            return error_text(element["errorMessage"])
    return "response is not a complete JSON array; the stream was cut short"


def error_text(error: Any) -> str:
    """The human part of a ksqlDB error object (or whatever the server sent instead)."""
    if isinstance(error, dict):
        message = error.get("message") or error.get("errorMessage") or orjson.dumps(error).decode()
        code = error.get("error_code")
        return f"ksqlDB error {code}: {message}" if code else f"ksqlDB error: {message}"
    return f"ksqlDB error: {error!r}"


class KsqlDbClient:
    def __init__(self, base_url: str, timeout_s: float) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url,
            timeout=timeout_s,
            headers={"Accept": KSQL_MEDIA_TYPE, "Content-Type": KSQL_CONTENT_TYPE},
        )

    async def query(self, sql: str) -> QueryResult:
        """Run a pull query; raise KsqlDbError on any refusal or failure."""
        payload = orjson.dumps({"ksql": sql, "streamsProperties": {}})
        try:
            response = await self._http.post("/query", content=payload)
        except httpx.HTTPError as exc:
            raise KsqlDbError(f"ksqlDB unreachable: {exc!r}") from exc
        if response.status_code != httpx.codes.OK:
            raise KsqlDbError(f"HTTP {response.status_code}: {_error_body(response.content)}")
        return parse_query_response(response.content)

    async def _statement(self, statement: str, properties: dict[str, str]) -> tuple[int, Any]:
        """POST one statement to /ksql: the HTTP status and the JSON body."""
        payload = orjson.dumps({"ksql": f"{statement};", "streamsProperties": properties})
        try:
            response = await self._http.post("/ksql", content=payload)
        except httpx.HTTPError as exc:
            raise KsqlDbError(f"ksqlDB unreachable: {exc!r}") from exc
        try:
            return response.status_code, orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise KsqlDbError(
                f"HTTP {response.status_code}: {_error_body(response.content)}"
            ) from None

    async def execute(self, statement: str, properties: dict[str, str]) -> str:
        """Run one statement through /ksql; return ``applied`` or ``exists``.

        Current servers answer an IF NOT EXISTS statement whose object exists with a warning
        entity; older ones with a 40001 statement error saying it already exists. Both mean
        the statement's result is in place.
        """
        status_code, body = await self._statement(statement, properties)
        if status_code != httpx.codes.OK:
            if isinstance(body, dict) and "already exists" in str(body.get("message", "")):
                return "exists"
            raise KsqlDbError(f"HTTP {status_code}: {error_text(body)}")
        entities = body if isinstance(body, list) else [body]
        for entity in entities:
            if not isinstance(entity, dict):
                raise KsqlDbError(f"unexpected answer: {entity!r}")
            if entity.get("@type") == "warning_entity":
                return "exists"
            status = entity.get("commandStatus", {}).get("status")
            if status not in (None, "SUCCESS", "QUEUED", "EXECUTING"):
                message = entity["commandStatus"].get("message", "")
                raise KsqlDbError(f"statement {status}: {message}")
        return "applied"

    async def describe(self, source: str) -> dict[str, Any] | None:
        """A stream's or table's ``sourceDescription`` (DESCRIBE), or None when there is none
        (ksqlDB answers 40001, "Could not find STREAM/TABLE ... in the Metastore")."""
        status_code, body = await self._statement(f"DESCRIBE {source}", {})
        if status_code != httpx.codes.OK:
            message = str(body.get("message", "")) if isinstance(body, dict) else ""
            if "Could not find" in message or "does not exist" in message:
                return None
            raise KsqlDbError(f"HTTP {status_code}: {error_text(body)}")
        for entity in body if isinstance(body, list) else [body]:
            if isinstance(entity, dict) and isinstance(entity.get("sourceDescription"), dict):
                return dict(entity["sourceDescription"])
        raise KsqlDbError(f"DESCRIBE {source} answered without a sourceDescription: {body!r}")

    async def service_id(self) -> str:
        """The server's ``ksql.service.id`` (GET /info), which prefixes its internal topics."""
        try:
            response = await self._http.get("/info")
            body = response.json()
            return str(body["KsqlServerInfo"]["ksqlServiceId"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise KsqlDbError(f"GET /info: no ksqlServiceId: {exc!r}") from exc

    async def healthy(self) -> str | None:
        """None when ksqlDB reports itself healthy, else why not."""
        try:
            response = await self._http.get("/healthcheck")
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            return f"ksqlDB unreachable: {exc!r}"
        healthy = isinstance(body, dict) and body.get("isHealthy") is True
        if response.status_code != httpx.codes.OK or not healthy:
            return f"ksqlDB unhealthy: {response.text[:200]}"
        return None

    async def close(self) -> None:
        await self._http.aclose()


def _error_body(content: bytes) -> str:
    try:
        return error_text(orjson.loads(content))
    except orjson.JSONDecodeError:
        return content[:200].decode(errors="replace")
