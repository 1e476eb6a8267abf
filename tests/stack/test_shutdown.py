"""SIGTERM: a stage service finishes its batch, commits, and exits cleanly.

The processor under test runs on topics of its own, so that the shared stack's data is untouched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import httpx
from local.config import REPO

from jobflow.core.models import Job
from jobflow.core.settings import KafkaSettings
from jobflow.core.timestamps import now_ns
from tests.stack.test_receiver import free_port
from tests.stack.topics import committed_offsets, create_topics, produce, read_until


def test_sigterm_mid_batch_finishes_the_batch_commits_and_exits(kafka: KafkaSettings) -> None:
    suffix = uuid.uuid4().hex[:8]
    source, target, group = f"test-in-{suffix}", f"test-out-{suffix}", f"test-processor-{suffix}"
    create_topics(kafka, source, f"{source}.dlq", target)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "jobflow", "processor"],
        env={
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "KAFKA_RECEIVER_TOPIC": source,
            "KAFKA_PROCESSOR_TOPIC": target,
            "PROCESSOR_GROUP_ID": group,
            "PROCESSOR_PORT": str(port),
        },
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        jobs = [
            Job(id=str(uuid.uuid4()), create_date=now_ns(), sleep=3000, data="") for _ in range(20)
        ]
        produce(kafka, source, [(job.id.encode(), job.to_json()) for job in jobs])
        metrics = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 60
        while 'jobflow_records_in_flight{stage="processor"} 20.0' not in _get(metrics):
            assert time.monotonic() < deadline, "the batch never started"
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal once shut down, so the status is "terminated by SIGTERM";
        # what shows the shutdown was graceful is its log line and the committed batch below.
        assert process.wait(timeout=30) == -signal.SIGTERM
        output = process.stdout.read().decode() if process.stdout else ""
        assert "Application shutdown complete." in output
    finally:
        if process.poll() is None:
            process.kill()
    done = read_until(kafka, target, lambda found: len(found) >= len(jobs), lambda _: True, 30)
    assert sorted(m.key() or b"" for m in done) == sorted(job.id.encode() for job in jobs)
    assert committed_offsets(kafka, group, source) == len(jobs)


def _get(url: str) -> str:
    try:
        return httpx.get(url).text
    except httpx.HTTPError:
        return ""
