"""The informer's ksqlDB backend against ksqlDB's documented REST protocol.

No live ksqlDB: see tests/ksqldb_server.py for what the server here is and is not.
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from jobflow.core.ksqldb import (
    KsqlDbClient,
    KsqlDbError,
    column_names,
    parse_query_response,
    quote_literal,
)
from jobflow.informer.backends import BackendError, KsqlDbBackend
from tests.ksqldb_server import (
    STREAM_SCHEMA,
    TABLE_SCHEMA,
    KsqlDbProtocolServer,
    ksqldb_protocol_server,
    pull_query_answer,
)

JOB_ID = "b31b7446-20f7-4add-adea-157bac7fe73b"
ROW = f'["{JOB_ID}","finish","2024-01-27T12:34:50.594423357Z","2024-01-27T12:34:50.704464721Z"]'


@pytest.fixture
def ksqldb() -> Iterator[KsqlDbProtocolServer]:
    with ksqldb_protocol_server() as server:
        yield server


def backend_for(server: KsqlDbProtocolServer, source: str = "jobs_table") -> KsqlDbBackend:
    return KsqlDbBackend(KsqlDbClient(server.url, timeout_s=2.0), source)


async def test_lookup_sends_the_specs_query_request(ksqldb: KsqlDbProtocolServer) -> None:
    ksqldb.answer("/query", 200, *pull_query_answer(STREAM_SCHEMA, [ROW], final=True))
    backend = backend_for(ksqldb, source="jobs_stream")
    await backend.lookup(JOB_ID)
    (request,) = ksqldb.requests
    assert (request.method, request.path) == ("POST", "/query")
    assert request.headers["content-type"] == "application/vnd.ksql.v1+json; charset=utf-8"
    assert request.headers["accept"] == "application/vnd.ksql.v1+json"
    assert orjson.loads(request.body) == {
        "ksql": f"SELECT * FROM jobs_stream WHERE id = '{JOB_ID}';",
        "streamsProperties": {},
    }
    await backend.close()


async def test_stream_answer_with_final_message_gives_the_finished_job(
    ksqldb: KsqlDbProtocolServer,
) -> None:
    ksqldb.answer("/query", 200, *pull_query_answer(STREAM_SCHEMA, [ROW], final=True))
    info = await backend_for(ksqldb, "jobs_stream").lookup(JOB_ID)
    assert orjson.loads(info.to_json()) == {
        "id": JOB_ID,
        "status": "finish",
        "create_date": "2024-01-27T12:34:50.594423357Z",
        "finish_date": "2024-01-27T12:34:50.704464721Z",
    }


async def test_table_answer_without_final_message_gives_the_finished_job(
    ksqldb: KsqlDbProtocolServer,
) -> None:
    ksqldb.answer("/query", 200, *pull_query_answer(TABLE_SCHEMA, [ROW], final=False))
    info = await backend_for(ksqldb).lookup(JOB_ID)
    assert (info.status, info.finish_date) == ("finish", "2024-01-27T12:34:50.704464721Z")


async def test_no_rows_means_unknown(ksqldb: KsqlDbProtocolServer) -> None:
    ksqldb.answer("/query", 200, *pull_query_answer(TABLE_SCHEMA, [], final=False))
    info = await backend_for(ksqldb).lookup(JOB_ID)
    assert info.to_json() == f'{{"id":"{JOB_ID}","status":"unknown"}}'.encode()


async def test_columns_are_matched_by_name_not_position(ksqldb: KsqlDbProtocolServer) -> None:
    schema = "`FINISH_DATE` STRING, `ID` STRING KEY, `STATUS` STRING, `CREATE_DATE` STRING"
    row = f'["2024-01-27T12:34:50.704464721Z","{JOB_ID}","finish","2024-01-27T12:34:50.594423357Z"]'
    ksqldb.answer("/query", 200, *pull_query_answer(schema, [row], final=False))
    info = await backend_for(ksqldb).lookup(JOB_ID)
    assert info.create_date == "2024-01-27T12:34:50.594423357Z"


async def test_a_replayed_stream_answers_its_latest_record(ksqldb: KsqlDbProtocolServer) -> None:
    older = ROW.replace("finish", "create")
    ksqldb.answer("/query", 200, *pull_query_answer(STREAM_SCHEMA, [older, ROW], final=True))
    assert (await backend_for(ksqldb, "jobs_stream").lookup(JOB_ID)).status == "finish"


async def test_statement_error_becomes_a_backend_error(ksqldb: KsqlDbProtocolServer) -> None:
    body = (
        b'{"@type":"statement_error","error_code":40001,'
        b'"message":"Exception while preparing statement: JOBS_TABLE does not exist.",'
        b'"statementText":"SELECT * FROM jobs_table WHERE id = \'x\';","entities":[]}'
    )
    ksqldb.answer("/query", 400, body)
    with pytest.raises(BackendError, match=r"HTTP 400: ksqlDB error 40001: .*does not exist"):
        await backend_for(ksqldb).lookup(JOB_ID)


async def test_server_not_ready_becomes_a_backend_error(ksqldb: KsqlDbProtocolServer) -> None:
    body = (
        b'{"@type":"generic_error","error_code":50302,'
        b'"message":"KSQL is not yet ready to serve requests."}'
    )
    ksqldb.answer("/query", 503, body)
    with pytest.raises(BackendError, match="50302: KSQL is not yet ready"):
        await backend_for(ksqldb).lookup(JOB_ID)


async def test_error_element_mid_stream_becomes_a_backend_error(
    ksqldb: KsqlDbProtocolServer,
) -> None:
    chunks = pull_query_answer(TABLE_SCHEMA, [], final=False)[:-1]
    chunks.append(
        b',\n{"errorMessage":{"@type":"generic_error","error_code":50000,"message":"boom"}}]\n'
    )
    ksqldb.answer("/query", 200, *chunks)
    with pytest.raises(BackendError, match="50000: boom"):
        await backend_for(ksqldb).lookup(JOB_ID)


async def test_unclosed_stream_with_error_element_reports_that_error(
    ksqldb: KsqlDbProtocolServer,
) -> None:
    header = pull_query_answer(TABLE_SCHEMA, [], final=False)[0]
    error = b'\n{"errorMessage":{"@type":"generic_error","error_code":50000,"message":"lost"}},\n'
    ksqldb.answer("/query", 200, header + b",", error)
    with pytest.raises(BackendError, match="50000: lost"):
        await backend_for(ksqldb).lookup(JOB_ID)


async def test_stream_cut_short_is_an_error_not_unknown(ksqldb: KsqlDbProtocolServer) -> None:
    ksqldb.answer("/query", 200, *pull_query_answer(TABLE_SCHEMA, [ROW], final=False)[:-1])
    with pytest.raises(BackendError, match="cut short"):
        await backend_for(ksqldb).lookup(JOB_ID)


async def test_unreachable_server_is_a_backend_error() -> None:
    with ksqldb_protocol_server() as server:
        url = server.url
    backend = KsqlDbBackend(KsqlDbClient(url, timeout_s=1.0), "jobs_table")
    with pytest.raises(BackendError, match="unreachable"):
        await backend.lookup(JOB_ID)


async def test_healthcheck_decides_readiness(ksqldb: KsqlDbProtocolServer) -> None:
    client = KsqlDbClient(ksqldb.url, timeout_s=2.0)
    ksqldb.answer(
        "/healthcheck",
        200,
        b'{"isHealthy":true,"details":{"metastore":{"isHealthy":true},"kafka":{"isHealthy":true}}}',
        content_type="application/json",
    )
    assert await client.healthy() is None
    ksqldb.answer("/healthcheck", 503, b'{"isHealthy":false}', content_type="application/json")
    assert "unhealthy" in (await client.healthy() or "")


def test_trailing_newline_after_the_array_is_accepted() -> None:
    body = b"".join(pull_query_answer(TABLE_SCHEMA, [ROW], final=False)) + b"\n"
    assert parse_query_response(body).rows[0][1] == "finish"


def test_schema_commas_inside_types_do_not_split_columns() -> None:
    schema = "`ID` STRING KEY, `S` STRUCT<`A` INTEGER, `B` MAP<STRING, INTEGER>>, `D` DECIMAL(4, 2)"
    assert column_names(schema) == ("ID", "S", "D")


def test_malformed_schema_is_rejected() -> None:
    with pytest.raises(KsqlDbError, match="malformed schema"):
        column_names("`ID STRING")


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("abc", "'abc'"),
        ("o'clock", "'o''clock'"),
        ("'; DROP STREAM x; --", "'''; DROP STREAM x; --'"),
    ],
)
def test_string_literals_double_their_quotes(value: str, literal: str) -> None:
    assert quote_literal(value) == literal


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (f'["{JOB_ID}",null,"2024-01-27T12:34:50Z","2024-01-27T12:34:50Z"]', "out of shape"),
        (f'["{JOB_ID}","finish",1706358890,"2024-01-27T12:34:50Z"]', "out of shape"),
    ],
)
async def test_rows_out_of_shape_are_backend_errors(
    ksqldb: KsqlDbProtocolServer, row: str, reason: str
) -> None:
    ksqldb.answer("/query", 200, *pull_query_answer(TABLE_SCHEMA, [row], final=False))
    with pytest.raises(BackendError, match=reason):
        await backend_for(ksqldb).lookup(JOB_ID)


@pytest.mark.parametrize(
    "body",
    [
        b'[{"header":{"queryId":"q"}}]',
        b'[{"header":{"queryId":"q","schema":"`ID` STRING KEY"}},{"row":{}}]',
        b'[{"header":{"queryId":"q","schema":"`ID` STRING KEY"}},{"row":{"columns":5}}]',
    ],
)
def test_elements_out_of_protocol_are_ksqldb_errors(body: bytes) -> None:
    with pytest.raises(KsqlDbError, match="out of protocol"):
        parse_query_response(body)


async def test_a_healthcheck_that_is_not_an_object_means_unhealthy(
    ksqldb: KsqlDbProtocolServer,
) -> None:
    ksqldb.answer("/healthcheck", 200, b"[true]", content_type="application/json")
    assert "unhealthy" in (await KsqlDbClient(ksqldb.url, timeout_s=2.0).healthy() or "")
