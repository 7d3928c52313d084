"""Receiving a multipart upload straight to disk: the request body is parsed as it arrives, the file part
is written chunk by chunk (hashed on the way) and the size limit is enforced while streaming, so an
upload never sits in memory and an oversized one is refused as soon as it crosses the limit.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from fastapi import HTTPException, Request, status
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

FILE_FIELD = "file"
TEXT_FIELDS = ("purpose",)
MAX_TEXT_FIELD_BYTES = 1024
MULTIPART_OVERHEAD = 64 * 1024  # boundaries, part headers and the small text fields around the file


class UploadRejected(HTTPException):
    pass


@dataclass
class ReceivedUpload:
    filename: str | None = None
    size: int = 0
    sha256: str = ""
    fields: dict[str, str] = field(default_factory=dict)


def too_large(limit: int) -> UploadRejected:
    return UploadRejected(status.HTTP_413_CONTENT_TOO_LARGE,
                          detail=f"the upload is larger than this server's limit of {limit} bytes "
                                 f"(MAX_UPLOAD_BYTES, {limit / 2**20:.0f} MiB); split the dataset or ask the "
                                 "operator to raise the limit")


def bad_request(message: str) -> UploadRejected:
    return UploadRejected(status.HTTP_400_BAD_REQUEST, detail=message)


class _Receiver:
    """python-multipart callbacks: the file part goes to `out`, the few text fields into memory."""

    def __init__(self, out: BinaryIO, limit: int) -> None:
        self.out, self.limit = out, limit
        self.upload = ReceivedUpload()
        self.digest = hashlib.sha256()
        self.header_name, self.header_value = b"", b""
        self.headers: dict[bytes, bytes] = {}
        self.part: str | None = None    # name of the part being received
        self.text = bytearray()
        self.seen_file = False
        self.complete = False  # the closing boundary arrived: nothing of the body is missing

    def on_part_begin(self) -> None:
        self.headers, self.part, self.text = {}, None, bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[self.header_name.lower()] = self.header_value
        self.header_name, self.header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        self.part = options.get(b"name", b"").decode("utf-8", "replace")
        if self.part == FILE_FIELD:
            if self.seen_file:
                raise bad_request(f"send exactly one file, in the multipart field `{FILE_FIELD}`")
            self.seen_file = True
            self.upload.filename = options.get(b"filename", b"").decode("utf-8", "replace") or None
        elif self.part not in TEXT_FIELDS:
            raise bad_request(f"unknown multipart field {self.part!r}: send the dataset as `{FILE_FIELD}` "
                              f"and optionally {', '.join(f'`{f}`' for f in TEXT_FIELDS)}")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self.part == FILE_FIELD:
            self.upload.size += len(chunk)
            if self.upload.size > self.limit:
                raise too_large(self.limit)
            self.digest.update(chunk)
            self.out.write(chunk)
        else:
            self.text += chunk
            if len(self.text) > MAX_TEXT_FIELD_BYTES:
                raise bad_request(f"multipart field {self.part!r} is longer than {MAX_TEXT_FIELD_BYTES} bytes")

    def on_part_end(self) -> None:
        if self.part in TEXT_FIELDS:
            self.upload.fields[self.part] = self.text.decode("utf-8", "replace")

    def on_end(self) -> None:
        self.complete = True

    def callbacks(self) -> dict:
        names = ("on_part_begin", "on_header_field", "on_header_value", "on_header_end", "on_headers_finished",
                 "on_part_data", "on_part_end", "on_end")
        return {name: getattr(self, name) for name in names}


async def receive_upload(request: Request, dest: Path, limit: int) -> ReceivedUpload:
    """Streams the multipart body of `request` into `dest` (the `file` part only); raises UploadRejected."""
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    if kind != b"multipart/form-data" or not options.get(b"boundary"):
        raise UploadRejected(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                             detail=f"send multipart/form-data with the dataset in the field `{FILE_FIELD}` "
                                    "(curl -F file=@train.jsonl)")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + MULTIPART_OVERHEAD:
        raise too_large(limit)  # refused before reading a byte
    with open(dest, "wb") as out:
        receiver = _Receiver(out, limit)
        parser = MultipartParser(options[b"boundary"], receiver.callbacks())
        received = 0
        try:
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit + MULTIPART_OVERHEAD:
                    raise too_large(limit)
                parser.write(chunk)  # file data goes to disk in the callbacks, 64 KiB or so at a time
            parser.finalize()
        except MultipartParseError as e:
            raise bad_request(f"malformed multipart body ({e}); send the file with a multipart/form-data "
                              "client (curl -F, requests files=...)") from None
    if not receiver.complete:  # python-multipart's finalize() does not check this itself
        raise bad_request(f"the upload was cut short: the body ended before its closing multipart boundary "
                          f"({receiver.upload.size} bytes of the file had arrived); nothing was stored: send the "
                          "file again")
    if not receiver.seen_file:
        raise bad_request(f"no file: send the dataset in the multipart field `{FILE_FIELD}`")
    receiver.upload.sha256 = receiver.digest.hexdigest()
    return receiver.upload
