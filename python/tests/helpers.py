"""A tiny HTTP server that records what WeChat (the simulator) sends it."""

from __future__ import annotations

import http.server
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Dict, List, Tuple


@dataclass
class Received:
    path: str
    query: Dict[str, str]
    headers: Dict[str, str]
    body: bytes


@dataclass
class Recorder:
    """Answers every POST with ``status`` and ``reply``, keeping each request."""

    status: int = 200
    reply: bytes = b"success"
    requests: List[Received] = field(default_factory=list)

    def start(self) -> Tuple[str, "http.server.ThreadingHTTPServer"]:
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                parsed = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(parsed.query))
                recorder.requests.append(Received(parsed.path, query, dict(self.headers.items()), body))
                self.send_response(recorder.status)
                self.send_header("Content-Length", str(len(recorder.reply)))
                self.end_headers()
                self.wfile.write(recorder.reply)

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{server.server_address[1]}", server

    def wait(self, n: int = 1, timeout: float = 10.0) -> List[Received]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.requests) >= n, f"expected {n} requests, got {len(self.requests)}"
        return self.requests
