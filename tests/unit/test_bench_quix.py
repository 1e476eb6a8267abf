"""What the Quix Streams comparison computes from its clocks, and the Quix peer's message shape."""

from __future__ import annotations

import uuid
from collections import Counter

import orjson
import pytest
from bench.quix import PeerThroughput, best, ratio, summarise
from bench.quix_processor import done, wire_date

from jobflow.core.models import Job, JobDone
from jobflow.core.timestamps import format_rfc3339_nano

COMMITTED = 1_800_000_000 * 10**9
MS = 10**6


def run(peer: str, jobs_per_s: float) -> PeerThroughput:
    return PeerThroughput(peer, 100, 0, None, 0.5, 1.0, jobs_per_s, 1.0, 2.0, 0, 0)


def test_the_rate_runs_from_the_backlog_commit_to_the_last_output_seen() -> None:
    # Four jobs created 100 ms before the commit, their outputs seen 1 to 4 s after it.
    created = {name: COMMITTED - 100 * MS for name in "abcd"}
    visible = {name: COMMITTED + (n + 1) * 1000 * MS for n, name in enumerate("abcd")}
    figures = summarise("quix", 0, 0.1, created, COMMITTED, visible, Counter("abcd"))
    assert figures.seconds == 4.0
    assert figures.backlog_written_s == 0.1
    assert figures.jobs_per_s == 1.0
    assert figures.create_to_visible_p50_ms == 2100.0
    assert figures.create_to_visible_p99_ms == 4100.0
    assert (figures.jobs, figures.lost, figures.duplicated) == (4, 0, 0)
    assert (figures.peer, figures.commit_interval_s) == ("quix", 0.1)


def test_a_job_missing_from_the_output_is_lost_and_a_second_copy_duplicated() -> None:
    created = dict.fromkeys("abc", COMMITTED)
    visible = {"a": COMMITTED + 500 * MS, "b": COMMITTED + 1000 * MS}
    figures = summarise("jobflow", 100, None, created, COMMITTED, visible, Counter("abb"))
    assert (figures.lost, figures.duplicated) == (1, 1)
    # The rate counts what was seen, up to the last of it.
    assert figures.jobs_per_s == 2.0


def test_a_run_that_saw_nothing_has_no_rate() -> None:
    figures = summarise("quix", 0, None, {"a": COMMITTED}, COMMITTED, {}, Counter())
    assert (figures.jobs_per_s, figures.lost) == (0.0, 1)


def test_the_best_run_is_the_fastest_and_the_ratio_is_ours_over_theirs() -> None:
    assert best([run("quix", 10.0), run("quix", 30.0), run("quix", 20.0)]).jobs_per_s == 30.0
    assert ratio(run("jobflow", 900.0), run("quix", 300.0)) == 3.0
    assert ratio(run("jobflow", 900.0), run("quix", 0.0)) is None


@pytest.mark.parametrize(
    "epoch_ns",
    [0, 1_706_358_890_594_423_357, 1_706_358_890_000_000_000, 1_706_358_890_500_000_000, 7],
)
def test_the_quix_peer_writes_dates_as_the_pipeline_does(epoch_ns: int) -> None:
    assert wire_date(epoch_ns) == format_rfc3339_nano(epoch_ns)


def test_the_quix_peer_turns_a_job_into_its_job_done() -> None:
    job = Job(id=str(uuid.uuid4()), create_date=1_706_358_890_594_423_357, sleep=0, data="ab")
    finished = JobDone.from_json(orjson.dumps(done(orjson.loads(job.to_json()))))
    assert (finished.id, finished.create_date) == (job.id, job.create_date)
    assert finished.finish_date >= job.create_date
