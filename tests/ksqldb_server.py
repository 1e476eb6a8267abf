"""An HTTP server on loopback that answers like ksqlDB's REST API, for the tests of the informer
and of the apply command.

ksqlDB cannot be installed on our build machines, so the informer's ksqlDB client is tested
against this server instead: it speaks HTTP/1.1 for real (chunked responses, one chunk per
element, as ksqlDB streams them) and replays answers shaped exactly as ksqlDB's documented
protocol and its own REST tests show. It records every request, so tests can assert what the
client sent. It is not ksqlDB: nothing here evaluates SQL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MEDIA_TYPE = "application/vnd.ksql.v1+json"
TABLE_SCHEMA = "`ID` STRING KEY, `STATUS` STRING, `CREATE_DATE` STRING, `FINISH_DATE` STRING"
STREAM_SCHEMA = "`ID` STRING, `STATUS` STRING, `CREATE_DATE` STRING, `FINISH_DATE` STRING"


@dataclass
class Answer:
    status: int
    chunks: list[bytes]
    content_type: str = MEDIA_TYPE


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class KsqlDbProtocolServer:
    url: str = ""
    answers: dict[str, list[Answer]] = field(default_factory=dict)
    responders: dict[str, Callable[[Request], Answer]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)

    def answer(
        self, path: str, status: int, *chunks: bytes, content_type: str = MEDIA_TYPE
    ) -> None:
        """Answer every request to ``path`` so (replacing what was queued)."""
        self.answers[path] = [Answer(status, list(chunks), content_type)]

    def then(self, path: str, status: int, *chunks: bytes, content_type: str = MEDIA_TYPE) -> None:
        """Queue a further answer for ``path``: answers are used in order, the last one stays."""
        self.answers.setdefault(path, []).append(Answer(status, list(chunks), content_type))

    def respond(self, path: str, responder: Callable[[Request], Answer]) -> None:
        """Answer each request to ``path`` with what ``responder`` picks for it (a test's table
        of documented answers by statement: nothing here evaluates SQL)."""
        self.responders[path] = responder

    def next_answer(self, path: str, request: Request) -> Answer:
        if path in self.responders:
            return self.responders[path](request)
        queued = self.answers.get(path)
        if not queued:
            return Answer(404, [b'{"error_code":40400}'])
        return queued.pop(0) if len(queued) > 1 else queued[0]


def pull_query_answer(schema: str, rows: list[str], final: bool) -> list[bytes]:
    """The chunks of a /query answer: header, rows, optional finalMessage; ",\\n" separated."""
    elements = [f'{{"header":{{"queryId":"query_1706358890123","schema":"{schema}"}}}}']
    elements += [f'{{"row":{{"columns":{row}}}}}' for row in rows]
    if final:
        elements.append('{"finalMessage":"Query Completed"}')
    chunks = [b"[" + elements[0].encode()]
    chunks += [b",\n" + element.encode() for element in elements[1:]]
    chunks.append(b"]")
    return chunks


@contextmanager
def ksqldb_protocol_server() -> Iterator[KsqlDbProtocolServer]:
    state = KsqlDbProtocolServer()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length) if length else b""
            request = Request(
                self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
            )
            state.requests.append(request)
            answer = state.next_answer(self.path, request)
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for chunk in answer.chunks:
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")

        do_GET = _serve  # noqa: N815 - the names http.server dispatches to
        do_POST = _serve  # noqa: N815

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
