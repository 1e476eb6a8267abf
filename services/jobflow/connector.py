"""``python -m jobflow connector``: register the JDBC sink with a Kafka Connect jobflow does not
run, through Connect's REST API, and wait until it runs.

The chart runs it as a post-install and post-upgrade hook Job when ``connect.external.url`` names
a Kafka Connect of the user's own (with Strimzi's, a KafkaConnector does the same); the local
stack registers its connector with the same code. The connector's configuration is
``charts/jobflow/files/connect/postgres-connector.json`` (``CONNECTOR_CONFIG_FILE``), to which
the database's JDBC URL and credentials are added from ``POSTGRES_*`` (the credentials as files
of the mounted Secret: ``POSTGRES_USER_FILE``, ``POSTGRES_PASSWORD_FILE``).

``PUT /connectors/<name>/config`` creates or updates it; it is only sent when the configuration
differs, since Connect restarts a connector on every PUT. Then the connector and each of its
tasks must be RUNNING within ``CONNECTOR_TIMEOUT_S``: a part that FAILED (the database not up
yet, on a first install) is restarted every few seconds until then, and at the deadline the
command fails with that part's trace.

Exits 0 when the connector runs, 1 when Connect refused the configuration or a part of the
connector still failed at the deadline, 2 when Connect did not answer within the timeout.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from jobflow.core.settings import PostgresSettings

Report = Callable[[str], None]
# Connect answers 409 while its workers rebalance, and 500 "Request timed out" while its herder
# is busy: both pass by themselves.
_TRY_AGAIN = {httpx.codes.CONFLICT, httpx.codes.INTERNAL_SERVER_ERROR}
POLL_INTERVAL_S = 1.0
# How long a restarted part is given to start before it is restarted again.
RESTART_PAUSE_S = 5.0
# After a PUT, Connect restarts the connector and its tasks with the new configuration, but
# /status goes on showing the old tasks' RUNNING for a moment; a task that cannot start (a
# wrong password) fails within a few seconds. So RUNNING counts once it has lasted this long.
SETTLE_S = 10.0
ONLY_FAILED = {"includeTasks": True, "onlyFailed": True}


class ConnectorSettings(BaseSettings):
    """Settings of the connector command (``CONNECTOR_`` prefix); the database is ``POSTGRES_*``."""

    model_config = SettingsConfigDict(env_prefix="CONNECTOR_", extra="ignore")

    url: str = Field(description="Base URL of Kafka Connect's REST API.")
    name: str = Field(
        default="postgres-connector", description="Name the connector is registered under."
    )
    config_file: Path = Field(
        description=(
            "The connector's configuration (charts/jobflow/files/connect/"
            "postgres-connector.json), to which the database's URL and credentials are added."
        )
    )
    timeout_s: float = Field(
        default=180.0,
        gt=0,
        description="How long Connect may take to answer and to run the connector and its tasks.",
    )


class ConnectorFailedError(Exception):
    """Connect refused the connector, or a part of it did not run by the deadline."""


class ConnectUnreachableError(Exception):
    """Kafka Connect did not answer within the timeout."""


def load_connector(path: Path) -> dict[str, str]:
    """A connector configuration file, as Connect's REST API takes it."""
    config: dict[str, str] = orjson.loads(path.read_bytes())
    return config


def sink_config(contract: dict[str, str], postgres: PostgresSettings) -> dict[str, str]:
    """The contract with the database's JDBC URL and credentials."""
    return {
        **contract,
        "connection.url": postgres.jdbc_url(),
        "connection.username": postgres.user,
        "connection.password": postgres.password.get_secret_value(),
    }


def failed_parts(status: dict[str, Any]) -> dict[str, str]:
    """The parts of a connector in state FAILED, from Connect's /status answer: "connector" or
    "task N", each with its trace."""
    connector = status.get("connector")
    tasks = status.get("tasks")
    failed = {}
    if isinstance(connector, dict) and connector.get("state") == "FAILED":
        failed["connector"] = str(connector.get("trace", ""))
    if isinstance(tasks, list):
        failed |= {
            f"task {task.get('id')}": str(task.get("trace", ""))
            for task in tasks
            if task.get("state") == "FAILED"
        }
    return failed


def restart_failed(client: httpx.Client, connector: str) -> list[str]:
    """Restart what failed (nothing else); what was restarted."""
    status = client.get(f"/connectors/{connector}/status")
    if status.status_code != httpx.codes.OK:
        return []
    failed = list(failed_parts(status.json()))
    if failed:
        client.post(f"/connectors/{connector}/restart", params=ONLY_FAILED).raise_for_status()
    return failed


def trace_summary(trace: str) -> str:
    """A Java trace's first line and its causes: what went wrong without the stack frames."""
    lines = [line.strip() for line in trace.splitlines()]
    causes = [line for line in lines if line.startswith("Caused by:")]
    return " | ".join(lines[:1] + causes) if lines else "(no trace)"


class Connect:
    """Connect's REST API, asked until a deadline: while Connect starts, or its workers
    rebalance, a call is tried again."""

    def __init__(self, client: httpx.Client, deadline: float) -> None:
        self.client = client
        self.deadline = deadline

    def call(self, method: str, path: str, **arguments: Any) -> httpx.Response:
        while True:
            try:
                response = self.client.request(method, path, **arguments)
            except httpx.TransportError as exc:
                last = f"{exc.__class__.__name__}: {exc}"
            else:
                if response.status_code not in _TRY_AGAIN:
                    return response
                last = f"HTTP {response.status_code} {response.text[:300]}"
            if time.monotonic() + POLL_INTERVAL_S >= self.deadline:
                raise ConnectUnreachableError(f"{self.client.base_url}{path}: {last}")
            time.sleep(POLL_INTERVAL_S)

    def register(self, name: str, config: dict[str, str]) -> bool:
        """Create or update the connector; whether anything was sent."""
        current = self.call("GET", f"/connectors/{name}/config")
        # Connect adds the connector's name to the configuration it gives back.
        if current.status_code == httpx.codes.OK and current.json() == {**config, "name": name}:
            return False
        response = self.call("PUT", f"/connectors/{name}/config", json=config)
        if response.is_error:
            raise ConnectorFailedError(
                f"Connect refused connector {name}: HTTP {response.status_code} {response.text}"
            )
        return True

    def wait_running(self, name: str, report: Report, settle_s: float = 0.0) -> None:
        """Until the connector and every task have been RUNNING for ``settle_s``; failed parts
        are restarted meanwhile."""
        failed: dict[str, str] = {}
        restarted_at = float("-inf")
        running_since: float | None = None
        while True:
            response = self.call("GET", f"/connectors/{name}/status")
            running = False
            if response.status_code == httpx.codes.OK:
                status = response.json()
                states = [status["connector"]["state"], *(t["state"] for t in status["tasks"])]
                running = bool(status["tasks"]) and all(state == "RUNNING" for state in states)
                failed = failed_parts(status)
                if failed and time.monotonic() - restarted_at >= RESTART_PAUSE_S:
                    for part, trace in failed.items():
                        report(f"{part} of {name} FAILED, restarting it: {trace_summary(trace)}")
                    self.call("POST", f"/connectors/{name}/restart", params=ONLY_FAILED)
                    restarted_at = time.monotonic()
            if not running:
                running_since = None
            elif running_since is None:
                running_since = time.monotonic()
            if running_since is not None and time.monotonic() - running_since >= settle_s:
                return
            if time.monotonic() + POLL_INTERVAL_S >= self.deadline:
                if failed:
                    part, trace = next(iter(failed.items()))
                    raise ConnectorFailedError(
                        f"{part} of {name} FAILED: {trace_summary(trace)}\n{trace}"
                    )
                raise ConnectorFailedError(
                    f"connector {name} not running in time: {response.text[:500]}"
                )
            time.sleep(POLL_INTERVAL_S)


def register_and_wait(
    url: str, name: str, config: dict[str, str], timeout_s: float, report: Report
) -> None:
    """Register the connector (when its configuration changed) and wait until it runs."""
    with httpx.Client(base_url=url, timeout=30) as client:
        connect = Connect(client, time.monotonic() + timeout_s)
        changed = connect.register(name, config)
        if changed:
            report(f"connector {name} configured at {url}")
        connect.wait_running(name, report, SETTLE_S if changed else 0.0)


def report_line(line: str) -> None:
    print(line, flush=True)


def main() -> int:
    settings = ConnectorSettings()
    postgres = PostgresSettings()
    config = sink_config(load_connector(settings.config_file), postgres)
    report_line(
        f"connector {settings.name} of {settings.config_file} at {settings.url}, writing to "
        f"{postgres.jdbc_url()}"
    )
    try:
        register_and_wait(settings.url, settings.name, config, settings.timeout_s, report_line)
    except ConnectUnreachableError as exc:
        report_line(f"Kafka Connect did not answer within {settings.timeout_s:.0f}s: {exc}")
        return 2
    except ConnectorFailedError as exc:
        report_line(f"failed: {exc}")
        return 1
    report_line(f"connector {settings.name} and its tasks are RUNNING")
    return 0
