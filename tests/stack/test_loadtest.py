"""The seed's yandex-tank profile, shortened, run here: yandex-tank 2.0.11 with BFG and our
keep-alive gun (loadtest/gun.py) against the local stack's receiver. `make bench` runs it
whole (25 requests a second for 300 s)."""

from __future__ import annotations

from collections import Counter

import psycopg
import pytest
from loadtest import tank

from jobflow.core.settings import KafkaSettings
from tests.polling import eventually
from tests.stack.topics import partition_end_offsets, records_since

SECONDS = 20


@pytest.mark.timeout(300)
def test_the_seed_profile_shortened_has_no_errors_and_every_acknowledged_job_finishes(
    kafka: KafkaSettings,
    ports: dict[str, int],
    postgres: psycopg.Connection[tuple[object, ...]],
) -> None:
    schedule = tank.shortened(tank.schedule_of("seed"), SECONDS)
    start = partition_end_offsets(kafka, kafka.receiver_topic)

    run = tank.run(schedule, url=f"http://127.0.0.1:{ports['receiver']}/api/v1/create/job")

    assert run.exit_code == 0, (run.artifacts / "tank.log").read_text()[-2000:]
    assert run.errors == 0
    # The receiver's side: each acknowledged id written to receiver-topic once, and as many
    # acknowledged as the schedule sent.
    acked = Counter(run.acked_ids)
    assert len(acked) == 25 * SECONDS
    assert max(acked.values()) == 1
    written = Counter(key.decode() for key, _ in records_since(kafka, start, kafka.receiver_topic))
    assert {job: written[job] for job in acked} == dict.fromkeys(acked, 1)
    # The tank's side: its statistics saw the same requests, give or take its last second.
    assert 25 * (SECONDS - 1) <= len(run.shots) <= 25 * SECONDS

    def finished() -> int | None:
        row = postgres.execute(
            "SELECT count(*) FROM jobs WHERE id = ANY(%s) AND status = 'finish'", (list(acked),)
        ).fetchone()
        count = int(row[0]) if row else 0  # type: ignore[call-overload]
        return count if count == len(acked) else None

    eventually(finished, 120, "not every acknowledged job reached PostgreSQL as finish")
