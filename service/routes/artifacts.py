"""Artifacts: what a job produced (checkpoint, report, plots) and a finished sweep's summary files, read and
downloaded by their owner only."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from service import jobs as job_service
from service import sweeps as sweep_service
from service.deps import CurrentKey, SessionDep, StoreDep
from service.downloads import CONTENT_RESPONSES, IfRangeHeader, RangeHeader, download_blob
from service.http_errors import responses
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
    return job_service.list_artifacts(session, owner=key.owner, job_id=job_id)


@router.get(
    "/v1/sweeps/{sweep_id}/artifacts",
    response_model=ArtifactList,
    operation_id="listSweepArtifacts",
    summary="List a sweep's artifacts",
    responses=responses(401, 404),
)
def list_sweep_artifacts(sweep_id: str, key: CurrentKey, session: SessionDep):
    """summary.json (the summary GET /v1/sweeps/{id} returns), summary.csv (a row per cell) and pareto.png (the
    metric against checkpoint size and speed-up, the Pareto front and the best cell marked), made moments after the
    sweep finished (none while it runs); each downloads through GET /v1/artifacts/{artifact_id}/content. Its
    children's artifacts are listed on each job."""
    return sweep_service.list_artifacts(session, owner=key.owner, sweep_id=sweep_id)


@router.get(
    "/v1/artifacts/{artifact_id}",
    response_model=ArtifactObject,
    operation_id="getArtifact",
    responses=responses(401, 404),
)
def get_artifact(artifact_id: str, key: CurrentKey, session: SessionDep):
    return job_service.render_artifact(job_service.get_artifact(session, owner=key.owner, artifact_id=artifact_id))


@router.get(
    "/v1/artifacts/{artifact_id}/content",
    response_class=FileResponse,
    operation_id="downloadArtifact",
    summary="Download an artifact's content",
    responses={**CONTENT_RESPONSES, **responses(401, 404, 416)},
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
    artifact = job_service.get_artifact(session, owner=key.owner, artifact_id=artifact_id)
    return download_blob(store, artifact.sha256, filename=artifact.filename, byte_range=byte_range, if_range=if_range)
