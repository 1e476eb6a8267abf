"""jobflow's components: the one list the rest is derived from or checked against.

``python -m jobflow``'s commands, the local stack's programs and their ports, the services bench
measures and the tests come from here. What cannot import Python keeps its own declarative
copy, checked against this list by one test each: services/Dockerfile's targets
(tests/unit/test_images.py), skaffold.yaml's artifacts (tests/kube/test_skaffold.py), the
chart's values and Deployments (tests/kube/test_chart.py).

Each entry names its module by text and imports it only when asked: ``python -m jobflow
receiver`` imports neither the operator's kopf nor the other services' clients.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Protocol, TypeVar

from pydantic_settings import BaseSettings


@dataclass(frozen=True)
class Command:
    """``python -m jobflow <name>``: runs ``main()`` of ``module``."""

    name: str
    module: str
    takes_arguments: bool = field(default=False, kw_only=True)
    """Whether main() is given the arguments after the command's name (``dlq list <topic>``);
    the others are told everything by their environment, and take none."""

    def entry_point(self) -> Callable[..., int | None]:
        """``module``'s main(); what it returns is the process's exit status."""
        entry: Callable[..., int | None] = importlib.import_module(self.module).main
        return entry


@dataclass(frozen=True)
class Service(Command):
    """A command that runs as a server, in an image of its own built from services/Dockerfile
    (the target of its name)."""

    settings: str
    """Its settings class, in ``module``."""
    port_setting: str = "port"
    """The field of its settings holding the port it serves on (probes and /metrics)."""
    pipeline: bool = True
    """Whether it carries the jobs: an HTTP service with /readyz and /metrics on its port, which
    the local stack runs and Prometheus scrapes. The operator only sets up their schemas."""

    def settings_class(self) -> type[BaseSettings]:
        found = getattr(importlib.import_module(self.module), self.settings)
        if not (isinstance(found, type) and issubclass(found, BaseSettings)):
            raise TypeError(f"{self.module}.{self.settings} is not a settings class")
        return found

    @property
    def env_prefix(self) -> str:
        """What its settings' variables start with, e.g. RECEIVER_."""
        return str(self.settings_class().model_config.get("env_prefix", ""))

    @property
    def port_variable(self) -> str:
        """The variable that sets its port, e.g. RECEIVER_PORT."""
        return f"{self.env_prefix}{self.port_setting}".upper()

    @property
    def default_port(self) -> int:
        """Its port when nothing sets it: what its image exposes and the chart's default."""
        port = self.settings_class().model_fields[self.port_setting].default
        if not isinstance(port, int):
            raise TypeError(f"{self.settings}.{self.port_setting} has no port as its default")
        return port

    def configured_port(self) -> int:
        """Its port as its settings read it from this environment (the local stack's)."""
        port = getattr(self.settings_class()(), self.port_setting)
        if not isinstance(port, int):
            raise TypeError(f"{self.settings}.{self.port_setting} is not a port")
        return port


@dataclass(frozen=True)
class Image:
    """An image jobflow builds: jobflow-<name>, the chart's ``image.overrides.<name>``."""

    name: str
    dockerfile: str
    """From the repository's root."""
    target: str | None = None
    """The Dockerfile's build target; None for its last stage."""


class _Named(Protocol):
    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=_Named)


def _by_name(*entries: T) -> Mapping[str, T]:
    # Iterating a mapping gives its names, which is what most callers want; read-only, since a
    # caller that changed it would change every other's list.
    return MappingProxyType({entry.name: entry for entry in entries})


SERVICES: Final = _by_name(
    Service("receiver", "jobflow.receiver.service", "ReceiverSettings"),
    Service("processor", "jobflow.processor.service", "ProcessorSettings"),
    Service("converter", "jobflow.converter.service", "ConverterSettings"),
    Service("informer", "jobflow.informer.service", "InformerSettings"),
    Service(
        "operator",
        "jobflow.operator.run",
        "OperatorSettings",
        port_setting="liveness_port",
        pipeline=False,
    ),
)
"""Every service, in the order a job meets them; the operator last."""

PIPELINE_SERVICES: Final = _by_name(*(s for s in SERVICES.values() if s.pipeline))
"""The services that carry the jobs, in the same order."""

COMMANDS: Final = _by_name(
    *SERVICES.values(),
    # Run from the services' images, not images of their own: smoke is the chart's helm test;
    # topics and connector are its hook Jobs for a Kafka and a Kafka Connect it does not manage;
    # dlq is an operator's, run with kubectl exec or as a one-off Job (docs/operations.md).
    Command("smoke", "jobflow.smoke"),
    Command("topics", "jobflow.topics"),
    Command("connector", "jobflow.connector"),
    Command("dlq", "jobflow.dlq", takes_arguments=True),
)
"""What ``python -m jobflow`` runs."""

IMAGES: Final = _by_name(
    *(Image(name, "services/Dockerfile", target=name) for name in SERVICES),
    # Strimzi's Kafka image with the Debezium JDBC sink, which the chart's KafkaConnect runs.
    Image("connect", "k8s/connect/Dockerfile"),
)
"""Every image jobflow builds, in the order skaffold.yaml lists them."""
