"""Bounds on a request's head for `adalora-svc serve` and `dev`: uvicorn's httptools protocol has none (a 200 KB
header or 3,000 headers got through), so a head over MAX_HEADER_BYTES (request line and headers) or with more
than MAX_HEADERS fields is answered 431 Request Header Fields Too Large and the connection closed, as nginx,
Node and gunicorn bound theirs.

Bytes are counted as they arrive, not once a header is whole: httptools buffers a header line until its end,
so an endless one would otherwise grow the process without limit. Memory stays within the limit plus one read.
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.settings import get_settings

LINGER_SECONDS = 5.0  # how long a refused connection is drained before it is closed


class HeadersTooLarge(Exception):
    """Raised from a parser callback to stop parsing; httptools hands it to data_received as a parser error."""


class BoundedHeadersProtocol(HttpToolsProtocol):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self.max_bytes, self.max_fields = settings.max_header_bytes, settings.max_headers
        self.head_bytes: int | None = 0  # bytes of the head being received; None while a body is
        self.fields = 0
        self.refusal: str | None = None

    def data_received(self, data: bytes) -> None:
        if self.refusal is not None:
            return  # refused: what is still on its way is read and dropped until the close
        if self.head_bytes is not None:
            self.head_bytes += len(data)
        super().data_received(data)
        # Judged after parsing: this read may have completed the head, and the rest of it is body.
        if self.head_bytes is not None and self.head_bytes > self.max_bytes and not self.transport.is_closing():
            self.refusal = (f"the request's headers are larger than this server's limit of {self.max_bytes} bytes "
                            "(MAX_HEADER_BYTES)")
            self.send_400_response(self.refusal)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.fields = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields += 1
        if self.fields > self.max_fields:
            self.refusal = f"the request has more than this server's limit of {self.max_fields} headers (MAX_HEADERS)"
            raise HeadersTooLarge(self.refusal)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.head_bytes = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.head_bytes = 0  # the next request's head starts here

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request it cannot parse; ours to a head over the limits is a 431."""
        if self.refusal is None:
            return super().send_400_response(msg)
        body = json.dumps({"detail": f"{self.refusal}: send fewer or smaller headers (large data belongs in the "
                                     "body), or ask the operator to raise the limit"}).encode()
        self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
        # A lingering close, as nginx does: closing with the client's bytes unread would send a reset, which
        # can destroy the answer before the client reads it. Stop writing, drop what arrives, then close.
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)
