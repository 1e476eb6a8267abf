"""The apply command's ksqlDB path, against ksqlDB's documented REST protocol.

No live ksqlDB: see tests/ksqldb_server.py for what the server here is and is not.
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
from local.config import CONTRACTS

from jobflow.schema.apply import NotReadyError, apply
from jobflow.schema.statements import split_statements
from jobflow.schema.targets import KsqlDbTarget, TargetError
from tests.ksqldb_server import KsqlDbProtocolServer, ksqldb_protocol_server

# run by make test-operator too (tests/targets.mk)
pytestmark = pytest.mark.operator

HEALTHY = (
    b'{"isHealthy":true,"details":{"metastore":{"isHealthy":true},"kafka":{"isHealthy":true}}}'
)
STREAM_CREATED = (
    b'[{"@type":"currentStatus","statementText":"CREATE STREAM IF NOT EXISTS JOBS_STREAM ...",'
    b'"commandId":"stream/`JOBS_STREAM`/create","commandStatus":{"status":"SUCCESS",'
    b'"message":"Stream created","queryId":null},"commandSequenceNumber":2,"warnings":[]}]'
)
TABLE_CREATED = (
    b'[{"@type":"currentStatus","statementText":"CREATE TABLE IF NOT EXISTS JOBS_TABLE ...",'
    b'"commandId":"table/`JOBS_TABLE`/create","commandStatus":{"status":"SUCCESS",'
    b'"message":"Created query with ID CTAS_JOBS_TABLE_3","queryId":"CTAS_JOBS_TABLE_3"},'
    b'"commandSequenceNumber":4,"warnings":[]}]'
)
STREAM_EXISTS_WARNING = (
    b'[{"@type":"warning_entity","statementText":"CREATE STREAM IF NOT EXISTS ...",'
    b'"message":"Cannot add stream `JOBS_STREAM`: A stream with the same name already exists.",'
    b'"warnings":[]}]'
)
STREAM_EXISTS_ERROR = (
    b'{"@type":"statement_error","error_code":40001,"message":"Cannot add stream '
    b'\'JOBS_STREAM\': A stream with the same name already exists","statementText":"...",'
    b'"entities":[]}'
)
SYNTAX_ERROR = (
    b'{"@type":"statement_error","error_code":40001,"message":"line 1:8: Syntax Error",'
    b'"statementText":"CREATE STREM x;","entities":[]}'
)


@pytest.fixture
def ksqldb() -> Iterator[KsqlDbProtocolServer]:
    with ksqldb_protocol_server() as server:
        server.answer("/healthcheck", 200, HEALTHY, content_type="application/json")
        yield server


def canonical_statements() -> list[str]:
    return split_statements((CONTRACTS / "ksqldb" / "statements.sql").read_text())


async def test_the_canonical_statements_are_sent_one_by_one(ksqldb: KsqlDbProtocolServer) -> None:
    ksqldb.answer("/ksql", 200, STREAM_CREATED)
    ksqldb.then("/ksql", 200, TABLE_CREATED)
    lines: list[str] = []
    await apply(KsqlDbTarget(ksqldb.url), canonical_statements(), 5, lines.append)
    sent = [orjson.loads(r.body) for r in ksqldb.requests if r.path == "/ksql"]
    assert [body["ksql"] for body in sent] == [f"{s};" for s in canonical_statements()]
    assert all(
        body["streamsProperties"] == {"ksql.streams.auto.offset.reset": "earliest"} for body in sent
    )
    assert lines == [
        "[1/2] applied: CREATE STREAM IF NOT EXISTS jobs_stream",
        "[2/2] applied: CREATE TABLE IF NOT EXISTS jobs_table AS",
    ]


@pytest.mark.parametrize(
    ("status", "body"), [(200, STREAM_EXISTS_WARNING), (400, STREAM_EXISTS_ERROR)]
)
async def test_an_existing_stream_is_in_place_whatever_the_server_version(
    ksqldb: KsqlDbProtocolServer, status: int, body: bytes
) -> None:
    ksqldb.answer("/ksql", status, body)
    lines: list[str] = []
    await apply(KsqlDbTarget(ksqldb.url), canonical_statements()[:1], 5, lines.append)
    assert lines == ["[1/1] exists: CREATE STREAM IF NOT EXISTS jobs_stream"]


async def test_the_first_real_failure_stops_the_run(ksqldb: KsqlDbProtocolServer) -> None:
    ksqldb.answer("/ksql", 400, SYNTAX_ERROR)
    lines: list[str] = []
    with pytest.raises(TargetError, match=r"statement 1 failed: .*40001: line 1:8: Syntax Error"):
        await apply(KsqlDbTarget(ksqldb.url), canonical_statements(), 5, lines.append)
    assert len([r for r in ksqldb.requests if r.path == "/ksql"]) == 1
    assert lines[-1].startswith("[1/2] FAILED CREATE STREAM IF NOT EXISTS jobs_stream: ")


async def test_it_waits_for_the_server_to_become_healthy(ksqldb: KsqlDbProtocolServer) -> None:
    ksqldb.answer(
        "/healthcheck",
        503,
        b'{"@type":"generic_error","error_code":50302,"message":"KSQL is not yet ready"}',
        content_type="application/json",
    )
    ksqldb.then("/healthcheck", 200, HEALTHY, content_type="application/json")
    ksqldb.answer("/ksql", 200, STREAM_CREATED)
    lines: list[str] = []
    await apply(KsqlDbTarget(ksqldb.url), canonical_statements()[:1], 10, lines.append)
    assert lines[0].startswith("waiting for the target: ksqlDB unhealthy")
    assert lines[-1] == "[1/1] applied: CREATE STREAM IF NOT EXISTS jobs_stream"


async def test_a_server_that_never_gets_ready_is_given_up_on(ksqldb: KsqlDbProtocolServer) -> None:
    ksqldb.answer("/healthcheck", 503, b'{"isHealthy":false}', content_type="application/json")
    with pytest.raises(NotReadyError, match="not ready after"):
        await apply(KsqlDbTarget(ksqldb.url), canonical_statements(), 1.5, lambda _: None)
    assert not [r for r in ksqldb.requests if r.path == "/ksql"]
