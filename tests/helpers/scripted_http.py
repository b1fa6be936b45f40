"""A real HTTP server on loopback that answers requests from a script, in turn: for the client's rules on answers the
service itself never gives on demand (a 403, a 500, a proxy's HTML page, a Retry-After date, a server too slow)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Answer:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before the answer (a slow server)


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when it arrived


def json_answer(status: int, text: str, **headers: str) -> Answer:
    return Answer(status, text.encode(), {"Content-Type": "application/json", **headers})


def api_error(status: int, code: str, message: str = "scripted", **headers: str) -> Answer:
    return json_answer(status, f'{{"error": {{"code": "{code}", "message": "{message}", "param": null}}}}', **headers)


@contextlib.contextmanager
def scripted_server(*answers: Answer) -> Iterator[tuple[str, list[Received]]]:
    """``(url, received)``: each request gets the next answer (a 599 once the script is used up)."""
    queue, received = list(answers), []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            received.append(Received(self.command, self.path, dict(self.headers), body, time.monotonic()))
            answer = queue.pop(0) if queue else Answer(599, b"script used up")
            time.sleep(answer.delay)
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        do_GET = do_POST = do_DELETE = _answer

        def log_message(self, *args) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
