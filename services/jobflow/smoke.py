"""``python -m jobflow smoke``: create one job through the receiver and wait until the informer
says it finished. The chart's ``helm test`` runs it inside the cluster; it checks any running
pipeline the same way (``make smoke`` locally).

It prints one JSON line per step and exits 0 when the job finished, 1 when it did not within
``SMOKE_TIMEOUT_S`` (the last status the informer gave is in the message)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import httpx
import orjson
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from tenacity import Retrying, retry_if_exception_type, wait_fixed

from jobflow.core.models import JobInfo

FINISHED = "finish"
SERVER_ERROR = 500


class SmokeSettings(BaseSettings):
    """Where the smoke test finds the pipeline, and how long it waits for it."""

    model_config = SettingsConfigDict(env_prefix="SMOKE_", extra="ignore")

    receiver_url: str = Field(
        default="http://127.0.0.1:8001", description="Base URL of the receiver."
    )
    informer_url: str = Field(
        default="http://127.0.0.1:8004", description="Base URL of the informer."
    )
    timeout_s: float = Field(
        default=120.0, gt=0, description="How long the job may take to be reported finished."
    )
    poll_interval_s: float = Field(
        default=1.0, gt=0, description="Pause between two status lookups (and two create tries)."
    )
    job_sleep_ms: int = Field(default=100, ge=0, description="Work time of the job it creates.")


class SmokeFailedError(Exception):
    """The pipeline did not create or finish the job in time."""


class NotYetError(Exception):
    """A step's answer is not the one awaited yet; the step is tried again."""


@dataclass(frozen=True)
class SmokeResult:
    job_id: str
    created_after_s: float
    finished_after_s: float


def create_job(http: httpx.Client, settings: SmokeSettings) -> str:
    """POST one job; a refused connection or a 5xx (pods still starting) is tried again."""
    response = http.post(
        f"{settings.receiver_url}/api/v1/create/job", json={"sleep": settings.job_sleep_ms}
    )
    if response.status_code >= SERVER_ERROR:
        raise NotYetError(f"receiver answered {response.status_code}: {response.text}")
    if response.is_error:
        raise SmokeFailedError(f"receiver refused the job: {response.status_code} {response.text}")
    return str(orjson.loads(response.content)["id"])


def job_status(http: httpx.Client, settings: SmokeSettings, job_id: str) -> str:
    response = http.get(f"{settings.informer_url}/info/{job_id}")
    if response.status_code >= SERVER_ERROR:
        raise NotYetError(f"informer answered {response.status_code}: {response.text}")
    if response.is_error:
        raise SmokeFailedError(f"informer refused {job_id}: {response.status_code} {response.text}")
    return JobInfo.model_validate_json(response.content).status


def report(step: str, **fields: object) -> None:
    sys.stdout.write(orjson.dumps({"step": step, **fields}).decode() + "\n")
    sys.stdout.flush()


def run(settings: SmokeSettings) -> SmokeResult:
    """Create a job and wait for ``finish``; raise SmokeFailedError when that takes too long."""
    started = time.monotonic()
    # One deadline for both steps: helm test's own timeout is set just above timeout_s.
    deadline = started + settings.timeout_s
    retrying = Retrying(
        retry=retry_if_exception_type((NotYetError, httpx.TransportError)),
        wait=wait_fixed(settings.poll_interval_s),
        stop=lambda _: time.monotonic() + settings.poll_interval_s > deadline,
        reraise=True,
    )
    last_status = "not asked yet"
    with httpx.Client(timeout=settings.poll_interval_s * 5) as http:
        try:
            job_id = retrying(create_job, http, settings)
            created_after_s = time.monotonic() - started
            report("created", id=job_id, after_s=round(created_after_s, 3))
            for attempt in retrying.copy():
                with attempt:
                    status = job_status(http, settings, job_id)
                    if status != last_status:
                        report("status", id=job_id, status=status)
                        last_status = status
                    if status != FINISHED:
                        raise NotYetError(f"job {job_id} is {status!r}")
        except (NotYetError, httpx.TransportError) as exc:
            raise SmokeFailedError(
                f"gave up after {time.monotonic() - started:.0f}s (timeout "
                f"{settings.timeout_s:.0f}s): {exc}"
            ) from exc
    finished_after_s = time.monotonic() - started
    report("finished", id=job_id, after_s=round(finished_after_s, 3))
    return SmokeResult(job_id, created_after_s, finished_after_s)


def main() -> None:
    started = time.monotonic()
    try:
        run(SmokeSettings())
    except SmokeFailedError as exc:
        report("failed", error=str(exc), after_s=round(time.monotonic() - started, 3))
        sys.exit(1)
