"""A TCP relay between a Kafka client and a broker that can keep the broker's answers back."""

from __future__ import annotations

import asyncio
import contextlib
import struct

# Kafka's request and response frames: a 4-byte size, then (requests) a 2-byte API key.
FRAME_SIZE = struct.Struct(">i")
API_KEY = struct.Struct(">h")
PRODUCE = 0
END_TXN = 26


class Relay:
    """A TCP relay to one broker, taken by the client for the broker itself: the broker's
    address in the answers (metadata, coordinators) is rewritten to the relay's. A connection
    that has passed on a request of API ``hold_answers_after`` (its key) gets no more answers:
    the broker did what was asked, and the client never hears so."""

    def __init__(self, broker_host: str, broker_port: int, hold_answers_after: int) -> None:
        self._host, self._port = broker_host, broker_port
        self._held_api = hold_answers_after
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.held_requests = 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._connect, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        # In Kafka's encodings a host string is followed by its port as a 4-byte integer.
        host = self._host.encode()
        self._broker_address = host + FRAME_SIZE.pack(self._port)
        self._relay_address = host + FRAME_SIZE.pack(port)
        return port

    async def _connect(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        broker, to_broker = await asyncio.open_connection(self._host, self._port)
        self._writers += [to_client, to_broker]
        held = asyncio.Event()

        async def requests() -> None:
            while frame := await _read_frame(client):
                if API_KEY.unpack_from(frame, FRAME_SIZE.size)[0] == self._held_api:
                    self.held_requests += 1
                    held.set()  # before it is passed on: its answer must not get through
                to_broker.write(frame)
                await to_broker.drain()

        async def answers() -> None:
            while frame := await _read_frame(broker):
                if not held.is_set():
                    to_client.write(frame.replace(self._broker_address, self._relay_address))
                    await to_client.drain()

        for pipe in (requests(), answers()):
            task = asyncio.create_task(pipe)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _read_frame(reader: asyncio.StreamReader) -> bytes | None:
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        size = await reader.readexactly(FRAME_SIZE.size)
        return size + await reader.readexactly(FRAME_SIZE.unpack(size)[0])
    return None
