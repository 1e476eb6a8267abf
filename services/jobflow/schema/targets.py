"""The stores migrations are applied to (ClickHouse, PostgreSQL, ksqlDB), behind one interface:
what each has recorded as applied, applying and recording one migration, and the live
definitions of its tables."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Protocol

import psycopg
from psycopg.conninfo import make_conninfo

from jobflow.core.ksqldb import KsqlDbClient, KsqlDbError, quote_literal
from jobflow.schema.clickhouse import ClickHouseError, ClickHouseHttp
from jobflow.schema.definitions import (
    ClickHouseModel,
    Column,
    Definition,
    KsqlDbModel,
    Model,
    PostgresModel,
    clickhouse_key,
)
from jobflow.schema.migrations import Applied, Migration

# Reports each statement of a migration: its number (from 1) and what became of it.
StatementReport = Callable[[int, str, str], None]


class TargetError(Exception):
    """The target refused a statement or could not be reached."""


class StatementError(TargetError):
    """Statement ``number`` (from 1) of a migration failed."""

    def __init__(self, number: int, reason: str) -> None:
        super().__init__(f"statement {number} failed: {reason}")
        self.number = number
        self.reason = reason


class Target(Protocol):
    def model(self) -> Model:
        """A fresh model of the store's dialect, to follow the migrations with."""

    async def unready_reason(self) -> str | None:
        """None when the target accepts statements, else why not."""

    async def applied(self) -> list[Applied]:
        """The migrations the store records as applied (making its record if it has none)."""

    async def apply(self, migration: Migration, report: StatementReport) -> None:
        """Run the migration's statements in order and record it; StatementError at the first
        that fails (nothing is recorded then)."""

    async def definitions(self, names: Iterable[str]) -> dict[str, Definition | None]:
        """The live definition of each named table, None for one the store does not have."""

    async def close(self) -> None: ...


def _literal(value: str) -> str:
    """A single-quoted SQL string (ClickHouse and PostgreSQL): quotes and backslashes escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def clickhouse_definitions(
    names: Iterable[str], tables: list[dict[str, Any]], columns: list[dict[str, Any]]
) -> dict[str, Definition | None]:
    """Definitions from rows of system.tables (name, engine, sorting_key) and system.columns
    (table, name, type), in the order ClickHouse lists them."""
    listed: dict[str, list[Column]] = {}
    for row in columns:
        listed.setdefault(row["table"], []).append(Column(row["name"], row["type"]))
    found: dict[str, Definition | None] = dict.fromkeys(names)
    for table in tables:
        engine = table["engine"]
        key = clickhouse_key(table["sorting_key"]) if engine.endswith("MergeTree") else None
        found[table["name"]] = Definition(engine, tuple(listed.get(table["name"], ())), key)
    return found


class ClickHouseTarget:
    """Migrations recorded in table schema_migrations of the target's database. ClickHouse has
    no transactions: a migration that stops halfway runs again from its first statement."""

    HISTORY_TABLE = (
        "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, "
        "checksum String, applied_at DateTime DEFAULT now()) ENGINE = MergeTree() ORDER BY version"
    )
    # Two runs at once may each record a migration: the same row twice.
    HISTORY = "SELECT DISTINCT version, name, checksum FROM schema_migrations ORDER BY version"

    def __init__(self, client: ClickHouseHttp) -> None:
        self._client = client

    def model(self) -> Model:
        return ClickHouseModel()

    async def unready_reason(self) -> str | None:
        return await self._client.unready_reason()

    async def _run(self, statement: str) -> str:
        try:
            return await self._client.execute(statement)
        except ClickHouseError as exc:
            raise TargetError(str(exc)) from exc

    async def _rows(self, query: str) -> list[dict[str, Any]]:
        try:
            return await self._client.rows(query)
        except ClickHouseError as exc:
            raise TargetError(str(exc)) from exc

    async def applied(self) -> list[Applied]:
        await self._run(self.HISTORY_TABLE)
        rows = await self._rows(self.HISTORY)
        return [Applied(int(r["version"]), r["name"], r["checksum"]) for r in rows]

    async def apply(self, migration: Migration, report: StatementReport) -> None:
        for number, statement in enumerate(migration.statements, start=1):
            try:
                await self._client.execute(statement)
            except ClickHouseError as exc:
                raise StatementError(number, str(exc)) from exc
            # ClickHouse does not say whether an IF NOT EXISTS statement created anything.
            report(number, statement, "applied")
        values = f"{migration.version}, {_literal(migration.name)}, {_literal(migration.checksum)}"
        insert = f"INSERT INTO schema_migrations (version, name, checksum) VALUES ({values})"  # noqa: S608 - quoted
        await self._run(insert)

    async def definitions(self, names: Iterable[str]) -> dict[str, Definition | None]:
        names = list(names)
        # The names are quoted by _literal.
        listed = ", ".join(_literal(name) for name in names) or "''"
        here = "database = currentDatabase()"
        columns_of = "name, engine, sorting_key"
        tables = await self._rows(
            f"SELECT {columns_of} FROM system.tables WHERE {here} AND name IN ({listed})"  # noqa: S608
        )
        columns = await self._rows(
            f"SELECT table, name, type FROM system.columns WHERE {here} AND table IN ({listed})"  # noqa: S608
        )
        return clickhouse_definitions(names, tables, columns)

    async def close(self) -> None:
        await self._client.close()


class PostgresTarget:
    """Migrations recorded in table schema_migrations; each migration and its record commit in
    one transaction, under an advisory lock, so two runs at once apply it once."""

    HISTORY_TABLE = (
        "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, "
        "name text NOT NULL, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    HISTORY = "SELECT version, name, checksum FROM schema_migrations ORDER BY version"
    LOCK = "SELECT pg_advisory_xact_lock(hashtext('schema_migrations'))"
    RECORDED = "SELECT 1 FROM schema_migrations WHERE version = %s"
    RECORD = "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)"
    COLUMNS = """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), c.relkind
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = current_schema()
        LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE c.relname = ANY(%s) AND c.relkind IN ('r', 'p', 'v', 'm')
        ORDER BY c.relname, a.attnum
    """
    PRIMARY_KEYS = """
        SELECT c.relname, string_agg(a.attname, ', ' ORDER BY k.position)
        FROM pg_index i
        JOIN pg_class c ON c.oid = i.indrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = current_schema()
        CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, position)
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
        WHERE i.indisprimary AND c.relname = ANY(%s)
        GROUP BY c.relname
    """
    KINDS: ClassVar[dict[str, str]] = {
        "r": "table",
        "p": "table",
        "v": "view",
        "m": "materialized view",
    }

    def __init__(self, url: str, user: str, password: str) -> None:
        """``url``: postgresql://host:port/database; the credentials come apart from it."""
        self._conninfo = make_conninfo(url, user=user or None, password=password or None)
        self._connection: psycopg.AsyncConnection[tuple[Any, ...]] | None = None

    def model(self) -> Model:
        return PostgresModel()

    async def unready_reason(self) -> str | None:
        try:
            await self._connected()
        except psycopg.Error as exc:
            self._connection = None
            return f"PostgreSQL unreachable: {str(exc).strip().splitlines()[0]}"
        return None

    async def _connected(self) -> psycopg.AsyncConnection[tuple[Any, ...]]:
        if self._connection is None or self._connection.closed:
            self._connection = await psycopg.AsyncConnection.connect(
                self._conninfo, connect_timeout=5, autocommit=True
            )
        return self._connection

    async def applied(self) -> list[Applied]:
        try:
            connection = await self._connected()
            await connection.execute(self.HISTORY_TABLE)
            cursor = await connection.execute(self.HISTORY)
            return [Applied(*row) for row in await cursor.fetchall()]
        except psycopg.Error as exc:
            raise TargetError(str(exc).strip()) from exc

    async def apply(self, migration: Migration, report: StatementReport) -> None:
        connection = await self._connected()
        try:
            async with connection.transaction():
                await connection.execute(self.LOCK)
                cursor = await connection.execute(self.RECORDED, (migration.version,))
                if await cursor.fetchone():
                    return  # applied meanwhile by another run
                for number, statement in enumerate(migration.statements, start=1):
                    try:
                        await connection.execute(statement.encode())
                    except psycopg.Error as exc:
                        raise StatementError(number, str(exc).strip()) from exc
                    report(number, statement, "applied")
                await connection.execute(
                    self.RECORD, (migration.version, migration.name, migration.checksum)
                )
        except psycopg.Error as exc:
            raise TargetError(str(exc).strip()) from exc

    async def definitions(self, names: Iterable[str]) -> dict[str, Definition | None]:
        wanted = list(names)
        found: dict[str, Definition | None] = dict.fromkeys(wanted)
        try:
            connection = await self._connected()
            columns = await (await connection.execute(self.COLUMNS, (wanted,))).fetchall()
            keys = dict(await (await connection.execute(self.PRIMARY_KEYS, (wanted,))).fetchall())
        except psycopg.Error as exc:
            raise TargetError(str(exc).strip()) from exc
        listed: dict[str, list[Column]] = {}
        kinds: dict[str, str] = {}
        for table, column, written, kind in columns:
            kinds[table] = self.KINDS[kind]
            if column is not None:
                listed.setdefault(table, []).append(Column(column, written))
        for table, kind in kinds.items():
            tabular = kind == "table"
            found[table] = Definition(
                kind,
                tuple(listed.get(table, ())) if tabular else None,
                keys.get(table, "") if tabular else None,
            )
        return found

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()


class KsqlDbTarget:
    """Migrations recorded as ksqlDB's own migrations tool (ksql-migrations) records them: each
    step an event in stream MIGRATION_EVENTS (RUNNING, then MIGRATED or ERROR), once for the
    migration's version and once for the key CURRENT; table MIGRATION_SCHEMA_VERSIONS keeps
    each key's latest event, and a migration's ``previous`` links it to the one before."""

    # A materialized table built after its topic has data must read that data too.
    PROPERTIES: ClassVar[dict[str, str]] = {"ksql.streams.auto.offset.reset": "earliest"}
    EVENTS = "MIGRATION_EVENTS"
    VERSIONS = "MIGRATION_SCHEMA_VERSIONS"
    FIELDS = (
        "VERSION_KEY",
        "VERSION",
        "NAME",
        "STATE",
        "CHECKSUM",
        "STARTED_ON",
        "COMPLETED_ON",
        "PREVIOUS",
        "ERROR_REASON",
    )
    CURRENT = "CURRENT"
    NONE = "<none>"

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        self._client = KsqlDbClient(url, timeout_s)
        self._latest = self.NONE  # the last migrated version, the next one's ``previous``

    def model(self) -> Model:
        return KsqlDbModel()

    async def unready_reason(self) -> str | None:
        return await self._client.healthy()

    async def _execute(self, statement: str) -> str:
        try:
            return await self._client.execute(statement, self.PROPERTIES)
        except KsqlDbError as exc:
            raise TargetError(str(exc)) from exc

    async def _history_statements(self) -> tuple[str, str]:
        try:
            prefix = f"{await self._client.service_id()}ksql_"
        except KsqlDbError as exc:
            raise TargetError(str(exc)) from exc
        columns = ", ".join(
            f"{field} STRING KEY" if field == "VERSION_KEY" else f"{field} STRING"
            for field in self.FIELDS
        )
        stream = (
            f"CREATE STREAM IF NOT EXISTS {self.EVENTS} ({columns}) WITH (KAFKA_TOPIC="
            f"'{prefix}{self.EVENTS}', VALUE_FORMAT='JSON', PARTITIONS=1, REPLICAS=1)"
        )
        latest = ", ".join(f"LATEST_BY_OFFSET({field}) AS {field}" for field in self.FIELDS[1:])
        query = f"SELECT VERSION_KEY, {latest} FROM {self.EVENTS} GROUP BY VERSION_KEY"  # noqa: S608
        table = (
            f"CREATE TABLE IF NOT EXISTS {self.VERSIONS} WITH (KAFKA_TOPIC="
            f"'{prefix}{self.VERSIONS}') AS {query} EMIT CHANGES"
        )
        return stream, table

    async def _version(self, key: str) -> dict[str, Any] | None:
        query = f"SELECT * FROM {self.VERSIONS} WHERE VERSION_KEY = {quote_literal(key)};"  # noqa: S608
        try:
            records = (await self._client.query(query)).records()
        except KsqlDbError as exc:
            raise TargetError(f"reading {self.VERSIONS}: {exc}") from exc
        return records[0] if records else None

    async def applied(self) -> list[Applied]:
        stream, table = await self._history_statements()
        await self._execute(stream)
        if await self._execute(table) == "applied":
            return []  # just made: nothing was ever recorded
        found: list[Applied] = []
        current = await self._version(self.CURRENT)
        version = str(current["version"]) if current else self.NONE
        while version != self.NONE:
            record = await self._version(version)
            if record is None:
                raise TargetError(f"{self.VERSIONS} has no row for version {version}")
            if record["state"] == "MIGRATED":
                found.append(Applied(int(version), record["name"], record["checksum"]))
            version = str(record["previous"])
        found.reverse()
        self._latest = str(found[-1].version) if found else self.NONE
        return found

    async def _record(self, migration: Migration, state: str, started: str, reason: str) -> None:
        completed = "" if state == "RUNNING" else str(int(time.time() * 1000))
        for key in (self.CURRENT, str(migration.version)):
            values = (
                key,
                str(migration.version),
                migration.name,
                state,
                migration.checksum,
                started,
                completed,
                self._latest,
                reason,
            )
            literals = ", ".join(quote_literal(value) for value in values)
            await self._execute(
                f"INSERT INTO {self.EVENTS} ({', '.join(self.FIELDS)}) VALUES ({literals})"  # noqa: S608
            )

    async def apply(self, migration: Migration, report: StatementReport) -> None:
        started = str(int(time.time() * 1000))
        await self._record(migration, "RUNNING", started, "N/A")
        for number, statement in enumerate(migration.statements, start=1):
            try:
                outcome = await self._client.execute(statement, self.PROPERTIES)
            except KsqlDbError as exc:
                failure = StatementError(number, str(exc))
                await self._record(migration, "ERROR", started, str(failure))
                raise failure from exc
            report(number, statement, outcome)
        await self._record(migration, "MIGRATED", started, "N/A")
        self._latest = str(migration.version)

    async def definitions(self, names: Iterable[str]) -> dict[str, Definition | None]:
        found: dict[str, Definition | None] = {}
        for name in names:
            try:
                description = await self._client.describe(f"`{name}`")
            except KsqlDbError as exc:
                raise TargetError(f"DESCRIBE {name}: {exc}") from exc
            found[name] = self._definition(description) if description else None
        return found

    @staticmethod
    def _definition(description: dict[str, Any]) -> Definition:
        fields = [f for f in description.get("fields") or [] if f.get("type") != "SYSTEM"]
        keys = [str(f["name"]) for f in fields if f.get("type") == "KEY"]
        columns = tuple(Column(str(f["name"]), str(f["schema"]["type"])) for f in fields)
        return Definition(str(description.get("type")), columns, ", ".join(keys))

    async def close(self) -> None:
        await self._client.close()
