"""MAX_BODY_BYTES for request bodies, refused with a 413 that names the limit and the setting (Starlette's
own limit answers a bare "Content Too Large"). Uploads stream under their own limit (api/uploads.py).

A declared Content-Length over the limit is refused before a byte is read; a chunked body is read up to the
limit and handed on whole, so the app never sees a body cut at the limit.
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimit:
    def __init__(self, app: ASGIApp, limit: int, exempt: Collection[tuple[str, str]] = ()) -> None:
        self.app, self.limit, self.exempt = app, limit, set(exempt)  # exempt: (method, path) pairs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) in self.exempt:
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            return await self.too_large()(scope, receive, send)
        if not declared and "transfer-encoding" not in headers:
            return await self.app(scope, receive, send)  # no body
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > self.limit:
                return await self.too_large()(scope, receive, send)
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()
        await self.app(scope, replay, send)

    def too_large(self) -> JSONResponse:
        return JSONResponse({"detail": f"the request body is larger than this server's limit of {self.limit} bytes "
                                       f"(MAX_BODY_BYTES, {self.limit / 2**20:g} MiB); a job spec takes a few KiB: "
                                       "check what is being sent, or ask the operator to raise MAX_BODY_BYTES"},
                            status_code=413)
