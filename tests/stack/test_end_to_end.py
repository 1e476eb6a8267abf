"""One job from POST /api/v1/create/job to PostgreSQL, ClickHouse and the informer."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import psycopg
import pytest

from jobflow.core.settings import PostgresSettings
from jobflow.core.timestamps import NANOS_PER_SECOND, format_rfc3339_nano, parse_rfc3339_nano

# run by make security-check too (tests/targets.mk)
pytestmark = pytest.mark.security

JOBS = 200


async def _wait_for(check: object, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"not done after {timeout_s:.0f}s")
        await asyncio.sleep(1)


async def test_two_hundred_jobs_land_everywhere_exactly_as_often_as_they_should(
    receiver: httpx.AsyncClient,
    informer: httpx.AsyncClient,
    postgres: psycopg.Connection[tuple[object, ...]],
    clickhouse: httpx.AsyncClient,
) -> None:
    responses = await asyncio.gather(
        *(
            receiver.post("/api/v1/create/job", json={"sleep": 100, "data_size": 64})
            for _ in range(JOBS)
        )
    )
    assert [r.status_code for r in responses] == [200] * JOBS
    created = {r.json()["id"]: r.json()["create_date"] for r in responses}
    assert len(created) == JOBS
    ids = sorted(created)

    def postgres_rows() -> list[tuple[object, ...]]:
        return postgres.execute(
            "SELECT id, status, create_date, finish_date FROM jobs WHERE id = ANY(%s)", (ids,)
        ).fetchall()

    async def all_in_postgres() -> bool:
        return len(postgres_rows()) == JOBS

    await _wait_for(all_in_postgres)
    rows = postgres_rows()
    assert Counter(row[0] for row in rows) == Counter({job_id: 1 for job_id in ids})
    for job_id, status, create_date, finish_date in rows:
        assert status == "finish"
        assert create_date == parse_rfc3339_nano(created[str(job_id)]) // NANOS_PER_SECOND
        assert isinstance(finish_date, int)
        assert finish_date >= create_date

    id_list = ",".join(f"'{job_id}'" for job_id in ids)
    # FINAL, as the ClickHouse side is read (docs/operations.md): the Kafka engine delivers at
    # least once, and a reconnect of its consumer may insert a block again until a merge.
    query = (
        "SELECT id, status, toUnixTimestamp(timestamp) FROM jobs FINAL "
        f"WHERE id IN ({id_list}) FORMAT TSV"
    )

    async def clickhouse_rows() -> list[list[str]]:
        response = await clickhouse.post("/", content=query.encode())
        response.raise_for_status()
        return [line.split("\t") for line in response.text.splitlines()]

    async def all_in_clickhouse() -> bool:
        return len(await clickhouse_rows()) >= 2 * JOBS

    await _wait_for(all_in_clickhouse)
    events = await clickhouse_rows()
    assert Counter((row[0], row[1]) for row in events) == Counter(
        {(job_id, status): 1 for job_id in ids for status in ("create", "finish")}
    )
    finish_seconds = {str(row[0]): row[3] for row in rows}
    for job_id, status, seconds in events:
        expected = (
            parse_rfc3339_nano(created[job_id]) // NANOS_PER_SECOND
            if status == "create"
            else finish_seconds[job_id]
        )
        assert int(seconds) == expected

    answers = await asyncio.gather(*(informer.get(f"/info/{job_id}") for job_id in ids))
    for job_id, answer in zip(ids, answers, strict=True):
        assert answer.status_code == 200
        body = answer.json()
        assert body == {
            "id": job_id,
            "status": "finish",
            # The PostgreSQL backend knows whole seconds only (the table's contract).
            "create_date": format_rfc3339_nano(
                parse_rfc3339_nano(created[job_id]) // NANOS_PER_SECOND * NANOS_PER_SECOND
            ),
            "finish_date": format_rfc3339_nano(int(finish_seconds[job_id]) * NANOS_PER_SECOND),  # type: ignore[call-overload]
        }


async def test_an_unknown_id_answers_unknown(informer: httpx.AsyncClient) -> None:
    job_id = str(uuid.uuid4())
    response = await informer.get(f"/info/{job_id}")
    assert response.status_code == 200
    assert response.content == f'{{"id":"{job_id}","status":"unknown"}}'.encode()


async def test_the_specs_zero_id_answers_unknown(informer: httpx.AsyncClient) -> None:
    response = await informer.get("/info/00000000-0000-0000-0000-000000000000")
    assert response.json() == {"id": "00000000-0000-0000-0000-000000000000", "status": "unknown"}


@pytest.mark.parametrize(
    "job_id",
    [
        "not-a-uuid",
        "b31b7446-20f7-4add-adea-157bac7fe73b'; DROP TABLE jobs; --",
        "%27%20OR%201=1",
        "x" * 500,
    ],
)
async def test_an_invalid_id_gets_422_before_any_query(
    informer: httpx.AsyncClient, job_id: str
) -> None:
    response = await informer.get(f"/info/{job_id}")
    assert response.status_code == 422
    assert "should match pattern" in response.text


def test_the_informer_answers_503_when_its_backend_is_away() -> None:
    from tests.ports import free_port
    from tests.stack.processes import service_process

    environment = {"INFORMER_BACKEND": "postgres", "POSTGRES_PORT": str(free_port())}
    with service_process("informer", environment) as informer:
        readiness = informer.get("/readyz")
        answer = informer.get(f"/info/{uuid.uuid4()}")
    assert readiness is not None
    assert readiness.status_code == 503
    assert answer is not None
    assert answer.status_code == 503
    assert answer.json()["detail"].startswith(
        "status backend unavailable: PostgreSQL lookup failed"
    )


def test_the_informer_reads_postgres_credentials_from_mounted_files(
    postgres: psycopg.Connection[tuple[object, ...]], tmp_path: Path
) -> None:
    """As the chart runs it: the Secret's keys as files, the variables unset."""
    from tests.stack.processes import service_process

    row = postgres.execute("SELECT id::text FROM jobs LIMIT 1").fetchone()
    assert row is not None, "the stack's PostgreSQL has no finished job yet"
    credentials = PostgresSettings()
    (tmp_path / "username").write_text(credentials.user)
    (tmp_path / "password").write_text(credentials.password.get_secret_value())
    (tmp_path / "wrong").write_text("not-the-password")
    files = {
        "INFORMER_BACKEND": "postgres",
        "POSTGRES_USER": "",
        "POSTGRES_PASSWORD": "",
        "POSTGRES_USER_FILE": str(tmp_path / "username"),
        "POSTGRES_PASSWORD_FILE": str(tmp_path / "password"),
    }
    with service_process("informer", files) as informer:
        answer = informer.get(f"/info/{row[0]}")
    assert answer is not None
    assert answer.status_code == 200
    assert answer.json()["status"] == "finish"

    with service_process(
        "informer", {**files, "POSTGRES_PASSWORD_FILE": str(tmp_path / "wrong")}
    ) as informer:
        refused = informer.get(f"/info/{row[0]}")
    assert refused is not None
    assert refused.status_code == 503
