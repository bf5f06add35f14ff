"""A real HTTP receiver for webhooks on 127.0.0.1 (http.server in a thread): it answers 200, 503, or hangs."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    port: int
    mode: str = "ok"  # ok | fail | hang
    received: list[Received] = field(default_factory=list)
    refused: int = 0
    release: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@contextmanager
def receiving(mode: str = "ok") -> Iterator[Receiver]:
    state: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            receiver = state["r"]
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if receiver.mode == "hang":
                receiver.release.wait(60)
            if receiver.mode != "ok":
                receiver.refused += 1
                self.send_response(503)
                self.end_headers()
                return
            receiver.received.append(Received({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state["r"] = Receiver(port=server.server_address[1], mode=mode)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state["r"]
    finally:
        state["r"].release.set()
        server.shutdown()
        server.server_close()
