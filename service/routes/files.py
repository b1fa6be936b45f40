from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from service import files as file_service
from service.deps import CurrentKey, Cursor, SessionDep, SettingsDep, StoreDep
from service.downloads import CONTENT_RESPONSES, IfRangeHeader, RangeHeader, download_blob
from service.http_errors import responses
from service.schemas import DeletedObject, FileList, FileObject, FilePurpose
from service.upload import receive_upload

router = APIRouter(prefix="/v1/files", tags=["files"])


@router.post(
    "",
    response_model=FileObject,
    status_code=201,
    operation_id="uploadFile",
    responses=responses(400, 401, 413, 422, 429),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file", "purpose"],
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "purpose": {"$ref": "#/components/schemas/FilePurpose"},
                        },
                    }
                }
            },
        }
    },
)
async def upload_file(request: Request, key: CurrentKey, session: SessionDep, store: StoreDep, settings: SettingsDep):
    """Upload a dataset or weights (streamed, size-limited); it is validated for its purpose before it is listed."""
    upload = await receive_upload(request, store, settings.max_upload_bytes)
    # Validation reads the whole file (seconds for a large corpus) and the row is written to the database: both off
    # the event loop, so that the process's other requests (the polled GET /v1/jobs/{id}) are not held up meanwhile.
    file = await run_in_threadpool(file_service.create_file, session, store, owner=key.owner, upload=upload)
    return file_service.render(file)


@router.get("", response_model=FileList, operation_id="listFiles", responses=responses(401, 404, 422))
def list_files(
    key: CurrentKey,
    session: SessionDep,
    after: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    purpose: FilePurpose | None = None,
):
    return file_service.list_files(
        session, owner=key.owner, purpose=purpose.value if purpose else None, after=after, limit=limit
    )


@router.get("/{file_id}", response_model=FileObject, operation_id="getFile", responses=responses(401, 404))
def get_file(file_id: str, key: CurrentKey, session: SessionDep):
    return file_service.render(file_service.get_file(session, owner=key.owner, file_id=file_id))


@router.get(
    "/{file_id}/content",
    response_class=FileResponse,
    operation_id="downloadFile",
    summary="Download a file's content",
    responses={**CONTENT_RESPONSES, **responses(401, 404, 416)},
)
def file_content(
    file_id: str,
    key: CurrentKey,
    session: SessionDep,
    store: StoreDep,
    byte_range: RangeHeader = None,
    if_range: IfRangeHeader = None,
):
    """The file's bytes as uploaded; ``X-Content-SHA256`` carries their digest."""
    file = file_service.get_file(session, owner=key.owner, file_id=file_id)
    try:
        return download_blob(store, file.sha256, filename=file.filename, byte_range=byte_range, if_range=if_range)
    except FileNotFoundError:
        session.rollback()  # a fresh look: deleted meanwhile is a 404; a live file without its bytes stays a 500
        file_service.get_file(session, owner=key.owner, file_id=file_id)
        raise


@router.delete(
    "/{file_id}", response_model=DeletedObject, operation_id="deleteFile", responses=responses(401, 404, 409)
)
def delete_file(
    file_id: str, key: CurrentKey, session: SessionDep, store: StoreDep, request: Request, after: BackgroundTasks
):
    """The file is gone at once; its bytes are removed once the deletion has committed (if nothing else uses them)."""
    sha256 = file_service.delete_file(session, owner=key.owner, file_id=file_id)
    after.add_task(file_service.release_blob, request.app.state.sessions, store, sha256)
    return DeletedObject(id=file_id, object="file")
