"""A job's artifacts: what it produced (checkpoint, report, plots), read and downloaded by their owner only."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from service import jobs as job_service
from service.deps import CurrentKey, SessionDep, StoreDep
from service.downloads import CONTENT_RESPONSES, IfRangeHeader, RangeHeader, download_blob
from service.errors import NotFound, responses
from service.models import Artifact
from service.pagination import envelope
from service.schemas import ArtifactList, ArtifactObject

router = APIRouter(tags=["artifacts"])


@router.get(
    "/v1/jobs/{job_id}/artifacts",
    response_model=ArtifactList,
    operation_id="listJobArtifacts",
    summary="List a job's artifacts",
    responses=responses(401, 404),
)
def list_artifacts(job_id: str, key: CurrentKey, session: SessionDep):
    job_service.get_job(session, owner=key.owner, job_id=job_id)
    rows = list(session.scalars(select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.created_at)))
    return envelope([job_service.render_artifact(a) for a in rows], has_more=False)


def _owned_artifact(session: Session, owner: str, artifact_id: str) -> Artifact:
    artifact = session.get(Artifact, artifact_id)
    if artifact is None or artifact.owner != owner:
        raise NotFound(f"no artifact {artifact_id!r}", param="artifact_id")
    return artifact


@router.get(
    "/v1/artifacts/{artifact_id}",
    response_model=ArtifactObject,
    operation_id="getArtifact",
    responses=responses(401, 404),
)
def get_artifact(artifact_id: str, key: CurrentKey, session: SessionDep):
    return job_service.render_artifact(_owned_artifact(session, key.owner, artifact_id))


@router.get(
    "/v1/artifacts/{artifact_id}/content",
    response_class=FileResponse,
    operation_id="downloadArtifact",
    summary="Download an artifact's content",
    responses={**CONTENT_RESPONSES, **responses(400, 401, 404, 416)},
)
def artifact_content(
    artifact_id: str,
    key: CurrentKey,
    session: SessionDep,
    store: StoreDep,
    byte_range: RangeHeader = None,
    if_range: IfRangeHeader = None,
):
    """The artifact's bytes; ``X-Content-SHA256`` carries the whole artifact's digest; one ``Range`` is honoured."""
    artifact = _owned_artifact(session, key.owner, artifact_id)
    return download_blob(store, artifact.sha256, filename=artifact.filename, byte_range=byte_range, if_range=if_range)
