"""Content downloads: a stored blob as ``application/octet-stream`` with its digest, one byte range honoured.

Starlette's FileResponse does the sending (and the 206 with ``Content-Range``); what it answers by itself is changed
so that every answer is one the OpenAPI document declares: a malformed or unsatisfiable ``Range`` is checked here
first and answered in the one error shape (400, or 416 with ``Content-Range: bytes */size``), and a request for
several ranges gets the whole body (RFC 9110 lets a server ignore ``Range``) instead of a multipart/byteranges body.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from fastapi import Header
from pydantic import WithJsonSchema
from starlette.responses import FileResponse, MalformedRangeHeader, StreamingResponse
from starlette.responses import RangeNotSatisfiable as UnsatisfiableRange

from service.errors import RangeNotSatisfiable
from service.storage import BlobStore, S3BlobStore

MEDIA_TYPE = "application/octet-stream"
SHA256_HEADER = "X-Content-SHA256"

RANGE_DESCRIPTION = (
    "one byte range, e.g. 'bytes=0-1023', 'bytes=1024-' or 'bytes=-512' (the last 512 bytes): answered with 206 and "
    "Content-Range; a request for several ranges, or a range that is not one (last before first), gets the whole "
    "content (200), as RFC 9110 lets a server ignore an invalid range; one that starts past the end is 416"
)
# The two request headers of a content route, as parameters. A header is a string or absent, never null: the schema
# says so (pydantic's own for `str | None` would be anyOf string/null, which generators carry into their types).
RangeHeader = Annotated[
    str | None,
    WithJsonSchema({"type": "string"}),  # any string: one that is no range is ignored, not refused
    Header(alias="Range", description=RANGE_DESCRIPTION),
]
IfRangeHeader = Annotated[str | None, Header(alias="If-Range", include_in_schema=False)]
_BINARY = {MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}}
_SHA256 = {
    SHA256_HEADER: {"description": "sha256 of the whole content (hex), also for a range", "schema": {"type": "string"}}
}
_STRING = {"schema": {"type": "string"}}
# responses= for a content route, beside the error statuses.
CONTENT_RESPONSES = {
    200: {
        "description": "The whole content",
        "content": _BINARY,
        "headers": {**_SHA256, "Accept-Ranges": {"description": "bytes", **_STRING}},
    },
    206: {
        "description": "The requested range",
        "content": _BINARY,
        "headers": {**_SHA256, "Content-Range": {"description": "bytes <first>-<last>/<size>", **_STRING}},
    },
}


class _OneRange(FileResponse):
    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        """One range, or [] (= the whole content) for several ranges and for a header that is no range at all (RFC
        9110 lets a server ignore an invalid Range); a range starting past the end raises RangeNotSatisfiable."""
        try:
            ranges = super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader:
            return []
        return ranges if len(ranges) == 1 else []


def download(path: Path, *, filename: str, sha256: str, byte_range: str | None, if_range: str | None) -> FileResponse:
    """The response for a blob, after checking ``byte_range`` (the request's ``Range``) the way Starlette will."""
    response = _OneRange(
        path, filename=filename, media_type=MEDIA_TYPE, headers={SHA256_HEADER: sha256}, stat_result=os.stat(path)
    )
    if byte_range is None or (if_range is not None and not response._should_use_range(if_range)):
        return response  # no range, or If-Range names another version: Starlette sends the whole file
    size = int(response.headers["content-length"])
    try:
        _OneRange._parse_range_header(byte_range, size)
    except UnsatisfiableRange:
        raise RangeNotSatisfiable(
            f"the range {byte_range!r} starts past the end of the content ({size} bytes)",
            param="Range",
            headers={"Content-Range": f"bytes */{size}"},
        ) from None
    return response


def download_blob(
    store: BlobStore, sha256: str, *, filename: str, byte_range: str | None, if_range: str | None
) -> FileResponse | StreamingResponse:
    """The response for a stored blob: a local one as :func:`download`; an S3 one streamed from the bucket, a range as
    S3's own Range GET (the bytes never pass through a local file). Raises FileNotFoundError when it is not stored."""
    if not isinstance(store, S3BlobStore):
        return download(store.path(sha256), filename=filename, sha256=sha256, byte_range=byte_range, if_range=if_range)
    size = store.size(sha256)
    if size is None:
        raise FileNotFoundError(sha256)
    etag = f'"{sha256}"'  # content-addressed: the digest names this version for good
    quoted = quote(filename)
    disposition = f'attachment; filename="{filename}"'
    if quoted != filename:
        disposition = f"attachment; filename*=utf-8''{quoted}"
    headers = {SHA256_HEADER: sha256, "ETag": etag, "Accept-Ranges": "bytes", "Content-Disposition": disposition}
    start, end, status = 0, size, 200
    if byte_range is not None and (if_range is None or if_range == etag):
        try:
            ranges = _OneRange._parse_range_header(byte_range, size)
        except UnsatisfiableRange:
            raise RangeNotSatisfiable(
                f"the range {byte_range!r} starts past the end of the content ({size} bytes)",
                param="Range",
                headers={"Content-Range": f"bytes */{size}"},
            ) from None
        if ranges:
            (start, end), status = ranges[0], 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    headers["Content-Length"] = str(end - start)
    chunks = store.open_range(sha256, start, end) if end > start else iter(())
    return StreamingResponse(chunks, status_code=status, media_type=MEDIA_TYPE, headers=headers)
