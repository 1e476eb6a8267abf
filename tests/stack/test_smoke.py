"""``python -m jobflow smoke`` (the chart's helm test) against the real local stack."""

from __future__ import annotations

import os
import socket
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pytest

from tests.ports import free_port


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
    code, steps = smoke(
        receiver_url=f"http://127.0.0.1:{ports['receiver']}",
        informer_url=f"http://127.0.0.1:{free_port()}",
        timeout_s=4,
        poll_interval_s=0.5,
    )
    assert code == 1
    assert steps[0]["step"] == "created"
    assert steps[-1]["step"] == "failed"
    assert "gave up after" in steps[-1]["error"]
    # By the smoke check's own clock: the interpreter's start, which a busy machine can make
    # take seconds, is not part of the timeout.
    assert 4 - 0.5 <= steps[-1]["after_s"] < 4 + 1.5


@contextmanager
def reachable_after(delay_s: float, target_port: int) -> Iterator[int]:
    """A port that refuses connections for ``delay_s``, then forwards them to ``target_port``."""
    port = free_port()

    class Forward(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            with socket.create_connection(("127.0.0.1", target_port)) as upstream:

                def pump(source: socket.socket, sink: socket.socket) -> None:
                    while data := source.recv(65536):
                        sink.sendall(data)
                    sink.shutdown(socket.SHUT_WR)

                back = threading.Thread(target=pump, args=(upstream, self.request), daemon=True)
                back.start()
                pump(self.request, upstream)
                back.join(timeout=10)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", port), Forward, bind_and_activate=False)
    server.daemon_threads = True
    # Bound but not listening: connections are refused until server_activate().
    server.server_bind()
    serving = threading.Event()

    def open_later() -> None:
        server.server_activate()
        serving.set()
        server.serve_forever(poll_interval=0.1)

    opening = threading.Timer(delay_s, open_later)
    opening.daemon = True
    opening.start()
    try:
        yield port
    finally:
        opening.cancel()
        if serving.wait(timeout=delay_s + 1):
            server.shutdown()
        server.server_close()


def test_creating_the_job_and_waiting_for_it_share_one_deadline(ports: dict[str, int]) -> None:
    # Regression: each step had a deadline of its own, so a slow creation could double the wait.
    # The receiver is away for most of the timeout, then the informer never answers. Times are
    # the smoke check's own (see above); its start may eat into the receiver's absence.
    with reachable_after(8.0, ports["receiver"]) as late_receiver:
        code, steps = smoke(
            receiver_url=f"http://127.0.0.1:{late_receiver}",
            informer_url=f"http://127.0.0.1:{free_port()}",
            timeout_s=10,
            poll_interval_s=0.5,
        )
    assert code == 1
    assert steps[0]["step"] == "created"
    assert steps[0]["after_s"] >= 3, "creating the job was not slow: the test proves nothing"
    took_s = steps[-1]["after_s"]
    assert took_s < 10 + 1.5, f"took {took_s:.1f}s: more than one deadline"


def test_a_receiver_refusing_the_job_fails_at_once(ports: dict[str, int]) -> None:
    # The informer has no POST /api/v1/create/job: a 4xx, which no retry can fix.
    code, steps = smoke(
        receiver_url=f"http://127.0.0.1:{ports['informer']}",
        informer_url=f"http://127.0.0.1:{ports['informer']}",
        timeout_s=60,
    )
    assert code == 1
    assert steps == [{"step": "failed", "error": steps[0]["error"], "after_s": steps[0]["after_s"]}]
    assert steps[0]["error"].startswith("receiver refused the job: 40")
    assert steps[0]["after_s"] < 10, "retried a refusal for most of the timeout"
