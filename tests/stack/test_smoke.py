"""``python -m jobflow smoke`` (the chart's helm test) against the real local stack."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import orjson
import pytest

from tests.stack.processes import free_port


def smoke(**settings: object) -> tuple[int, list[dict[str, Any]]]:
    env = dict(os.environ)
    env.update({f"SMOKE_{name.upper()}": str(value) for name, value in settings.items()})
    done = subprocess.run(
        [sys.executable, "-m", "jobflow", "smoke"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.returncode, [orjson.loads(line) for line in done.stdout.splitlines()]


@pytest.mark.timeout(150)
def test_a_job_goes_through_and_is_reported_finished(ports: dict[str, int]) -> None:
    code, steps = smoke(
        receiver_url=f"http://127.0.0.1:{ports['receiver']}",
        informer_url=f"http://127.0.0.1:{ports['informer']}",
        timeout_s=90,
        poll_interval_s=0.5,
    )
    assert code == 0, steps
    assert steps[0]["step"] == "created"
    assert steps[-1]["step"] == "finished"
    assert {s["status"] for s in steps if s["step"] == "status"} <= {"unknown", "create", "finish"}
    assert steps[-2] == {"step": "status", "id": steps[0]["id"], "status": "finish"}


def test_an_informer_that_never_answers_fails_within_the_timeout(ports: dict[str, int]) -> None:
    started = time.monotonic()
    code, steps = smoke(
        receiver_url=f"http://127.0.0.1:{ports['receiver']}",
        informer_url=f"http://127.0.0.1:{free_port()}",
        timeout_s=4,
        poll_interval_s=0.5,
    )
    # One deadline covers creating the job and waiting for it (the interpreter's start aside).
    assert time.monotonic() - started < 4 + 3
    assert code == 1
    assert steps[0]["step"] == "created"
    assert steps[-1]["step"] == "failed"
    assert "gave up after" in steps[-1]["error"]


def test_a_receiver_refusing_the_job_fails_at_once(ports: dict[str, int]) -> None:
    # The informer has no POST /api/v1/create/job: a 4xx, which no retry can fix.
    code, steps = smoke(
        receiver_url=f"http://127.0.0.1:{ports['informer']}",
        informer_url=f"http://127.0.0.1:{ports['informer']}",
        timeout_s=60,
    )
    assert code == 1
    assert steps == [{"step": "failed", "error": steps[0]["error"]}]
    assert steps[0]["error"].startswith("receiver refused the job: 40")
