"""Extra service processes for tests that need one configured differently from the stack's."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from local.config import REPO

from tests.ports import free_port


@dataclass
class ServiceProcess:
    process: subprocess.Popen[bytes]
    url: str

    def text(self, path: str) -> str:
        """The body at ``path``, empty when the service does not answer."""
        answer = self.get(path)
        return answer.text if answer is not None else ""

    def metric(self, sample: str) -> float:
        """The value of the /metrics sample written exactly as ``sample`` (name and labels);
        0 while the service has not exported it."""
        for line in self.text("/metrics").splitlines():
            if line.startswith(f"{sample} "):
                return float(line.split()[-1])
        return 0.0

    def until_ok(self, path: str, timeout_s: float) -> None:
        """Wait until ``path`` answers 200; fail at once if the process exits."""
        deadline = time.monotonic() + timeout_s
        while (answer := self.get(path)) is None or answer.status_code != 200:
            assert self.process.poll() is None, (
                f"exited: {self.process.stdout and self.process.stdout.read()!r}"
            )
            last = answer.text if answer is not None else "no answer"
            assert time.monotonic() < deadline, f"{path} not 200 after {timeout_s} s: {last}"
            time.sleep(0.2)

    def get(self, path: str) -> httpx.Response | None:
        try:
            return httpx.get(f"{self.url}{path}", timeout=5)
        except httpx.HTTPError:
            return None


@contextmanager
def service_process(
    service: str,
    environment: dict[str, str],
    wait_live: bool = True,
    module: str | None = None,
    executable: Path | None = None,
) -> Iterator[ServiceProcess]:
    """Run ``python -m jobflow <service>`` on a free port; stop it afterwards.

    ``module`` runs ``python -m <module>`` instead, an app that reads the service's settings;
    ``executable`` runs that program, one that reads them too (bench/go_receiver).
    Unless ``wait_live`` is false, it is live (its /healthz answers) before this yields.
    """
    port = free_port()
    if executable is not None:
        command = [str(executable)]
    else:
        command = [sys.executable, "-m", *([module] if module else ["jobflow", service])]
    process = subprocess.Popen(  # noqa: S603
        command,
        env={**os.environ, **environment, f"{service.upper()}_PORT": str(port)},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    running = ServiceProcess(process, f"http://127.0.0.1:{port}")
    try:
        if wait_live:
            running.until_ok("/healthz", timeout_s=30)
        yield running
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
