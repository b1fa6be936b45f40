"""Streaming multipart upload: the file part goes straight into the blob store's temporary file, hashed on the way,
and the request is refused (413) as soon as it passes the size limit - before it can fill the disk.

Starlette's own form parsing spools the whole body to a temporary file before the handler runs; this parser reads
``request.stream()`` itself so the limit holds for chunked uploads without a Content-Length too.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header

from service.errors import BadRequest, PayloadTooLarge
from service.storage import BlobStore

FORM_OVERHEAD = 64 * 1024  # headers and small fields around the file
MAX_FIELD_BYTES = 4096


@dataclass
class Upload:
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    sha256: str | None = None
    size: int = 0
    temporary: Path | None = None


async def receive_upload(request: Request, store: BlobStore, limit: int) -> Upload:
    """Parse a multipart/form-data body with one ``file`` part; returns the fields and the stored temporary file.

    The caller commits ``upload.temporary`` into the store (or deletes it) once the rest of the request is valid.
    """
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in options:
        raise BadRequest("send the file as multipart/form-data with a 'file' part and a 'purpose' field")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + FORM_OVERHEAD:
        raise PayloadTooLarge(f"the upload is {int(declared):,} bytes; the limit is {limit:,}", param="file")

    upload = Upload()
    digest = hashlib.sha256()
    state = {"name": None, "filename": None, "header_field": b"", "header_value": b"", "headers": {}, "value": b""}
    descriptor, temporary = store.temporary()
    handle = os.fdopen(descriptor, "wb")
    upload.temporary = temporary

    def on_part_begin() -> None:
        state.update(name=None, filename=None, headers={}, value=b"")

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["header_field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["header_value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["header_field"].lower()] = state["header_value"]
        state["header_field"], state["header_value"] = b"", b""

    def on_headers_finished() -> None:
        _, disposition = parse_options_header(state["headers"].get(b"content-disposition", b""))
        state["name"] = disposition.get(b"name", b"").decode("utf-8", "replace")
        filename = disposition.get(b"filename")
        state["filename"] = filename.decode("utf-8", "replace") if filename is not None else None
        if state["name"] == "file":
            if upload.filename is not None:
                raise BadRequest("send exactly one 'file' part", param="file")
            upload.filename = Path(state["filename"] or "upload").name[:255] or "upload"

    def on_part_data(data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if state["name"] == "file":
            upload.size += len(chunk)
            if upload.size > limit:
                raise PayloadTooLarge(f"the upload passed the limit of {limit:,} bytes", param="file")
            digest.update(chunk)
            handle.write(chunk)
        else:
            state["value"] += chunk
            if len(state["value"]) > MAX_FIELD_BYTES:
                raise BadRequest(f"form field {state['name']!r} is too long", param=state["name"])

    def on_part_end() -> None:
        if state["name"] and state["name"] != "file":
            upload.fields[state["name"]] = state["value"].decode("utf-8", "replace")

    def on_end() -> None:
        state["complete"] = True  # the closing boundary arrived: the body was not cut short

    parser = MultipartParser(
        options[b"boundary"],
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_end": on_end,
        },
    )
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit + FORM_OVERHEAD:
                raise PayloadTooLarge(f"the upload passed the limit of {limit:,} bytes", param="file")
            parser.write(chunk)
        parser.finalize()
    except (PayloadTooLarge, BadRequest):
        handle.close()
        temporary.unlink(missing_ok=True)
        raise
    except Exception as error:  # a malformed body: the parser's own message names what it could not read
        handle.close()
        temporary.unlink(missing_ok=True)
        raise BadRequest(f"malformed multipart body ({error})") from None
    handle.close()
    if not state.get("complete"):
        temporary.unlink(missing_ok=True)
        raise BadRequest(
            "the multipart body ended before its closing boundary (was the upload cut short?)", param="file"
        )
    if upload.filename is None:
        temporary.unlink(missing_ok=True)
        raise BadRequest("the form has no 'file' part", param="file")
    upload.sha256 = digest.hexdigest()
    return upload
