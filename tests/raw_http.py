"""HTTP/1.1 by hand over a socket, for tests of what a server does with requests a client library would not send."""

from __future__ import annotations

import socket


def request(headers: list[tuple[str, str]], method: str = "GET", path: str = "/healthz", body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def exchange(port: int, *pieces: bytes) -> bytes:
    """Sends the pieces (stopping early if the server closes) and reads until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as conn:
        try:
            for piece in pieces:
                conn.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before we finished: the answer is already on its way
        try:
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # closed already
        answer = b""
        try:
            while chunk := conn.recv(1 << 16):
                answer += chunk
        except ConnectionResetError:
            pass
    return answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])
