"""A tiny HTTP server on 127.0.0.1 for tests: records what it receives and answers with what a
test sets. Used as a webhook (notifications) and as an npm advisory endpoint (the real one is
out of reach here: the registry proxy answers 405 to npm audit's POST)."""

from __future__ import annotations

import gzip
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


@dataclass
class Received:
    method: str
    path: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class StubServer:
    """`with StubServer() as stub:` then `stub.url`, `stub.answers[path] = obj`,
    `stub.received`. Unknown paths answer 404."""

    answers: dict[str, Any] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)

    def __enter__(self) -> Self:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                stub.received.append(Received(self.command, self.path, body))
                path = self.path.split("?", 1)[0]
                if path not in stub.answers:
                    self.send_response(404)
                    self.end_headers()
                    return
                payload = json.dumps(stub.answers[path]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _answer  # noqa: N815 (http.server's names)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"
