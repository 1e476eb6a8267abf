"""The apply command's ksqlDB path, against ksqlDB's documented REST protocol.

No live ksqlDB: see tests/ksqldb_server.py for what the server here is and is not. Each test's
answers are a table of documented answers by statement (``FakeKsqlDb``); what the apply command
sends is read back from the requests. The migrations' record follows ksql-migrations' own
(stream MIGRATION_EVENTS, table MIGRATION_SCHEMA_VERSIONS, a CURRENT key, ``previous`` links).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from local.config import CONTRACTS

from jobflow.schema.apply import DriftError, NotReadyError, apply
from jobflow.schema.migrations import Migration, MigrationError, load_directory
from jobflow.schema.targets import KsqlDbTarget, TargetError
from tests.ksqldb_server import (
    Answer,
    KsqlDbProtocolServer,
    Request,
    ksqldb_protocol_server,
    pull_query_answer,
)

# run by make test-operator too (tests/targets.mk)
pytestmark = pytest.mark.operator

MIGRATIONS = CONTRACTS / "ksqldb" / "migrations"
HEALTHY = (
    b'{"isHealthy":true,"details":{"metastore":{"isHealthy":true},"kafka":{"isHealthy":true}}}'
)
INFO = (
    b'{"KsqlServerInfo":{"version":"0.29.0","kafkaClusterId":"j3tOi6E_RtO_TMH3gBmK",'
    b'"ksqlServiceId":"jobflow_","serverStatus":"RUNNING"}}'
)
VERSIONS_SCHEMA = (
    "`VERSION_KEY` STRING KEY, `VERSION` STRING, `NAME` STRING, `STATE` STRING, "
    "`CHECKSUM` STRING, `STARTED_ON` STRING, `COMPLETED_ON` STRING, `PREVIOUS` STRING, "
    "`ERROR_REASON` STRING"
)
CANONICAL_FIELDS: list[tuple[str, str, str | None]] = [("ID", "STRING", "KEY")] + [
    (name, "STRING", None) for name in ("STATUS", "CREATE_DATE", "FINISH_DATE")
]


def created(statement: str, kind: str) -> bytes:
    """A CREATE's answer: its command status (SUCCESS)."""
    return orjson.dumps(
        [
            {
                "@type": "currentStatus",
                "statementText": statement,
                "commandId": f"{kind}/`X`/create",
                "commandStatus": {"status": "SUCCESS", "message": f"{kind.title()} created"},
                "commandSequenceNumber": 2,
                "warnings": [],
            }
        ]
    )


def exists(statement: str) -> bytes:
    """A CREATE ... IF NOT EXISTS whose object exists: a warning entity."""
    return orjson.dumps(
        [
            {
                "@type": "warning_entity",
                "statementText": statement,
                "message": "Cannot add stream: A stream with the same name already exists.",
                "warnings": [],
            }
        ]
    )


Field = tuple[str, str, str | None]  # name, type, KEY or None


def description(name: str, kind: str, fields: list[Field]) -> bytes:
    """DESCRIBE's answer: a sourceDescription with its fields (KEY columns marked)."""
    described = []
    for field, schema, role in fields:
        entry: dict[str, object] = {
            "name": field,
            "schema": {"type": schema, "fields": None, "memberSchema": None},
        }
        if role:
            entry["type"] = role
        described.append(entry)
    return orjson.dumps(
        [
            {
                "@type": "sourceDescription",
                "statementText": f"DESCRIBE `{name}`;",
                "sourceDescription": {
                    "name": name,
                    "windowType": None,
                    "readQueries": [],
                    "writeQueries": [],
                    "fields": described,
                    "type": kind,
                    "timestamp": "",
                    "statistics": "",
                    "errorStats": "",
                    "extended": False,
                    "keyFormat": "KAFKA",
                    "valueFormat": "JSON",
                    "topic": "processor-topic",
                    "partitions": 0,
                    "replication": 0,
                    "statement": "",
                },
                "warnings": [],
            }
        ]
    )


def statement_error(statement: str, message: str) -> bytes:
    return orjson.dumps(
        {
            "@type": "statement_error",
            "error_code": 40001,
            "message": message,
            "statementText": statement,
            "entities": [],
        }
    )


class FakeKsqlDb:
    """Documented answers by statement, and the state a test gives them."""

    def __init__(self, server: KsqlDbProtocolServer) -> None:
        self.server = server
        self.history_made = False  # MIGRATION_EVENTS and MIGRATION_SCHEMA_VERSIONS exist
        self.versions: dict[str, list[str]] = {}  # MIGRATION_SCHEMA_VERSIONS' rows by key
        self.sources = {
            "JOBS_STREAM": description("JOBS_STREAM", "STREAM", CANONICAL_FIELDS),
            "JOBS_TABLE": description("JOBS_TABLE", "TABLE", CANONICAL_FIELDS),
        }
        self.refusals: dict[str, str] = {}  # statement start -> ksqlDB's message
        server.answer("/healthcheck", 200, HEALTHY, content_type="application/json")
        server.answer("/info", 200, INFO, content_type="application/json")
        server.respond("/ksql", self.ksql)
        server.respond("/query", self.query)

    def record(self, migration: Migration, previous: str = "<none>") -> None:
        """MIGRATION_SCHEMA_VERSIONS as a run that applied ``migration`` last leaves it."""
        self.history_made = True
        row = [
            str(migration.version),
            migration.name,
            "MIGRATED",
            migration.checksum,
            "1700000000000",
            "1700000000500",
            previous,
            "N/A",
        ]
        self.versions["CURRENT"] = ["CURRENT", *row]
        self.versions[str(migration.version)] = [str(migration.version), *row]

    def ksql(self, request: Request) -> Answer:
        statement = orjson.loads(request.body)["ksql"].removesuffix(";")
        for start, message in self.refusals.items():
            if statement.startswith(start):
                return Answer(400, [statement_error(statement, message)])
        if statement.startswith(
            ("CREATE STREAM IF NOT EXISTS MIGRATION_EVENTS", "CREATE TABLE IF")
        ):
            made = self.history_made and "MIGRATION_" in statement.split("(")[0]
            kind = "stream" if statement.startswith("CREATE STREAM") else "table"
            return Answer(200, [exists(statement) if made else created(statement, kind)])
        if statement.startswith("INSERT INTO MIGRATION_EVENTS"):
            return Answer(200, [b"[]"])
        if statement.startswith("DESCRIBE"):
            name = statement.removeprefix("DESCRIBE ").strip("`")
            if name in self.sources:
                return Answer(200, [self.sources[name]])
            message = f"Could not find STREAM/TABLE '{name}' in the Metastore"
            return Answer(400, [statement_error(statement, message)])
        return Answer(200, [created(statement, "stream")])

    def query(self, request: Request) -> Answer:
        key = re.search(r"VERSION_KEY = '([^']*)'", orjson.loads(request.body)["ksql"])
        row = self.versions.get(key[1] if key else "")
        rows = [orjson.dumps(row).decode()] if row else []
        return Answer(200, pull_query_answer(VERSIONS_SCHEMA, rows, final=True))

    def sent(self) -> list[str]:
        """The statements sent to /ksql, in order."""
        return [
            orjson.loads(r.body)["ksql"].removesuffix(";")
            for r in self.server.requests
            if r.path == "/ksql"
        ]

    def events(self) -> list[tuple[str, ...]]:
        """The MIGRATION_EVENTS rows inserted, each as (key, version, state, previous)."""
        found: list[tuple[str, ...]] = []
        for statement in self.sent():
            if statement.startswith("INSERT INTO MIGRATION_EVENTS"):
                values = re.findall(r"'((?:[^']|'')*)'", statement.split("VALUES", 1)[1])
                found.append((values[0], values[1], values[3], values[7]))
        return found

    def migration_statements(self) -> list[str]:
        bookkeeping = (
            "INSERT INTO MIGRATION_EVENTS",
            "DESCRIBE",
            "CREATE STREAM IF NOT EXISTS MIG",
        )
        return [
            s
            for s in self.sent()
            if not s.startswith(bookkeeping) and "MIGRATION_SCHEMA_VERSIONS" not in s
        ]


@pytest.fixture
def ksqldb() -> Iterator[FakeKsqlDb]:
    with ksqldb_protocol_server() as server:
        yield FakeKsqlDb(server)


def canonical() -> list[Migration]:
    return load_directory(MIGRATIONS, {})


def with_new_migration(tmp_path: Path, name: str, text: str) -> list[Migration]:
    for path in MIGRATIONS.glob("*.sql"):
        (tmp_path / path.name).write_text(path.read_text())
    (tmp_path / name).write_text(text)
    return load_directory(tmp_path, {})


async def run(ksqldb: FakeKsqlDb, migrations: list[Migration], wait_s: float = 5) -> list[str]:
    lines: list[str] = []
    await apply(KsqlDbTarget(ksqldb.server.url), migrations, wait_s, lines.append)
    return lines


async def test_a_fresh_server_gets_the_record_then_each_statement_then_its_events(
    ksqldb: FakeKsqlDb,
) -> None:
    (migration,) = canonical()
    lines = await run(ksqldb, [migration])
    stream, table, *_ = ksqldb.sent()
    # ksql-migrations' metadata, on topics named as it names them (the server's service id).
    assert stream.startswith("CREATE STREAM IF NOT EXISTS MIGRATION_EVENTS (VERSION_KEY STRING KEY")
    assert "KAFKA_TOPIC='jobflow_ksql_MIGRATION_EVENTS'" in stream
    assert table.startswith(
        "CREATE TABLE IF NOT EXISTS MIGRATION_SCHEMA_VERSIONS WITH (KAFKA_TOPIC="
    )
    assert "LATEST_BY_OFFSET(CHECKSUM) AS CHECKSUM" in table
    assert "GROUP BY VERSION_KEY" in table
    assert ksqldb.migration_statements() == list(migration.statements)
    bodies = [orjson.loads(r.body) for r in ksqldb.server.requests if r.path == "/ksql"]
    assert all(
        b["streamsProperties"] == {"ksql.streams.auto.offset.reset": "earliest"}
        for b in bodies
        if not b["ksql"].startswith("DESCRIBE")
    )
    assert ksqldb.events() == [
        ("CURRENT", "1", "RUNNING", "<none>"),
        ("1", "1", "RUNNING", "<none>"),
        ("CURRENT", "1", "MIGRATED", "<none>"),
        ("1", "1", "MIGRATED", "<none>"),
    ]
    inserted = next(s for s in ksqldb.sent() if s.startswith("INSERT INTO MIGRATION_EVENTS"))
    assert f"'{migration.checksum}'" in inserted
    assert ksqldb.sent()[-2:] == ["DESCRIBE `JOBS_STREAM`", "DESCRIBE `JOBS_TABLE`"]
    assert lines == [
        "0001_jobs_stream_and_table [1/2] applied: CREATE STREAM IF NOT EXISTS jobs_stream",
        "0001_jobs_stream_and_table [2/2] applied: CREATE TABLE IF NOT EXISTS jobs_table AS",
        "0001_jobs_stream_and_table: applied and recorded",
        "JOBS_STREAM, JOBS_TABLE: as the migrations say",
        "done: 1 applied, 0 already in place",
    ]


async def test_a_second_run_reads_the_record_and_applies_nothing(ksqldb: FakeKsqlDb) -> None:
    (migration,) = canonical()
    ksqldb.record(migration)
    lines = await run(ksqldb, [migration])
    assert ksqldb.migration_statements() == []
    assert ksqldb.events() == []
    pulled = [orjson.loads(r.body)["ksql"] for r in ksqldb.server.requests if r.path == "/query"]
    assert pulled == [
        "SELECT * FROM MIGRATION_SCHEMA_VERSIONS WHERE VERSION_KEY = 'CURRENT';",
        "SELECT * FROM MIGRATION_SCHEMA_VERSIONS WHERE VERSION_KEY = '1';",
    ]
    assert lines[-2:] == [
        "JOBS_STREAM, JOBS_TABLE: as the migrations say",
        "done: 0 applied, 1 already in place",
    ]


async def test_a_new_migration_applies_alone_after_the_last_one(
    ksqldb: FakeKsqlDb, tmp_path: Path
) -> None:
    migrations = with_new_migration(
        tmp_path, "0002_priority.sql", "ALTER STREAM jobs_stream ADD COLUMN priority INT;\n"
    )
    ksqldb.record(migrations[0])
    ksqldb.sources["JOBS_STREAM"] = description(
        "JOBS_STREAM", "STREAM", [*CANONICAL_FIELDS, ("PRIORITY", "INTEGER", None)]
    )
    await run(ksqldb, migrations)
    assert ksqldb.migration_statements() == ["ALTER STREAM jobs_stream ADD COLUMN priority INT"]
    assert ksqldb.events() == [
        ("CURRENT", "2", "RUNNING", "1"),
        ("2", "2", "RUNNING", "1"),
        ("CURRENT", "2", "MIGRATED", "1"),
        ("2", "2", "MIGRATED", "1"),
    ]


async def test_a_changed_applied_migration_is_refused_before_anything_runs(
    ksqldb: FakeKsqlDb, tmp_path: Path
) -> None:
    (migration,) = canonical()
    ksqldb.record(migration)
    changed = (MIGRATIONS / f"{migration.name}.sql").read_text().replace("VARCHAR", "STRING")
    (tmp_path / f"{migration.name}.sql").write_text(changed)
    with pytest.raises(MigrationError, match="0001_jobs_stream_and_table changed since it was"):
        await run(ksqldb, load_directory(tmp_path, {}))
    assert ksqldb.migration_statements() == []
    assert ksqldb.events() == []


async def test_a_source_unlike_its_migrations_is_drift_with_each_difference(
    ksqldb: FakeKsqlDb,
) -> None:
    (migration,) = canonical()
    ksqldb.record(migration)
    # jobs_table made by hand with a column less and one more, jobs_stream dropped.
    ksqldb.sources["JOBS_TABLE"] = description(
        "JOBS_TABLE",
        "TABLE",
        [*CANONICAL_FIELDS[:3], ("NOTE", "STRING", None)],
    )
    del ksqldb.sources["JOBS_STREAM"]
    with pytest.raises(DriftError) as drift:
        await run(ksqldb, [migration])
    assert drift.value.differences == [
        "JOBS_STREAM: missing",
        "JOBS_TABLE: column FINISH_DATE STRING missing",
        "JOBS_TABLE: column NOTE STRING not in the migrations",
    ]


async def test_a_refused_statement_is_recorded_as_an_error_and_stops_the_run(
    ksqldb: FakeKsqlDb,
) -> None:
    (migration,) = canonical()
    ksqldb.refusals["CREATE TABLE IF NOT EXISTS jobs_table"] = "line 1:8: Syntax Error"
    lines: list[str] = []
    with pytest.raises(TargetError, match=r"statement 2 failed: .*40001: line 1:8: Syntax Error"):
        await apply(KsqlDbTarget(ksqldb.server.url), [migration], 5, lines.append)
    assert ksqldb.events()[-2:] == [
        ("CURRENT", "1", "ERROR", "<none>"),
        ("1", "1", "ERROR", "<none>"),
    ]
    assert not any(s.startswith("DESCRIBE") for s in ksqldb.sent())
    assert lines[-1].startswith(
        "0001_jobs_stream_and_table [2/2] FAILED CREATE TABLE IF NOT EXISTS jobs_table AS: "
    )


async def test_it_waits_for_the_server_to_become_healthy(ksqldb: FakeKsqlDb) -> None:
    ksqldb.server.answer(
        "/healthcheck",
        503,
        b'{"@type":"generic_error","error_code":50302,"message":"KSQL is not yet ready"}',
        content_type="application/json",
    )
    ksqldb.server.then("/healthcheck", 200, HEALTHY, content_type="application/json")
    lines = await run(ksqldb, canonical(), wait_s=10)
    assert lines[0].startswith("waiting for the target: ksqlDB unhealthy")
    assert lines[-1] == "done: 1 applied, 0 already in place"


async def test_a_server_that_never_gets_ready_is_given_up_on(ksqldb: FakeKsqlDb) -> None:
    ksqldb.server.answer(
        "/healthcheck", 503, b'{"isHealthy":false}', content_type="application/json"
    )
    with pytest.raises(NotReadyError, match="not ready after"):
        await run(ksqldb, canonical(), wait_s=1.5)
    assert not ksqldb.sent()
