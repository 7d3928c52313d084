"""`adalora-svc serve` bounds a request's head as production servers do: past MAX_HEADER_BYTES or MAX_HEADERS it
answers 431 and closes, counting bytes as they arrive (an endless header is refused before it ends), while bodies
and ordinary requests on the same connection are not affected. Against the real process, over a socket."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import REPO, free_port, stop_process, wait_for
from tests.raw_http import exchange, request, status_of


@pytest.fixture(scope="module")
def port(tmp_path_factory) -> Iterator[int]:
    folder, port = tmp_path_factory.mktemp("serve"), free_port()
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{folder / 'serve.sqlite'}", "ARTIFACT_DIR": str(folder),
           "PYTHONPATH": str(REPO)}
    log = folder / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--port", str(port)], cwd=folder, env=env,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def healthy() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(healthy, 60, what="adalora-svc serve to answer")
    yield port
    stop_process(process)


def test_a_200_kb_header_is_refused_with_431(port):
    answer = exchange(port, request([("X-Big", "a" * 200_000)]))
    assert status_of(answer) == 431
    detail = json.loads(answer.split(b"\r\n\r\n", 1)[1])["detail"]
    assert "32768 bytes (MAX_HEADER_BYTES)" in detail


def test_3000_headers_are_refused_with_431(port):
    answer = exchange(port, request([(f"X-H{i}", "1") for i in range(3000)]))  # 30 KB: under the byte limit
    assert status_of(answer) == 431 and b"100 headers (MAX_HEADERS)" in answer


def test_an_endless_header_is_refused_before_it_ends(port):
    # 1 KiB at a time, never finished: the server must answer on its own once the limit is passed.
    with socket.create_connection(("127.0.0.1", port), timeout=20) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        sent = 0
        while sent < 16 << 20 and not select.select([conn], [], [], 0.001)[0]:
            conn.sendall(b"a" * 1024)
            sent += 1024
        answer = conn.recv(1 << 16)
    assert status_of(answer) == 431
    assert sent < 1 << 20  # refused near the 32 KiB limit, not once the header ended


def test_requests_within_the_limits_and_large_bodies_are_served_on_one_connection(port):
    from http.client import HTTPConnection

    headers = {f"X-H{i}": "v" * 200 for i in range(90)}  # 90 headers, about 19 KB
    body = b"{" + b" " * 300_000 + b"}"  # a body is not a header: the API's own body limit judges it
    conn = HTTPConnection("127.0.0.1", port, timeout=20)
    statuses, sockets = [], set()
    for method, path, payload in (("GET", "/healthz", None), ("POST", "/v1/jobs", body), ("GET", "/healthz", None)):
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        response.read()
        statuses.append(response.status)
        sockets.add(conn.sock)
    assert statuses == [200, 401, 200] and len(sockets) == 1  # one connection throughout
    conn.close()
