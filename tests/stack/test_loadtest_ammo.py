"""The yandex-tank ammo (charts/jobflow/files/loadtest/ammo.txt) is a request the real receiver
accepts, byte for byte, twice on one keep-alive connection as phantom sends it."""

from __future__ import annotations

import http.client
import socket

import orjson
from local.config import CONTRACTS

from jobflow.core.models import CreatedJob

HTTP_OK = 200


def test_the_ammo_creates_a_job_on_each_send_over_one_connection(ports: dict[str, int]) -> None:
    _, request = (CONTRACTS / "loadtest" / "ammo.txt").read_bytes().split(b"\n", 1)
    created = []
    with socket.create_connection(("127.0.0.1", ports["receiver"]), timeout=10) as connection:
        for _ in range(2):
            connection.sendall(request)
            response = http.client.HTTPResponse(connection)
            response.begin()
            body = response.read()
            assert response.status == HTTP_OK, body
            assert not response.will_close, "the connection must stay open for the next shot"
            created.append(CreatedJob.model_validate(orjson.loads(body)))
    assert created[0].id != created[1].id
