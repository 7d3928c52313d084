"""One way to send stored bytes (an archive, an uploaded file) from the artifact store: its sha256 as the
ETag, HTTP Range (one range; a resuming client sends `bytes=N-` with If-Range), HEAD without a body, and
optionally a redirect to a presigned URL so the bytes skip the API (DOWNLOAD_REDIRECT_SECONDS)."""

from __future__ import annotations

import re
from urllib.parse import quote

from fastapi import HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from service.settings import get_settings
from service.store import get_store

RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def content_disposition(filename: str) -> str:
    if filename.isascii() and '"' not in filename and "\\" not in filename:
        return f'attachment; filename="{filename}"'
    return f"attachment; filename*=utf-8''{quote(filename)}"


async def stored_download(request: Request, key: str, *, sha256: str, filename: str, media_type: str,
                          what: str) -> Response:
    """The object `key` as a download; 404 naming `what` when it is gone, 503 when the store is down."""
    store = get_store()
    size = await run_in_threadpool(store.size, key)  # StoreUnavailable: the app's handler answers 503
    if size is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"the {what} is missing from the artifact store")
    headers = {"ETag": f'"{sha256}"',  # If-Range with this ETag resumes only the very same bytes
               "X-Checksum-SHA256": sha256, "Accept-Ranges": "bytes",
               "Content-Disposition": content_disposition(filename)}
    redirect_seconds = get_settings().download_redirect_seconds
    if redirect_seconds and request.method == "GET":
        url = await run_in_threadpool(store.download_url, key, headers["Content-Disposition"], redirect_seconds)
        if url:
            return RedirectResponse(url, status_code=status.HTTP_307_TEMPORARY_REDIRECT, headers=headers)
    start, end = _requested_range(request, size, headers["ETag"])
    headers["Content-Length"] = str(end - start)
    code = status.HTTP_200_OK
    if (start, end) != (0, size):
        code, headers["Content-Range"] = status.HTTP_206_PARTIAL_CONTENT, f"bytes {start}-{end - 1}/{size}"
    if request.method == "HEAD":
        return Response(status_code=code, headers=headers, media_type=media_type)
    return StreamingResponse(store.read(key, start, end), status_code=code, headers=headers, media_type=media_type)


def _requested_range(request: Request, size: int, etag: str) -> tuple[int, int]:
    """[start, end) to send: the whole object unless one satisfiable range was asked for (and If-Range,
    when given, names these bytes). Several ranges are answered with the whole object, as RFC 9110 allows."""
    header = request.headers.get("range")
    if not header or "," in header or request.headers.get("if-range", etag) != etag:
        return 0, size
    match = RANGE.match(header.strip())
    if not match or match.groups() == ("", ""):
        raise HTTPException(status.HTTP_400_BAD_REQUEST,
                            detail=f"malformed Range header {header[:100]!r}: "
                                   "send bytes=<first>-[<last>] or bytes=-<n>")
    first, last = match.groups()
    if first == "":  # the last n bytes
        start, end = max(0, size - int(last)), size
        if int(last) == 0:
            start = size
    else:
        start, end = int(first), size if last == "" else min(size, int(last) + 1)
        if last != "" and int(last) < start:
            raise HTTPException(status.HTTP_400_BAD_REQUEST,
                                detail=f"Range {header[:100]!r} ends before it starts")
    if start >= size:
        raise HTTPException(status.HTTP_416_RANGE_NOT_SATISFIABLE,
                            detail=f"the range starts at or beyond the end of the {size}-byte file",
                            headers={"Content-Range": f"bytes */{size}"})
    return start, end
