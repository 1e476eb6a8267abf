"""yandex-tank's BFG gun for POST /api/v1/create/job over keep-alive HTTP/1.1 connections.

BFG (`gun_type: ultimate`) loads this file in each of its instance processes, calls ``setup``
once, then one method per shot, named by the ammo's case (`create_job`). Each instance keeps
one connection open, as phantom does with `Connection: keep-alive`; a connection that fails is
dropped and the next shot opens a new one. `http.client` is used rather than `requests` because
it costs a third of the CPU per shot, and on a small machine the tank shares the CPUs with
what it measures.

The tank's own result stream loses its last second, so each instance also appends the ids the
target acknowledged to a file of its own (`acked_ids_dir`): the benchmark counts those, and
looks each one up downstream.

This runs in the tank's environment (yandextank 2.0.11), so it uses the standard library only.

gun_config keys (besides BFG's module_path, module_name, class_name):
  target_url      where to POST, e.g. http://127.0.0.1:8001/api/v1/create/job
  content_type    Content-Type of a non-empty body (default application/json)
  acked_ids_dir   directory for the acknowledged ids; empty: not recorded
  timeout_s       per request (default 10)
"""

from __future__ import annotations

import errno
import http.client
import json
import os
import socket
import time
import urllib.parse
from typing import Any, TextIO

# phout's net_code for a failure that carries no errno (a timeout, a malformed answer).
NET_CODE_UNKNOWN = 999


class CreateJobGun:
    def __init__(self, gun: Any) -> None:
        self.gun = gun
        self.connection: http.client.HTTPConnection | None = None
        self.acked: TextIO | None = None

    def setup(self, _init_param: str) -> None:
        target = urllib.parse.urlsplit(self.gun.get_option("target_url"))
        self.host = target.hostname or "127.0.0.1"
        self.port = target.port or 80
        self.path = target.path or "/"
        self.content_type = self.gun.get_option("content_type", "application/json")
        self.timeout_s = float(self.gun.get_option("timeout_s", "10"))
        acked_ids_dir = self.gun.get_option("acked_ids_dir", "")
        if acked_ids_dir:
            # In a pod the directory is on a fresh volume, and each instance may be the first.
            os.makedirs(acked_ids_dir, exist_ok=True)
            # One file per instance process: no locking between them. Line-buffered, so a
            # process the tank kills at the end loses at most the id it was writing.
            path = os.path.join(acked_ids_dir, f"acked-{os.getpid()}.ids")
            self.acked = open(path, "a", buffering=1)  # noqa: SIM115 - closed in teardown

    def teardown(self) -> None:
        self._drop_connection()
        if self.acked is not None:
            self.acked.close()

    def create_job(self, missile: bytes) -> None:
        with self.gun.measure("create_job") as sample:
            started = time.time()
            try:
                connection = self._connection(sample)
                headers = {"Content-Type": self.content_type} if missile else {}
                connection.request("POST", self.path, body=missile or None, headers=headers)
                sample["send_time"] = _micros(time.time() - started)
                response = connection.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as failure:
                self._drop_connection()
                sample["net_code"] = _net_code(failure)
                sample["proto_code"] = 0
                return
            sample["latency"] = _micros(time.time() - started)
            sample["size_out"] = len(missile)
            sample["size_in"] = len(body)
            sample["proto_code"] = response.status
            if response.will_close:
                self._drop_connection()
            if response.status == 200 and self.acked is not None:
                self.acked.write(f"{_acked_id(body)}\n")

    def _connection(self, sample: dict[str, Any]) -> http.client.HTTPConnection:
        if self.connection is None:
            started = time.time()
            connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
            connection.connect()
            # Small requests on a kept-alive connection: do not let Nagle hold them back.
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sample["connect_time"] = _micros(time.time() - started)
            self.connection = connection
        return self.connection

    def _drop_connection(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def _acked_id(body: bytes) -> str:
    """The job id a 200 answer names (CreatedJob's `id`)."""
    return str(json.loads(body)["id"])


def _micros(seconds: float) -> int:
    return int(seconds * 1_000_000)


def _net_code(failure: BaseException) -> int:
    if isinstance(failure, socket.timeout):
        return errno.ETIMEDOUT
    if isinstance(failure, OSError) and failure.errno:
        return failure.errno
    return NET_CODE_UNKNOWN
