"""`up`, `down`, `status`: the whole pipeline on one machine."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import socket
import time
from dataclasses import dataclass

from jobflow.components import PIPELINE_SERVICES
from jobflow.core.settings import PostgresSettings
from local import install
from local.components import (
    ClickHouse,
    Component,
    Connect,
    ConnectWatchdog,
    LagExporter,
    Postgres,
    Prometheus,
    Service,
    kafka_brokers,
    service_environment,
)
from local.config import StackSettings
from local.output import step
from local.supervisor import Supervisor


def service_ports() -> dict[str, int]:
    """The port of each service the stack runs, as this environment sets it."""
    return {name: service.configured_port() for name, service in PIPELINE_SERVICES.items()}


def scrape_targets(stack: StackSettings) -> dict[str, str]:
    """What the local Prometheus scrapes, by job: the services, Kafka Connect's JMX exporter
    and the lag exporter (in a cluster: the ServiceMonitor, and k8s/strimzi's PodMonitors)."""
    return {
        **{name: f"127.0.0.1:{port}" for name, port in service_ports().items()},
        Connect.name: f"{stack.host}:{stack.connect_metrics_port}",
        LagExporter.name: f"{stack.host}:{stack.lag_exporter_port}",
    }


def components(stack: StackSettings) -> list[Component]:
    """Every component, in start order: each may depend on those before it."""
    postgres = PostgresSettings()
    brokers = kafka_brokers(stack, stack.path("java", "lib"))
    connect = Connect(
        stack, brokers[0], postgres, stack.path("java", "plugins"), install.jmx_exporter_jar(stack)
    )
    environment = service_environment(stack, postgres)
    ports = service_ports()
    return [
        Postgres(stack, postgres),
        *brokers,
        ClickHouse(stack),
        connect,
        ConnectWatchdog(stack, connect),
        LagExporter(stack),
        *(
            Service(stack, spec, ports[name], environment)
            for name, spec in PIPELINE_SERVICES.items()
        ),
        Prometheus(stack, scrape_targets(stack)),
    ]


async def wait_ready(component: Component, timeout_s: float, supervisor: Supervisor) -> None:
    deadline = time.monotonic() + timeout_s
    while (reason := await component.unready_reason()) is not None:
        state, _ = supervisor.state(component.name)
        if state in ("FATAL", "EXITED", "STOPPED"):
            raise RuntimeError(
                f"{component.name} is {state}; see {supervisor.log_file(component.name)}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(f"{component.name} not ready after {timeout_s:.0f}s: {reason}")
        await asyncio.sleep(0.5)


def port_taken(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def start(component: Component, supervisor: Supervisor) -> None:
    """Start the component's program, unless another process holds one of its ports."""
    if supervisor.state(component.name)[0] == "RUNNING":
        return
    for port, variable in component.ports.items():
        if port_taken(component.stack.host, port):
            raise RuntimeError(
                f"{component.name}: port {port} is taken by a process this stack did not start; "
                f"stop it, or choose another port with {variable}=..."
            )
    supervisor.start(component.name)


async def up(stack: StackSettings) -> None:
    install.everything(stack)
    parts = components(stack)
    await start_all(stack, parts, parts)
    print_endpoints(parts)


async def start_all(stack: StackSettings, parts: list[Component], set_up: list[Component]) -> None:
    """Start ``parts`` in order under the stack's supervisord, each once the one before is
    ready (the components of one start group together); set up those of ``set_up`` (topics,
    tables, the connector) once they are."""
    supervisor = Supervisor(stack)
    for component in parts:
        component.prepare()
    supervisor.start_daemon([component.program() for component in parts])
    groups = itertools.groupby(parts, key=lambda component: component.start_group or component)
    for _, group in groups:
        together = list(group)
        started = time.monotonic()
        for component in together:
            start(component, supervisor)
        for component in together:
            await wait_ready(component, stack.ready_timeout_s, supervisor)
            elapsed = time.monotonic() - started
            step(component.name, f"ready at {component.endpoint} ({elapsed:.1f}s)")
        for component in together:
            if component in set_up:
                await component.setup()


def print_endpoints(parts: list[Component]) -> None:
    ports = service_ports()
    print("\njobflow is up:")
    for component in parts:
        print(f"  {component.name:<11} {component.endpoint}")
    print(
        "\nTry it:\n"
        f"  curl -X POST http://127.0.0.1:{ports['receiver']}/api/v1/create/job\n"
        f"  curl http://127.0.0.1:{ports['informer']}/info/<id>\n"
    )


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    state: str
    pid: int
    endpoint: str
    problem: str | None


async def status(stack: StackSettings) -> list[ComponentStatus]:
    supervisor = Supervisor(stack)
    daemon = supervisor.running()
    report = []
    for component in components(stack):
        state, pid = supervisor.state(component.name) if daemon else ("NOT STARTED", 0)
        problem = await component.unready_reason() if state == "RUNNING" else None
        report.append(ComponentStatus(component.name, state, pid, component.endpoint, problem))
    return report


def down(stack: StackSettings) -> None:
    supervisor = Supervisor(stack)
    if not supervisor.running():
        step("down", "nothing is running")
        return
    supervisor.shutdown()
    step("down", f"stopped; data kept in {stack.dir} (make clean removes it)")


def clean(stack: StackSettings) -> None:
    down(stack)
    # Binaries (jars, plugins) are kept: they are not data and take minutes to fetch again.
    for folder in (
        "postgres",
        "kafka",
        "clickhouse",
        "prometheus",
        "connect",
        "logs",
        "run",
        "conf",
    ):
        shutil.rmtree(stack.path(folder), ignore_errors=True)
    step("clean", f"removed data and logs under {stack.dir}")
