"""Free loopback ports for the servers tests start."""

from __future__ import annotations

import socket
from contextlib import ExitStack
from functools import cache

from local.config import StackSettings
from local.stack import service_ports

from jobflow.core.settings import PostgresSettings


@cache
def stack_ports() -> frozenset[int]:
    """The ports the local stack listens on, from the settings it starts with: never handed
    out, even while the stack is down."""
    stack = StackSettings().model_dump()
    own = {value for name, value in stack.items() if name.endswith("_port")}
    return frozenset({*own, *service_ports().values(), PostgresSettings().port})


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports nothing listens on now. They are held together while chosen:
    picked one by one, each released before the next, the kernel may hand out one twice."""
    with ExitStack() as held:
        ports: list[int] = []
        while len(ports) < count:
            probe = held.enter_context(socket.socket())
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
            if port not in stack_ports():
                ports.append(port)
        return ports


def free_port() -> int:
    return free_ports(1)[0]
