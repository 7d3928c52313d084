"""A reverse proxy in front of the live API that misbehaves on purpose, as a load balancer or a flaky network
does: it answers with a status of its own (503, 429 with Retry-After) without passing the request on, passes a
request on and then hangs up before the answer, or cuts an event stream after its first event."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

FIRST_EVENT = re.compile(rb"(^|\n)id:[^\n]*\n([^\n]+\n)*\n")  # an SSE event with an id, complete
RECORDED_HEADERS = ("idempotency-key", "last-event-id", "range", "if-range")
HOP_BY_HOP = {"connection", "transfer-encoding", "keep-alive", "content-encoding"}  # bodies are passed on decoded


@dataclass
class Faults:
    """What to do to the next requests (each entry is used once, in order): "503", "429", "drop" (pass the
    request on, hang up before the answer), "cut-stream" (end an SSE response after its first event) or
    "cut-body" (hang up halfway through the body)."""

    plan: list[str] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next(self, method: str, path: str, headers) -> str | None:
        with self.lock:
            fault = self.plan.pop(0) if self.plan else None
            kept = {k.lower(): v for k, v in headers.items() if k.lower() in RECORDED_HEADERS}
            self.seen.append(Seen(time.monotonic(), method, path.partition("?")[0], fault, kept))
            return fault


@dataclass(frozen=True)
class Seen:
    at: float
    method: str
    path: str
    fault: str | None
    headers: dict[str, str]


def handler_for(upstream: str, faults: Faults) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def _relay(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            fault = faults.next(self.command, self.path, self.headers)
            if fault in ("503", "429"):
                self.send_response(int(fault))
                self.send_header("Retry-After", "1")
                self.send_header("Content-Type", "application/json")
                payload = b'{"detail": "injected by the test proxy"}'
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
            with httpx.stream(self.command, upstream + self.path, headers=headers, content=body,
                              timeout=60) as answer:
                if fault == "drop":
                    answer.read()  # the server has done the work; the client never hears of it
                    self.close_connection = True
                    return
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in HOP_BY_HOP:
                        self.send_header(key, value)
                self.send_header("Connection", "close")  # the body ends when the connection does
                self.end_headers()
                self.close_connection = True
                sent, half = b"", int(answer.headers.get("content-length") or 0) // 2
                # decoded: Content-Encoding is not passed on
                for chunk in answer.iter_bytes(4096 if fault == "cut-body" else None):
                    self.wfile.write(chunk)
                    self.wfile.flush()
                    sent += chunk
                    if fault == "cut-stream" and FIRST_EVENT.search(sent.replace(b"\r\n", b"\n")):
                        return
                    if fault == "cut-body" and len(sent) >= half:
                        return

        do_GET = do_POST = do_DELETE = do_HEAD = _relay

    return Handler


@contextmanager
def faulty_proxy(upstream: str) -> Iterator[tuple[str, Faults]]:
    faults = Faults()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(upstream, faults))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", faults
    finally:
        server.shutdown()
        server.server_close()
