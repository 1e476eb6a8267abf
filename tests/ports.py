"""Free loopback ports for the servers tests start."""

from __future__ import annotations

import socket
from contextlib import ExitStack

# Ports the local data-plane stack uses; never hand one of them out.
STACK_PORTS = frozenset({5432, 8001, 8002, 8003, 8004, 8083, 8123, 9000, 9090, 9092, 9093})


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports nothing listens on now. They are held together while chosen:
    picked one by one, each released before the next, the kernel may hand out one twice."""
    with ExitStack() as held:
        ports: list[int] = []
        while len(ports) < count:
            probe = held.enter_context(socket.socket())
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
            if port not in STACK_PORTS:
                ports.append(port)
        return ports


def free_port() -> int:
    return free_ports(1)[0]
